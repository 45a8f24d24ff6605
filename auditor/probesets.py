"""Probe sets by name or path: the shipped ``probesets/`` directory, its sets, and :func:`load`.

``load`` takes a shipped set's name or a file's path and returns the validated
:class:`~.probemodel.ProbeSet`; the file formats are read by ``probeformats``. A file that does not
validate raises :class:`~.probemodel.ProbeSetError` naming the file, the line, the entry and the
field, before anything is run or written.
"""

from __future__ import annotations

from pathlib import Path

from . import probeformats
from .probemodel import ProbeSet, ProbeSetError


def shipped_dir() -> Path:
    """The shipped ``probesets/`` directory (repository checkout or installed wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "probesets", here / "_probesets"):
        if candidate.is_dir():
            return candidate
    raise ProbeSetError("the shipped probesets/ directory is missing from this installation")


def list_shipped() -> list[dict]:
    out = []
    for path in sorted(shipped_dir().glob("*.yaml")):
        ps = load(path)
        n_cases = sum(len(e.paraphrases) for e in ps.entries)
        out.append(
            {
                "name": ps.name,
                "path": str(path),
                "entries": len(ps.entries),
                "cases": n_cases,
                "description": ps.description,
            }
        )
    return out


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def resolve(name_or_path: str | Path) -> Path:
    """A shipped probe set's name (which wins over a file of the same name), or a file path."""
    shipped = shipped_dir()
    if str(name_or_path) in shipped_names():
        return shipped / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (shipped / f"{name_or_path}.yaml", shipped / str(name_or_path)):
        if candidate.is_file():
            return candidate
    names = ", ".join(p.stem for p in sorted(shipped.glob("*.yaml")))
    raise ProbeSetError(
        f"{name_or_path}: no such file and no shipped probe set of that name (shipped: {names})"
    )


def load_shipped(name: str) -> ProbeSet:
    """A shipped probe set by name only: what a request to the app may name (never a path)."""
    if name not in shipped_names():
        raise ProbeSetError(
            f"{name!r}: no shipped probe set of that name (shipped: {', '.join(shipped_names())})"
        )
    return load(shipped_dir() / f"{name}.yaml")


def load(name_or_path: str | Path, *, params: dict[str, str] | None = None) -> ProbeSet:
    """Load and validate a probe set. ``params`` fill placeholders of the self-awareness paper's
    files (``{codeword}``, ``{sep_suffix}``); they become part of the probe set's hash."""
    return probeformats.read(resolve(name_or_path), shipped=shipped_dir(), params=params)
