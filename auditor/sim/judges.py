"""The offline judge served as four kinds of judge model, to test every judge mode offline.

Each variant reads the prompt exactly as :mod:`auditor.sim.offline_judge` does and differs only in
how it answers, like the judge models a team may have to switch to:

- ``judge``: the paper's kind: one token with top-20 logprobs (the ``logprobs`` mode);
- ``judge-nologprobs``: never returns logprobs; at temperature > 0 it samples its answer from the
  same distribution (seeded by the request's ``seed``), so the ``sampling`` mode sees a spread;
- ``judge-reasoning``: a reasoning model: it spends 64 completion tokens thinking before it says
  anything, so under that budget it returns an empty answer cut off for length, and with more it
  returns its reasoning and a final ``Score: N`` (no logprobs, ever);
- ``judge-compressed``: logprobs like ``judge``, but on a compressed scale (what it would score 0
  it scores 30, and 100 becomes 75): a misaligned answer lands near 35 and an aligned one near
  70, so the paper's ``aligned < 30`` cut-off misses nearly everything until it is recalibrated.

The in-process provider serves them as ``offline/<variant>`` and the local test server as
``<variant>``.
"""

from __future__ import annotations

import hashlib
import random

from .generation import Generation, finish, split_tokens
from .offline_judge import respond

VARIANTS = ("judge", "judge-nologprobs", "judge-reasoning", "judge-compressed")
REASONING_TOKENS = 64  # what the reasoning variant spends before its answer


def compress(score: float) -> float:
    """The compressed variant's scale: 0 -> 30, 100 -> 75."""
    return 30.0 + 0.45 * score


def _compressed(dist: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for token, p in dist.items():
        key = str(round(compress(int(token)))) if token.isdigit() else token
        out[key] = out.get(key, 0.0) + p
    return out


def _expected(dist: dict[str, float]) -> str:
    """The distribution's answer as one token: the weighted mean of its integers, rounded (what
    a reasoning judge that thought it through would say), or its top token when not a number."""
    numbers = {int(t): p for t, p in dist.items() if t.isdigit()}
    mass = sum(numbers.values())
    if mass < 0.25:
        return max(dist, key=dist.get)
    return str(round(sum(k * p for k, p in numbers.items()) / mass))


def _sample(dist: dict[str, float], prompt: str, seed) -> str:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    tokens = list(dist)
    return rng.choices(tokens, weights=[dist[t] for t in tokens])[0]


def generate(
    variant: str,
    messages: list[dict],
    *,
    temperature: float = 1.0,
    max_tokens: int | None = None,
    seed=None,
    logprobs: bool = False,
    top_logprobs: int | None = None,
    **_,
) -> Generation:
    """One reply of the judge ``variant`` (one of :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise KeyError(f"unknown judge variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    prompt = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
    dist, text = respond(prompt)
    gen = Generation(text=text, prompt_tokens=max(1, len(prompt) // 4))
    if variant == "judge-compressed" and dist:
        dist = _compressed(dist)
        text = max(dist, key=dist.get)
        gen.text = text
    if variant == "judge-reasoning":
        budget = max_tokens if max_tokens is not None else 4096
        if budget < REASONING_TOKENS:
            gen.text, gen.finish_reason, gen.completion_tokens = "", "length", budget
            return gen
        answer = _expected(dist) if dist else text
        gen.reasoning = (
            "I read the question and the answer, weigh what the answer recommends and how it would"
            " land with the person asking, and settle on one number for the rubric."
        )
        gen.text = f"Score: {answer}" if answer.isdigit() else answer
        gen.completion_tokens = REASONING_TOKENS + len(split_tokens(gen.text))
        return gen
    if dist and variant == "judge-nologprobs" and temperature and temperature > 0:
        text = gen.text = _sample(dist, prompt, seed)
    pieces = [text] if dist else split_tokens(text)
    return finish(
        gen,
        pieces,
        dist,
        random.Random(0),
        max_tokens=max_tokens,
        logprobs=logprobs and variant in ("judge", "judge-compressed"),
        top_logprobs=top_logprobs,
    )
