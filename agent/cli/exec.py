"""agentctl exec: run a command inside a running container.

    exec [-i] [-t] [-u USER] [-e K=V] [-w DIR] NAME CMD...
                            POST /v1/containers/NAME/exec (agent/api/exec.py)

-i forwards this process's stdin (end of input is passed on); -t gives the
command a terminal (this terminal in raw mode meanwhile, its size passed on
and on every SIGWINCH). Exits with the command's exit status (128+N when
killed by signal N; 127/126 when it cannot be found/executed).
"""
from __future__ import annotations

import argparse
import os
import sys

from agent.cli import detachkeys
from agent.cli.errors import EXIT_FAIL, EXIT_OK, UsageError, exit_status
from agent.cli.format import copy_output


HELP = "run a command inside a running container (its namespaces, cgroup and security)"


def _build_exec(p) -> None:
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin to the command")
    p.add_argument("-t", "--tty", action="store_true", help="give the command a terminal (raw mode here meanwhile)")
    p.add_argument("-u", "--user", metavar="USER", help="name|uid[:group|gid] inside the container (default: its user)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="set an environment variable (K alone: its value here); repeatable")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    detachkeys.add_flag(p)
    p.add_argument("name", help="container name or id")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARG...]", help="the command and its arguments")


def _env(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"-e {item!r}: give KEY=VALUE (or KEY to pass this shell's value)")
        if not sep:
            if key not in os.environ:
                continue        # as docker: an unset variable is not passed
            value = os.environ[key]
        out[key] = value
    return out


def stream_with_input(client, method: str, path: str, body: dict, interactive: bool, tty: bool = False,
                      detach_keys: bytes | None = None, raw: bool = True):
    """Send a request whose answer is a stream; yield its (stream, data)
    frames while a thread forwards stdin as STDIN frames on the same
    connection (with tty: this terminal raw meanwhile unless not `raw`, its
    size as RESIZE). With tty and interactive, `detach_keys` typed end it:
    Detached is raised (agent/cli/detachkeys.py)."""
    import socket
    import threading

    from agent.cli.client import ProtocolError, _read_body, api_error, iter_frames
    from agent.cli.detachkeys import Detached, Scanner
    from agent.wire import RESIZE, STDIN, STREAM_CONTENT_TYPE, frame

    sock, f, status, headers = client._send(method, path, body)
    restore = None
    try:
        if status >= 400:
            raise api_error(status, b"".join(_read_body(f, headers)))
        if not headers.get("content-type", "").startswith(STREAM_CONTENT_TYPE):
            raise ProtocolError(f"agentd answered {status} without a stream")
        send_lock = threading.Lock()

        def send(sid: int, data: bytes) -> None:
            with send_lock:
                sock.sendall(frame(sid, data))

        detached = threading.Event()

        def detach() -> None:
            detached.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)     # the stream ends here; agentd sees the client go
            except (OSError, AttributeError):
                pass

        scanner = Scanner(detach_keys) if detach_keys and tty and interactive else None
        if tty:
            restore = _terminal(send, RESIZE, raw)
        if interactive or (tty and raw):
            threading.Thread(target=_forward_stdin, args=(send, STDIN, scanner, detach), daemon=True).start()
        try:
            yield from iter_frames(_read_body(f, headers, incremental=True))
        except (OSError, ProtocolError):
            if not detached.is_set():
                raise
        if detached.is_set():
            raise Detached()
    except OSError as e:
        raise client._hung_up(sock, e) from None
    finally:
        if restore:
            restore()
        f.close()
        client._close(sock)


def add_console_size(body: dict) -> None:
    """-t on a terminal: the container's terminal starts at this one's size (RESIZE frames follow it)."""
    if os.isatty(0):
        cols, rows = os.get_terminal_size(0)
        body["console_size"] = [rows, cols]


def cmd_exec(args, client) -> int:
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UsageError("exec: give the command after the name, e.g. agentctl exec web -- ls /")
    body = {"command": argv, "env": _env(args.env) or None, "workdir": args.workdir, "user": args.user,
            "stdin": bool(args.interactive), "tty": bool(args.tty)}
    body = {k: v for k, v in body.items() if v is not None}
    if args.tty:
        add_console_size(body)
    frames = stream_with_input(client, "POST", f"/v1/containers/{args.name}/exec", body,
                               args.interactive, args.tty, args.detach_keys)
    result = None
    try:
        for ev in copy_output(frames):
            if ev.get("event") == "exited":
                result = exit_status(ev)
            elif ev.get("event") == "error":
                frames.close()      # the terminal back first
                print(f"agentctl: error: {ev.get('error')}", file=sys.stderr)
                return EXIT_FAIL
    except detachkeys.Detached:
        return detached()
    finally:
        frames.close()
    if result is None:
        print(f"agentctl: the stream of exec in {args.name} ended before the command exited (agentd stopped?)",
              file=sys.stderr)
        return EXIT_FAIL
    return result


def detached() -> int:
    """The detach keys were typed (the terminal is back): as Docker, say so; exit 0."""
    sys.stdout.flush()
    print("read escape sequence", file=sys.stderr)
    return EXIT_OK


def _forward_stdin(send, stdin_id: int, scanner=None, detach=None) -> None:
    try:
        while True:
            data = os.read(0, 65536)
            if scanner is not None and data:
                data, typed = scanner.feed(data)
                if data:
                    send(stdin_id, data)
                if typed:
                    detach()
                    return
                continue
            send(stdin_id, data)
            if not data:
                return
    except OSError:
        return


def _terminal(send, resize_id: int, raw: bool = True):
    """Raw mode on this terminal (with `raw`), its size sent now and on each
    SIGWINCH; returns what puts it back."""
    import json
    import signal
    import termios
    import tty

    if not os.isatty(0):
        return None
    saved = termios.tcgetattr(0)

    def size(*_):
        try:
            cols, rows = os.get_terminal_size(0)
            send(resize_id, json.dumps({"rows": rows, "cols": cols}).encode())
        except OSError:
            pass

    if raw:
        tty.setraw(0, termios.TCSANOW)    # not TCSAFLUSH: input typed ahead is kept
    old = signal.signal(signal.SIGWINCH, size)
    size()

    def restore():
        signal.signal(signal.SIGWINCH, old)
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return restore


VERBS = {"exec": (HELP, False, _build_exec, cmd_exec)}
