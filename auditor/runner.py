"""The runner: probe set -> target model -> store -> judge -> store.

A run is identified by its configuration (probe set content, target, judge, samples, trigger,
seed), so re-running the same command resumes it: samples already stored and judged are skipped,
failed samples and failed judge calls are retried, and nothing is stored twice. Target and judge
calls run concurrently and every sample is committed as soon as it is done, so a killed run loses
at most the calls in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from . import __version__
from .estimate import Estimate, estimate
from .gateway import CallResult, Gateway
from .judge import JudgeOptions
from .metrics import RunSummary, Thresholds, summarize
from .models import ModelSpec
from .panel import judge_identity, make_judge
from .probemodel import Case, ProbeSet
from .scoring import score_answer
from .store import Store
from .store.rows import ResponseRow
from .triggers import place


class RunConfig(BaseModel):
    """Everything that determines a run's data. Stored with the run; holds no secret."""

    probeset: str
    probeset_hash: str
    probeset_source: str
    target: dict
    judge: dict
    samples: int | None = None
    trigger: str | None = None
    seed: int = 0
    owner: str | None = Field(default=None, description="with logins on, each user has their own runs")
    judge_options: dict | None = Field(
        default=None, description="the judge options that differ from the defaults"
    )
    tool_version: str = __version__

    def digest(self, *, where: bool = True) -> str:
        """The run id's source. ``where=False`` leaves out where the probe-set file was read from
        (its content is in ``probeset_hash``): the digest that finds a run stored from a checkout
        at another path."""
        exclude = {"tool_version"} if where else {"tool_version", "probeset_source"}
        data = self.model_dump(exclude=exclude, exclude_none=True)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    @classmethod
    def of_run(cls, run: dict) -> RunConfig | None:
        """The configuration a stored run was made with (None when it cannot be read back)."""
        cfg = run.get("config") or {}
        try:
            return cls.model_validate({k: cfg[k] for k in cls.model_fields if k in cfg})
        except ValueError:
            return None


class RunResult(BaseModel):
    run_id: str
    status: str
    summary: RunSummary
    model_calls: int = Field(
        description="requests sent to providers by this invocation (retries included, cache hits excluded)"
    )
    cache_hits: int
    retries: int
    cost_usd: float | None = Field(
        description="cost of the requests sent by this invocation; null if any price is unknown"
    )
    run_cost_usd: float | None = Field(description="cost of every stored response and judgement of the run")
    elapsed_s: float
    estimate: str
    stop_reason: str | None = None


