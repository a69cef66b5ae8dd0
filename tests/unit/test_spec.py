"""agent/spec.py: container specs from the API's JSON and from OCI bundles."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess

import pytest

from agent.config import load_config
from agent.errors import UserError
from agent.spec import ContainerSpec, RestartPolicy, from_bundle, from_json, parse_restart


@pytest.fixture
def config(tmp_path):
    return load_config(None, {"agent.state_dir": str(tmp_path / "state"), "agent.socket": str(tmp_path / "run/agent.sock")})


@pytest.fixture
def host(tmp_path):
    """A scratch tree with a data dir, a rootfs and symlinks pointing out of it."""
    (tmp_path / "state").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "data").mkdir()
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").symlink_to("/etc")
    (rootfs / "inner").symlink_to("bin")
    (tmp_path / "to-etc").symlink_to("/etc")
    (tmp_path / "to-state").symlink_to(tmp_path / "state")
    return tmp_path


def spec(config, **kw):
    body = {"name": "web", "argv": ["sh", "-c", "echo hi"]}
    body.update(kw)
    return from_json(body, config)


def test_full_body(config, host):
    s = spec(config, env={"A": "1"}, workdir="/srv", user="1000:100", hostname="web-1", rootfs=str(host / "rootfs"),
             volumes=[f"{host}/data:/data:ro", {"src": str(host / "data"), "dst": "/rw"}], network="none",
             limits={"memory": "64M", "cpus": "0.5", "pids": 10}, restart="on-failure:3",
             labels=["team=core", "tier=web"], log_max_bytes="1M", rm=True)
    assert s.name == "web" and s.argv == ("sh", "-c", "echo hi")
    assert s.env == {"A": "1"} and s.workdir == "/srv"
    assert (s.uid, s.gid) == (1000, 100)
    assert s.hostname == "web-1" and s.network == "none"
    assert s.rootfs == str(host / "rootfs") and s.image == "rootfs:" + str(host / "rootfs")
    assert [(v.src, v.dst, v.ro) for v in s.volumes] == [(str(host / "data"), "/data", True),
                                                         (str(host / "data"), "/rw", False)]
    assert s.limits.memory_max == 64 << 20 and s.limits.cpu_quota_us == 50000 and s.limits.pids_max == 10
    assert s.restart == RestartPolicy("on-failure", 3)
    assert s.labels == {"team": "core", "tier": "web"}
    assert s.log_max_bytes == 1 << 20 and s.auto_remove and s.start


def test_defaults(config):
    s = spec(config)
    assert s.env == {} and s.workdir == "/" and (s.uid, s.gid) == (0, 0)
    assert s.rootfs == "" and s.network == "host" and s.hostname == "web"
    assert s.limits.is_empty() and s.restart == RestartPolicy("no")
    assert s.log_max_bytes == config.logs.max_bytes and not s.auto_remove


def test_round_trip_through_the_store_form(config, host):
    s = spec(config, env=["A=1"], user="5", volumes=[f"{host}/data:/d"], limits={"memory": "1G", "io_weight": 50},
             restart="always", labels={"k": "v"})
    back = ContainerSpec.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "../etc", "a/b", "x" * 64, "sp ace", "é", 5, None])
def test_bad_names(config, name):
    with pytest.raises(UserError, match=r"^name: "):
        spec(config, name=name)


@pytest.mark.parametrize("name", ["a", "web-1", "A.b_c", "0" * 63])
def test_good_names(config, name):
    assert spec(config, name=name).name == name


@pytest.mark.parametrize("field,value,prefix", [
    ("argv", [], "argv"), ("argv", "echo", "argv"), ("argv", ["a", 1], "argv[1]"), ("argv", ["a\x00b"], "argv[0]"),
    ("env", {"1A": "x"}, "env.1A"), ("env", ["NOEQUALS"], "env[0]"), ("env", "A=1", "env"),
    ("workdir", "relative", "workdir"), ("workdir", "/a/../b", "workdir"),
    ("user", "root", "user"), ("user", "1:2:3", "user"), ("user", "99999999999", "user"),
    ("hostname", "bad_host!", "hostname"), ("hostname", "x" * 65, "hostname"),
    ("network", "bad/name", "network"),
    ("limits", {"memory": "12Q"}, "limits.memory"), ("limits", {"cpus": "-1"}, "limits.cpus"),
    ("limits", {"frobs": 1}, "limits.frobs"), ("limits", "64M", "limits"),
    ("limits", {"io_max": 5}, "limits.io_max"), ("limits", {"memory": "1G", "pids": {"a": 1}}, "limits.pids"),
    ("restart", "sometimes", "restart"), ("restart", "always:3", "restart"), ("restart", "on-failure:-1", "restart"),
    ("labels", {"bad key": "v"}, "labels.bad key"), ("labels", ["novalue"], "labels[0]"),
    ("labels", {"k": "line\nbreak"}, "labels.k"),
    ("log_max_bytes", "huge", "log_max_bytes"), ("log_max_bytes", 10, "log_max_bytes"),
    ("rm", "yes", "rm"), ("start", 1, "start"),
    ("volumes", ["/tmp"], "volumes[0]"), ("volumes", "/a:/b", "volumes"), ("volumes", [{"src": "/tmp", "dst": "/x", "rw": 1}], "volumes[0].rw"),
    ("rootfs", "relative/dir", "rootfs"), ("rootfs", "/no/such/dir", "rootfs"),
    ("bogus", 1, "bogus"),
])
def test_each_bad_field_is_named(config, field, value, prefix):
    with pytest.raises(UserError) as exc:
        spec(config, **{field: value})
    msg = str(exc.value)
    assert msg.startswith(prefix), msg
    assert "\n" not in msg


def test_rm_with_restart_always_is_refused(config):
    with pytest.raises(UserError, match="^rm: "):
        spec(config, rm=True, restart="always")


@pytest.mark.parametrize("src", ["/", "/etc", "/etc/ssl", "/proc", "/sys/fs", "/dev", "/dev/null"])
def test_sensitive_host_paths_are_refused(config, src):
    with pytest.raises(UserError, match=r"^volumes\[0\] source: .*allow_sensitive_binds"):
        spec(config, volumes=[f"{src}:/x"])


def test_state_dir_socket_and_symlinks_to_them_are_refused(config, host):
    for src in (host / "state", host / "to-state", host / "to-etc", host, host / "run"):
        with pytest.raises(UserError, match=r"^volumes\[0\] source: "):
            spec(config, volumes=[f"{src}:/x"])


def test_allow_sensitive_binds(host):
    cfg = load_config(None, {"agent.state_dir": str(host / "state")})
    cfg = cfg.replace(security=dataclasses.replace(cfg.security, allow_sensitive_binds=True))
    s = spec(cfg, volumes=["/etc:/host-etc:ro"])
    assert s.volumes[0].src == "/etc"


def test_noexec_volume_from_json_and_from_a_bundle(config, host):
    s = spec(config, volumes=[{"src": str(host / "data"), "dst": "/d", "noexec": True}, f"{host}/data:/e"])
    assert [v.noexec for v in s.volumes] == [True, False]
    assert ContainerSpec.from_dict(s.to_dict()).volumes == s.volumes
    with pytest.raises(UserError, match=r"^volumes\[0\]\.noexec: "):
        spec(config, volumes=[{"src": str(host / "data"), "dst": "/d", "noexec": "yes"}])
    bundle = host / "bundle"
    runc_spec(bundle)
    doc = json.loads((bundle / "config.json").read_text())
    doc["mounts"] = [{"destination": "/d", "type": "bind", "source": str(host / "data"),
                      "options": ["rbind", "noexec", "ro"]}]
    write_config(bundle, doc)
    v = from_bundle(str(bundle), config, name="b").volumes[0]
    assert (v.noexec, v.ro) == (True, True)


def test_resolved_source_is_what_the_launcher_gets(config, host):
    (host / "alias").symlink_to(host / "data")
    s = spec(config, volumes=[f"{host}/alias:/d"])
    assert s.volumes[0].src == str(host / "data")


def test_destination_through_a_symlink_is_left_to_the_launcher(config, host):
    # the launcher resolves a destination inside the rootfs (RESOLVE_IN_ROOT):
    # rootfs/etc -> /etc means the container's own /etc, never the host's
    rootfs = str(host / "rootfs")
    s = spec(config, rootfs=rootfs, volumes=[f"{host}/data:/etc/x"])
    assert s.volumes[0].dst == "/etc/x"
    ok = spec(config, rootfs=rootfs, volumes=[f"{host}/data:/inner/x"])
    assert ok.volumes[0].dst == "/inner/x"
    with pytest.raises(UserError, match=r"volumes\[0\] destination"):
        spec(config, rootfs=rootfs, volumes=[f"{host}/data:/"])


@pytest.mark.parametrize("root", ["/", "/tmp/..", "//"])
def test_rootfs_that_is_the_host_root_is_refused_with_a_hint(config, root):
    with pytest.raises(UserError, match=r"^rootfs: \".*\" is the host's root; omit rootfs \(agentctl: no --rootfs\)"):
        spec(config, rootfs=root)


def test_rootfs_symlink_to_the_host_root_is_refused(config, host):
    (host / "to-root").symlink_to("/")
    with pytest.raises(UserError, match=r"^rootfs: .* is the host's root"):
        spec(config, rootfs=str(host / "to-root"))


def rootfs_cases(host):
    (host / "state" / "sub").mkdir(exist_ok=True)
    return {
        "state dir": host / "state", "holds the state dir": host, "in the state dir": host / "state" / "sub",
        "symlink to the state dir": host / "to-state", "socket dir": host / "run",
        "/etc": "/etc", "symlink to /etc": host / "to-etc", "magic link": "/proc/self/root",
        "under /proc": "/proc/1/root", "/sys": "/sys", "/dev": "/dev",
    }


def test_rootfs_and_bundle_root_path_share_one_rule(host):
    cfg = load_config(None, {"agent.state_dir": str(host / "state"), "agent.socket": str(host / "run" / "a.sock")})
    (host / "run" / "a.sock").write_text("")
    for what, path in rootfs_cases(host).items():
        with pytest.raises(UserError) as exc:
            spec(cfg, rootfs=str(path))
        msg = str(exc.value)
        assert msg.startswith("rootfs: ") and "\n" not in msg, (what, msg)
        assert msg.endswith("does not hold its socket"), (what, msg)   # says what is accepted
        bundle = host / f"bundle-{len(what)}-{what.replace(' ', '-').replace('/', '')}"
        runc_spec(bundle)
        doc = json.loads((bundle / "config.json").read_text())
        doc["root"]["path"] = str(path)
        write_config(bundle, doc)
        with pytest.raises(UserError) as exc:
            from_bundle(str(bundle), cfg, name="b")
        assert str(exc.value).startswith("config.json root.path: "), (what, str(exc.value))
        assert str(exc.value).split(": ", 1)[1] == msg.split(": ", 1)[1], what
    # allow_sensitive_binds opens volumes, never the rootfs rule
    cfg = cfg.replace(security=dataclasses.replace(cfg.security, allow_sensitive_binds=True))
    with pytest.raises(UserError, match="^rootfs: "):
        spec(cfg, rootfs="/etc")


def test_image_is_never_empty_and_names_what_the_container_runs(config, host):
    """One rule (agent.model.image_ref) for ps, inspect and the image label of /metrics."""
    from agent.model import image_ref
    assert spec(config).image == "host"
    assert spec(config, rootfs=str(host / "rootfs")).image == "rootfs:" + str(host / "rootfs")
    # a symlinked path names the directory it resolves to: one container, one value
    (host / "alias").symlink_to(host / "rootfs")
    assert spec(config, rootfs=str(host / "alias")).image == "rootfs:" + str(host / "rootfs")
    # stored by an older agent (a bare path): the same values
    assert image_ref(str(host / "rootfs"), str(host / "rootfs")) == "rootfs:" + str(host / "rootfs")
    assert image_ref(str(host / "b"), str(host / "b" / "rootfs")) == "bundle:" + str(host / "b")
    assert image_ref("", "") == "host" and image_ref("docker.io/library/alpine:3", "/x") == "docker.io/library/alpine:3"
    s = spec(config, rootfs=str(host / "rootfs"))
    assert ContainerSpec.from_dict(json.loads(json.dumps(s.to_dict()))).image == s.image


def test_restart_policy():
    assert parse_restart("on-failure:0") == RestartPolicy("on-failure", 0)
    p = parse_restart("on-failure:2")
    assert p.should_restart(1, None, 0) and p.should_restart(None, 9, 1)
    assert not p.should_restart(1, None, 2) and not p.should_restart(0, None, 0)
    assert parse_restart("always").should_restart(0, None, 100)
    assert not parse_restart("no").should_restart(1, None, 0)
    assert str(p) == "on-failure:2" and str(parse_restart("")) == "no"


# ------------------------------------------------------------------ OCI bundles


def runc_spec(bundle):
    """config.json as `runc spec` writes it (the real tool when installed)."""
    bundle.mkdir(exist_ok=True)
    if shutil.which("runc"):
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    else:  # the same shape, trimmed
        (bundle / "config.json").write_text(json.dumps({
            "ociVersion": "1.0.2", "process": {"terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                                               "env": ["PATH=/usr/bin:/bin", "TERM=xterm"], "cwd": "/"},
            "root": {"path": "rootfs", "readonly": True}, "hostname": "runc",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]},
                      "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]}}))
    (bundle / "rootfs" / "bin").mkdir(parents=True, exist_ok=True)
    return json.loads((bundle / "config.json").read_text())


def write_config(bundle, doc):
    (bundle / "config.json").write_text(json.dumps(doc))


def test_bundle_as_runc_spec_writes_it(config, host):
    bundle = host / "bundle"
    runc_spec(bundle)
    s = from_bundle(str(bundle), config, name="oci")
    assert s.name == "oci" and s.argv == ("sh",)
    assert s.env.get("TERM") == "xterm"
    assert s.rootfs == str(bundle / "rootfs") and s.image == "bundle:" + str(bundle)
    assert s.hostname == "runc"
    assert s.network == "none"  # runc spec asks for a new network namespace
    assert s.volumes == ()  # proc, tmpfs, devpts, ...: provided by the launcher, not binds
    assert s.limits.is_empty()


def test_bundle_resources_binds_and_user(config, host):
    bundle = host / "bundle"
    doc = runc_spec(bundle)
    doc["process"].update(args=["/bin/app", "--flag"], cwd="/work", user={"uid": 1000, "gid": 1000})
    doc["mounts"].append({"destination": "/data", "type": "bind", "source": str(host / "data"),
                          "options": ["rbind", "ro"]})
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] != "network"]
    doc["linux"]["resources"] = {"memory": {"limit": 128 << 20}, "cpu": {"quota": 50000, "period": 100000},
                                 "pids": {"limit": 32}}
    write_config(bundle, doc)
    s = from_bundle(str(bundle), config, name="app", restart="on-failure:1", limits={"pids": 64})
    assert s.argv == ("/bin/app", "--flag") and s.workdir == "/work" and (s.uid, s.gid) == (1000, 1000)
    assert [(v.src, v.dst, v.ro) for v in s.volumes] == [(str(host / "data"), "/data", True)]
    assert s.network == "host"
    assert s.limits.memory_max == 128 << 20 and s.limits.cpu_quota_us == 50000
    assert s.limits.pids_max == 64  # the request overrides the bundle
    assert s.restart == RestartPolicy("on-failure", 1)


def test_bundle_command_can_be_overridden(config, host):
    bundle = host / "bundle"
    runc_spec(bundle)
    s = from_json({"name": "x", "bundle": str(bundle), "argv": ["echo", "hi"]}, config)
    assert s.argv == ("echo", "hi")


@pytest.mark.parametrize("mutate,prefix", [
    (lambda d: d.pop("process"), "config.json process.args"),
    (lambda d: d["process"].update(args=[]), "config.json process.args"),
    (lambda d: d["process"].update(user={"uid": -1, "gid": 0}), "config.json process.user.uid"),
    (lambda d: d["root"].update(path="../outside"), "config.json root.path"),
    (lambda d: d["mounts"].append({"destination": "/x", "type": "bind", "source": "/etc"}), "volumes[0] source"),
    (lambda d: d["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"}),
     "config.json linux.namespaces"),
    (lambda d: d["linux"].update(namespaces=[{"type": "user"}], uidMappings=[{"containerID": 0, "hostID": 1 << 20,
                                                                              "size": 65536}]),
     "config.json linux.gidMappings: missing"),
    (lambda d: d["linux"].update(namespaces=[{"type": "user"}], uidMappings=[{"containerID": 0, "hostID": 1 << 20}],
                                 gidMappings=[{"containerID": 0, "hostID": 1 << 20, "size": 1}]),
     "config.json linux.uidMappings[0]"),
    (lambda d: d["linux"]["namespaces"].append({"type": "network", "path": "/proc/1/ns/net"}), "config.json linux.namespaces"),
    (lambda d: d["linux"].update(resources={"memory": {"limit": "lots"}}), "config.json linux.resources"),
    (lambda d: d["linux"].update(resources={"cpu": [1]}), "config.json linux.resources.cpu"),
])
def test_bad_bundles(config, host, mutate, prefix):
    bundle = host / "bundle"
    doc = runc_spec(bundle)
    (host / "outside").mkdir()
    mutate(doc)
    write_config(bundle, doc)
    with pytest.raises(UserError) as exc:
        from_bundle(str(bundle), config, name="bad")
    assert str(exc.value).startswith(prefix), str(exc.value)


def test_bundle_root_symlink_out_of_the_bundle_is_refused(config, host):
    bundle = host / "bundle"
    runc_spec(bundle)
    shutil.rmtree(bundle / "rootfs")
    os.symlink("/etc", bundle / "rootfs")
    with pytest.raises(UserError, match="^config.json root.path: .*leads out of the bundle"):
        from_bundle(str(bundle), config, name="bad")


def test_bundle_without_config(config, host):
    (host / "empty").mkdir()
    with pytest.raises(UserError, match="^bundle: .*no config.json"):
        from_bundle(str(host / "empty"), config, name="x")
    (host / "empty" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="^bundle: config.json is not valid JSON"):
        from_bundle(str(host / "empty"), config, name="x")


# ------------------------------------------------------------------ user namespaces

def test_userns_defaults_auto_with_a_rootfs_and_host_without(config, host):
    assert spec(config, rootfs=str(host / "rootfs")).userns == "auto"
    assert spec(config).userns == "host"
    assert spec(config, rootfs=str(host / "rootfs"), userns="host").userns == "host"
    mapping = {"uid": [[0, 1 << 20, 65536]], "gid": [[0, 1 << 20, 65536]]}
    assert spec(config, rootfs=str(host / "rootfs"), userns=mapping).userns == mapping


@pytest.mark.parametrize("kw,prefix", [
    ({"userns": "auto"}, "userns: a user namespace needs a rootfs"),
    ({"userns": "private", "rootfs": True}, "userns: \"private\" is not"),
    ({"userns": "auto", "rootfs": True, "user": "70000"}, "user: 70000:0 is outside the container's ids"),
    ({"userns": {"uid": [[0, 1 << 20, 10]], "gid": [[0, 1 << 20, 10]]}, "rootfs": True, "user": "10"},
     "user: uid 10 is not mapped"),
    ({"userns": {"uid": [[0, 1 << 20, 10], [5, 1 << 21, 10]], "gid": [[0, 1, 1]]}, "rootfs": True},
     "userns.uid[1]: overlaps line 0 inside"),
    ({"userns": {"uid": [[0, 1 << 20, 0]], "gid": [[0, 1, 1]]}, "rootfs": True}, "userns.uid[0]: ids must"),
    ({"userns": {"uid": [[0, 1 << 20, 1]]}, "rootfs": True}, "userns: must be"),
])
def test_bad_userns_is_one_line_naming_the_field(config, host, kw, prefix):
    if kw.pop("rootfs", None):
        kw["rootfs"] = str(host / "rootfs")
    with pytest.raises(UserError) as exc:
        spec(config, **kw)
    assert str(exc.value).startswith(prefix), str(exc.value)


def test_bundle_user_namespace_follows_config_json(config, host):
    bundle = host / "bundle"
    doc = runc_spec(bundle)
    assert from_bundle(str(bundle), config, name="b").userns == "host"   # no user namespace asked for
    doc["linux"]["namespaces"].append({"type": "user"})
    write_config(bundle, doc)
    assert from_bundle(str(bundle), config, name="b").userns == "auto"   # asked, no mappings: allocated
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 3 << 20, "size": 65536}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 4 << 20, "size": 1000}]
    write_config(bundle, doc)
    s = from_bundle(str(bundle), config, name="b")
    assert s.userns == {"uid": [[0, 3 << 20, 65536]], "gid": [[0, 4 << 20, 1000]]}
    assert ContainerSpec.from_dict(s.to_dict()).userns == s.userns
    assert from_bundle(str(bundle), config, name="b", userns="host").userns == "host"  # the request overrides


# ------------------------------------------------- lone surrogates (issue 11 leftover)
# "\ud800" is valid JSON but not Unicode text: the launcher could not encode
# it (argv, env, paths), nor the logs. Every string a spec takes is refused
# by the one rule (agent.labels.unrenderable) with one line naming the field.

LONE = ["\ud800", "x\udfffy", "\udc80"]   # \udc80 is what surrogateescape would map to byte 0x80


def refused(config, **kw) -> str:
    with pytest.raises(UserError) as e:
        spec(config, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "surrogate" in msg and "valid Unicode text" in msg, msg
    msg.encode("ascii")   # printable anywhere: the bad text is shown escaped, never raw
    return msg


@pytest.mark.parametrize("bad", LONE)
@pytest.mark.parametrize("field,value,where", [
    ("argv", lambda b: ["sh", "-c", b], "argv[2]: "),
    ("env", lambda b: {"K": b}, 'env.K: the value of variable "K" '),
    ("env", lambda b: [f"K={b}"], 'env[0]: the value of variable "K" '),
    ("env", lambda b: {f"K{b}": "v"}, 'env["K'),
    ("env", lambda b: [f"K{b}=v"], 'env[0]: the variable name "K'),
    ("workdir", lambda b: f"/srv/{b}", "workdir: "),
    ("volumes", lambda b: [f"/tmp/{b}:/data"], "volumes[0] source: "),
    ("volumes", lambda b: [f"/usr:/data{b}"], "volumes[0] destination: "),
    ("volumes", lambda b: [{"src": "/usr", "dst": f"/d{b}"}], "volumes[0] destination: "),
    ("rootfs", lambda b: f"/tmp/{b}", "rootfs: "),
    ("bundle", lambda b: f"/tmp/{b}", "bundle: "),
    ("devices", lambda b: [f"/dev/null:/dev/n{b}"], "devices[0]: "),
    ("labels", lambda b: {"team": b}, 'labels.team: the value of label "team" '),
])
def test_a_lone_surrogate_is_refused_naming_the_field(config, field, value, where, bad):
    assert refused(config, **{field: value(bad)}).startswith(where)


@pytest.mark.parametrize("bad", LONE)
def test_a_lone_surrogate_in_a_host_name_or_a_key_is_refused(config, bad):
    with pytest.raises(UserError, match="^hostname: "):
        spec(config, hostname=f"h{bad}")
    for body in ({bad: 1}, {"limits": {bad: "1M"}}, {"volumes": [{"src": "/tmp", "dst": "/d", bad: True}]}):
        with pytest.raises(UserError) as e:
            spec(config, **body)
        str(e.value).encode("ascii")   # the key shown escaped


def test_a_device_with_a_lone_surrogate_is_a_usage_error_not_a_crash():
    """os.path.realpath would raise UnicodeEncodeError (a 500) on it."""
    from agent.spec import split_device
    with pytest.raises(ValueError, match="surrogate"):
        split_device("/dev/\ud800")


@pytest.mark.parametrize("where,edit", [
    ("config.json process.args[1]", lambda d: d["process"].__setitem__("args", ["sh", "\ud800"])),
    ("config.json process.env[0]", lambda d: d["process"].__setitem__("env", ["K=\ud800"])),
    ("workdir", lambda d: d["process"].__setitem__("cwd", "/\ud800")),
    ("config.json linux.maskedPaths[0]", lambda d: d["linux"].__setitem__("maskedPaths", ["/proc/\ud800"])),
    ("config.json linux.sysctl.kernel.shmmax", lambda d: d["linux"].__setitem__("sysctl", {"kernel.shmmax": "\ud800"})),
])
def test_a_lone_surrogate_in_a_bundle_is_refused_naming_the_field(config, host, where, edit):
    bundle = host / "bundle"
    doc = runc_spec(bundle)
    edit(doc)
    write_config(bundle, doc)
    assert "\\ud800" in (bundle / "config.json").read_text()   # as JSON has it
    with pytest.raises(UserError) as e:
        from_bundle(str(bundle), config, name="b")
    msg = str(e.value)
    assert msg.startswith(where) and "surrogate" in msg and "\n" not in msg, msg


def test_the_backstop_names_where_a_string_sits():
    from agent.specparts.fields import refuse_unrenderable
    refuse_unrenderable("", {"a": ["ok", {"b": "ünïcødé ✓"}]})
    with pytest.raises(UserError, match=r"^oci\.masked_paths\[1\]: contains a lone surrogate"):
        refuse_unrenderable("", {"oci": {"masked_paths": ["/a", "/\ud800"]}})


def test_text_that_is_unicode_still_passes(config):
    s = spec(config, argv=["echo", "ünïcødé ✓ 😀"], env={"K": "ü"}, workdir="/srv/ü")
    assert s.argv[1] == "ünïcødé ✓ 😀" and s.env["K"] == "ü" and s.workdir == "/srv/ü"


def test_spec_defaults_are_the_embedded_configs():
    """agent/specparts/defaults.py holds what a spec gets without a config:
    the same values as agent/default.toml."""
    from agent.specparts import defaults
    c = load_config(None, {})
    assert defaults.LOG_MAX_BYTES == c.logs.max_bytes
    assert defaults.NETWORK == c.network.default
