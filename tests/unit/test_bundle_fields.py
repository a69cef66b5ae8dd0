"""OCI bundle fields: what is honoured becomes launcher spawn-spec keys; what
cannot be honoured safely is refused in one line naming the field. And the
capability defaults: NET_RAW off on the host's network, --cap-add/--cap-drop."""
from __future__ import annotations

import json

import pytest

from agent.config import load_config
from agent.errors import UserError
from agent.spec import from_bundle, from_json
from runtime import caps
from runtime.spawn import SpawnSpec, SpecError

NET_RAW = "NET_RAW"


@pytest.fixture
def config(tmp_path):
    return load_config(None, {"agent.state_dir": str(tmp_path / "state"), "agent.socket": str(tmp_path / "agent.sock")})


def base_config() -> dict:
    return {"ociVersion": "1.0.2",
            "process": {"args": ["sh"], "user": {"uid": 0, "gid": 0}, "cwd": "/"},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]}}


@pytest.fixture
def bundle(tmp_path):
    b = tmp_path / "bundle"
    (b / "rootfs").mkdir(parents=True)

    def write(edit=None, **overrides):
        doc = base_config()
        if edit:
            edit(doc)
        (b / "config.json").write_text(json.dumps(doc))
        return str(b)
    return write


def spawn_keys(spec) -> dict:
    return spec.spawn_security()


# ------------------------------------------------------------------ refusals, one per field


