"""CRIU's action script for the restore of a container whose network
namespace is its user namespace's (the default container: bridge network
and a user namespace of its own).

CRIU restores such a container's user namespace itself, so the network
namespace its tree joins must be made inside that one: the dump leaves it
empty (`--empty-ns net`, nothing of it in the images), and the restore makes
a new, empty one there and runs this script (`setup-namespaces`, with
CRTOOLS_INIT_PID the restored init's host pid) before any socket is
restored. The script moves eth0 out of the network namespace agentd plumbed
for the new container (veth, host end on the bridge, nftables rules: as at
any create) into the restored one and configures it again there (address,
MAC, default route, no IPv6, egress shaping), loopback and sysctls as at any
create. agentd then binds the restored namespaces in place of the ones it
made (NetworkService.adopt).

Run as `python -m agent.checkpoint.nethook CONFIG` by the wrapper the
launcher writes (`write`); CONFIG is JSON: {"netns": path of agentd's bound
namespace, "eth0": netdev.configure_eth0's keyword arguments}.
"""
from __future__ import annotations

import json
import os
import shlex
import sys

SCRIPT, CONFIG = "nethook.sh", "nethook.json"


def write(d: str, netns_path: str, eth0: dict) -> str:
    """The wrapper CRIU runs (its --action-script) and its config, in the checkpoint dir `d`."""
    import agent
    with open(os.path.join(d, CONFIG), "w") as f:
        json.dump({"netns": netns_path, "eth0": eth0}, f)
    top = os.path.dirname(os.path.dirname(os.path.abspath(agent.__file__)))
    script = os.path.join(d, SCRIPT)
    with open(script, "w") as f:
        f.write("#!/bin/sh\n"
                f"PYTHONPATH={shlex.quote(top)} exec {shlex.quote(sys.executable)} -m agent.checkpoint.nethook "
                f"{shlex.quote(os.path.join(d, CONFIG))}\n")
    os.chmod(script, 0o700)
    return script


def remove(d: str) -> None:
    for name in (SCRIPT, CONFIG):
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass


def setup(config: dict, pid: int) -> None:
    from runtime import netdev, netns
    target = f"/proc/{pid}/ns/net"
    netdev.move_eth0(config["netns"], target)

    def inside():
        netns.setup()
        netdev.configure_eth0("eth0", **config["eth0"])
    netns.run_in(target, inside)


def main(argv: list[str]) -> int:
    if os.environ.get("CRTOOLS_SCRIPT_ACTION") != "setup-namespaces":
        return 0
    try:
        with open(argv[1]) as f:
            config = json.load(f)
        setup(config, int(os.environ["CRTOOLS_INIT_PID"]))
    except Exception as e:  # noqa: BLE001 - CRIU logs the failure; this line says why
        print(f"network of the restored container: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
