"""The wheel carries every package of the source tree, and agentctl runs from it.

pyproject.toml lists its packages by hand; a subpackage left out would be
missing from an installed agent while every test run from the source tree
passes. This builds the real wheel (pip, setuptools, no network) from a copy
of the tree, unpacks it into a directory of its own and runs agentctl's
entry point from there, nothing of the source tree on the path.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOP = ("agent", "runtime", "exporters")


def _source_packages() -> set[str]:
    out = set()
    for top in TOP:
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in files:
                out.add(os.path.relpath(dirpath, ROOT).replace(os.sep, "."))
    return out


def test_the_wheel_holds_every_package_and_agentctl_runs_from_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for top in TOP:
        shutil.copytree(os.path.join(ROOT, top), src / top, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").iterdir()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    shipped = {os.path.dirname(n).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert _source_packages() - shipped == set(), "packages missing from the wheel (pyproject.toml)"

    entry = configparser.ConfigParser()
    (info,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    entry.read_string((tmp_path / "site" / info).read_text())
    module, _, func = entry["console_scripts"]["agentctl"].partition(":")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r})\n"
            f"import {module} as m\n"
            f"assert m.__file__.startswith({str(tmp_path / 'site')!r}), m.__file__\n"
            f"sys.exit(m.{func}(['--help']))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Drive cgroup-agent (agentd)" in r.stdout and "checkpoint" in r.stdout
