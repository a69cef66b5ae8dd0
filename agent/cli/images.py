"""agentctl's image commands: pull, images, rmi, login, logout, and
`image load|save|inspect|ls|rm|prune`; plus run's --image, --pull and
--entrypoint. Imports nothing heavy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from agent.cli.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, UsageError
from agent.cli.flags import JSON_HELP, Parser
from agent.cli.format import print_json, table

PULL_POLICIES = ("missing", "always", "never")


# -- parsers ------------------------------------------------------------------


def _build_pull(p) -> None:
    p.add_argument("reference", metavar="REF", help="image reference, e.g. busybox or 127.0.0.1:5000/app:1")
    p.add_argument("--insecure", action="store_true",
                   help="allow plain HTTP and unverified TLS for this registry (loopback registries always may)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="from a multi-platform image (default linux/amd64)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")


def _build_images(p) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print only image ids")


def _build_rmi(p) -> None:
    p.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    p.add_argument("references", nargs="+", metavar="REF", help="image name or id")


def _build_login(p) -> None:
    p.add_argument("registry", metavar="REGISTRY", help="registry host[:port], e.g. 127.0.0.1:5000")
    p.add_argument("-u", "--username", required=True, help="user name")
    p.add_argument("-p", "--password", help="password (prefer --password-stdin: argv is visible to others)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--insecure", action="store_true", help="allow plain HTTP and unverified TLS")


def _build_logout(p) -> None:
    p.add_argument("registry", metavar="REGISTRY", help="registry host[:port]")


def _build_image(p) -> None:
    sub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)
    ld = sub.add_parser("load", help="load a docker save archive or an OCI image layout tar")
    ld.add_argument("-i", "--input", required=True, metavar="FILE", help="the tar file (read by agentd)")
    sv = sub.add_parser("save", help="write an image as an OCI image layout tar")
    sv.add_argument("-o", "--output", required=True, metavar="FILE", help="the tar file (written by agentd)")
    sv.add_argument("reference", metavar="REF", help="image name or id")
    ins = sub.add_parser("inspect", help="an image's record, config and layers as JSON")
    ins.add_argument("reference", metavar="REF", help="image name or id")
    ls = sub.add_parser("ls", help="list images (as agentctl images)")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only image ids")
    rm = sub.add_parser("rm", help="remove images (as agentctl rmi)")
    rm.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    rm.add_argument("references", nargs="+", metavar="REF", help="image name or id")
    sub.add_parser("prune", help="remove unnamed unused images and unused layers")
    for nested in (ld, sv, ins, ls, rm, sub.choices["prune"]):
        nested.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)


def add_run_flags(r, source_group) -> None:
    source_group.add_argument("--image", metavar="REF",
                              help="run an image: its layers under a copy-on-write upper dir of the container")
    r.add_argument("--pull", choices=PULL_POLICIES, help="with --image: pull missing (default), always or never")
    r.add_argument("--entrypoint", metavar="CMD", help="with --image: replaces the image's Entrypoint (and its Cmd)")


def run_body(args, client, body: dict) -> None:
    """Fill an image run's fields; pull first (with progress) when the image is missing."""
    if not getattr(args, "image", None):
        for flag in ("pull", "entrypoint"):
            if getattr(args, flag, None):
                raise UsageError(f"run: --{flag} goes with --image")
        return
    body["image"] = args.image
    if args.entrypoint is not None:
        body["entrypoint"] = [args.entrypoint] if args.entrypoint else []
    policy = args.pull or "missing"
    if policy == "always" or (policy == "missing" and not _have(client, args.image)):
        rc = _pull(client, args.image, quiet=not sys.stderr.isatty(), out=sys.stderr)
        if rc:
            raise SystemExit(rc)
    body["pull"] = "never"  # pulled above when the policy asked for it


def _have(client, ref: str) -> bool:
    from agent.cli.client import ApiError
    try:
        client.call("GET", "/v1/images/inspect", {"reference": ref})
        return True
    except ApiError as e:
        if e.status == 404:
            return False
        raise


# -- commands -----------------------------------------------------------------


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return str(n)


