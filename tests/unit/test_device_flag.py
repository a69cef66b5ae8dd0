"""--device (Docker's syntax): agentctl's flag check, the API's "devices" field,
the node resolved on this host, and the spawn spec the launcher gets."""
from __future__ import annotations

import os
import stat

import pytest

from agent import spec as specmod
from agent.cli import main
from agent.cli.parser import build_parser
from agent.errors import UserError
from runtime.spawn import SpawnSpec, SpecError

SYNTAX = "HOST_PATH[:CONTAINER_PATH][:PERMISSIONS]"


def run_cli(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("value", [
    "", "dev/null", "/dev/null:relative", "/dev/null:/dev/x:rx", "/dev/null:/dev/x:rwmr",
    "/dev/null:/dev/x:rw:extra", "/dev/null::rw", ":/dev/x", "/dev/null:/dev/x:",
    "/dev/null:RW",
])
def test_malformed_device_flag_is_one_line_naming_the_syntax(value, capsys, monkeypatch):
    monkeypatch.setenv("AGENT_SOCKET", "/nonexistent/agent.sock")   # nothing may be sent
    rc, out, err = run_cli(["run", "--device", value, "--", "true"], capsys)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "--device" in lines[0] and SYNTAX in lines[0]


@pytest.mark.parametrize("value, parsed", [
    ("/dev/null", ("/dev/null", "/dev/null", "rwm")),
    ("/dev/null:/dev/x", ("/dev/null", "/dev/x", "rwm")),
    ("/dev/null:r", ("/dev/null", "/dev/null", "r")),
    ("/dev/null:/dev/x:wr", ("/dev/null", "/dev/x", "rw")),
    ("/dev/null:/dev/x:m", ("/dev/null", "/dev/x", "m")),
])
def test_docker_forms(value, parsed):
    assert specmod.split_device(value) == parsed
    assert build_parser([]).parse_args(["run", "--device", value, "--", "true"]).device == [value]


@pytest.fixture
def rootfs(tmp_path):
    (tmp_path / "root" / "dev").mkdir(parents=True)
    return str(tmp_path / "root")


def body(**kw):
    return {"name": "d", "argv": ["true"], **kw}


def test_device_is_resolved_to_its_type_and_numbers(rootfs):
    s = specmod.from_json(body(rootfs=rootfs, devices=["/dev/null:/dev/mynull:rw",
                                                       {"src": "/dev/zero", "access": "r"}]))
    st = os.stat("/dev/null")
    a, b = s.devices
    assert (a.src, a.dst, a.type, a.major, a.minor, a.access) == (
        "/dev/null", "/dev/mynull", "c", os.major(st.st_rdev), os.minor(st.st_rdev), "rw")
    assert (b.dst, b.access) == ("/dev/zero", "r")
    again = specmod.ContainerSpec.from_dict(s.to_dict())
    assert again.devices == s.devices


def test_symlinked_host_path_is_resolved(tmp_path, rootfs):
    link = tmp_path / "nul"
    link.symlink_to("/dev/null")
    s = specmod.from_json(body(rootfs=rootfs, devices=[f"{link}:/dev/n"]))
    assert s.devices[0].src == "/dev/null"


@pytest.mark.parametrize("devices, message", [
    ("/dev/null", "devices: must be a list"),
    (["/dev/null:/dev/x:q"], f"devices[0]: \"/dev/null:/dev/x:q\" is not a device; use {SYNTAX}"),
    (["/dev/does-not-exist-cga"], "devices[0]: \"/dev/does-not-exist-cga\" does not exist on this host"),
    (["/etc/hostname"], "is not a character or block device node"),
    (["/dev"], "is not a character or block device node"),
    (["/dev/null:/mnt/null"], "must be a name under /dev"),
    (["/dev/null:/dev"], "must be a name under /dev"),
    (["/dev/null:/dev/pts/x"], "is made by the agent itself"),
    (["/dev/null:/dev/shm"], "is made by the agent itself"),
    (["/dev/null:/dev/a/../b"], "must not contain .."),
    (["/dev/null:/dev/x", "/dev/zero:/dev/x"], "two devices have the same container path"),
    ([{"src": "/dev/null", "mode": "r"}], "devices[0].mode: unknown key"),
])
def test_bad_devices_are_one_line(rootfs, devices, message):
    with pytest.raises(UserError) as e:
        specmod.from_json(body(rootfs=rootfs, devices=devices))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_host_root_container_keeps_the_host_path():
    assert specmod.from_json(body(devices=["/dev/null:rw"])).devices[0].dst == "/dev/null"
    with pytest.raises(UserError, match="differs from the host path, which needs a rootfs"):
        specmod.from_json(body(devices=["/dev/null:/dev/other"]))


def test_spawn_spec_devices_field():
    base = {"argv": ["true"], "cgroup": "/c", "stdout": "/o", "stderr": "/e"}
    node = {"src": "/dev/null", "dst": "/dev/n", "type": "c", "major": 1, "minor": 3}
    s = SpawnSpec.from_dict({**base, "devices": [node]})
    assert s.devices[0].dst == "/dev/n" and s.devices[0].major == 1
    for bad in ({**node, "type": "x"}, {**node, "dst": "/etc/n"}, {**node, "major": -1},
                {**node, "dst": "/dev"}, {k: v for k, v in node.items() if k != "minor"}):
        with pytest.raises(SpecError, match=r"spec\.devices\[0\]"):
            SpawnSpec.from_dict({**base, "devices": [bad]})
    assert stat.S_ISCHR(os.stat(node["src"]).st_mode)
