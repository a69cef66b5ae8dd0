"""The API's backend interface (agent/api/backend.py) holds at both ends.

- Each Protocol is satisfied by the concrete class the daemon builds: every
  member exists on it, a method with the same parameter names and kinds in
  the same order, a default wherever the Protocol has one.
- The handlers (agent/api/*.py, read with ast) use nothing of a backend
  object that its Protocol does not declare, so the interface cannot drift
  silently from what the API calls.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import textwrap

import pytest

from agent.api import backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_DIR = os.path.join(ROOT, "agent", "api")

# How the handlers reach each backend object: an attribute of that name
# (self.sup, self.api.images, getattr(self.sup, "net", None)), a call of an
# accessor of that name (self._net()), or a local name bound to one of those.
REACHED_AS = {
    "sup": backend.Containers,
    "supervisor": backend.Containers,
    "launcher": backend.Launcher,
    "net": backend.Networks,
    "_net()": backend.Networks,
    "layout": backend.CgroupLayout,
    "userns_pool": backend.UsernsPool,
    "collector": backend.Stats,
    "_snapshot()": backend.StatsSnapshot,
    "ledger": backend.Usage,
    "budgets": backend.Budgets,
    "_budgets()": backend.Budgets,
    "images": backend.Images,
    "checkpoints": backend.Checkpoints,
}
# calls that read a member by name: getattr(owner, "name", None) and
# agent/api/resource.py's backend(owner, "name", absent)
READERS = ("getattr", "backend")
# members of a layout's cgroups (layout.containers.path)
NESTED = {(backend.CgroupLayout, "root"): backend.CgroupNode, (backend.CgroupLayout, "containers"): backend.CgroupNode}


def _members(proto) -> dict[str, object]:
    """The Protocol's own members: name -> function/property, or None for a data attribute."""
    out: dict[str, object] = {}
    for name in getattr(proto, "__annotations__", {}):
        out[name] = None
    for name, value in vars(proto).items():
        if name.startswith("_"):
            continue
        if inspect.isfunction(value) or isinstance(value, property):
            out[name] = value
    return out


def _concrete(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _instance_attributes(cls: type) -> set[str]:
    """Names a class or its bases declare (annotations, dataclass fields) or assign as self.X anywhere."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        names.update(getattr(klass, "__annotations__", {}))
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            for t in targets:
                for el in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(el, ast.Attribute) and isinstance(el.value, ast.Name) and el.value.id == "self":
                        names.add(el.attr)
    return names


def _signature_problems(proto, cls) -> list[str]:
    problems = []
    attrs = _instance_attributes(cls)
    for name, member in _members(proto).items():
        where = f"{proto.__name__}.{name} on {cls.__module__}.{cls.__name__}"
        real = inspect.getattr_static(cls, name, None)
        if member is None or isinstance(member, property):   # a value (attribute or property)
            if real is None and name not in attrs:
                problems.append(f"{where}: missing")
            continue
        if real is None or not callable(getattr(cls, name)):
            problems.append(f"{where}: missing or not a method")
            continue
        want = list(inspect.signature(member).parameters.values())
        have = list(inspect.signature(getattr(cls, name)).parameters.values())
        if [(p.name, p.kind) for p in want] != [(p.name, p.kind) for p in have]:
            problems.append(f"{where}: parameters {[(p.name, p.kind.name) for p in have]}, "
                            f"the interface says {[(p.name, p.kind.name) for p in want]}")
            continue
        for w, h in zip(want, have):
            if w.default is not inspect.Parameter.empty and h.default is inspect.Parameter.empty:
                problems.append(f"{where}: parameter {w.name} has no default; the interface gives one")
    return problems


@pytest.mark.parametrize("proto", list(backend.IMPLEMENTED_BY), ids=lambda p: p.__name__)
def test_concrete_class_satisfies_interface(proto):
    cls = _concrete(backend.IMPLEMENTED_BY[proto])
    assert _members(proto), f"{proto.__name__} declares nothing"
    assert _signature_problems(proto, cls) == []


def test_signature_check_catches_a_mismatch():
    """The checker itself: a class missing a member, or with other parameters, is reported."""

    class Wrong:
        def list(self, everything):  # the interface's list() takes no argument
            return []

        def get(self, name):
            return {}

        def set(self, body):
            return body
        # remove() missing

    problems = _signature_problems(backend.Budgets, Wrong)
    assert any("Budgets.list" in p and "parameters" in p for p in problems), problems
    assert any("Budgets.remove" in p and "missing" in p for p in problems), problems

    class NoDefault:
        def stop(self, name, timeout):
            pass

    assert any("timeout has no default" in p
               for p in _signature_problems(backend.Containers, NoDefault)), "a dropped default went unseen"


def _key(node) -> str | None:
    """How an expression reaches a backend object, as a REACHED_AS key (None: it does not)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name) and f.id in READERS and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            return node.args[1].value
        if isinstance(f, (ast.Attribute, ast.Name)):
            return (f.attr if isinstance(f, ast.Attribute) else f.id) + "()"
    return None


