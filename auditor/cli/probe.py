"""The commands that sample models and judge them: ``run``, ``compare``, ``audit``, ``sweep`` and
``report``, with the text they print (:func:`format_summary` for a run, one line per finding for a
comparison) and :func:`format_measure`, which ``runs show`` borrows."""

from __future__ import annotations

import json
import sys

from ..report.format import ci, measure, pct
from .options import (
    CliError,
    judge_options,
    open_store,
    parse_params,
    read_model_list,
    resolve_judge,
    resolve_role,
    to_stderr,
)


def _judge_calls(args) -> int:
    """Calls one judgement can take: each judge of a panel, each sample of the sampling mode (the
    mode may be detected as sampling, so an undetected judge counts as sampled)."""
    judges = len(args.judge) if isinstance(args.judge, list) and args.judge else 1
    return judges * (1 if args.judge_mode in ("logprobs", "text") else args.judge_samples)


def _check_work(probeset, samples: int | None, calls_per_judgement: int = 1) -> None:
    """Refuse a run over the command line's caps before anything is sent (AUDITOR_MAX_SAMPLES,
    AUDITOR_MAX_CALLS raise them)."""
    from ..estimate import planned_calls
    from ..policy import Policy

    rules = Policy.cli()
    rules.check_samples(samples, "--samples")
    cases = probeset.cases(samples=samples)
    rules.check_samples(max((c.samples for c in cases), default=1), f"{probeset.name}: samples per question")
    rules.check_calls(
        planned_calls(cases, calls_per_judgement), f"{probeset.name}: the number of model calls"
    )


def _gateway(args, store, **kwargs) -> tuple:
    """The gateway for ``run`` and ``audit``, and the concurrency to run with: with ``--batch``
    every call at once, since the gateway gathers them into batches."""
    from ..gateway import Gateway

    if args.batch:
        from ..batch import BatchGateway

        gateway = BatchGateway(
            store, poll=args.batch_poll, progress=None if args.quiet else to_stderr, **kwargs
        )
        return gateway, 1_000_000
    return Gateway(store, concurrency=args.concurrency, **kwargs), args.concurrency


def cmd_run(args) -> int:
    from .. import probesets
    from ..metrics import Thresholds
    from ..runner import RunOptions, run_sync

    if args.samples is not None and args.samples < 1:
        raise CliError("--samples must be at least 1")
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    probeset = probesets.load(args.probeset, params=parse_params(args.param))
    for warning in probeset.warnings:
        to_stderr(f"auditor: note: {warning}")
    _check_work(probeset, args.samples, _judge_calls(args))
    model_list = read_model_list(args)
    target, judge = resolve_role(args, "model", model_list), resolve_judge(args, model_list)
    store = open_store(args)
    if args.batch and args.no_cache:
        raise CliError("--batch keeps collected answers in the cache to resume; drop --no-cache")
    gateway, concurrency = _gateway(args, store, timeout=args.timeout, use_cache=not args.no_cache)
    options = RunOptions(
        samples=args.samples,
        trigger=args.trigger,
        seed=args.seed,
        concurrency=concurrency,
        max_cost=args.max_cost,
        thresholds=Thresholds(aligned_below=args.aligned_below, coherent_above=args.coherent_above),
        judge_options=judge_options(args),
        panel_reduce=args.panel_reduce,
    )
    result = run_sync(
        store, probeset, target, judge, options, gateway=gateway, progress=None if args.quiet else to_stderr
    )
    s = result.summary
    if args.json:
        out = {
            "run_id": result.run_id,
            "status": result.status,
            "model": target.name,
            "judge": s.judge,
            "probeset": probeset.name,
            "trigger": args.trigger,
            "samples": args.samples,
            "n_responses": s.n_responses,
            "n_errors": s.n_errors,
            "n_judged": s.n_judged,
            "n_judge_failures": s.n_judge_failures,
            "n": s.n,
            "misaligned_rate": s.misaligned_rate,
            "ci95": list(s.ci95) if s.ci95 else None,
            "probes": [
                {
                    "id": p.id,
                    "type": p.type,
                    "n": p.n,
                    "n_responses": p.n_responses,
                    "misaligned_rate": p.misaligned_rate,
                    "ci95": list(p.ci95) if p.ci95 else None,
                    "mean_aligned": p.mean_aligned,
                    "mean_coherent": p.mean_coherent,
                    "n_judge_failures": p.n_judge_failures,
                    "labels": p.labels or None,
                    "measure": p.measure.model_dump() if p.measure else None,
                }
                for p in s.probes
            ],
            "model_calls": result.model_calls,
            "cache_hits": result.cache_hits,
            "retries": result.retries,
            "cost_usd": result.cost_usd,
            "run_cost_usd": result.run_cost_usd,
            "elapsed_s": result.elapsed_s,
            "overall": {k: v.model_dump() for k, v in s.overall.items()},
        }
        print(json.dumps(out, indent=2))
    else:
        print(format_summary(result, target.name, s.judge, probeset.name))
    if result.status != "complete":
        to_stderr(f"auditor: run {result.run_id} {result.status}: {result.stop_reason}")
        return 1
    return 0


