"""Pure parts of spawning: spec validation, capability masks, the seccomp
program (run through a small BPF interpreter), log rotation and exit records."""
from __future__ import annotations

import errno
import json
import os

import pytest

from agent.launcher import ExitRecord, LogSink, read_exit_records, write_exit_record
from runtime import caps, seccomp
from runtime import namespaces as ns
from runtime.spawn import SpawnSpec, SpecError, exec_failure

BASE = {"argv": ["/bin/true"], "cgroup": "/sys/fs/cgroup/x", "stdout": "/tmp/o", "stderr": "/tmp/e"}


def spec(**kw):
    d = dict(BASE)
    d.update(kw)
    return d


def test_minimal_spec_gets_secure_defaults():
    s = SpawnSpec.from_dict(spec())
    assert s.argv == ("/bin/true",)
    assert s.no_new_privs is True and s.seccomp is True
    assert s.capabilities is None and s.cap_mask == caps.DOCKER_DEFAULT_MASK
    assert s.network == "host" and s.rootfs == "" and s.cwd == "/"
    assert s.unshare_flags == ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC | ns.CLONE_NEWPID


def test_network_none_adds_a_network_namespace():
    assert SpawnSpec.from_dict(spec(network="none")).unshare_flags & ns.CLONE_NEWNET


def test_full_spec_round_trips():
    s = SpawnSpec.from_dict(spec(env={"A": "1"}, cwd="/tmp", uid=1000, gid=100, hostname="web-1",
                                 rootfs="/srv/root", mounts=[{"src": "/a", "dst": "/b", "ro": True}],
                                 log_max_bytes=1024, capabilities=["cap_chown", "NET_RAW"]))
    assert s.mounts[0].ro is True and s.mounts[0].dst == "/b"
    assert s.capabilities == ("CHOWN", "NET_RAW")
    assert s.cap_mask == (1 << 0) | (1 << 13)


MAP = {"uid": [[0, 1 << 30, 65536]], "gid": [[0, 1 << 30, 65536]]}


def test_userns_mapping_is_kept_and_absent_means_the_hosts():
    assert SpawnSpec.from_dict(spec(rootfs="/srv/root", userns=MAP)).userns == MAP
    assert SpawnSpec.from_dict(spec(rootfs="/srv/root")).userns is None


@pytest.mark.parametrize("kw,needle", [
    ({"userns": MAP}, "spec.userns: needs a rootfs"),
    ({"rootfs": "/r", "userns": {"uid": [[0, 1, 0]], "gid": [[0, 1, 1]]}}, "spec.userns.uid[0]"),
    ({"rootfs": "/r", "userns": "auto"}, "spec.userns: must be"),
    ({"rootfs": "/r", "userns": MAP, "uid": 70000}, "spec.uid: 70000 is not mapped"),
    ({"rootfs": "/r", "userns": MAP, "network": "none", "userns_path": "/s/u"}, "spec.userns_path: only with"),
    ({"rootfs": "/r", "network": "none", "netns": "/s/n", "userns_path": "/s/u"}, "spec.userns_path: only with"),
    ({"rootfs": "/r", "userns": MAP, "network": "none", "netns": "/s/n", "userns_path": "u"}, "spec.userns_path"),
])
def test_bad_userns_is_one_line(kw, needle):
    with pytest.raises(SpecError) as e:
        SpawnSpec.from_dict(spec(**kw))
    assert str(e.value).startswith(needle), str(e.value)


def test_the_user_namespace_owning_a_joined_network_namespace_is_kept():
    s = SpawnSpec.from_dict(spec(rootfs="/r", userns=MAP, network="none", netns="/s/n", userns_path="/s/u"))
    assert (s.netns, s.userns_path) == ("/s/n", "/s/u")
    assert not s.unshare_flags & ns.CLONE_NEWNET


def test_rootfs_slash_means_host_root():
    assert SpawnSpec.from_dict(spec(rootfs="/")).rootfs == ""


