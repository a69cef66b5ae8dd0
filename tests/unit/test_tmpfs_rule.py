"""runtime/tmpfs: Docker's --tmpfs syntax, the one rule agentd and the launcher share."""
import pytest

from runtime import spawn, tmpfs


def test_docker_defaults_and_options():
    t = tmpfs.parse("/run/x/:size=64m,mode=755,exec")
    assert (t.dst, t.options, t.ro, t.noexec, t.nosuid) == ("/run/x", {"size": "64m", "mode": "0755"}, False, False, True)
    assert tmpfs.parse("/t").noexec and tmpfs.parse("/t").nosuid
    assert tmpfs.check(0, t.to_dict()) == t


@pytest.mark.parametrize("text, says", [
    ("/", "the root cannot be a tmpfs"), ("/dev/shm", "under /dev"), ("/a/../b", "'..'"),
    ("/t:dev", "'dev' is refused"), ("/t:size=1x", "not an option"), ("/t:mode=999", "not an option"),
    ("/t:bogus", "not an option"), ("t", "absolute"),
])
def test_refusals_name_what_was_wrong(text, says):
    with pytest.raises(tmpfs.TmpfsError, match=says):
        tmpfs.parse(text)


def test_the_launcher_refuses_a_tmpfs_on_the_hosts_tree_and_duplicates():
    base = {"argv": ["true"], "cgroup": "/sys/fs/cgroup/x", "stdout": "/tmp/o", "stderr": "/tmp/e"}
    one = tmpfs.parse("/t").to_dict()
    with pytest.raises(spawn.SpecError, match="needs a rootfs"):
        spawn.SpawnSpec.from_dict({**base, "tmpfs": [one]})
    with pytest.raises(spawn.SpecError, match="two tmpfs mounts on /t"):
        spawn.SpawnSpec.from_dict({**base, "rootfs": "/srv/r", "tmpfs": [one, one]})
    with pytest.raises(spawn.SpecError, match="spec.tmpfs\\[0\\]"):
        spawn.SpawnSpec.from_dict({**base, "rootfs": "/srv/r", "tmpfs": [{**one, "options": {"size": "1; rm"}}]})
    assert spawn.SpawnSpec.from_dict({**base, "rootfs": "/srv/r", "tmpfs": [one]}).tmpfs[0].dst == "/t"
