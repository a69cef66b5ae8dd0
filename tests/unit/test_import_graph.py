"""The import graph of agent/, runtime/ and exporters/ follows the one-way flow.

Every import statement is read with ast, those inside functions and methods
included (a function-level import hides a dependency, it does not remove
it). The test fails on:
- any import cycle between project modules;
- runtime importing agent or exporters (runtime is the bottom layer);
- exporters importing agent other than through the modules listed in
  EXPORTER_MAY_IMPORT (records and model, and the few shared leaf modules
  named there with the reason);
- the CLI (agent.cli) importing anything of the project but the modules
  listed in CLI_MAY_IMPORT, or anything outside agent.cli importing it.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("agent", "runtime", "exporters")

# What exporters may import of agent, and why.
EXPORTER_MAY_IMPORT = {
    "agent.records": "record columns, ids and their export shaping",
    "agent.model": "the read-only container views",
    "agent.pricing": "the rate card and the money/quantity rules the records are priced with",
    "agent.selfmetrics": "the agent's own metrics registry, where sinks count rows and errors",
    "agent.labels": "the label-name rule for metric labels (prometheus exporter)",
}

# What agentctl (agent.cli and below) may import of the rest, and why: the
# shared rules and wire pieces, never the daemon's machinery. A name covers
# the modules below it (agent.spec covers agent.spec.*).
CLI_MAY_IMPORT = {
    "agent.wire": "the stream framing, shared with the server",
    "agent.rules": "the container-name and restart-policy rules",
    "agent.errors": "UserError, raised by the network-name check",
    "agent.model": "the one state enum (ps --filter status=)",
    "agent.spec": "split_device: Docker's --device syntax, parsed in one place",
    "agent.config": "parse_duration: the one duration rule (--since 10m)",
    "agent.network.netspec": "the network-name rule",
    "runtime.limits": "limit flag values checked before the request (--memory 512M)",
    "runtime.errors": "LimitError, what runtime.limits raises",
    "runtime.caps": "--cap-add/--cap-drop names",
    "runtime.tmpfs": "Docker's --tmpfs syntax",
    "runtime.rules": "the one signal rule (kill -s)",
    "exporters.billing": "agentctl usage renders CSV, JSON lines and FOCUS as the exporters do",
}

# Edges left out of the cycle check, each with its reason: none today (the
# last three went with the API split and agent/cli/errors.py). Add one only
# with the reason it cannot be broken yet.
CYCLE_EXEMPT: dict[tuple[str, str], str] = {}


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, pkg)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    out[_module_name(path)] = path
    return out


def _imports(name: str, path: str, modules, source: str | None = None) -> set[str]:
    """Project modules ``name`` imports, anywhere in the file."""
    if source is None:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    tree = ast.parse(source, path)
    is_pkg = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                up = parts if is_pkg else parts[:-1]
                up = up[: len(up) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:          # import a.b.c where only a.b is ours
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    assert "agent.ledger" in modules and "runtime.stats" in modules, "the walk found no project modules"
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if (v, w) in CYCLE_EXEMPT:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_imports_inside_functions_and_resolves_names(graph):
    modules = _modules()
    src = ("import os\n"
           "class C:\n    def m(self):\n        from exporters.postgres import PostgresSink\n"
           "def f():\n    import agent.ledger.schema\n    from agent import selfmetrics\n"
           "    from runtime.stats import read_sample\n    from . import core\n")
    got = _imports("agent.ledger.x", os.path.join(ROOT, "agent", "ledger", "x.py"), modules, src)
    assert got == {"exporters.postgres", "agent.ledger.schema", "agent.selfmetrics", "runtime.stats",
                   "agent.ledger.core"}
    # and in the tree itself: the daemon side wires the exporters
    assert {"agent.ledger", "exporters.postgres", "exporters.focus"} <= graph["agent.daemon.agentd"]


def test_no_import_cycle(graph):
    cycles = _cycles(graph)
    detail = []
    for comp in cycles:
        members = set(comp)
        edges = sorted(f"{a} -> {b}" for a in comp for b in graph[a] if b in members)
        detail.append("cycle: " + ", ".join(edges))
    assert not cycles, "\n".join(detail)


def test_runtime_imports_nothing_of_agent_or_exporters(graph):
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.split(".")[0] == "runtime"
                 for t in ts if t.split(".")[0] in ("agent", "exporters"))
    assert not bad, "runtime must not import agent/exporters: " + ", ".join(bad)


def test_exporters_import_agent_only_through_records_and_model(graph):
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.split(".")[0] == "exporters"
                 for t in ts if t.split(".")[0] == "agent" and t != "agent" and t not in EXPORTER_MAY_IMPORT)
    assert not bad, "exporters may import of agent only " + ", ".join(sorted(EXPORTER_MAY_IMPORT)) \
        + "; found: " + ", ".join(bad)


def test_the_ledger_imports_no_exporter(graph):
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m == "agent.ledger" or m.startswith("agent.ledger.")
                 for t in ts if t.split(".")[0] == "exporters")
    assert not bad, ", ".join(bad)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_cli_imports_only_the_shared_pieces(graph):
    assert "agent.cli.dispatch" in graph, "no agent/cli/ package"
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if _in(m, "agent.cli")
                 for t in ts if not _in(t, "agent.cli") and not any(_in(t, ok) for ok in CLI_MAY_IMPORT))
    assert not bad, "agent.cli may import only " + ", ".join(sorted(CLI_MAY_IMPORT)) + "; found: " + ", ".join(bad)


def test_nothing_outside_the_cli_imports_it(graph):
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if not _in(m, "agent.cli")
                 for t in ts if _in(t, "agent.cli"))
    assert not bad, "the daemon, runtime and exporters must not import agentctl: " + ", ".join(bad)
