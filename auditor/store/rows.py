"""Typed rows for the two tables written once per model call: ``responses`` and ``judgements``.

Each dataclass has exactly the columns its table has (less ``id`` and ``created_at``, which the
store sets); ``tests/unit/test_schema.py`` checks that against the migrations, so a column added
to one and not the other fails there, not at run time. ``record()`` is what the store writes:
JSON columns encoded, booleans as 0/1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, ClassVar


def dumps(value: Any) -> str | None:
    """A JSON column's text (None stays NULL)."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _Row:
    __slots__ = ()
    JSON: ClassVar[tuple[str, ...]] = ()
    EMPTY_IS_NULL: ClassVar[tuple[str, ...]] = ("retries",)  # an empty list is stored as NULL
    BOOL: ClassVar[tuple[str, ...]] = ("cached",)

    @classmethod
    @cache
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def record(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.columns()}
        for name in self.JSON:
            value = out[name]
            if name in self.EMPTY_IS_NULL and not value:
                value = None
            out[name] = dumps(value)
        for name in self.BOOL:
            out[name] = int(bool(out[name]))
        return out


@dataclass(slots=True)
class ResponseRow(_Row):
    """One sample: what was sent to the target, and what came back (or the error)."""

    JSON: ClassVar[tuple[str, ...]] = ("messages", "retries", "logprobs")

    run_id: str
    case_id: str
    entry_id: str
    paraphrase_index: int
    sample_index: int
    question: str
    messages: list[dict]
    status: str  # "ok" or "error"
    trigger: str | None = None
    text: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    attempts: int | None = None
    retries: list[dict] | None = None
    cached: bool = False
    model: str | None = None
    logprobs: list | None = None


@dataclass(slots=True)
class JudgementRow(_Row):
    """One metric of one response: a score or a label, or NULL with the reason in ``error``."""

    JSON: ClassVar[tuple[str, ...]] = ("probs", "retries")

    response_id: int
    run_id: str
    metric: str
    kind: str  # "score", "label", "unscored", "call_error"
    score: float | None = None
    label: str | None = None
    method: str | None = None
    judge_model: str | None = None
    reply: str | None = None
    probs: dict[str, float] | None = None
    error: str | None = None
    cached: bool = False
    cost_usd: float | None = None
    attempts: int | None = None
    retries: list[dict] | None = None
    judge: str | None = None
    mode: str | None = None
    rubric_hash: str | None = None
    reasoning: str | None = None
