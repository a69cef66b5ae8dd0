"""The wheel ships every module: pyproject.toml's package list, proved by
building a wheel from a copy of this tree, installing it into an empty
directory and running the installed copy with neither the source tree nor
the editable install within reach (python -S: no .pth files, so no editable
finder; the dependencies come from the venv's site-packages directly).

A subpackage left out of the list (agent.checkpoint was, before the list
became a find) shows here as a missing file, and as an import error in the
installed copy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from configparser import ConfigParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("agent", "runtime", "exporters")
PACKAGE_DATA = ("agent/openapi.json", "agent/default.toml")   # read at run time (config defaults, the API doc)


def _source_files() -> set[str]:
    out = set(PACKAGE_DATA)
    for top in TOP:
        for dirpath, dirnames, files in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            out.update(os.path.relpath(os.path.join(dirpath, f), ROOT) for f in files if f.endswith(".py"))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """-> (the wheel, the directory it is installed in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"   # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "build", "dist",
                                                             "*.egg-info"))
    quiet = ["-q", "--disable-pip-version-check", "--no-index", "--no-deps", "--no-build-isolation"]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", *quiet, "-w", str(tmp / "dist"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"pip wheel failed:\n{r.stdout}\n{r.stderr}"
    (wheel,) = (tmp / "dist").glob("cgroup_agent-*.whl")
    inst = tmp / "installed"
    r = subprocess.run([sys.executable, "-m", "pip", "install", *quiet, "--target", str(inst), str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"pip install failed:\n{r.stdout}\n{r.stderr}"
    return wheel, inst


def _run_installed(inst: Path, *args: str) -> subprocess.CompletedProcess:
    paths = sysconfig.get_paths()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(inst), paths["purelib"], paths["platlib"]]))
    return subprocess.run([sys.executable, "-S", *args], env=env, cwd=inst.parent, capture_output=True, text=True)


def test_the_wheel_holds_every_module_and_the_package_data(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ep = ConfigParser()
        ep.read_string(z.read(entry_points).decode())
    missing = sorted(_source_files() - names)
    assert not missing, f"left out of the wheel: {missing}"
    with open(ROOT / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert dict(ep["console_scripts"]) == scripts and set(scripts) == {"agentd", "agentctl"}


def test_the_installed_copy_imports_every_module_and_runs_its_scripts(built):
    _, inst = built
    code = (
        "import importlib, os, pkgutil, sys\n"
        "inst = sys.argv[1]\n"
        "assert not any('editable' in repr(f) for f in sys.meta_path), sys.meta_path\n"
        "names = []\n"
        "for top in ('agent', 'runtime', 'exporters'):\n"
        "    pkg = importlib.import_module(top)\n"
        "    names += [top] + [m.name for m in pkgutil.walk_packages(pkg.__path__, top + '.')\n"
        "                      if not m.name.endswith('.__main__')]\n"
        "for name in names:\n"
        "    mod = importlib.import_module(name)\n"
        "    assert mod.__file__.startswith(inst + os.sep), (name, mod.__file__)\n"
        "print(len(names))\n"
    )
    r = _run_installed(inst, "-c", code, str(inst))
    assert r.returncode == 0, r.stderr
    expected = {p for p in _source_files() if p.endswith(".py") and not p.endswith("__main__.py")}
    assert int(r.stdout.strip()) == len(expected)   # every module of the tree, each from the installed copy
    r = _run_installed(inst, str(inst / "bin" / "agentd"), "--check")
    assert r.returncode == 0 and r.stdout.strip() == "agentd: config ok (embedded defaults)", r.stderr
    r = _run_installed(inst, str(inst / "bin" / "agentctl"), "--help")
    assert r.returncode == 0 and "usage: agentctl" in r.stdout, r.stderr