def _pull(client, ref: str, quiet: bool = False, out=sys.stdout, insecure: bool = False,
          platform: str | None = None) -> int:
    from agent.cli.client import EVENT
    body = {"reference": ref, "insecure": insecure}
    if platform:
        body["platform"] = platform
    tty = out.isatty() and not quiet
    last = 0.0
    for stream, data in client.stream("POST", "/v1/images/pull", body=body):
        if stream != EVENT:
            continue
        ev = json.loads(data)
        if ev.get("event") == "progress" and tty:
            now = time.monotonic()
            if ev.get("status") == "layer" or now - last > 0.1:
                last = now
                total = ev.get("total") or 0
                pct = f" {100 * ev['bytes'] / total:5.1f}%" if total else ""
                layer = (ev.get("layer") or "")[7:19]
                line = f"\r{ref}: layer {layer} {_size(ev.get('bytes', 0))}/{_size(total)}{pct}"
                out.write(line.ljust(78)[:78])
                out.flush()
        elif ev.get("event") == "pulled":
            if tty:
                out.write("\r" + " " * 78 + "\r")
            img = ev["image"]
            print(img["id"] if quiet else f"pulled {ref} ({img['id']}, {img['layer_count']} layers, "
                                          f"{_size(img['size'])})", file=out)
            return EXIT_OK
        elif ev.get("event") == "error":
            if tty:
                out.write("\n")
            print(f"agentctl: pull {ref}: {ev.get('error')}", file=sys.stderr)
            return EXIT_USAGE if ev.get("status") == 400 else EXIT_FAIL
    print(f"agentctl: pull {ref}: the stream ended early (agentd stopped?)", file=sys.stderr)
    return EXIT_FAIL


def cmd_pull(args, client) -> int:
    return _pull(client, args.reference, quiet=args.quiet, insecure=args.insecure, platform=args.platform)


def _print_images(images: list[dict], quiet: bool, as_json: bool) -> None:
    if as_json:
        print_json(images)
        return
    if quiet:
        for img in images:
            print(img["id"][7:19])
        return
    rows = []
    for img in images:
        names = img["names"] or ["<none>:<none>"]
        for name in names:
            repo, _, tag = name.rpartition(":") if "@" not in name else (name, "", "<none>")
            rows.append((repo, tag, img["id"][7:19], (img.get("created") or "-")[:19].replace("T", " "),
                         _size(img["size"])))
    print(table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows))


def cmd_images(args, client) -> int:
    _print_images(client.call("GET", "/v1/images"), args.quiet, args.json)
    return EXIT_OK


def cmd_rmi(args, client) -> int:
    from agent.cli.client import ApiError
    status = EXIT_OK
    for ref in args.references:
        try:
            out = client.call("POST", "/v1/images/remove", body={"reference": ref, "force": args.force})
            for line in out["result"]:
                print(line)
        except ApiError as e:
            print(f"agentctl: rmi {ref}: {e}", file=sys.stderr)
            status = EXIT_FAIL
    return status


def cmd_login(args, client) -> int:
    password = args.password
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UsageError("login: give the password with --password-stdin (or -p)")
    out = client.call("POST", "/v1/registries/login", body={"registry": args.registry, "username": args.username,
                                                             "password": password, "insecure": args.insecure})
    print(f"{out['status']}: {out['registry']}")
    return EXIT_OK


def cmd_logout(args, client) -> int:
    out = client.call("POST", "/v1/registries/logout", body={"registry": args.registry})
    print(f"{out['status']}: {out['registry']}")
    return EXIT_OK


def cmd_image(args, client) -> int:
    sub = args.image_command
    if sub == "load":
        loaded = client.call("POST", "/v1/images/load", body={"path": os.path.abspath(args.input)})
        if args.json:
            print_json(loaded)
        for img in loaded:
            print(f"loaded {', '.join(img['names']) or '<none>'} ({img['id']})")
    elif sub == "save":
        out = client.call("POST", "/v1/images/save",
                          body={"reference": args.reference, "path": os.path.abspath(args.output)})
        print(f"saved {args.reference} ({out['id']}) to {os.path.abspath(args.output)}")
    elif sub == "inspect":
        print_json(client.call("GET", "/v1/images/inspect", {"reference": args.reference}))
    elif sub == "ls":
        _print_images(client.call("GET", "/v1/images"), args.quiet, args.json)
    elif sub == "rm":
        return cmd_rmi(args, client)
    elif sub == "prune":
        out = client.call("POST", "/v1/images/prune")
        if args.json:
            print_json(out)
        else:
            for line in out["images"]:
                print(line)
            print(f"freed {_size(out['freed_bytes'])} ({out['removed_files']} blobs and layers)")
    return EXIT_OK


VERBS = {
    "pull": ("pull an image from a registry", False, _build_pull, cmd_pull),
    "images": ("list images", True, _build_images, cmd_images),
    "rmi": ("remove images", False, _build_rmi, cmd_rmi),
    "image": ("manage images: load, save, inspect, ls, rm, prune", True, _build_image, cmd_image),
    "login": ("store credentials for a registry (kept by agentd, mode 0600)", False, _build_login, cmd_login),
    "logout": ("forget a registry's credentials", False, _build_logout, cmd_logout),
}
