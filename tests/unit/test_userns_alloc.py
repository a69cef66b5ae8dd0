"""runtime/userns.py ranges, subid files, mappings; agent/userns_alloc.py allocation."""
from __future__ import annotations

from pathlib import Path

import pytest

from agent import userns_alloc
from agent.errors import Conflict
from agent.spec import ContainerSpec
from runtime import userns
from runtime.userns import CONTAINER_IDS, Pool, UsernsError


def test_default_range_is_valid_and_documented_in_both_configs():
    start, length = userns.parse_range(userns.DEFAULT_RANGE)
    assert start == 0x70000000 and start + length == 0x7FFE0000 and length // CONTAINER_IDS == 4094
    top = Path(__file__).resolve().parents[2]
    for path in ("agent/default.toml", "deploy/config.example.toml"):
        with open(top / path) as f:
            assert f'userns_range = "{userns.DEFAULT_RANGE}"' in f.read()


@pytest.mark.parametrize("text,msg", [
    ("100000", "is not START:LENGTH"), ("a:b", "is not START:LENGTH"),
    ("0:1000000", "must start at 65536 or above"), ("65535:65536", "must start at 65536"),
    ("100000:65535", "less than one container"), ("4294000000:1000000", "ends past 4294967294"),
])
def test_bad_ranges(text, msg):
    with pytest.raises(UsernsError, match=msg):
        userns.parse_range(text)


def test_read_subids_picks_the_agent_user_by_name_or_uid(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\ncgroup-agent:200000:131072\n# cgroup-agent:1:2\n"
                 "cgroup-agent:300000:100\n991:400000:65536\ncgroup-agent:10:70000\nbroken line\n")
    assert userns.read_subids(str(f)) == [(200000, 131072)]
    assert userns.read_subids(str(f), uid=991) == [(200000, 131072), (400000, 65536)]
    assert userns.read_subids(str(tmp_path / "absent")) == []


def test_pool_prefers_subids_and_falls_back_to_the_config(tmp_path):
    su, sg = tmp_path / "subuid", tmp_path / "subgid"
    su.write_text("cgroup-agent:200000:131072\n")
    sg.write_text("cgroup-agent:500000:65536\n")
    pool = userns.agent_pool("1000000:655360", str(su), str(sg))
    assert pool.uids == ((200000, 131072),) and pool.gids == ((500000, 65536),) and pool.blocks == 1
    assert "subuid" in pool.source
    sg.write_text("someone:500000:65536\n")           # no gid entry: the config's range, for both
    pool = userns.agent_pool("1000000:655360", str(su), str(sg))
    assert pool.source == "security.userns_range" and pool.blocks == 10


def test_allocation_is_first_free_block_and_never_overlaps():
    pool = Pool(((1 << 20, 3 * CONTAINER_IDS),), ((1 << 21, 3 * CONTAINER_IDS),), "test")
    a = pool.allocate([])
    assert a == {"uid": [[0, 1 << 20, CONTAINER_IDS]], "gid": [[0, 1 << 21, CONTAINER_IDS]]}
    b = pool.allocate([a])
    assert b["uid"][0][1] == (1 << 20) + CONTAINER_IDS
    # an explicit mapping sitting in the third block's uids takes it out of the pool
    explicit = {"uid": [[0, (1 << 20) + 2 * CONTAINER_IDS + 5, 1]], "gid": [[0, 7, 1]]}
    with pytest.raises(UsernsError, match="all 3 id ranges of test are in use"):
        pool.allocate([a, b, explicit])
    assert pool.allocate([b, explicit]) == a               # a's block is free again once a is gone


def test_agent_allocation_and_explicit_overlap_refused():
    pool = Pool(((1 << 20, 2 * CONTAINER_IDS),), ((1 << 20, 2 * CONTAINER_IDS),), "test")
    s = ContainerSpec(name="a", argv=("sh",), rootfs="/r", userns="auto")
    a = userns_alloc.resolve(s, pool, {})
    b = userns_alloc.resolve(s, pool, {"a": a.userns, "h": "host"})
    assert a.userns["uid"][0][1] != b.userns["uid"][0][1]
    with pytest.raises(Conflict, match="in use"):
        userns_alloc.resolve(s, pool, {"a": a.userns, "b": b.userns})
    clash = ContainerSpec(name="c", argv=("sh",), rootfs="/r",
                          userns={"uid": [[0, (1 << 20) + 10, 5]], "gid": [[0, 1, 1]]})
    with pytest.raises(Conflict, match="^userns.uid: host uids .* overlap those of container 'a'"):
        userns_alloc.resolve(clash, pool, {"a": a.userns})
    assert userns_alloc.view("host", None) == "host"


def test_map_text_and_host_id():
    lines = [[0, 1000, 10], [100, 5000, 1]]
    assert userns.map_text(lines) == b"0 1000 10\n100 5000 1\n"
    assert userns.host_id(lines, 9) == 1009 and userns.host_id(lines, 100) == 5000
    assert userns.host_id(lines, 10) is None


def _allocate_many(state_dir: str, claims_dir: str, n: int, out) -> None:
    """One agentd's allocations, in a process of its own: n containers, each
    resolved under the host-wide lock against the other agentd's claims."""
    pool = userns.agent_pool(userns.DEFAULT_RANGE, subuid="/nonexistent", subgid="/nonexistent")
    claims = userns_alloc.HostClaims(state_dir, claims_dir)
    live = {}
    for i in range(n):
        spec = userns_alloc.resolve(ContainerSpec(name=f"c{i}", argv=("true",), userns="auto"), pool, live, claims)
        live[spec.name] = spec.userns
    out.put([m["uid"][0][1] for m in live.values()])


def test_two_agentds_allocating_at_once_never_share_a_block(tmp_path):
    """The race: two agentd-like processes (two state dirs, one claims dir)
    allocate 200 blocks each at the same time; the host-wide lock and the
    published claims keep every block to one of them."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    dirs = [tmp_path / "one", tmp_path / "two"]
    for d in dirs:
        d.mkdir()
    procs = [ctx.Process(target=_allocate_many, args=(str(d), str(tmp_path / "claims"), 200, out)) for d in dirs]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    one, two = (set(g) for g in got)
    assert len(one) == len(two) == 200
    assert not one & two, sorted(one & two)[:5]
