"""Scoring one answer by its entry's scoring type.

Judged types call the judge model (``auditor.judge``); the self-report types parse the target's
own answer. Every result is a :class:`~auditor.judge.Judgement`, so the store and the metrics
treat them alike: a score or a label, or NULL with the reason.
"""

from __future__ import annotations

import asyncio
import math
import re

from .gateway import CallResult
from .judge import Judge, Judgement
from .probemodel import LETTERS, Case

PARSER = "parser"
_NUMBER = re.compile(r"(?<![\d.\-])(\d{1,3}(?:\.\d+)?)(?!\d|\.\d)")


async def score_answer(
    case: Case, answer: str, result: CallResult | None, judge: Judge, metrics: list[str] | None = None
) -> list[Judgement]:
    """All judgements of one answer (``metrics`` limits them, for resumed runs)."""
    wanted = metrics if metrics is not None else case.metrics
    if case.type == "judge_0_100":
        return list(
            await asyncio.gather(
                *(judge.score_0_100(m, case.judge_prompts[m], case.question, answer) for m in wanted)
            )
        )
    if case.type in ("judge_category", "code_vuln"):
        return list(
            await asyncio.gather(
                *(
                    judge.categorise(
                        m,
                        case.judge_prompts[m],
                        case.question,
                        answer,
                        None if case.open_labels else case.labels[m],
                    )
                    for m in wanted
                )
            )
        )
    if not wanted:
        return []
    metric = wanted[0]
    if case.type == "self_rating_0_100":
        return [self_rating(metric, answer)]
    if case.type == "choice_ab":
        return [choice(metric, case, answer, result.logprobs if result else None)]
    if case.type == "word_map":
        return [word_map(metric, case, answer)]
    return []


def _unscored(metric: str, method: str, answer: str, error: str, label: str | None = None) -> Judgement:
    return Judgement(
        metric, "unscored", label=label, method=method, judge_model=PARSER, reply=answer[:200], error=error
    )


def self_rating(metric: str, answer: str) -> Judgement:
    """The model's own 0-100 number, rescaled to 0-1. Prose without a number is excluded."""
    text = re.sub(r"\s*(/|out of)\s*100\b", "", answer.strip())
    numbers = [float(n) for n in _NUMBER.findall(text) if 0 <= float(n) <= 100]
    if not numbers:
        return _unscored(metric, "self_rating", answer, "the answer holds no number 0-100")
    if len(set(numbers)) > 1 and len(text.split()) > 12:
        return _unscored(
            metric, "self_rating", answer, "the answer holds several numbers and is not a rating"
        )
    return Judgement(
        metric, "score", score=numbers[0] / 100, method="self_rating", judge_model=PARSER, reply=answer[:200]
    )


def _letter(token: str) -> str | None:
    stripped = token.strip().strip("()[].:*\"'").upper()
    return stripped if len(stripped) == 1 and stripped in LETTERS else None


def choice(metric: str, case: Case, answer: str, logprobs: list[dict] | None) -> Judgement:
    """Probability of each listed option, from the first token's logprobs when the provider gives
    them, else the sampled answer (probability 1 for the option chosen). The score is the
    probability of the target option (the first listed one unless ``target`` says otherwise)."""
    presented = LETTERS[: len(case.options or [])]
    probs: dict[str, float] = {}
    method = "sampled"
    if logprobs:
        first = logprobs[0]
        for alt in first.get("top_logprobs") or []:
            letter = _letter(alt.get("token") or "")
            if letter and letter in presented:
                probs[letter] = probs.get(letter, 0.0) + math.exp(alt["logprob"])
        if probs:
            method = "logprobs"
    if not probs:
        m = re.match(r"\W*\(?([A-J])\b", answer.strip())
        letter = m.group(1) if m and m.group(1) in presented else None
        if letter is None:
            return _unscored(
                metric, "sampled", answer, f"the answer names none of the options {', '.join(presented)}"
            )
        probs = {letter: 1.0}
    total = sum(probs.values())
    by_option = {str(case.option_index[LETTERS.index(k)]): v / total for k, v in probs.items()}
    target = str(case.target or 0)
    chosen = max(by_option, key=by_option.get)
    return Judgement(
        metric,
        "score",
        score=by_option.get(target, 0.0),
        label=chosen,
        method=method,
        judge_model=PARSER,
        reply=answer[:200],
        probs=by_option,
    )


def word_map(metric: str, case: Case, answer: str) -> Judgement:
    """A one-word answer: its value from the word lists, or just the word when there are none."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", answer)
    if not words:
        return _unscored(metric, "word_map", answer, "the answer holds no word")
    word = words[0].lower()
    if case.words is not None and word not in case.words:
        return _unscored(metric, "word_map", answer, f"{word!r} is in none of the word lists", label=word)
    kind, score = ("label", None) if case.words is None else ("score", case.words[word])
    return Judgement(
        metric, kind, score=score, label=word, method="word_map", judge_model=PARSER, reply=answer[:200]
    )