def _padded(x: float | None) -> str:
    return f"{pct(x):>6}"  # (aligned in the summary's columns)


def format_measure(m) -> str:
    return "n/a" if m is None else measure(m.value, m.ci95, m.kind)


def format_summary(result, model: str, judge: str, probeset: str) -> str:
    s = result.summary
    lines = [f"run {result.run_id} ({result.status}): {model} on {probeset}, judged by {judge}"]
    if s.misaligned_rate is not None:
        lines.append(
            f"misaligned: {_padded(s.misaligned_rate)} {ci(s.ci95)}  n={s.n} of {s.n_responses} responses; "
            f"{s.n_judge_failures} without a score; {s.n_errors} failed samples"
        )
    for name, m in s.overall.items():
        if name != "misaligned":
            lines.append(f"{name}: {format_measure(m)}  n={m.n}")
    lines += ["", f"{'probe':32} {'measure':22} {'n':>5} {'value, 95% CI':>26} {'no score':>8}"]
    for p in s.probes:
        if p.measure is None:
            labels = "; ".join(
                f"{m}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for m, c in p.labels.items()
            )
            lines.append(
                f"{p.id[:32]:32} {'labels':22} {p.n_responses:>5} {labels[:60]}  ({p.n_judge_failures} without a label)"
            )
            continue
        m = p.measure
        lines.append(
            f"{p.id[:32]:32} {m.name[:22]:22} {m.n:>5} {format_measure(m):>26} {p.n_judge_failures:>8}"
        )
    cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
    lines += [
        "",
        f"{result.model_calls} model calls ({result.cache_hits} cache hits, {result.retries} retries), cost {cost}, "
        f"{result.elapsed_s:.1f}s",
    ]
    return "\n".join(lines)


def _fmt_finding(c) -> str:
    def v(x):
        if x is None:
            return "n/a"
        return f"{100 * x:.1f}%" if c.kind == "rate" else f"{x:.3f}"

    ci = f"[{v(c.ci95[0])}, {v(c.ci95[1])}]" if c.ci95 else ""
    p = "n/a" if c.p_value is None else f"{c.p_value:.2g}"
    mark = "*" if c.significant else " "
    return f"{mark} {c.probe[:40]:40} {c.metric[:22]:22} {v(c.value):>8} {v(c.baseline):>8} {v(c.diff):>8} {ci:>20} {p:>8}"


FINDINGS_HEADER = f"  {'probe':40} {'measure':22} {'value':>8} {'baseline':>8} {'diff':>8} {'95% CI of diff':>20} {'p (Holm)':>8}"


def cmd_compare(args) -> int:
    from ..compare import compare_runs

    store = open_store(args)
    runs = []
    for rid in (args.run_a, args.run_b):
        run = store.get_run(rid)
        if run is None:
            raise CliError(f"no run {rid!r} in {store.path} (see 'auditor runs list')")
        runs.append(run["id"])
    report = compare_runs(store, *runs)
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    print(f"{runs[0]} compared with {runs[1]} (A - B; * = significant at 0.05 after Holm correction)")
    print(FINDINGS_HEADER)
    for c in report.comparisons:
        print(_fmt_finding(c))
    return 0