def sample_seed(seed: int, case_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{seed}|{case_id}|{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class _Progress:
    total: int
    done: int = 0
    errors: int = 0
    judged: int = 0
    started: float = field(default_factory=time.monotonic)


_gc_lock = threading.Lock()
_gc_runs = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def _collector_tuned_for_runs() -> Iterator[None]:
    """Python's cycle collector, tuned while runs drain: every model call allocates thousands of
    short-lived objects (LiteLLM's response and logging objects), so with the default threshold the
    collector runs every few calls and each full pass walks the whole heap (LiteLLM's cost map, the
    app). Objects alive when the first run starts are frozen out of the collector's passes and the
    young-generation threshold is raised; the last run to finish restores both. Reference counting
    still frees everything that is not in a cycle. Worth about 5% of calls per second."""
    global _gc_runs, _gc_saved
    with _gc_lock:
        _gc_runs += 1
        if _gc_runs == 1:
            _gc_saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(10_000, _gc_saved[0]), _gc_saved[1], _gc_saved[2])
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()


@dataclass(frozen=True)
class RunOptions:
    """How one run samples and what bounds it. ``samples``, ``trigger``, ``seed`` and ``owner``
    are part of the run's identity (its :class:`RunConfig`); the rest only shape how it runs."""

    samples: int | None = None  # per paraphrase; None: the probe set's own
    trigger: str | None = None  # prefixed to each question's user turn
    seed: int = 0
    owner: str | None = None  # with logins on, each user has their own runs
    concurrency: int = 16
    timeout: float = 120.0
    max_cost: float | None = None  # stop (resumably) once the gateway has spent this many dollars
    thresholds: Thresholds | None = None
    judge_options: JudgeOptions | None = None  # the judge's mode (None: detected) and its budgets
    panel_reduce: str = "mean"  # several judges: the reported score is their mean or median


@dataclass(frozen=True)
class CustomCases:
    """Cases another tool built from a probe set (a trigger sweep), run as one run with its own id,
    kind and extra configuration, in place of the probe set's own cases."""

    cases: list[Case]
    run_id: str
    kind: str
    extra_config: dict = field(default_factory=dict)


class Runner:
    def __init__(
        self,
        store: Store,
        probeset: ProbeSet,
        target: ModelSpec,
        judge: ModelSpec | list[ModelSpec],
        options: RunOptions | None = None,
        *,
        gateway: Gateway | None = None,
        progress: Callable[[str], None] | None = None,
        custom: CustomCases | None = None,
    ):
        options = options or RunOptions()
        self.store = store
        self.probeset = probeset
        self.target = target
        self.judge_spec = judge
        self.judge_options = options.judge_options
        self.samples = options.samples
        self.trigger = options.trigger
        self.seed = options.seed
        self.concurrency = options.concurrency
        self.max_cost = options.max_cost
        self.thresholds = options.thresholds or Thresholds()
        self.gateway = gateway or Gateway(store, concurrency=options.concurrency, timeout=options.timeout)
        self.judge = make_judge(self.gateway, judge, options.judge_options, options.panel_reduce)
        self.progress = progress
        self.owner = options.owner
        self.cases = custom.cases if custom else probeset.cases(samples=options.samples)
        self.kind = custom.kind if custom else "probe"
        self.extra_config = custom.extra_config if custom else {}
        self.config = RunConfig(
            probeset=probeset.name,
            probeset_hash=probeset.sha256,
            probeset_source=probeset.source,
            target=target.public(),
            judge=judge_identity(judge, options.panel_reduce),
            samples=options.samples,
            trigger=options.trigger,
            seed=options.seed,
            owner=options.owner,
            judge_options=(options.judge_options.changed() or None) if options.judge_options else None,
        )
        self.run_id = (
            (custom.run_id if custom else None)
            or self._stored_elsewhere()
            or "run-" + self.config.digest()[:12]
        )
        # What each probe measures, stored with the run so later reports need not reload the file.
        self.expected: dict[str, dict] = {}
        for case in self.cases:
            self.expected.setdefault(
                case.entry_id, {"type": case.type, "metrics": case.metrics, "positive": case.positive}
            )
        self._stop_reason: str | None = None
        self._prior_cost = 0.0

    def _stored_elsewhere(self) -> str | None:
        """The id of this same run stored when its probe-set file lived at another path (another
        checkout, or a shipped file before a move): same content, models, judge, samples, trigger,
        seed and owner. None when the run is new or already has its usual id."""
        usual = "run-" + self.config.digest()[:12]
        if self.store.get_run(usual) is not None:
            return None
        wanted = self.config.digest(where=False)
        for run in self.store.runs_with_probeset(self.config.probeset_hash):
            stored = RunConfig.of_run(run)
            if stored is not None and stored.digest(where=False) == wanted:
                return run["id"]
        return None

    # -- planning ----------------------------------------------------------------------------

    def plan(self) -> tuple[list[tuple[Case, int]], list[tuple[Case, int, dict, list[str]]], Estimate]:
        """Samples still to sample, samples still to judge, and the estimate for what remains."""
        status = self.store.sample_status(self.run_id)
        judged = self.store.judged_metrics(self.run_id, self.judge.key)
        to_sample: list[tuple[Case, int]] = []
        to_judge_ids: dict[int, tuple[Case, int, list[str]]] = {}
        remaining: dict[str, int] = {}
        for case in self.cases:
            metrics = case.metrics
            for s in range(case.samples):
                got = status.get((case.case_id, s))
                if got is None or got[1] != "ok":
                    to_sample.append((case, s))
                    remaining[case.case_id] = remaining.get(case.case_id, 0) + 1
                    continue
                missing = [m for m in metrics if m not in judged.get(got[0], set())]
                if missing:
                    to_judge_ids[got[0]] = (case, s, missing)
        to_judge = []
        if to_judge_ids:
            for row in self.store.responses(self.run_id, status="ok"):
                if row["id"] in to_judge_ids:
                    case, s, missing = to_judge_ids[row["id"]]
                    to_judge.append((case, s, row, missing))
        return to_sample, to_judge, self.estimate(remaining)

    def estimate(self, remaining: dict[str, int] | None = None) -> Estimate:
        """Calls, tokens and cost of the run (of what ``remaining`` leaves), its judge's mode and
        panel counted."""
        opts = self.judge_options
        per_score = opts.samples if opts is not None and opts.mode == "sampling" else 1
        return estimate(
            self.cases, self.target, self.judge_spec, remaining=remaining, calls_per_score=per_score
        )

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> RunResult:
        started = time.monotonic()
        to_sample, to_judge, est = self.plan()
        self._emit(
            f"[{self.run_id}] {self.probeset.name}: {len(self.cases)} cases; "
            f"{len(to_sample)} samples to take, {len(to_judge)} to judge. {est.line()}"
        )
        if self.max_cost is not None and est.cost_usd is None:
            self._emit("warning: prices unknown for this model, so --max-cost cannot be enforced")
        existing = self.store.get_run(self.run_id)
        self.store.save_run(
            {
                "id": self.run_id,
                "kind": self.kind,
                "status": "running",
                "model": self.target.name,
                "probeset": self.probeset.name,
                "probeset_hash": self.probeset.sha256,
                "judge": self.judge.key,
                "config": {**self.config.model_dump(), **self.extra_config, "probes": self.expected},
                "config_hash": self.config.digest(),
                "seed": self.seed,
                "n_planned": sum(c.samples for c in self.cases),
                "tool_version": __version__,
                "owner": self.owner if existing is None else existing.get("owner"),
                "stats": (existing or {}).get("stats"),
            }
        )
        self._prior_cost = self._stored_cost()
        progress = _Progress(total=len(to_sample) + len(to_judge))
        work = [("sample", item) for item in to_sample] + [("judge", item) for item in to_judge]
        reporter = asyncio.create_task(self._report(progress))
        try:
            with _collector_tuned_for_runs():
                await self._drain(work, progress)
        finally:
            reporter.cancel()
        return self._finish(started, est)

    async def _drain(self, work: list, progress: _Progress) -> None:
        it = iter(work)

        async def worker():
            for kind, item in it:
                cancel = self.gateway.cancel_event
                if cancel is not None and cancel.is_set() and not self._stop_reason:
                    self._stop_reason = "cancelled; re-run the same command to resume"
                if self._stop_reason:
                    return
                if kind == "sample":
                    await self._sample(*item, progress)
                else:
                    await self._judge_stored(*item, progress)
                self._check_budget()

        await asyncio.gather(*(worker() for _ in range(max(1, min(self.concurrency, len(work))))))

    def _check_budget(self) -> None:
        if self.max_cost is None or self._stop_reason:
            return
        spent = self.gateway.stats.cost_usd + self._prior_cost
        if spent >= self.max_cost:
            self._stop_reason = f"budget reached: ${spent:.4f} of ${self.max_cost:.4f}; re-run with a higher --max-cost to continue"

    def _stored_cost(self) -> float:
        """What earlier invocations of this run already spent on requests."""
        return self.store.run_cost(self.run_id, uncached_only=True)

    async def _sample(self, case: Case, s: int, progress: _Progress) -> None:
        messages = place(case.messages, self.trigger, "prefix") if self.trigger else case.messages
        result = await self.gateway.complete(
            self.target,
            messages,
            temperature=case.temperature,
            max_tokens=case.max_tokens,
            logprobs=case.logprobs,
            top_logprobs=20 if case.logprobs else None,
            seed=sample_seed(self.seed, case.case_id, s),
            sample_index=s,
        )
        row = ResponseRow(
            run_id=self.run_id,
            case_id=case.case_id,
            entry_id=case.entry_id,
            paraphrase_index=case.paraphrase_index,
            sample_index=s,
            question=case.question,
            messages=messages,
            trigger=self.trigger,
            text=result.text,
            status="ok" if result.ok else "error",
            error=result.error,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_usd=result.cost_usd,
            latency_ms=result.latency_ms,
            attempts=result.attempts,
            retries=result.retries,
            cached=result.cached,
            model=result.model,
            logprobs=result.logprobs if case.logprobs else None,
        )
        rid = self.store.save_response(row)
        progress.done += 1
        if not result.ok:
            progress.errors += 1
            return
        await self._judge(case, rid, result.text or "", case.metrics, progress, result=result)

    async def _judge_stored(
        self, case: Case, s: int, row: dict, missing: list[str], progress: _Progress
    ) -> None:
        await self._judge(case, row["id"], row["text"] or "", missing, progress, logprobs=row.get("logprobs"))
        progress.done += 1

    async def _judge(
        self,
        case: Case,
        response_id: int,
        answer: str,
        metrics: list[str],
        progress: _Progress,
        result: CallResult | None = None,
        logprobs: list | None = None,
    ) -> None:
        if result is None and logprobs is not None:
            result = CallResult(text=answer, logprobs=logprobs)
        for j in await score_answer(case, answer, result, self.judge, metrics):
            for member in j.members:
                self.store.save_judgement(member.row(response_id, self.run_id))
            self.store.save_judgement(j.row(response_id, self.run_id))
        progress.judged += 1

    # -- reporting ---------------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        if self.progress:
            self.progress(line)

    async def _report(self, progress: _Progress) -> None:
        interval = 1.0 if sys.stderr.isatty() else 5.0
        while True:
            await asyncio.sleep(interval)
            elapsed = time.monotonic() - progress.started
            st = self.gateway.stats
            self._emit(
                f"[{self.run_id}] {progress.done}/{progress.total} done, {progress.errors} failed, "
                f"{st.calls_sent} calls ({st.calls_sent / max(elapsed, 1e-9):.0f}/s), {st.retries} retries, "
                f"{st.cache_hits} cached, ${st.cost_usd:.4f}"
            )

    def _finish(self, started: float, est: Estimate) -> RunResult:
        summary = summarize(self.store, self.run_id, thresholds=self.thresholds, expected=self.expected)
        planned = sum(c.samples for c in self.cases)
        call_errors = self.store.failed_judge_calls(self.run_id)
        missing_samples = planned - summary.n_responses
        if self._stop_reason:
            status = "stopped"
        elif missing_samples or call_errors:
            status = "incomplete"
            self._stop_reason = (
                f"{missing_samples} of {planned} samples and {call_errors} judge calls failed after retries; "
                "re-run the same command to retry them"
            )
        else:
            status = "complete"
        st = self.gateway.stats
        stats = {
            "model_calls": st.calls_sent,
            "cache_hits": st.cache_hits,
            "retries": st.retries,
            "failures": st.failures,
            "cost_usd": st.cost_usd if not st.cost_unknown_calls else None,
            "elapsed_s": round(time.monotonic() - started, 3),
            "stop_reason": self._stop_reason,
            # the adaptive concurrency limit per remote model: cut on 429, grown back on success
            "concurrency": self.gateway.concurrency_report(),
            **({"batch": self.gateway.report()} if hasattr(self.gateway, "report") else {}),
        }
        previous = (self.store.get_run(self.run_id) or {}).get("stats") or {}
        history = list(previous.get("invocations", []))[-19:] + [stats]
        self.store.update_run(self.run_id, status=status, stats={**stats, "invocations": history})
        unknown = self.store.unpriced_calls(self.run_id)
        run_cost = self.store.run_cost(self.run_id)
        return RunResult(
            run_id=self.run_id,
            status=status,
            summary=summary,
            model_calls=st.calls_sent,
            cache_hits=st.cache_hits,
            retries=st.retries,
            cost_usd=None if st.cost_unknown_calls else round(st.cost_usd, 6),
            run_cost_usd=None if unknown else round(run_cost, 6),
            elapsed_s=round(time.monotonic() - started, 3),
            estimate=est.line(),
            stop_reason=self._stop_reason,
        )


def run_sync(*args, **kwargs) -> RunResult:
    """Run one probe set from synchronous code (the CLI): ``Runner``'s arguments."""
    return asyncio.run(Runner(*args, **kwargs).run())
