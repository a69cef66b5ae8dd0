"""Shared helpers for the unit tier: cgroup files captured from real kernels.

tests/unit/fixtures/<kernel>/ holds flat copies of cgroup files (cpu.stat,
memory.stat, io.stat, cgroup.events, cpu.pressure, ...) read from one real
cgroup of that kernel, and possibly subfolders for more cgroups (frozen/,
oom/, root/, ...). Tests iterate over every folder present, nested ones too.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/: helpers

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture_dirs() -> list[str]:
    """Every captured cgroup folder (a folder holding cgroup.* or cpu.* files)."""
    found = []
    for dirpath, _dirs, files in os.walk(FIXTURES):
        if dirpath != FIXTURES and any(f.startswith(("cgroup.", "cpu.")) for f in files):
            found.append(dirpath)
    return sorted(found)


def fixture_files(name: str) -> list[str]:
    """Every captured copy of the cgroup file ``name`` across kernels."""
    return [os.path.join(d, name) for d in fixture_dirs()
            if os.path.isfile(os.path.join(d, name))]


def read_fixture(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(params=fixture_dirs(), ids=lambda d: os.path.relpath(d, FIXTURES))
def fixture_dir(request):
    """One captured kernel folder per parametrised run."""
    return request.param
