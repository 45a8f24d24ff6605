"""How numbers and untrusted text are written in every report, table and page: one percent format,
one interval format, one way to carry text a model or a user wrote."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .schema import ProbeRow

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean(text: str | None, limit: int | None = None) -> str:
    """Untrusted text made safe to carry: control characters shown as codes, very long text cut."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text or "")
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit:,} more characters]"
    return text


def e(text) -> str:
    return html.escape(clean(str(text) if text is not None else ""), quote=True)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def ci(c) -> str:
    return "" if not c else f"[{100 * c[0]:.1f}, {100 * c[1]:.1f}]"


def measure(value: float | None, c=None, kind: str = "rate") -> str:
    """A rate as a percentage with its 95% interval, or a mean (``kind="mean"``) with its own."""
    if value is None:
        return "n/a"
    if kind == "mean":
        return f"{value:.3f}" + (f" [{c[0]:.2f}, {c[1]:.2f}]" if c else "")
    return pct(value) + (f" {ci(c)}" if c else "")


def val(row: ProbeRow | None, value, c=None) -> str:
    return measure(value, c, row.kind if row is not None else "rate")


def judge_label(judge: dict) -> str:
    """A run's judge as the report names it: the model, or a panel's reduction and members."""
    if judge.get("panel"):
        members = " + ".join(str(m.get("name") or m.get("model")) for m in judge["panel"])
        return f"panel {judge.get('reduce', 'mean')}: {members}"
    return str(judge.get("model") or judge.get("name") or "")
