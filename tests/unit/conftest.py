"""Shared helpers for the unit tier: cgroup files captured from real kernels.

tests/unit/fixtures/<kernel>/ holds flat copies of cgroup files (cpu.stat,
memory.stat, io.stat, cgroup.events, cpu.pressure, ...) read from one real
cgroup of that kernel. Tests iterate over every folder present.
"""
from __future__ import annotations

import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture_dirs() -> list[str]:
    if not os.path.isdir(FIXTURES):
        return []
    return sorted(os.path.join(FIXTURES, d) for d in os.listdir(FIXTURES)
                  if os.path.isdir(os.path.join(FIXTURES, d)))


def fixture_files(name: str) -> list[str]:
    """Every captured copy of the cgroup file ``name`` across kernels."""
    return [os.path.join(d, name) for d in fixture_dirs()
            if os.path.isfile(os.path.join(d, name))]


def read_fixture(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(params=fixture_dirs(), ids=os.path.basename)
def fixture_dir(request):
    """One captured kernel folder per parametrised run."""
    return request.param
