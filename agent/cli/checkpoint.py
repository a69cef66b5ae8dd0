"""agentctl's checkpoint commands (CRIU, agent/checkpoint/):

    checkpoint NAME [--leave-running] [--export FILE] [--tcp-established]
    checkpoint ls
    checkpoint rm NAME
    restore NAME
    restore --import FILE [--name NEW]

Imports nothing heavy.
"""
from __future__ import annotations

import os

from agent.cli.errors import EXIT_OK, UsageError
from agent.cli.format import print_json



def _build_checkpoint(p) -> None:
    p.add_argument("words", nargs="+", metavar="NAME",
                   help="the container to checkpoint; `ls` lists checkpoints, `rm NAME` removes one")
    p.add_argument("--leave-running", action="store_true",
                   help="thaw the container after the dump instead of stopping it")
    p.add_argument("--export", metavar="FILE", help="also write the checkpoint as one tar file (written by agentd)")
    p.add_argument("--tcp-established", action="store_true",
                   help="take the container's established TCP connections along (refused without it); "
                        "their peers must keep them until the restore, at the same address")


def _build_restore(p) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="the checkpoint (named for its container) to restore")
    p.add_argument("--import", dest="import_file", metavar="FILE",
                   help="an exported checkpoint (read by agentd) to import and restore")
    p.add_argument("--name", dest="new_name", metavar="NEW", help="with --import: the name it gets here")


def _size(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def cmd_checkpoint(args, client) -> int:
    words = args.words
    if words[0] == "ls" and len(words) == 1:
        from agent.cli.format import rfc3339
        rows = client.call("GET", "/v1/checkpoints")
        if args.json:
            print_json(rows)
            return EXIT_OK
        print(f"{'NAME':<24} {'CONTAINER ID':<14} {'CRIU':<8} {'SIZE':>10}  CREATED")
        for r in rows:
            print(f"{r['name']:<24} {r.get('container_id') or '':<14} {r.get('criu_version') or '':<8} "
                  f"{_size(r.get('image_bytes')):>10}  {rfc3339(r.get('created_at'))}")
        return EXIT_OK
    if words[0] == "rm" and len(words) >= 2:
        for name in words[1:]:
            out = client.call("DELETE", f"/v1/checkpoints/{name}")
            print(out["removed"])
        return EXIT_OK
    if len(words) != 1:
        raise UsageError("checkpoint: give one container NAME, or `ls`, or `rm NAME`")
    body = {"leave_running": args.leave_running}
    if args.tcp_established:
        body["tcp_established"] = True
    if args.export:
        body["export"] = os.path.abspath(args.export)
    out = client.call("POST", f"/v1/containers/{words[0]}/checkpoint", body=body)
    if args.json:
        print_json(out)
        return EXIT_OK
    state = "left running" if out.get("leave_running") else "checkpointed"
    print(f"{out['name']}: {state} ({_size(out.get('image_bytes'))})")
    if out.get("export"):
        print(f"exported to {out['export']['path']}")
    return EXIT_OK


def cmd_restore(args, client) -> int:
    if args.import_file:
        if args.name:
            raise UsageError("restore --import FILE takes no NAME; use --name NEW for the name it gets")
        body = {"path": os.path.abspath(args.import_file)}
        if args.new_name:
            body["name"] = args.new_name
        out = client.call("POST", "/v1/checkpoints/import", body=body)
    else:
        if not args.name:
            raise UsageError("restore: give the checkpoint NAME, or --import FILE")
        if args.new_name:
            raise UsageError("restore: --name goes with --import (a checkpoint is restored under its own name)")
        out = client.call("POST", f"/v1/checkpoints/{args.name}/restore")
    if args.json:
        print_json(out)
    else:
        print(f"{out['name']}: restored as {out['id']} (pid {out['pid']}, from {out['restored_from']})")
        net, userns = out.get("network") or {}, out.get("userns") or {}
        if net and not net.get("same_ip"):
            print(f"{out['name']}: its address {net.get('checkpoint_ip')} is not free here: now {net.get('ip')}")
        if userns.get("remapped"):
            print(f"{out['name']}: its host uids from {userns.get('checkpoint_uid_base')} are held here: now from "
                  f"{userns.get('uid_base')} (its idmapped root keeps its files its own)")
    return EXIT_OK


VERBS = {
    "checkpoint": ("save a running container with CRIU (checkpoint NAME, checkpoint ls, checkpoint rm NAME)",
                   True, _build_checkpoint, cmd_checkpoint),
    "restore": ("restore a checkpointed container, or import one (--import FILE)", True, _build_restore, cmd_restore),
}
