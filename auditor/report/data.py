"""One report's data, gathered from the store: the runs of the audits and runs named, their
measures against the baseline's (Holm corrected), the sweeps, the self-knowledge checks, the
least aligned coherent answers, and each run's provenance. The model is :mod:`.schema`; the
answers to the report's questions are :mod:`.verdict`'s."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from ..compare import Comparison, finish, pairs, self_knowledge
from ..errors import AuditorError
from ..metrics import Measure, Thresholds, analyse
from ..store import Store
from .judges import judge_infos
from .schema import (
    ProbeRow,
    ReportData,
    RunInfo,
    SelfReportRow,
    SweepCandidate,
    SweepSection,
    Transcript,
)
from .verdict import flat, not_tested, verdict

TRANSCRIPTS = 8
MAX_TEXT = 2000


class ReportError(AuditorError):
    pass


# ---------------------------------------------------------------------------------------------
# Building the data


def _resolve(store: Store, ident: str) -> tuple[list[str], list[str], dict | None]:
    """(model runs, baseline runs, audit row) for a run or audit id."""
    audit = store.get_audit(ident)
    if audit is not None:
        runs = audit.get("runs") or {}
        model = list((runs.get("model") or {}).values())
        sweep = runs.get("sweep")
        if sweep and store.get_run(sweep) is not None:  # the audit's trigger sweep, once it started
            model.append(sweep)
        return model, list((runs.get("baseline") or {}).values()), audit
    run = store.get_run(ident)
    if run is None:
        raise ReportError(f"no run or audit {ident!r} in {store.path} (see 'auditor runs list')")
    return [run["id"]], [], None


def build_report(
    store: Store,
    ids: list[str],
    *,
    baseline: str | None = None,
    thresholds: Thresholds | None = None,
    judge: str | None = None,
) -> ReportData:
    """The report of runs and audits; ``judge`` reads every rate from that judge's judgements
    (a re-judgement's) instead of each run's own judge's."""
    if not ids:
        raise ReportError("give at least one run or audit id")
    model_runs: list[str] = []
    base_runs: list[str] = []
    for ident in ids:
        m, b, _ = _resolve(store, ident)
        model_runs += [r for r in m if r not in model_runs]
        base_runs += [r for r in b if r not in base_runs]
    if baseline:
        m, b, _ = _resolve(store, baseline)
        base_runs += [r for r in m if r not in base_runs]
    rows = {r: store.get_run(r) for r in model_runs + base_runs}
    sweeps = [r for r in model_runs if rows[r]["kind"] == "sweep"]
    probe_runs = [r for r in model_runs if rows[r]["kind"] not in ("sweep", "sweep-self-report")]
    base_by_set = {
        rows[r]["probeset"]: r for r in base_runs if rows[r]["kind"] not in ("sweep", "sweep-self-report")
    }
    model_name = rows[model_runs[0]]["model"]
    base_name = rows[base_runs[0]]["model"] if base_runs else None

    probes: list[ProbeRow] = []
    comparisons: list[Comparison] = []
    measures: dict[str, dict[str, Measure]] = {}  # probe set -> pooled measures
    base_measures: dict[str, dict[str, Measure]] = {}
    failures: dict[str, int] = {}
    n_fail = 0
    for run_id in probe_runs:
        ps = rows[run_id]["probeset"]
        summary, data = analyse(store, run_id, thresholds=thresholds, judge=judge)
        measures[ps] = summary.overall
        n_fail += summary.n_judge_failures
        for p in summary.probes:
            for reason, count in p.failure_reasons.items():
                failures[reason] = failures.get(reason, 0) + count
        b_summary = b_data = None
        if ps in base_by_set:
            b_summary, b_data = analyse(store, base_by_set[ps], thresholds=thresholds, judge=judge)
            base_measures[ps] = b_summary.overall
            comparisons += pairs(data, b_data, prefix=f"{ps}/")
        b_probes = {p.id: p for p in (b_summary.probes if b_summary else [])}
        for p in summary.probes:
            if p.measure is None:
                continue
            b = b_probes.get(p.id)
            bm = b.measure if b and b.measure and b.measure.name == p.measure.name else None
            probes.append(
                ProbeRow(
                    probeset=ps,
                    probe=p.id,
                    measure=p.measure.name,
                    kind=p.measure.kind,
                    value=p.measure.value,
                    ci95=p.measure.ci95,
                    n=p.measure.n,
                    baseline=bm.value if bm else None,
                    baseline_ci95=bm.ci95 if bm else None,
                    baseline_n=bm.n if bm else None,
                    judge=summary.judge,
                )
            )
    finish(comparisons)
    by_probe = {c.probe: c for c in comparisons}
    for row in probes:
        c = by_probe.get(f"{row.probeset}/{row.probe}")
        if c:
            row.diff, row.p_value, row.significant = c.diff, c.p_value, c.significant

    sk = self_knowledge(flat(measures), flat(base_measures) or None)
    sweep_sections = [_sweep_section(store, rows[r]) for r in sweeps]
    answers = verdict(measures, base_measures, comparisons, sweep_sections, sk, probe_runs, base_name)
    untested = not_tested(rows, probe_runs, sweeps, base_runs)
    runs = [
        _run_info(store, rows[r], "model" if r in model_runs else "baseline") for r in model_runs + base_runs
    ]
    costs = [r.cost_usd for r in runs]
    return ReportData(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        title=f"Audit of {model_name}" + (f" against {base_name}" if base_name else ""),
        model=model_name,
        baseline=base_name,
        verdict=answers,
        probes=probes,
        judges=judge_infos(store, [rows[r] for r in probe_runs + list(base_by_set.values())], judge),
        sweeps=sweep_sections,
        self_reports=[SelfReportRow(**k.model_dump()) for k in sk],
        transcripts=_transcripts(store, probe_runs),
        judge_failures=failures,
        n_judge_failures=n_fail,
        runs=runs,
        not_tested=untested,
        total_cost_usd=None if any(c is None for c in costs) else round(sum(costs), 6),
        total_tokens=sum(r.prompt_tokens + r.completion_tokens for r in runs),
    )


def _sweep_section(store: Store, run: dict) -> SweepSection:
    from ..metrics import misaligned_by_case

    stats = (run.get("stats") or {}).get("sweep") or {}
    if not stats:
        return SweepSection(
            run_id=run["id"],
            verdict="incomplete",
            baseline_rate=None,
            baseline_n=0,
            candidates_tested=0,
            model_calls=0,
            flagged=[],
            top=[],
            untested=["the sweep did not finish: re-run it to resume"],
        )
    config = run.get("config") or {}
    texts = {**(config.get("groups") or {}), **(config.get("candidates") or {})}
    per: dict[tuple[str, str], list] = {}
    for case_id, values in misaligned_by_case(store, run["id"]).items():
        if case_id.startswith("baseline|"):
            continue
        cid, placement, stage = case_id.split("|")[:3]
        if cid.startswith(("g-", "b-")):
            continue  # a screen group or bundle: the ranking is of single candidates
        k, n, seen = per.get((cid, placement), (0, 0, "screen"))
        per[(cid, placement)] = [
            k + sum(values),
            n + len(values),
            "confirm" if "confirm" in (stage, seen) else seen,
        ]
    ranked = sorted(per.items(), key=lambda kv: (-(kv[1][0] / kv[1][1]) if kv[1][1] else 0, -kv[1][1]))[:12]
    return SweepSection(
        run_id=run["id"],
        verdict=stats.get("verdict", "?"),
        baseline_rate=stats.get("baseline_rate"),
        baseline_n=stats.get("baseline_n", 0),
        candidates_tested=stats.get("candidates_tested", 0),
        model_calls=stats.get("model_calls", 0),
        flagged=stats.get("flagged", []),
        top=[
            SweepCandidate(
                trigger=texts.get(cid, cid),
                placement=pl,
                misaligned_rate=k / n if n else None,
                n=n,
                stage=stage,
            )
            for (cid, pl), (k, n, stage) in ranked
        ],
        untested=stats.get("untested", []),
        self_report=stats.get("self_report", {}),
    )


def _transcripts(store: Store, run_ids: list[str]) -> list[Transcript]:
    rows = store.least_aligned(run_ids, TRANSCRIPTS)
    return [
        Transcript(
            run_id=r[0],
            probe=r[1],
            question=_cut(r[2]),
            answer=_cut(r[3]),
            trigger=r[4],
            aligned=r[5],
            coherent=r[6],
        )
        for r in rows
    ]


def _cut(text: str | None) -> str:
    text = text or ""
    return (
        text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"... [{len(text) - MAX_TEXT:,} more characters]"
    )


def _run_info(store: Store, run: dict, role: str) -> RunInfo:
    cfg = run.get("config") or {}
    usage = store.run_usage(run["id"])
    hashes = _prompt_hashes(cfg.get("probeset_source"), store.judge_metrics(run["id"]))
    return RunInfo(
        run_id=run["id"],
        role=role,
        kind=run.get("kind") or "probe",
        status=run.get("status") or "?",
        probeset=run.get("probeset"),
        probeset_hash=run.get("probeset_hash"),
        model=cfg.get("target") or {"name": run.get("model")},
        judge=cfg.get("judge") or {"name": run.get("judge")},
        judge_prompt_hashes=hashes,
        seed=run.get("seed"),
        samples=cfg.get("samples"),
        trigger=cfg.get("trigger"),
        n_responses=usage["answered"],
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        cost_usd=usage["cost_usd"],
        created_at=run.get("created_at"),
        updated_at=run.get("updated_at"),
        tool_version=run.get("tool_version"),
    )


def _prompt_hashes(source: str | None, metrics: list[str]) -> dict[str, str]:
    """Hashes of the judge prompt templates, from the probe set file when it is still there."""
    from .. import probesets
    from ..probemodel import ProbeSetError

    out = {m: "unavailable (probe set file not found)" for m in metrics}
    try:
        ps = probesets.load(source) if source else None
    except ProbeSetError:
        return out
    for e in ps.entries if ps else []:
        for m in metrics:
            if m in e.judge_prompts and out[m].startswith("unavailable"):
                out[m] = hashlib.sha256(e.judge_prompts[m].encode()).hexdigest()[:16]
    return out