@pytest.mark.parametrize("field,value,needle", [
    ("argv", [], "spec.argv"),
    ("argv", "ls", "spec.argv"),
    ("argv", ["a\0b"], "spec.argv"),
    ("argv", [""], "spec.argv"),
    ("env", {"A=B": "1"}, "spec.env"),
    ("env", {"A": 1}, "spec.env"),
    ("cwd", "relative", "spec.cwd"),
    ("uid", -1, "spec.uid"),
    ("uid", "0", "spec.uid"),
    ("gid", 2**32, "spec.gid"),
    ("uid", True, "spec.uid"),
    ("hostname", "bad host", "spec.hostname"),
    ("hostname", "x" * 65, "spec.hostname"),
    ("rootfs", "rel/dir", "spec.rootfs"),
    ("rootfs", "/a/../b", "spec.rootfs"),
    ("mounts", [{"src": "/a"}], "spec.mounts[0].dst"),
    ("mounts", [{"src": "a", "dst": "/b"}], "spec.mounts[0].src"),
    ("mounts", [{"src": "/a", "dst": "/b", "ro": "yes"}], "spec.mounts[0].ro"),
    ("mounts", [{"src": "/a", "dst": "/b", "x": 1}], "spec.mounts[0]"),
    ("mounts", {"src": "/a"}, "spec.mounts"),
    ("network", "bridge", "spec.network"),
    ("cgroup", "relative", "spec.cgroup"),
    ("stdout", "", "spec.stdout"),
    ("log_max_bytes", -1, "spec.log_max_bytes"),
    ("no_new_privs", 1, "spec.no_new_privs"),
    ("seccomp", "true", "spec.seccomp"),
    ("capabilities", "ALL", "spec.capabilities"),
    ("capabilities", ["CAP_FLY"], "spec.capabilities"),
    ("colour", "red", "spec.colour"),
])
def test_bad_field_is_one_line_naming_it(field, value, needle):
    with pytest.raises(SpecError) as e:
        SpawnSpec.from_dict(spec(**{field: value}))
    msg = str(e.value)
    assert msg.startswith(needle) and "\n" not in msg


@pytest.mark.parametrize("missing", ["argv", "cgroup", "stdout", "stderr"])
def test_required_fields(missing):
    d = spec()
    del d[missing]
    with pytest.raises(SpecError, match=f"spec.{missing}: required"):
        SpawnSpec.from_dict(d)


def test_spec_must_be_an_object():
    with pytest.raises(SpecError):
        SpawnSpec.from_dict(["argv"])


def test_docker_default_mask_matches_docker():
    # `docker run --rm alpine grep CapEff /proc/self/status` prints 00000000a80425fb
    assert caps.DOCKER_DEFAULT_MASK == 0xA80425FB
    assert "SYS_ADMIN" not in caps.names_of(caps.DOCKER_DEFAULT_MASK)
    assert sorted(caps.names_of(caps.DOCKER_DEFAULT_MASK)) == sorted(caps.DOCKER_DEFAULT)


def test_capability_numbers_match_the_kernel():
    assert caps.CAP_NUMBER["SYS_ADMIN"] == 21
    assert caps.CAP_NUMBER["CHECKPOINT_RESTORE"] == 40
    assert caps.parse_status_mask("CapInh:\t0\nCapEff:\t00000000a80425fb\n") == 0xA80425FB


# ------------------------------------------------------------------ seccomp

PROG = seccomp.build_filter()
EPERM = seccomp.RET_ERRNO | errno.EPERM


def run(nr, *args, arch=seccomp.AUDIT_ARCH_X86_64):
    return seccomp.evaluate(PROG, nr, arch, tuple(args) + (0,) * (6 - len(args)))


@pytest.mark.parametrize("name", sorted(seccomp.DENIED))
def test_denied_syscalls_get_eperm(name):
    assert run(seccomp.DENIED[name]) == EPERM


@pytest.mark.parametrize("nr", [0, 1, 2, 57, 59, 60, 231, 39, 101, 317])  # read write open fork execve exit exit_group getpid ptrace seccomp
def test_ordinary_syscalls_are_allowed(nr):
    assert run(nr) == seccomp.RET_ALLOW