@pytest.mark.parametrize("edit, start", [
    (lambda d: d.update(hooks={"prestart": [{"path": "/bin/true"}]}), "config.json hooks: not supported"),
    (lambda d: d.update(hooks={"createRuntime": [{"path": "/x"}]}), "config.json hooks:"),
    (lambda d: d["linux"]["namespaces"].append({"type": "ipc", "path": "/proc/1/ns/ipc"}),
     "config.json linux.namespaces[3].path: joining an existing namespace"),
    (lambda d: d["linux"]["namespaces"].__setitem__(0, {"type": "pid", "path": "/proc/1/ns/pid"}),
     "config.json linux.namespaces[0].path"),
    (lambda d: d["linux"].update(seccomp=None), "config.json linux.seccomp: null would run the container without"),
    (lambda d: d["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW"}),
     "config.json linux.seccomp: custom profiles are not applied"),
    (lambda d: d["linux"].update(devices=[{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]),
     "config.json linux.devices: device nodes are not supported"),
    (lambda d: d["process"].update(apparmorProfile="docker-default"), "config.json process.apparmorProfile"),
    (lambda d: d["process"].update(selinuxLabel="system_u:system_r:svirt_lxc_net_t:s0"),
     "config.json process.selinuxLabel"),
    (lambda d: d["linux"].update(sysctl={"kernel.hostname": "x"}),
     "config.json linux.sysctl: kernel.hostname: not namespaced"),
    (lambda d: d["linux"].update(sysctl={"vm.swappiness": "1"}), "config.json linux.sysctl: vm.swappiness: not namespaced"),
    (lambda d: d["linux"].update(sysctl={"kernel.shmmax": ["1"]}), "config.json linux.sysctl: kernel.shmmax: value"),
    (lambda d: d["linux"].update(sysctl={"../../x": "1"}), "config.json linux.sysctl: '../../x': not a sysctl name"),
    (lambda d: d["process"].update(capabilities={"bounding": ["CAP_FLY"]}),
     "config.json process.capabilities.bounding: unknown capability 'CAP_FLY'; accepted: CHOWN"),
    (lambda d: d["process"].update(capabilities={"bounding": ["CAP_KILL"], "permitted": ["CAP_KILL"],
                                                 "effective": ["CAP_KILL", "CAP_CHOWN"]}),
     "config.json process.capabilities.effective: CHOWN not in permitted"),
    (lambda d: d["process"].update(capabilities={"bounding": [], "inheritable": ["CAP_KILL"]}),
     "config.json process.capabilities.inheritable: KILL not in bounding"),
    (lambda d: d["process"].update(capabilities=["CAP_KILL"]), "config.json process.capabilities: must be an object"),
    (lambda d: d["process"].update(rlimits=[{"type": "RLIMIT_FLY", "soft": 1, "hard": 1}]),
     "config.json process.rlimits[0]: type: 'RLIMIT_FLY' is not one of RLIMIT_CPU"),
    (lambda d: d["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]),
     "config.json process.rlimits[0]: soft: 10 is above hard 5"),
    (lambda d: d["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}] * 2),
     "config.json process.rlimits[1]: RLIMIT_NOFILE given twice"),
    (lambda d: d["process"].update(noNewPrivileges="yes"), "config.json process.noNewPrivileges:"),
    (lambda d: d["root"].update(readonly="yes"), "config.json root.readonly:"),
    (lambda d: d["linux"].update(maskedPaths=["relative"]), "config.json linux.maskedPaths[0]:"),
    (lambda d: d["linux"].update(readonlyPaths=["/a/../b"]), "config.json linux.readonlyPaths[0]:"),
])
def test_refused_bundle_fields(config, bundle, edit, start):
    path = bundle(edit)
    with pytest.raises(UserError) as e:
        from_bundle(path, config, name="b")
    msg = str(e.value)
    assert msg.startswith(start), msg
    assert "\n" not in msg


def test_net_sysctl_needs_the_containers_own_network(config, bundle):
    path = bundle(lambda d: d["linux"].update(sysctl={"net.ipv4.ip_forward": "1"}))
    assert from_bundle(path, config, name="own").oci["sysctl"] == {"net.ipv4.ip_forward": "1"}
    with pytest.raises(UserError) as e:       # the request puts it on the host's network
        from_bundle(path, config, name="host", network="host")
    assert str(e.value).startswith("config.json linux.sysctl: net.ipv4.ip_forward: net.* needs a network "
                                   "namespace of its own")


def test_readonly_root_needs_the_bundles_rootfs(config, bundle):
    path = bundle(lambda d: d["root"].update(readonly=True))
    with pytest.raises(UserError) as e:
        from_bundle(path, config, name="hostroot", rootfs="")
    assert str(e.value).startswith("config.json root.readonly: needs the bundle's rootfs")


def test_empty_hooks_and_absent_fields_are_fine(config, bundle):
    s = from_bundle(bundle(lambda d: d.update(hooks={"prestart": []})), config, name="plain")
    assert s.oci == {}
    keys = spawn_keys(s)
    assert keys["no_new_privs"] is True
    assert set(keys["capabilities"]) == set(caps.DOCKER_DEFAULT)    # network none: Docker's set


# ------------------------------------------------------------------ honoured fields become spawn-spec keys


def test_honoured_fields_reach_a_valid_spawn_spec(config, bundle, tmp_path):
    def edit(d):
        d["root"]["readonly"] = True
        d["process"]["noNewPrivileges"] = False
        d["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 64, "hard": 128}]
        d["process"]["capabilities"] = {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
                                        "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]}
        d["linux"]["maskedPaths"] = ["/proc/kcore"]
        d["linux"]["readonlyPaths"] = []
        d["linux"]["sysctl"] = {"kernel.shmmax": "4096", "net.core.somaxconn": "64"}
    s = from_bundle(bundle(edit), config, name="full")
    keys = spawn_keys(s)
    assert keys["readonly_rootfs"] is True and keys["no_new_privs"] is False
    assert keys["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 64, "hard": 128}]
    assert keys["masked_paths"] == ["/proc/kcore"] and keys["readonly_paths"] == []
    assert keys["sysctl"] == {"kernel.shmmax": "4096", "net.core.somaxconn": "64"}
    assert keys["capabilities"] is None
    # ambient KILL is not inheritable: the kernel could not raise it (runc skips it too)
    assert keys["capability_sets"] == {"bounding": ["CHOWN", "KILL"], "effective": ["KILL"],
                                       "permitted": ["KILL"], "inheritable": [], "ambient": []}
    # the launcher accepts exactly this
    spawn = SpawnSpec.from_dict({"argv": ["sh"], "cgroup": "/sys/fs/cgroup/x", "stdout": "/o", "stderr": "/e",
                                 "rootfs": str(tmp_path / "bundle" / "rootfs"), "network": s.network,
                                 "seccomp": True, **keys})
    assert spawn.readonly_rootfs and spawn.rlimits == (("RLIMIT_NOFILE", 64, 128),)
    assert spawn.capability_sets["effective"] == ("KILL",)
    assert spawn.sysctl == {"kernel.shmmax": "4096", "net.core.somaxconn": "64"}


def test_cap_add_and_drop_apply_to_a_bundles_sets(config, bundle):
    path = bundle(lambda d: d["process"].update(capabilities={
        "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
        "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]}))
    s = from_bundle(path, config, name="tweak", cap_add=["NET_BIND_SERVICE"], cap_drop=["KILL"])
    sets = spawn_keys(s)["capability_sets"]
    assert sets == {"bounding": ["NET_BIND_SERVICE"], "effective": ["NET_BIND_SERVICE"],
                    "permitted": ["NET_BIND_SERVICE"], "inheritable": [], "ambient": []}


# ------------------------------------------------------------------ defaults and --cap-add/--cap-drop


def body(**kw):
    return {"name": "c", "argv": ["true"], **kw}


def test_host_network_default_leaves_out_net_raw(config):
    host = spawn_keys(from_json(body(), config))["capabilities"]
    assert NET_RAW not in host
    assert set(host) == set(caps.DOCKER_DEFAULT) - {NET_RAW}
    own = spawn_keys(from_json(body(network="none"), config))["capabilities"]
    assert set(own) == set(caps.DOCKER_DEFAULT)


@pytest.mark.parametrize("add, drop, network, want", [
    (["NET_RAW"], [], "host", set(caps.DOCKER_DEFAULT)),
    (["cap_net_raw"], [], "host", set(caps.DOCKER_DEFAULT)),
    (["ALL"], [], "host", set(caps.CAPABILITIES)),
    (["all"], ["SYS_ADMIN"], "none", set(caps.CAPABILITIES) - {"SYS_ADMIN"}),
    ([], ["ALL"], "none", set()),
    (["KILL"], ["ALL"], "host", {"KILL"}),
    (["CHOWN"], ["CHOWN"], "none", set(caps.DOCKER_DEFAULT)),         # an add wins, as in Docker
    ([], ["MKNOD", "CAP_SETFCAP"], "none", set(caps.DOCKER_DEFAULT) - {"MKNOD", "SETFCAP"}),
    (["SYS_PTRACE"], [], "host", set(caps.DOCKER_DEFAULT) - {NET_RAW} | {"SYS_PTRACE"}),
])
def test_cap_add_cap_drop_as_docker(config, add, drop, network, want):
    s = from_json(body(cap_add=add, cap_drop=drop, network=network), config)
    assert set(spawn_keys(s)["capabilities"]) == want


@pytest.mark.parametrize("field, value, start", [
    ("cap_add", ["FLY"], "cap_add[0]: unknown capability 'FLY'; accepted: ALL, CHOWN, DAC_OVERRIDE"),
    ("cap_drop", ["KILL", "CAP_NOPE"], "cap_drop[1]: unknown capability 'CAP_NOPE'; accepted: ALL"),
    ("cap_add", "NET_RAW", "cap_add: must be a list of capability names"),
    ("cap_drop", [3], "cap_drop[0]: unknown capability 3; accepted: ALL"),
])
def test_unknown_capabilities_refused_in_one_line(config, field, value, start):
    with pytest.raises(UserError) as e:
        from_json(body(**{field: value}), config)
    assert str(e.value).startswith(start), str(e.value)
    assert "\n" not in str(e.value)


def test_cap_changes_survive_the_state_db(config):
    from agent.spec import ContainerSpec
    s = from_json(body(cap_add=["net_raw"], cap_drop=["CAP_MKNOD"]), config)
    again = ContainerSpec.from_dict(json.loads(json.dumps(s.to_dict())))
    assert (again.cap_add, again.cap_drop) == (("NET_RAW",), ("MKNOD",))
    assert again.spawn_security() == s.spawn_security()


def test_specs_stored_before_cap_changes_get_the_new_default(config):
    from agent.spec import ContainerSpec
    old = from_json(body(), config).to_dict()
    for k in ("cap_add", "cap_drop", "oci"):
        old.pop(k)
    assert NET_RAW not in ContainerSpec.from_dict(old).spawn_security()["capabilities"]


# ------------------------------------------------------------------ the launcher's own checks


BASE = {"argv": ["sh"], "cgroup": "/sys/fs/cgroup/x", "stdout": "/o", "stderr": "/e"}


@pytest.mark.parametrize("extra, start", [
    ({"capability_sets": {"bounding": ["KILL"], "effective": ["KILL"]}},
     "spec.capability_sets.effective: KILL not in permitted"),
    ({"capability_sets": {"root": []}}, "spec.capability_sets: must map"),
    ({"readonly_rootfs": True}, "spec.readonly_rootfs: needs a rootfs"),
    ({"readonly_rootfs": "yes", "rootfs": "/tmp"}, "spec.readonly_rootfs: must be true or false"),
    ({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": -1, "hard": 1}]}, "spec.rlimits[0]: soft:"),
    ({"masked_paths": ["x"]}, "spec.masked_paths[0]: must be an absolute path"),
    ({"readonly_paths": "/proc"}, "spec.readonly_paths: must be null"),
    ({"sysctl": {"net.ipv4.ip_forward": "1"}}, "spec.sysctl.net.ipv4.ip_forward: net.* needs a network"),
    ({"sysctl": {"kernel.core_pattern": "|/x"}}, "spec.sysctl.kernel.core_pattern: not namespaced"),
])
def test_spawn_spec_refuses_what_it_cannot_apply(extra, start):
    with pytest.raises(SpecError) as e:
        SpawnSpec.from_dict({**BASE, **extra})
    assert str(e.value).startswith(start), str(e.value)


def test_spawn_spec_accepts_namespaced_sysctls():
    s = SpawnSpec.from_dict({**BASE, "network": "none",
                             "sysctl": {"kernel.sem": "250 32000 32 128", "fs.mqueue.queues_max": 64,
                                        "net.ipv4.ping_group_range": "0 0"}})
    assert s.sysctl["fs.mqueue.queues_max"] == "64"