class _Uses(ast.NodeVisitor):
    """Every member read of a backend object in one file: (line, Protocol, member)."""

    def __init__(self):
        self.uses: list[tuple[int, type, str]] = []
        self.aliases: list[dict[str, type]] = [{}]

    def _proto_of(self, node):
        if isinstance(node, ast.Name):
            return self.aliases[-1].get(node.id)
        if isinstance(node, ast.Attribute):
            outer = self._proto_of(node.value)
            if outer is not None and (outer, node.attr) in NESTED:
                return NESTED[outer, node.attr]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in READERS \
                and node.args:
            outer = self._proto_of(node.args[0])
            key = _key(node)
            if outer is not None and key is not None and (outer, key) in NESTED:
                return NESTED[outer, key]
        return REACHED_AS.get(_key(node))

    def _function(self, node):
        self.aliases.append(dict(self.aliases[-1]))
        for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
            if arg.arg in REACHED_AS:       # def containers_cgroup(supervisor)
                self.aliases[-1][arg.arg] = REACHED_AS[arg.arg]
        self.generic_visit(node)
        self.aliases.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Assign(self, node):
        self.generic_visit(node)
        pairs = []
        for t in node.targets:
            if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple) and len(t.elts) == len(node.value.elts):
                pairs += zip(t.elts, node.value.elts)
            else:
                pairs.append((t, node.value))
        for target, value in pairs:
            if isinstance(target, ast.Name):
                proto = self._proto_of(value)
                if proto is not None:
                    self.aliases[-1][target.id] = proto
                else:
                    self.aliases[-1].pop(target.id, None)

    def visit_AnnAssign(self, node):
        self.generic_visit(node)
        if isinstance(node.target, ast.Name) and node.value is not None:
            proto = self._proto_of(node.value)
            if proto is not None:
                self.aliases[-1][node.target.id] = proto

    def _use(self, node, owner, member: str):
        proto = self._proto_of(owner)
        if proto is not None:
            self.uses.append((node.lineno, proto, member))

    def visit_Attribute(self, node):
        if isinstance(node.ctx, ast.Load):
            self._use(node, node.value, node.attr)
        self.generic_visit(node)

    def visit_Call(self, node):
        f = node.func
        if isinstance(f, ast.Name) and f.id in READERS + ("hasattr",) and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            self._use(node, node.args[0], node.args[1].value)
        self.generic_visit(node)


def undeclared_uses(source: str, filename: str = "<api>") -> tuple[list[str], int]:
    """(the uses of a backend member its Protocol does not declare, how many uses were checked)."""
    visitor = _Uses()
    visitor.visit(ast.parse(source, filename))
    bad = [f"{filename}:{line}: {proto.__name__} has no {member!r} (declare it in agent/api/backend.py)"
           for line, proto, member in visitor.uses if member not in _members(proto)]
    return bad, len(visitor.uses)


def _api_sources():
    paths = [os.path.join(API_DIR, n) for n in sorted(os.listdir(API_DIR)) if n.endswith(".py") and n != "backend.py"]
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield os.path.relpath(path, ROOT), f.read()


def test_handlers_use_only_what_the_interface_declares():
    problems, checked, seen = [], 0, set()
    for rel, source in _api_sources():
        bad, n = undeclared_uses(source, rel)
        problems += bad
        checked += n
        visitor = _Uses()
        visitor.visit(ast.parse(source))
        seen.update(proto for _line, proto, _member in visitor.uses)
    assert problems == []
    # the walk does find the calls: each interface is reached from the handlers
    assert seen == set(backend.IMPLEMENTED_BY), f"never reached: {set(backend.IMPLEMENTED_BY) - seen}"
    assert checked >= 60, f"only {checked} uses of backend objects found: the walk lost track of them"


@pytest.mark.parametrize("snippet", [
    "def h(self, name):\n    self.sup.frobnicate(name)\n",
    "def h(self):\n    sup = self.api.supervisor\n    return sup.launcher.attach(1)\n",
    "def h(self):\n    return getattr(self.sup, 'secrets', None)\n",
    "def h(self):\n    return self._net().flush_all()\n",
    "def h(self):\n    svc = self.images\n    svc.push('x')\n",
    "def h(self):\n    layout = getattr(self.sup, 'layout', None)\n    return layout.agentd.path\n",
    "def h(self):\n    return self.api.ledger.records()\n",
    "def h(self):\n    ledger = backend(self.api, 'ledger', None)\n    return ledger.rows()\n",
    "def h(self):\n    return backend(self.sup, 'network', None)\n",
])
def test_an_undeclared_call_is_caught(snippet):
    bad, _checked = undeclared_uses(snippet)
    assert len(bad) == 1, bad


def test_declared_calls_pass():
    ok = ("def h(self, name):\n    info = self.sup.get(name)\n    pid, fds = self.sup.launcher.exec(info.id, ['x'])\n"
          "    api, sup = self.api, self.sup\n    pool = getattr(sup, 'userns_pool', None)\n"
          "    return pool.describe(), sup.layout.containers.path, self._budgets().list()\n")
    bad, checked = undeclared_uses(ok)
    assert bad == [] and checked >= 8