def test_other_architectures_are_killed():
    AUDIT_ARCH_I386 = 0x40000003
    assert run(0, arch=AUDIT_ARCH_I386) == seccomp.RET_KILL_PROCESS


def test_x32_numbers_are_refused():
    assert run(seccomp.X32_SYSCALL_BIT | 1) == EPERM


def test_clone_with_namespace_flags_refused_plain_clone_allowed():
    SIGCHLD = 17
    assert run(seccomp.NR_CLONE, SIGCHLD) == seccomp.RET_ALLOW
    assert run(seccomp.NR_CLONE, 0x003D0F00) == seccomp.RET_ALLOW     # pthread_create flags
    for flag in (ns.CLONE_NEWUSER, ns.CLONE_NEWNS, ns.CLONE_NEWNET, ns.CLONE_NEWPID):
        assert run(seccomp.NR_CLONE, SIGCHLD | flag) == EPERM
    assert run(seccomp.NR_CLONE3) == seccomp.RET_ERRNO | errno.ENOSYS


def test_personality():
    for p in seccomp.ALLOWED_PERSONAS:
        assert run(seccomp.NR_PERSONALITY, p) == seccomp.RET_ALLOW
    assert run(seccomp.NR_PERSONALITY, 0x0400000) == EPERM     # READ_IMPLIES_EXEC


def test_vsock_sockets_refused():
    assert run(seccomp.NR_SOCKET, seccomp.AF_VSOCK) == EPERM
    assert run(seccomp.NR_SOCKET, 2) == seccomp.RET_ALLOW


def test_io_uring_is_refused_as_docker_does():
    # io_uring_setup, io_uring_enter, io_uring_register (x86_64): EPERM, as
    # under Docker's default profile, where they are not on the allowlist
    for nr in (425, 426, 427):
        assert run(nr, 1, 0) == EPERM, nr
    assert run(424, 0, 0) == seccomp.RET_ALLOW     # pidfd_send_signal, its neighbour


def test_program_is_small_and_jumps_fit():
    assert len(PROG) < 120
    assert all(0 <= i.jt <= 255 and 0 <= i.jf <= 255 for i in PROG)


# ------------------------------------------------------------------ logs and exit records

def test_log_sink_never_passes_the_cap(tmp_path):
    path = str(tmp_path / "out.log")
    sink = LogSink(path, 100)
    for i in range(25):
        sink.write(b"%02d-456789\n" % i)      # 10 bytes each, 250 in all
    sink.close()
    cur, old = open(path, "rb").read(), open(path + ".1", "rb").read()
    assert len(cur) <= 100 and len(old) == 100
    assert (old + cur).endswith(b"24-456789\n")
    assert len(old + cur) == 250 - 100      # the first 100 bytes were rotated away twice over


def test_log_sink_uncapped(tmp_path):
    path = str(tmp_path / "out.log")
    sink = LogSink(path, 0)
    sink.write(b"x" * 100000)
    sink.close()
    assert os.path.getsize(path) == 100000 and not os.path.exists(path + ".1")


def test_exit_records_round_trip(tmp_path):
    d = str(tmp_path)
    a = ExitRecord("abc", 10, 137, 9, 1.5)
    b = ExitRecord("def", 11, 0, None, 2.5)
    write_exit_record(d, b)
    write_exit_record(d, a)
    open(os.path.join(d, "torn.json.tmp"), "w").write("{")
    assert read_exit_records(d) == [a, b]
    assert json.load(open(os.path.join(d, "abc-10.json")))["signal"] == 9


@pytest.mark.parametrize("message, reason", [
    ("exec /bin/nope: No such file or directory", "exec_not_found"),
    ("exec /bin/x/y: Not a directory", "exec_not_found"),
    ("exec nope: executable file not found in $PATH", "exec_not_found"),
    ("exec /etc/passwd: Permission denied", "exec_not_executable"),
    ("exec /tmp/garbage: Exec format error", "exec_not_executable"),
    ("chdir /nope: No such file or directory", None),
    ("container setup: OSError: boom", None),
])
def test_exec_failure_names_what_a_shell_would_exit_127_or_126_for(message, reason):
    assert exec_failure(message) == reason
