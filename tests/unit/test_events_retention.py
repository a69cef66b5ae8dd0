"""agent/store.py keeps the newest `events_max` rows of `events` (issue 5: no
SQLite growth beyond the records under churn). A real SQLite file in tmp_path;
counts are read through a second connection, as another process would."""
from __future__ import annotations

import os
import sqlite3
from contextlib import closing

import pytest

from agent.store import Store

LIFETIME = ("created", "started", "exited", "removed")  # what one churned container leaves


def on_disk(path) -> list[int]:
    """The seqs in the events table as a separate reader sees them."""
    with closing(sqlite3.connect(path)) as db:
        return [r[0] for r in db.execute("SELECT seq FROM events ORDER BY seq")]


def churn(store: Store, containers: int, start: int = 0) -> None:
    for i in range(start, start + containers):
        cid = f"{i:012x}"
        for kind in LIFETIME:
            store.add_event(cid, f"c{i}", kind, pid=1000 + i)


@pytest.mark.parametrize("events_max,chunk", [(100, 100), (2000, 200)])
def test_keeps_at_most_events_max_plus_a_chunk_newest_in_order(tmp_path, events_max, chunk):
    path = str(tmp_path / "state.db")
    store = Store(path, events_max=events_max)
    counts = []
    with closing(sqlite3.connect(path)) as reader:
        for n in range(1, events_max * 3 + 1):
            assert store.add_event(None, None, "tick", n=n) == n
            counts.append(reader.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    store.close()
    assert max(counts) == events_max + chunk - 1  # the bound is reached, never passed
    assert counts[-1] == events_max  # 3 * events_max is a multiple of the chunk: just pruned
    assert on_disk(path) == list(range(2 * events_max + 1, 3 * events_max + 1))  # the newest, in order


def test_since_paging_follows_across_prunes(tmp_path):
    """A follower paging with since=<last seq> sees every event once, in order,
    while prunes happen between its pages; one that fell behind resumes at the
    oldest kept row."""
    path = str(tmp_path / "state.db")
    store = Store(path, events_max=100)
    got: list[int] = []
    for i in range(50):  # 200 containers, 800 events: 7 prunes
        churn(store, 4, start=i * 4)
        while page := store.events(since=got[-1] if got else 0, limit=7):
            got += [e["seq"] for e in page]
    assert got == list(range(1, 801))

    behind = store.events(since=0, limit=1000)
    oldest = min(on_disk(path))
    assert oldest > 1 and [e["seq"] for e in behind] == list(range(oldest, 801))
    assert behind[-1]["kind"] == "removed" and behind[-1]["id"] == f"{199:012x}" and behind[-1]["pid"] == 1199

    # per container: a recent one keeps its whole lifetime, a pruned one has nothing left
    assert [e["kind"] for e in store.events(f"{199:012x}")] == list(LIFETIME)
    assert store.events(f"{0:012x}") == []
    store.close()


def test_a_lowered_events_max_applies_when_the_store_opens(tmp_path):
    path = str(tmp_path / "state.db")
    store = Store(path, events_max=1000)
    churn(store, 250)
    store.close()
    assert len(on_disk(path)) == 1000

    store = Store(path, events_max=100)
    assert on_disk(path) == list(range(901, 1001))
    assert store.add_event(None, None, "tick") == 1001  # seq keeps rising past the deleted rows
    store.close()


def test_prune_rolls_back_with_the_callers_transaction(tmp_path):
    """The prune is part of the write that triggered it: a failed transaction
    undoes both the insert and the delete."""
    path = str(tmp_path / "state.db")
    store = Store(path, events_max=100)
    churn(store, 49)  # seq 196: 4 short of the first prune at 200
    with pytest.raises(RuntimeError):
        with store.transaction():
            churn(store, 1, start=49)  # seq 200 prunes seq <= 100 ...
            assert len(on_disk(path)) == 196  # (a reader sees nothing until commit)
            raise RuntimeError("... and the caller fails")
    assert on_disk(path) == list(range(1, 197))
    churn(store, 1, start=49)
    assert on_disk(path) == list(range(101, 201))
    store.close()


def test_the_db_file_stops_growing_once_the_cap_is_reached(tmp_path):
    """SQLite reuses the pages the prunes free: after the first 2 * events_max
    events, as many again leave the file (closed, WAL checkpointed) within 10%."""
    path = str(tmp_path / "state.db")
    events_max = 1000
    sizes = []
    for rnd in range(3):
        store = Store(path, events_max=events_max)
        churn(store, events_max // 2, start=rnd * events_max // 2)
        store.close()
        sizes.append(os.path.getsize(path))
    assert not os.path.exists(path + "-wal")
    assert len(on_disk(path)) < events_max + 100
    # without pruning the second round nearly doubles the file; with it the freed pages are reused
    assert sizes[2] <= sizes[1] * 1.1, sizes
    assert sizes[1] <= sizes[0] * 1.1, sizes
