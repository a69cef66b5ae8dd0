"""Exit records: the launcher writes one per reaped container, durably,
before it tells anyone; agentd acks it (the launcher then deletes it), so no
exit status is lost while agentd is down."""

from __future__ import annotations

import json
import os

from agent.launcher.protocol import ExitRecord


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_exit_record(exits_dir: str, rec: ExitRecord) -> str:
    """tmp, fsync, rename, fsync dir: the record is either whole or absent."""
    final = os.path.join(exits_dir, f"{rec.id}-{rec.pid}.json")
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(rec._asdict()).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    fsync_dir(exits_dir)
    return final


def read_exit_records(exits_dir: str) -> list[ExitRecord]:
    out = []
    try:
        names = sorted(os.listdir(exits_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(exits_dir, name)) as f:
                d = json.load(f)
            out.append(ExitRecord(d["id"], d["pid"], d["exit_code"], d["signal"], d["at"]))
        except (OSError, ValueError, KeyError):
            continue
    out.sort(key=lambda r: r.at)
    return out
