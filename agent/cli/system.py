"""agentctl system: the agent and its host as a whole.

    system info            GET /v1/system/info: version, host, kernel, cgroup mode and controllers
                           (missing ones with their reasons), state dir, containers, images,
                           userns pool, device filter
    system df              GET /v1/system/df: bytes of images, containers' upper dirs, logs, databases
    system prune -f        remove every exited container, then unused unnamed images and layers
                           (without -f: print what it would remove, remove nothing)
    system dial-stdio      join stdin/stdout to the local agent's socket (what --host ssh:// runs
                           on the remote host; see agent/cli/ssh_transport.py)
"""
from __future__ import annotations

import argparse
import sys

from agent.cli.errors import EXIT_FAIL, EXIT_OK
from agent.cli.flags import JSON_HELP, Parser
from agent.cli.format import print_json, table


EXITED = ("exited", "created", "dead")   # prune removes these; never a running, paused or restarting one


def _build_system(p) -> None:
    sub = p.add_subparsers(dest="system_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)
    info = sub.add_parser("info", help="the agent and its host: version, kernel, cgroups, containers, images")
    df = sub.add_parser("df", help="disk space the agent uses: images, containers' upper dirs, logs, databases")
    prune = sub.add_parser("prune", help="remove exited containers and unused unnamed images (-f; without it, "
                                         "print what would be removed)")
    prune.add_argument("-f", "--force", action="store_true",
                       help="remove without asking (without -f: only print what would be removed)")
    sub.add_parser("dial-stdio", help="copy stdin to the agent's socket and its answers to stdout "
                                      "(run by agentctl --host ssh://... on the remote host)")
    for nested in (info, df, prune):
        nested.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def cmd_system(args, client) -> int:
    sub = args.system_command
    if sub in _READS:    # one GET, printed as JSON or as text
        path, show = _READS[sub]
        doc = client.call("GET", path)
        if args.json:
            print_json(doc)
        else:
            show(doc)
        return EXIT_OK
    return {"prune": _prune, "dial-stdio": _dial_stdio}[sub](args, client)


def _info(info: dict) -> None:
    cg = info.get("cgroup") or {}
    pool = info.get("userns_pool") or {}
    filters = (info.get("device_filter") or {}).get("running_containers") or {}
    lines = [
        ("Agent version", info.get("version")),
        ("Host", f"{info.get('host')} ({info.get('hostname')})"),
        ("Kernel", f"{info.get('kernel')} {info.get('arch')}"),
        ("Cgroup mode", cg.get("mode")),
        ("Cgroup root", cg.get("root")),
        ("Controllers enabled", " ".join(cg.get("controllers_enabled") or []) or "none"),
    ]
    for name, reason in (cg.get("controllers_missing") or {}).items():
        lines.append((f"Controller missing: {name}", reason))
    lines += [
        ("State dir", info.get("state_dir")),
        ("Socket", info.get("socket")),
        ("Containers", f"{info['containers']['running']} running, {info['containers']['total']} total"),
        ("Images", "disabled" if info.get("images") is None else info["images"]),
        ("Userns pool", pool.get("ranges") or "-"),
        ("Device filter", ", ".join(f"{k}: {v}" for k, v in sorted(filters.items())) or "no running containers"),
        ("Usage ledger", "on" if info.get("usage") else "off"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k + ':':<{width + 1}} {v}")


def _df(df: dict) -> None:
    images = df.get("images") or {}
    rows = [["Images", images.get("count", "-"), _size(images.get("bytes"))],
            ["Containers", df["containers"]["count"], _size(df["containers"]["upper_bytes"])],
            ["Logs", "", _size(df["logs"]["bytes"])],
            ["State and ledger databases", len(df["databases"]["files"]), _size(df["databases"]["bytes"])]]
    print(table(["TYPE", "COUNT", "SIZE"], rows))


_READS = {"info": ("/v1/system/info", _info), "df": ("/v1/system/df", _df)}


def _prune(args, client) -> int:
    from agent.cli.client import ApiError

    containers = [c for c in client.call("GET", "/v1/containers", {"all": "1"}) if c.get("state") in EXITED]
    images = (client.call("GET", "/v1/system/df").get("images") or {}).get("prunable")   # None: images disabled
    if not args.force:
        if args.json:
            print_json({"would_remove": {"containers": [c["name"] for c in containers], "images": images or []}})
            return EXIT_OK
        for c in containers:
            print(f"would remove container {c['name']} ({c['state']})")
        for i in images or ():
            print(f"would remove image {i}")
        print(f"{len(containers)} containers and {len(images or ())} unnamed images (and unused layers) would be removed; "
              "run agentctl system prune -f to remove them")
        return EXIT_OK
    removed, status = [], EXIT_OK
    for c in containers:
        try:
            client.call("DELETE", f"/v1/containers/{c['name']}")
            removed.append(c["name"])
        except ApiError as e:   # started again meanwhile, or removed by someone else
            print(f"agentctl: system prune: container {c['name']}: {e.message}", file=sys.stderr)
            if e.status != 404:
                status = EXIT_FAIL
    pruned = client.call("POST", "/v1/images/prune") if images is not None else None
    if args.json:
        print_json({"containers": removed, "images": pruned})
        return status
    for name in removed:
        print(f"removed container {name}")
    if pruned is not None:
        for line in pruned["images"]:
            print(f"removed image {line}")
        print(f"freed {_size(pruned['freed_bytes'])} of images ({pruned['removed_files']} blobs and layers)")
    return status


def _dial_stdio(args, client) -> int:
    """Copy stdin to the socket and the socket to stdout; stdin's end half-closes the socket
    (SHUT_WR) and the answer keeps flowing; ends when the agent has closed its side."""
    import os
    import socket
    import threading

    from agent.cli.client import connect_unix, socket_path

    sock = connect_unix(socket_path(args.socket))   # ConnectError: one line, exit 1 (the ssh client shows it)

    def upstream():
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass   # the agent closed: nothing left to send to
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=upstream, name="dial-stdin", daemon=True).start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
    except OSError:
        pass
    finally:
        sock.close()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)   # closes the pipe to ssh: the client reads the end of the answer
    return EXIT_OK


VERBS = {
    "system": ("the agent and its host: info, df, prune, dial-stdio (for --host ssh://)", True, _build_system,
               cmd_system),
}