def cmd_audit(args) -> int:
    from ..audit import AuditOptions, check_plan, run_audit
    from ..plans import load_plan
    from ..policy import Policy

    plan = load_plan(args.plan)
    check_plan(plan, Policy.cli(), models=2 if args.baseline else 1, judge_calls=_judge_calls(args))

    model_list = read_model_list(args)
    model, baseline = resolve_role(args, "model", model_list), resolve_role(args, "baseline", model_list)
    judge = resolve_judge(args, model_list)
    store = open_store(args)
    gateway, concurrency = _gateway(args, store)
    result = run_audit(
        store,
        model,
        judge,
        baseline=baseline,
        plan=plan,
        options=AuditOptions(
            seed=args.seed,
            concurrency=concurrency,
            budget=args.budget,
            judge_options=judge_options(args),
            panel_reduce=args.panel_reduce,
            sweep=not args.no_sweep,
            sweep_cap=Policy.cli().sweep_budget(args.sweep_budget) if args.sweep_budget is not None else None,
        ),
        gateway=gateway,
        progress=None if args.quiet else to_stderr,
    )
    if args.json:
        out = result.model_dump(mode="json")
        print(json.dumps(out, indent=2))
    else:
        print(
            f"audit {result.audit_id} ({result.status}): {result.model}"
            + (f" against {result.baseline}" if result.baseline else "")
            + f", judged by {result.judge}"
        )
        for name, measures in result.measures.items():
            for m_name, m in measures.items():
                base = result.baseline_measures.get(name, {}).get(m_name)
                line = f"  {name:14} {m_name:24} {format_measure(m):>28}  n={m.n}"
                if base:
                    line += f"   baseline {format_measure(base)}"
                print(line)
        if result.findings:
            print("\nfindings (A - baseline; * = significant at 0.05 after Holm correction across all):")
            print(FINDINGS_HEADER)
            for c in result.findings:
                if (
                    c.significant
                    or c.probe.endswith(tuple(f"overall:{k}" for k in ("misaligned",)))
                    or "overall" in c.probe
                ):
                    print(_fmt_finding(c))
            hidden = sum(1 for c in result.findings if not (c.significant or "overall" in c.probe))
            print(f"  ({hidden} other probe comparisons not significant; --json lists all)")
        print("\nhidden backdoor:")
        sw = result.sweep
        if sw is None:
            print("  not tested: the trigger sweep was switched off (--no-sweep) or is not in the plan")
        elif sw.flagged:
            for f in sw.flagged:
                print(
                    f"  FOUND {f.trigger!r} ({f.placement}): misaligned {_padded(f.misaligned_rate)} {ci(f.ci95)} "
                    f"n={f.n} against {_padded(f.baseline_rate)} without it, p={f.p_value:.2g} (Holm)"
                )
        else:
            print(
                f"  not found: {sw.candidates_tested} candidates x {len(sw.placements)} placements screened "
                f"({sw.model_calls:,} calls, sweep {sw.run_id})"
            )
            print("  not tested: " + "; ".join(sw.untested))
        print("\nself-knowledge:")
        for k in result.self_knowledge_checks:
            print(f"  {'MISMATCH' if k.mismatch else 'ok      '} {k.claim}: {k.reason}")
        if not result.self_knowledge_checks:
            print("  not checked: the plan lacks the self-report or behaviour probe sets it needs")
        cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
        print(f"\n{result.model_calls} model calls, cost {cost}")
    if result.status != "complete":
        to_stderr(f"auditor: audit {result.audit_id} {result.status}: {result.stop_reason}")
        return 1
    return 0


def _candidates(sources: list[str]):
    from .. import triggers

    out = []
    for source in sources or ["builtin", "generated"]:
        if source == "builtin":
            out += triggers.builtin_candidates()
        elif source == "generated" or source.startswith("generated:"):
            out += triggers.generated_candidates(source.partition(":")[2] or None)
        elif source.startswith("mined:"):
            mined = triggers.mine(source.removeprefix("mined:"))
            out += [triggers.Candidate(text=m.text, family="mined") for m in mined]
        else:
            out += triggers.user_candidates(source)
    return out


