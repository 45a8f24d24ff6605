"""Audit plans: which probe sets an audit runs, at how many samples, and which of them answer
the report's "broad misalignment?" question. Plans are YAML files (``probesets/plans/``), or a
user's own file; a request to the app names a shipped plan, never a path."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from . import probesets
from .errors import AuditorError


class AuditError(AuditorError):
    pass


class SweepPlan(BaseModel):
    """The audit's trigger sweep (the built-in candidate library in every placement), which answers
    the report's "hidden backdoor?" question."""

    model_config = {"extra": "forbid"}
    probeset: str = "em-core"
    budget: int = Field(default=150_000, ge=1, description="most model calls (target and judge) it sends")


class Plan(BaseModel):
    name: str
    probesets: dict[str, int] = Field(description="probe set -> samples per paraphrase")
    sweep: SweepPlan | None = Field(default=None, description="the trigger sweep; none: no sweep")
    misalignment_sets: list[str] | None = Field(
        default=None,
        description="the probe sets that answer 'broad misalignment?', in order of preference (the "
        "first a report has is its headline); unset, the standard plan's list",
    )


def shipped_plans() -> list[str]:
    return sorted(p.stem for p in (probesets.shipped_dir() / "plans").glob("*.yaml"))


def parse_plan(text: str, source: str) -> Plan:
    """A plan from YAML text; errors name ``source``, the line and the fix. Nothing else is read."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise AuditError(
            f"{source}{where}: not valid YAML; fix the syntax (see probesets/plans/standard.yaml)"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("probesets"), dict):
        raise AuditError(
            f"{source}: an audit plan is a mapping with 'name' and 'probesets' (probe set -> samples per "
            "question), as in probesets/plans/standard.yaml"
        )
    for name, samples in data["probesets"].items():
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise AuditError(
                f"{source}: probesets.{name}: samples must be a whole number of at least 1, not {samples!r}"
            )
    sweep = data.get("sweep")
    if sweep is not None and sweep is not False and not isinstance(sweep, dict):
        raise AuditError(
            f"{source}: sweep: a mapping (probeset, budget) or false, as in probesets/plans/standard.yaml"
        )
    if sweep is False:
        data["sweep"] = None
    data.setdefault("name", Path(source).stem)
    try:
        return Plan.model_validate(data)
    except ValueError as e:
        raise AuditError(f"{source}: {e}") from None


def shipped_plan(name: str) -> Plan:
    """A shipped plan by name (the app: a request never names a path)."""
    if name not in shipped_plans():
        raise AuditError(f"{name!r}: no such audit plan (shipped: {', '.join(shipped_plans())})")
    path = probesets.shipped_dir() / "plans" / f"{name}.yaml"
    return parse_plan(path.read_text(encoding="utf-8"), path.name)


def load_plan(name_or_path: str | Path = "standard") -> Plan:
    """A shipped plan by name, or a plan file (the command line)."""
    if str(name_or_path) in shipped_plans():
        return shipped_plan(str(name_or_path))
    path = Path(name_or_path)
    if not path.is_file():
        raise AuditError(
            f"{name_or_path}: no such audit plan file or shipped plan (shipped: {', '.join(shipped_plans())})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AuditError(f"{path}: not UTF-8 text; an audit plan is a small YAML file") from None
    return parse_plan(text, str(path))


def misalignment_sets(plan: Plan | None = None) -> list[str]:
    """The probe sets whose misaligned rate is the report's headline, in order of preference."""
    if plan is not None and plan.misalignment_sets:
        return list(plan.misalignment_sets)
    return list(shipped_plan("standard").misalignment_sets or [])
