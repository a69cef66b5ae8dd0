"""Write a Limits value to a cgroup: all of it, or nothing.

1. Every controller the limits need must be in the cgroup's
   cgroup.controllers (enabled in the parent's subtree_control); otherwise
   ControllerMissing names every missing one, each with why, in one message,
   and nothing is written (``exc.missing`` maps each to its reason).
2. Each file's previous contents are read, then the new contents written.
   io.max is made exactly ``limits.io_max``: devices limited before but not
   named any more are reset to max (``io_max=()`` clears every device).
   If a write fails, what was already written is restored (best effort,
   newest first) before the error is raised.
3. The limits in effect are read back and returned: never report a limit
   as applied that the kernel does not hold.
"""
from __future__ import annotations

import errno

from runtime.cgroupfs import V2_CONTROLLERS, Cgroup, controller_status
from runtime.errors import CgroupError, CgroupGone, ControllerMissing, LimitError
from runtime.controllers.io import parse_io_max_line
from runtime.controllers.value import FILE_FIELDS, Limits, read_limits


def check_controllers(cg, limits: Limits) -> None:
    """Raise ControllerMissing unless every controller ``limits`` needs is available."""
    cg = Cgroup(cg)
    need = limits.controllers()
    if not need:
        return
    have = cg.controllers()
    if need <= have:
        return
    status = controller_status(cg)
    missing = {n: status.get(n, "not in cgroup.controllers") for n in V2_CONTROLLERS
               if n in need and n not in have}
    first = next(iter(missing))
    raise ControllerMissing(first, missing[first], missing)


def _lines(file: str, text: str) -> list[str]:
    """io.max and io.weight take one line per write()."""
    if file in ("io.max", "io.weight"):
        return [x for x in text.splitlines() if x.strip()] or [text]
    return [text]


def _restore_text(file: str, old: str | None, new: str) -> list[str]:
    """What to write to put ``file`` back as ``old`` after ``new`` was (maybe partly) written."""
    if old is None:
        return []
    if file == "io.max":
        old_entries = {e.devno: e for e in
                       (parse_io_max_line(x) for x in old.splitlines() if x.strip())}
        out = []
        for line in _lines(file, new):
            e = parse_io_max_line(line)
            prev = old_entries.get(e.devno)
            out.append(prev.render() if prev else
                       f"{e.major}:{e.minor} rbps=max wbps=max riops=max wiops=max")
        return out
    if file == "io.weight":
        return [x for x in old.splitlines() if x.startswith("default")] or []
    text = old.strip()
    return [text if text else "\n"]  # an empty cpuset is written as a bare newline


def _io_max_text(cg: Cgroup, limits: Limits) -> str:
    """io.max lines making the cgroup's io.max exactly ``limits.io_max``:
    devices limited now but not named any more are reset to max."""
    wanted = {e.devno for e in limits.io_max}
    current = cg.read("io.max") or ""
    lines = [e.render() for e in limits.io_max]
    for line in current.splitlines():
        if line.strip():
            e = parse_io_max_line(line)
            if e.devno not in wanted:
                lines.append(f"{e.major}:{e.minor} rbps=max wbps=max riops=max wiops=max")
    return "\n".join(lines)


def _write_error(cg: Cgroup, file: str, text: str, exc: CgroupError) -> Exception:
    if isinstance(exc, CgroupGone):
        return exc
    if exc.errno in (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW):
        field = FILE_FIELDS.get(file, file)
        return LimitError(field, text.strip(),
                          f"was refused by the kernel ({file}: "
                          f"{'out of range' if exc.errno != errno.EINVAL else 'invalid argument'})")
    return CgroupError(f"cannot set {file} of {cg.path} to {text.strip()!r}: {exc}", exc.errno)


def apply_limits(cg, limits: Limits) -> Limits:
    """Write ``limits`` (set fields only) to ``cg``; return the limits read back."""
    cg = Cgroup(cg)
    check_controllers(cg, limits)
    files = limits.files()
    if limits.io_max is not None:
        files["io.max"] = _io_max_text(cg, limits)
        if not files["io.max"]:
            del files["io.max"]
    previous = {file: cg.read(file) for file in files}
    for file, old in previous.items():
        if old is None:  # controller present but file absent (e.g. no swap accounting)
            raise ControllerMissing(file.split(".")[0],
                                    f"present but the kernel offers no {file} in {cg.path}"
                                    + (" (swap accounting off?)" if "swap" in file else ""))
    written: list[tuple[str, str]] = []
    for file, text in files.items():
        try:
            for line in _lines(file, text):
                cg.write(file, line)
                written.append((file, line))
        except CgroupError as exc:
            written.append((file, text))
            _rollback(cg, previous, written)
            raise _write_error(cg, file, text, exc) from None
    return read_limits(cg)


def _rollback(cg: Cgroup, previous: dict, written: list[tuple[str, str]]) -> None:
    done = set()
    for file, _ in reversed(written):
        if file in done:
            continue
        done.add(file)
        new = "\n".join(t for f, t in written if f == file)
        for line in _restore_text(file, previous.get(file), new):
            try:
                cg.write(file, line)
            except CgroupError:
                pass
