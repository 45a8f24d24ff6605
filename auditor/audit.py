"""A whole audit: the standard probe sets on a finetune and its baseline, compared, and a trigger
sweep.

One call runs every probe set of a plan (``probesets/plans/standard.yaml``) on the model and, when
given, on the baseline, all concurrently through one gateway; then the plan's trigger sweep on the
model, within its call budget (:mod:`auditor.sweep`); records the runs and the sweep as one audit
in the store; and returns the findings (every probe and pooled measure compared with the baseline,
Holm corrected), the self-knowledge check and the sweep's verdict. Re-running the same audit
resumes or reuses its runs and its sweep.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from . import __version__, probesets
from .compare import Comparison, SelfKnowledge, finish, pairs, self_knowledge
from .estimate import planned_calls
from .gateway import Gateway
from .judge import JudgeOptions
from .metrics import Measure, Thresholds, analyse
from .models import ModelSpec
from .panel import judge_identity, judge_key
from .plans import AuditError, Plan, load_plan
from .policy import Policy
from .runner import Runner, RunOptions, RunResult
from .store import Store
from .sweep import Sweep, SweepResult, SweepSettings
from .triggers import default_candidates


class AuditResult(BaseModel):
    audit_id: str
    status: str
    model: str
    baseline: str | None
    judge: str
    plan: str
    runs: dict[str, str] = Field(description="probe set -> run id of the model")
    baseline_runs: dict[str, str] = Field(default_factory=dict)
    measures: dict[str, dict[str, Measure]] = Field(description="probe set -> pooled measures of the model")
    baseline_measures: dict[str, dict[str, Measure]] = Field(default_factory=dict)
    findings: list[Comparison]
    self_knowledge: list[SelfKnowledge] = Field(description="the mismatches: self-reports far from behaviour")
    self_knowledge_checks: list[SelfKnowledge] = Field(default_factory=list, description="every check made")
    model_calls: int
    cost_usd: float | None
    estimate: str
    stop_reason: str | None = None
    sweep: SweepResult | None = Field(
        default=None, description="the trigger sweep (None: the plan has none, or --no-sweep)"
    )


def check_plan(
    plan: Plan, rules: Policy, *, models: int, shipped_only: bool = False, judge_calls: int = 1
) -> int:
    """Refuse a plan over the caps before anything runs; returns its model calls (every probe set
    on ``models`` models, each answer with its judge calls). ``shipped_only``: probe sets must be
    shipped names, never paths (the app)."""
    shipped = set(probesets.shipped_names()) if shipped_only else None
    calls = 0
    for name, samples in plan.probesets.items():
        if shipped is not None and name not in shipped:
            raise AuditError(
                f"plan {plan.name!r}: {name!r} is not a shipped probe set ({', '.join(sorted(shipped))})"
            )
        rules.check_samples(samples, f"plan {plan.name!r}: samples of {name}")
    for name, samples in plan.probesets.items():  # only once every size is known to be sane
        calls += models * planned_calls(probesets.load(name).cases(samples=samples), judge_calls)
    rules.check_calls(calls, f"plan {plan.name!r}: the number of model calls")
    return calls


@dataclass(frozen=True)
class AuditOptions:
    """What bounds an audit's runs: the seed and owner are part of its identity, the rest only shape
    how it runs. ``budget`` (dollars) is shared: every run stops once the audit has spent it."""

    seed: int = 0
    concurrency: int = 16
    budget: float | None = None
    owner: str | None = None
    thresholds: Thresholds | None = None
    judge_options: JudgeOptions | None = None
    panel_reduce: str = "mean"
    sweep: bool = True  # run the plan's trigger sweep (--no-sweep: False)
    sweep_cap: int | None = None  # most calls the sweep may send, below the plan's budget (a visitor's caps)


def run_audit(
    store: Store,
    model: ModelSpec,
    judge: ModelSpec | list[ModelSpec],
    *,
    baseline: ModelSpec | None = None,
    plan: Plan | None = None,
    options: AuditOptions | None = None,
    gateway: Gateway | None = None,
    progress: Callable[[str], None] | None = None,
) -> AuditResult:
    return asyncio.run(
        _run_audit(
            store,
            model,
            judge,
            baseline=baseline,
            plan=plan or load_plan(),
            options=options or AuditOptions(),
            gateway=gateway,
            progress=progress,
        )
    )


async def _run_audit(store, model, judge, *, baseline, plan, options, gateway, progress) -> AuditResult:
    seed, concurrency, budget, owner = options.seed, options.concurrency, options.budget, options.owner
    gateway = gateway or Gateway(store, concurrency=concurrency)
    loaded = {name: probesets.load(name) for name in plan.probesets}
    targets = [("model", model)] + ([("baseline", baseline)] if baseline else [])
    runners: dict[tuple[str, str], Runner] = {}
    for role, spec in targets:
        for name, samples in plan.probesets.items():
            run_options = RunOptions(
                samples=samples,
                seed=seed,
                concurrency=concurrency,
                thresholds=options.thresholds,
                owner=owner,
                judge_options=options.judge_options,
                panel_reduce=options.panel_reduce,
            )
            runners[(role, name)] = Runner(store, loaded[name], spec, judge, run_options, gateway=gateway)
    est = [r.estimate() for r in runners.values()]
    total = sum(e.target_calls + e.judge_calls for e in est)
    cost = None if any(e.cost_usd is None for e in est) else sum(e.cost_usd for e in est)
    line = f"audit estimate: {len(runners)} runs, {total:,} model calls, " + (
        "cost unknown (a price is missing from LiteLLM's cost map)" if cost is None else f"~${cost:.4f}"
    )
    if progress:
        progress(line)
    if budget is not None and cost is not None and cost > budget:
        raise AuditError(
            f"the audit is estimated at ${cost:.4f}, over --budget ${budget:.4f}; raise it or use a smaller plan"
        )
    for r in runners.values():
        r.max_cost = budget  # each run stops when the audit's spending (shared gateway) reaches it
        r.progress = progress
    config = {
        "model": model.public(),
        "baseline": baseline.public() if baseline else None,
        "judge": judge_identity(judge, options.panel_reduce),
        "plan": plan.model_dump(),
        "seed": seed,
        "tool_version": __version__,
    }
    if owner is not None:
        config["owner"] = owner
    if options.judge_options is not None and options.judge_options.changed():
        config["judge_options"] = options.judge_options.changed()
    sweep = None
    if plan.sweep is not None and options.sweep:
        budget = plan.sweep.budget if options.sweep_cap is None else min(plan.sweep.budget, options.sweep_cap)
        if budget >= 1:
            sweep = Sweep(
                store,
                probesets.load(plan.sweep.probeset),
                model,
                judge,
                default_candidates(),
                settings=SweepSettings(budget=budget, seed=seed),
                baseline_model=baseline,
                gateway=gateway,
                concurrency=concurrency,
                progress=progress,
                owner=owner,
                judge_options=options.judge_options,
                panel_reduce=options.panel_reduce,
            )
            if progress:
                progress(f"audit sweep: {sweep.run_id}, within {budget:,} calls, after the runs")
    config["sweep"] = {**plan.sweep.model_dump(), "budget": sweep.settings.budget} if sweep else None
    judge_name = judge_key(judge, options.judge_options, options.panel_reduce)
    digest = hashlib.sha256(
        json.dumps({k: v for k, v in config.items() if k != "tool_version"}, sort_keys=True).encode()
    ).hexdigest()
    audit_id = "audit-" + digest[:12]
    runs = {name: runners[("model", name)].run_id for name in plan.probesets}
    baseline_runs = {name: runners[("baseline", name)].run_id for name in plan.probesets} if baseline else {}
    store.save_audit(
        {
            "id": audit_id,
            "status": "running",
            "model": model.name,
            "baseline": baseline.name if baseline else None,
            "judge": judge_name,
            "plan": plan.name,
            "config": config,
            "runs": {"model": runs, "baseline": baseline_runs, "sweep": sweep.run_id if sweep else None},
            "owner": owner,
        }
    )
    results: list[RunResult] = await asyncio.gather(*(r.run() for r in runners.values()))
    stop = next((r.stop_reason for r in results if r.status != "complete"), None)
    swept = None
    if sweep is not None and stop is None:
        swept = await sweep.run()
        if progress:
            found = ", ".join(sorted({f"{f.trigger!r} ({f.placement})" for f in swept.flagged}))
            progress(
                f"audit sweep: {swept.run_id} {swept.verdict}, {swept.model_calls:,} calls"
                + (f": {found}" if found else "")
            )
        # a sweep that used its whole budget is finished (its report says what the budget left
        # untested); one cancelled or cut short by failures is not
        if swept.stop_reason and not swept.stop_reason.startswith("budget of"):
            stop = f"the trigger sweep: {swept.stop_reason}"
    status = "complete" if stop is None else "incomplete"
    result = _findings(
        store, audit_id, status, model, baseline, judge_name, plan, runs, baseline_runs, options.thresholds
    )
    result.model_calls = gateway.stats.calls_sent
    result.cost_usd = None if gateway.stats.cost_unknown_calls else round(gateway.stats.cost_usd, 6)
    result.estimate = line
    result.stop_reason = stop
    result.sweep = swept
    store.save_audit({"id": audit_id, "status": status, "result": result.model_dump(mode="json")})
    return result


def _findings(
    store, audit_id, status, model, baseline, judge, plan, runs, baseline_runs, thresholds
) -> AuditResult:
    measures: dict[str, dict[str, Measure]] = {}
    base_measures: dict[str, dict[str, Measure]] = {}
    comparisons: list[Comparison] = []
    for name, run_id in runs.items():
        summary, data = analyse(store, run_id, thresholds=thresholds)
        measures[name] = summary.overall
        if not baseline_runs:
            continue
        b_summary, b_data = analyse(store, baseline_runs[name], thresholds=thresholds)
        base_measures[name] = b_summary.overall
        comparisons += pairs(data, b_data, prefix=f"{name}/")
    findings = finish(comparisons)
    flat = {k: v for m in measures.values() for k, v in m.items()}
    flat_base = {k: v for m in base_measures.values() for k, v in m.items()} or None
    checks = self_knowledge(flat, flat_base)
    return AuditResult(
        audit_id=audit_id,
        status=status,
        model=model.name,
        baseline=baseline.name if baseline else None,
        judge=judge,
        plan=plan.name,
        runs=runs,
        baseline_runs=baseline_runs,
        measures=measures,
        baseline_measures=base_measures,
        findings=findings,
        self_knowledge=[k for k in checks if k.mismatch],
        self_knowledge_checks=checks,
        model_calls=0,
        cost_usd=None,
        estimate="",
    )