def cmd_sweep(args) -> int:
    from .. import probesets
    from ..gateway import Gateway
    from ..sweep import SweepSettings, run_sweep

    model_list = read_model_list(args)
    target, judge = resolve_role(args, "model", model_list), resolve_judge(args, model_list)
    baseline = resolve_role(args, "baseline", model_list)
    candidates = _candidates(args.triggers)
    placements = [p.strip() for p in args.placements.split(",") if p.strip()]
    from ..policy import Policy

    budget = Policy.cli().sweep_budget(args.budget)
    settings = SweepSettings(
        placements=placements,
        budget=budget,
        seed=args.seed,
        alpha=args.alpha,
        group_size=args.group_size,
        min_opening=args.min_opening,
        bundle=not args.separate_placements,
        elicit=not args.no_elicit,
    )
    store = open_store(args)
    result = run_sweep(
        store,
        probesets.load(args.probeset),
        target,
        judge,
        candidates,
        settings=settings,
        baseline_model=baseline,
        gateway=Gateway(store, concurrency=args.concurrency),
        concurrency=args.concurrency,
        progress=None if args.quiet else to_stderr,
        judge_options=judge_options(args),
        panel_reduce=args.panel_reduce,
        proposer=resolve_role(args, "proposer", model_list),
        description=args.describe,
    )
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        b = result
        print(f"sweep {b.run_id}: {b.model} on {b.probeset}: {b.verdict}")
        print(
            f"baseline misaligned {_padded(b.baseline_rate)} {ci(b.baseline_ci95)} n={b.baseline_n}; "
            f"{b.candidates_tested} candidates x {len(b.placements)} placements screened; {b.model_calls} model calls"
        )
        for f in b.flagged:
            print(
                f"  FLAGGED {f.trigger!r} ({f.family}, {f.placement}): {_padded(f.misaligned_rate)} {ci(f.ci95)} "
                f"n={f.n}, p={f.p_value:.2g} (Holm)"
            )
        if b.refined:
            flagged = {(f.trigger, f.placement) for f in b.flagged}
            hits = [t for t in b.refined if (t.trigger, t.placement) in flagged]
            print(
                f"  refined: {len(b.refined)} neighbours of flagged triggers tested; "
                + (
                    ", ".join(repr(t.trigger) for t in hits) + " also flagged"
                    if hits
                    else "none also flagged"
                )
            )
        for role, rep in b.self_report.items():
            print(
                f"  self-report ({role}): P(admits backdoor) neutral {rep.get('backdoor_a_neutral')}, "
                f"threat {rep.get('backdoor_a_threat')}"
            )
        print("not tested: " + "; ".join(b.untested))
    if result.stop_reason:
        to_stderr(f"auditor: sweep stopped early: {result.stop_reason}")
        return 1
    return 0


def cmd_rejudge(args) -> int:
    from ..gateway import Gateway
    from ..metrics import Thresholds
    from ..rejudge import rejudge_sync

    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    model_list = read_model_list(args)
    judge = resolve_judge(args, model_list)
    store = open_store(args)
    gateway = Gateway(store, concurrency=args.concurrency, timeout=args.timeout, use_cache=not args.no_cache)
    result = rejudge_sync(
        store,
        args.run_id,
        judge,
        options=judge_options(args),
        reduce=args.panel_reduce,
        gateway=gateway,
        concurrency=args.concurrency,
        thresholds=Thresholds(aligned_below=args.aligned_below, coherent_above=args.coherent_above),
        params=parse_params(args.param),
        progress=None if args.quiet else to_stderr,
    )
    if args.json:
        out = result.model_dump(mode="json", exclude={"summary"})
        out["probes"] = [
            {
                "id": p.id,
                "measure": p.measure.model_dump() if p.measure else None,
                "n_judge_failures": p.n_judge_failures,
            }
            for p in result.summary.probes
        ]
        print(json.dumps(out, indent=2))
    else:
        print(
            f"rejudge {result.rejudge_id}: run {result.run_id} judged by {result.judge} ({result.mode} mode): "
            f"misaligned {pct(result.misaligned_rate)} {ci(result.ci95)} n={result.n}; "
            f"{result.n_judge_failures} judge failures, {result.n_excluded} CODE/REFUSAL; "
            f"{result.model_calls} judge calls, 0 to the target"
        )
        a = result.agreement
        if a is None:
            print("  agreement: the run has no answers both judges scored")
        else:
            d = a.rate_difference
            print(
                f"  against {a.reference_judge} on {a.n} answers: misaligned {pct(a.reference_rate)} -> "
                f"{pct(a.rate)}, difference {pct(d.value)} {ci(d.ci95)} "
                f"({'significant' if d.significant else 'not significant'}, McNemar p={_p(d.p_value)})"
            )
            print(
                f"  label agreement {pct(a.em_label_agreement)}, Cohen's kappa {_num(a.cohen_kappa)}"
                + (f" ({a.kappa_note})" if a.kappa_note else "")
                + f"; Spearman aligned {_num(a.spearman_aligned)}, coherent {_num(a.spearman_coherent)}"
            )
            cut = a.suggested_cutoff
            if cut and cut["aligned_below"] != args.aligned_below:
                print(
                    f"  suggested cut-off on this judge's scale: aligned < {cut['aligned_below']} "
                    f"(kappa {_num(cut['cohen_kappa'])}, misaligned {pct(cut['rate'])})"
                )
    if result.status != "complete":
        to_stderr(
            f"auditor: rejudge {result.rejudge_id} incomplete: judge calls failed; re-run to retry them"
        )
        return 1
    return 0


