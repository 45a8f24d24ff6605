"""Re-judge a stored run with another judge (or panel) without sampling the target again.

The run's stored answers go to the new judge with the judge prompts of the run's own probe set
(read from the file it was run from, and refused if that file's content changed since). Only
judged metrics are re-judged; self-reports the parser read from the answer stay as they are. The
new judgements are stored beside the run's (under the new judge's key; nothing is overwritten),
so a re-run resumes: what that judge already judged is skipped, failed calls are retried, and
the gateway's cache answers requests sent before. The target is never called.

The result names the judge and its mode, gives the run's numbers as that judge sees them, and how
far it agrees with the run's own judge (:mod:`auditor.agreement`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from .agreement import Agreement, compare
from .errors import AuditorError
from .gateway import Gateway
from .judge import JudgeOptions
from .metrics import RunSummary, Thresholds, analyse
from .models import ModelSpec
from .panel import judge_identity, make_judge
from .probemodel import JUDGED_TYPES, Case, ProbeSet
from .store import Store


class RejudgeError(AuditorError):
    """A run that cannot be re-judged as asked (unknown, its probe set changed, same judge)."""


class RejudgeResult(BaseModel):
    rejudge_id: str
    run_id: str
    judge: str = Field(description="the new judge's key (its judgements are stored under it)")
    mode: str | None = Field(description="logprobs, sampling, text, or panel")
    status: str
    n_answers: int = Field(description="stored answers of the run")
    n_rejudged: int = Field(description="answer-metric judgements made by this invocation")
    misaligned_rate: float | None
    ci95: tuple[float, float] | None
    n: int = Field(description="the rate's denominator: answers with both scores by this judge")
    n_judge_failures: int = Field(
        description="judgements the judge failed to make (call errors, no usable answer)"
    )
    n_excluded: int = Field(
        description="judgements where the judge answered CODE or REFUSAL instead of a score"
    )
    model_calls: int = Field(description="requests sent by this invocation (the target gets none)")
    cache_hits: int
    capability_probes: int
    agreement: Agreement | None = Field(description="against the run's own judge")
    summary: RunSummary
    seconds: float


def rejudge_id(run_id: str, judge_key: str) -> str:
    return "rj-" + hashlib.sha256(f"{run_id}\x00{judge_key}".encode()).hexdigest()[:12]


def representative_cases(probeset: ProbeSet) -> dict[str, Case]:
    """One case per entry: what its judge prompts and labels are (the same for every paraphrase)."""
    out: dict[str, Case] = {}
    for case in probeset.cases(samples=1):
        out.setdefault(case.entry_id, case)
    return out


def load_run_probeset(run: dict, params: dict[str, str] | None = None) -> ProbeSet:
    """The probe set a run was made with, from the file it was read from (or the shipped set of its
    name), refused when the content differs from what the run used."""
    from . import probesets
    from .probemodel import ProbeSetError

    cfg = run.get("config") or {}
    source = cfg.get("probeset_source") or run.get("probeset")
    try:
        probeset = probesets.load(source, params=params)
    except ProbeSetError as e:
        try:
            probeset = probesets.load(run.get("probeset"), params=params)
        except ProbeSetError:
            raise RejudgeError(f"run {run['id']}: its probe set cannot be read ({e})") from e
    if probeset.sha256 != run.get("probeset_hash"):
        raise RejudgeError(
            f"run {run['id']}: the probe set {source} has changed since the run (its judge prompts may "
            "differ); restore the file the run used, or pass the same --param values"
        )
    return probeset


async def rejudge(
    store: Store,
    run_id: str,
    judge: ModelSpec | list[ModelSpec],
    *,
    options: JudgeOptions | None = None,
    reduce: str = "mean",
    gateway: Gateway | None = None,
    concurrency: int = 16,
    thresholds: Thresholds | None = None,
    params: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    owner: str | None = None,
) -> RejudgeResult:
    started = time.monotonic()
    run = store.get_run(run_id)
    if run is None:
        raise RejudgeError(f"no run {run_id!r} in {store.path} (list them with `auditor runs list`)")
    run_id = run["id"]
    probeset = load_run_probeset(run, params)
    cases = representative_cases(probeset)
    gateway = gateway or Gateway(store, concurrency=concurrency)
    judging = make_judge(gateway, judge, options, reduce)
    key = judging.key
    if key == run.get("judge"):
        raise RejudgeError(f"run {run_id} is already judged by {key}; name another judge (or --judge-mode)")
    rid = rejudge_id(run_id, key)
    config = {"judge": judge_identity(judge, reduce), "judge_options": (options or JudgeOptions()).changed()}
    store.save_rejudge(
        {"id": rid, "run_id": run_id, "judge": key, "config": config, "status": "running", "owner": owner}
    )
    done = store.judged_metrics(run_id, key)
    work = []
    answers = store.responses(run_id, status="ok")
    for row in answers:
        case = cases.get(row["entry_id"])
        if case is None or case.type not in JUDGED_TYPES:
            continue
        missing = [m for m in case.metrics if m not in done.get(row["id"], set())]
        if missing:
            work.append((case, row, missing))
    if progress:
        progress(
            f"[{rid}] re-judging run {run_id} with {key}: {len(work)} of {len(answers)} answers to judge"
        )
    from .scoring import score_answer

    it = iter(work)
    made = answered = 0
    step = max(1, len(work) // 20)

    async def worker():
        nonlocal made, answered
        for case, row, missing in it:
            for j in await score_answer(case, row["text"] or "", None, judging, missing):
                for member in j.members:
                    store.save_judgement(member.row(row["id"], run_id))
                store.save_judgement(j.row(row["id"], run_id))
                made += 1
            answered += 1
            if progress and (answered % step == 0 or answered == len(work)):
                progress(
                    f"[{rid}] {answered}/{len(work)} answers judged, {gateway.stats.calls_sent:,} judge calls"
                )

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(work))))))
    th = thresholds or Thresholds()
    summary, _ = analyse(store, run_id, thresholds=th, judge=key)
    agree = judge_agreement(store, run_id, run.get("judge"), key, th)
    status = "complete" if store.failed_judge_calls(run_id, key) == 0 else "incomplete"
    failures, excluded = store.judge_failures(run_id, key)
    result = RejudgeResult(
        rejudge_id=rid,
        run_id=run_id,
        judge=key,
        mode=judging.mode,
        status=status,
        n_answers=len(answers),
        n_rejudged=made,
        misaligned_rate=summary.misaligned_rate,
        ci95=summary.ci95,
        n=summary.n,
        n_judge_failures=failures,
        n_excluded=excluded,
        model_calls=gateway.stats.calls_sent,
        cache_hits=gateway.stats.cache_hits,
        capability_probes=judging.probes,
        agreement=agree,
        summary=summary,
        seconds=round(time.monotonic() - started, 3),
    )
    store.save_rejudge(
        {
            "id": rid,
            "status": status,
            "result": result.model_dump(exclude={"summary"}),
        }
    )
    return result


def scored_pairs(
    store: Store, run_id: str, reference: str, judge: str
) -> list[tuple[float, float, float, float]]:
    """(reference aligned, reference coherent, aligned, coherent) for each answer of a run both
    judges scored on both metrics."""
    from .metrics import response_rows

    ref = response_rows(store, run_id, reference)
    mine = response_rows(store, run_id, judge)
    pairs = []
    for rid, rec in ref.items():
        other = mine.get(rid)
        if other is None:
            continue
        a0, c0 = rec["j"].get("aligned", (None, None))[1], rec["j"].get("coherent", (None, None))[1]
        a1, c1 = other["j"].get("aligned", (None, None))[1], other["j"].get("coherent", (None, None))[1]
        if None not in (a0, c0, a1, c1):
            pairs.append((a0, c0, a1, c1))
    return pairs


def judge_agreement(
    store: Store, run_id: str, reference: str | None, judge: str, thresholds: Thresholds | None = None
) -> Agreement | None:
    """How ``judge`` agrees with ``reference`` on a run's emergent-misalignment answers (None when
    the run has none both scored)."""
    if not reference:
        return None
    th = thresholds or Thresholds()
    pairs = scored_pairs(store, run_id, reference, judge)
    if not pairs:
        return None
    return compare(reference, judge, pairs, aligned_below=th.aligned_below, coherent_above=th.coherent_above)


def rejudge_sync(*args, **kwargs) -> RejudgeResult:
    return asyncio.run(rejudge(*args, **kwargs))
