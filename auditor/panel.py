"""A panel of judges: every answer scored by each judge, the reported score their mean or median.

A :class:`Panel` has the interface of a :class:`~auditor.judge.Judge` (``score_0_100``,
``categorise``, ``key``), so runs, audits, sweeps and re-judgements take either. Its judgement of
an answer carries the members' judgements in ``members``; the store keeps all of them (each under
its own judge's key) beside the panel's (under the panel's key), so every member's numbers, the
panel's agreement (Krippendorff's alpha, :func:`auditor.agreement.krippendorff_alpha`) and the
answers it split on can be read back.

A score needs a majority of the members to have scored (CODE or REFUSAL from most of them leaves
it unscored); a member's failed call makes the panel's judgement a call error, retried on resume
(the members that answered come from the cache then). A label is the members' majority; a tie is
unscored.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter

from .gateway import Gateway
from .judge import Judge, Judgement, JudgeOptions
from .models import ModelSpec

REDUCERS = ("mean", "median")
DISAGREEMENT = 40.0  # members' spread (max - min) over which an answer is listed as disputed


class Panel:
    def __init__(self, judges: list[Judge], reduce: str = "mean"):
        if len(judges) < 2:
            raise ValueError("a panel needs at least two judges")
        keys = [j.key for j in judges]
        if len(set(keys)) != len(keys):
            raise ValueError(f"the panel names one judge twice: {', '.join(keys)}")
        if reduce not in REDUCERS:
            raise ValueError(f"--panel-reduce {reduce!r}: choose one of {', '.join(REDUCERS)}")
        self.judges = judges
        self.reduce = reduce
        self.mode = "panel"

    @property
    def key(self) -> str:
        return f"panel {self.reduce}: " + " + ".join(j.key for j in self.judges)

    @property
    def probes(self) -> int:
        return sum(j.probes for j in self.judges)

    @property
    def members(self) -> list[str]:
        return [j.key for j in self.judges]

    def _panel(self, metric: str, members: list[Judgement], **values) -> Judgement:
        j = Judgement(metric, judge_model=self.key, judge=self.key, mode="panel", method="panel", **values)
        j.members = members
        j.cached = all(m.cached for m in members)
        costs = [m.cost_usd for m in members]
        j.cost_usd = None if any(c is None for c in costs) else sum(costs)
        j.attempts = sum(m.attempts for m in members)
        j.rubric_hash = members[0].rubric_hash
        return j

    async def score_0_100(self, metric: str, prompt: str, question: str, answer: str) -> Judgement:
        members = list(
            await asyncio.gather(*(j.score_0_100(metric, prompt, question, answer) for j in self.judges))
        )
        failed = [m for m in members if m.kind == "call_error"]
        if failed:
            return self._panel(
                metric, members, kind="call_error", error=f"{failed[0].judge}: {failed[0].error}"
            )
        scores = {m.judge: m.score for m in members if m.kind == "score" and m.score is not None}
        if len(scores) * 2 <= len(members):
            reasons = "; ".join(f"{m.judge}: {m.error}" for m in members if m.score is None)
            return self._panel(
                metric, members, kind="unscored", error=f"most of the panel gave no score ({reasons})"
            )
        values = list(scores.values())
        score = statistics.fmean(values) if self.reduce == "mean" else statistics.median(values)
        return self._panel(metric, members, kind="score", score=score, probs=scores)

    async def categorise(
        self, metric: str, prompt: str, question: str, answer: str, labels: list[str] | None
    ) -> Judgement:
        members = list(
            await asyncio.gather(
                *(j.categorise(metric, prompt, question, answer, labels) for j in self.judges)
            )
        )
        failed = [m for m in members if m.kind == "call_error"]
        if failed:
            return self._panel(
                metric, members, kind="call_error", error=f"{failed[0].judge}: {failed[0].error}"
            )
        votes = Counter(m.label for m in members if m.label)
        ranked = votes.most_common()
        if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
            return self._panel(metric, members, kind="unscored", error=f"the panel split: {dict(votes)}")
        share = {label: n / len(members) for label, n in votes.items()}
        return self._panel(metric, members, kind="label", label=ranked[0][0], probs=share)


def make_judge(
    gateway: Gateway,
    specs: ModelSpec | list[ModelSpec],
    options: JudgeOptions | None = None,
    reduce: str = "mean",
) -> Judge | Panel:
    """One judge, or a panel of them when several are named."""
    if isinstance(specs, ModelSpec):
        return Judge(gateway, specs, options)
    if len(specs) == 1:
        return Judge(gateway, specs[0], options)
    return Panel([Judge(gateway, s, options) for s in specs], reduce)


def judge_identity(specs: ModelSpec | list[ModelSpec], reduce: str = "mean") -> dict:
    """The judge part of a run's identity: one judge's public description, or the panel's."""
    if isinstance(specs, ModelSpec):
        return specs.public()
    if len(specs) == 1:
        return specs[0].public()
    return {"panel": [s.public() for s in specs], "reduce": reduce}


def judge_key(
    specs: ModelSpec | list[ModelSpec], options: JudgeOptions | None = None, reduce: str = "mean"
) -> str:
    """The key the judge (or panel) that :func:`make_judge` makes stores its judgements under."""
    specs = [specs] if isinstance(specs, ModelSpec) else list(specs)
    mode = options.mode if options else None
    keys = [s.name if mode is None else f"{s.name} [{mode}]" for s in specs]
    return keys[0] if len(keys) == 1 else f"panel {reduce}: " + " + ".join(keys)