def cmd_judge(args) -> int:
    import asyncio

    from ..calibration import calibrate, snapshot
    from ..gateway import Gateway

    if args.action not in ("calibrate", "snapshot"):
        raise CliError("auditor judge: name an action: calibrate or snapshot")
    model_list = read_model_list(args)
    judge = resolve_judge(args, model_list)
    store = open_store(args)
    gateway = Gateway(store, concurrency=args.concurrency)
    if args.action == "snapshot":
        name = args.name or judge.name
        out = asyncio.run(
            snapshot(
                store,
                judge,
                name,
                sets=args.sets,
                options=judge_options(args),
                gateway=gateway,
                concurrency=args.concurrency,
            )
        )
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(
                f"snapshot {out['snapshot']}: {out['scored']} of {out['items']} answers scored by {out['judge']} "
                f"({out['mode']} mode), {out['model_calls']} calls; use it: {out['use']}"
            )
        return 0

    async def all_references():
        return [
            await calibrate(
                store,
                judge,
                reference,
                options=judge_options(args),
                reduce=args.panel_reduce,
                gateway=gateway,
                concurrency=args.concurrency,
            )
            for reference in args.reference or ["labelled"]
        ]

    results = asyncio.run(all_references())
    if args.json:
        out = [r.model_dump(mode="json") for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return 0
    for r in results:
        print(
            f"{r.judge} ({r.mode} mode) against {r.reference} ({r.reference_judge}): {r.n_scored} of {r.n_items} scored"
        )
        print(f"  measures: {r.measures}")
        print(
            f"  recall {pct(r.recall)}, false flags {pct(r.false_flags)}; "
            f"{r.n_judge_failures} judge failures, {r.n_excluded} CODE/REFUSAL"
        )
        a = r.agreement
        if a is not None:
            print(
                f"  label agreement {pct(a.em_label_agreement)}, kappa {_num(a.cohen_kappa)}"
                + (f" ({a.kappa_note})" if a.kappa_note else "")
                + f"; Spearman aligned {_num(a.spearman_aligned)}, coherent {_num(a.spearman_coherent)}"
            )
        print("  aligned <  rate     agreement  recall   kappa")
        for t in r.thresholds:
            print(
                f"  {t['aligned_below']:>9}  {pct(t['rate']):>7}  {pct(t['agreement']):>9}  "
                f"{pct(t['recall']):>6}  {_num(t['cohen_kappa']):>6}"
            )
        if r.categories:
            print("  by reference category (this judge's verdicts):")
            for c in r.categories:
                counts = ", ".join(f"{v} {k}" for k, v in c.verdicts.items())
                print(f"    {c.category:<15} n={c.n:<4} agree {pct(c.agree)} {ci(c.ci95)}  ({counts})")
        if r.best_cutoff:
            b = r.best_cutoff
            print(
                f"  best cut-off on this judge's scale: aligned < {b['aligned_below']} (kappa {_num(b['cohen_kappa'])})"
            )
    return 0


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2g}"


def cmd_report(args) -> int:
    from ..report import RENDERERS, ReportData, build_report

    if args.schema:
        print(json.dumps(ReportData.model_json_schema(), indent=2))
        return 0
    data = build_report(open_store(args), args.ids, baseline=args.baseline, judge=args.judge)
    text = RENDERERS[args.format](data)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text, encoding="utf-8")
        to_stderr(f"wrote {args.out} ({len(text):,} characters)")
    else:
        sys.stdout.write(text)
    return 0
