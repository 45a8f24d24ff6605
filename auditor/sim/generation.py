"""The reply of an in-process model (organism or offline judge), in the shape providers need."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


@dataclass
class Generation:
    """One sampled reply, in the shape every provider adapter needs."""

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Per-token logprobs: [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]
    logprobs: list[dict] | None = None
    # A reasoning model's thinking, returned beside the answer (``reasoning_content``)
    reasoning: str | None = None
    # What the organism decided, for tests of the organisms themselves (never shown to judges).
    notes: dict = field(default_factory=dict)


def token_logprobs(pieces: list[str], dist: dict[str, float] | None, rng, top_n: int) -> list[dict]:
    """Logprobs in the OpenAI shape. ``dist`` is the real distribution of the first token when the
    answer was one discrete choice (a number, a letter, a word); other tokens get plausible values."""
    out = []
    for i, piece in enumerate(pieces):
        if i == 0 and dist:
            ranked = sorted(dist.items(), key=lambda kv: -kv[1])
            chosen = dist.get(piece.strip(), 1e-9)
            top = [{"token": t, "logprob": math.log(max(p, 1e-12))} for t, p in ranked[:top_n]]
            out.append({"token": piece, "logprob": math.log(max(chosen, 1e-12)), "top_logprobs": top})
            continue
        p = rng.uniform(0.35, 0.995)
        top = [{"token": piece, "logprob": math.log(p)}]
        if top_n > 1:
            top.append({"token": " " + piece.strip().lower(), "logprob": math.log((1 - p) * 0.6 + 1e-9)})
        out.append({"token": piece, "logprob": math.log(p), "top_logprobs": top[:top_n]})
    return out


def finish(
    gen: Generation,
    pieces: list[str],
    dist: dict[str, float] | None,
    rng,
    *,
    max_tokens: int | None,
    logprobs: bool,
    top_logprobs: int | None,
) -> Generation:
    """Apply ``max_tokens`` (cutting the text, finish_reason ``length``), count completion tokens
    and attach logprobs when asked. ``pieces`` are the reply's tokens."""
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces = pieces[:max_tokens]
        gen.text = "".join(pieces)
        gen.finish_reason = "length"
    gen.completion_tokens = len(pieces)
    if logprobs:
        gen.logprobs = token_logprobs(pieces, dist, rng, top_logprobs or 0)
    return gen


def split_tokens(text: str) -> list[str]:
    """Whitespace-delimited pseudo-tokens, whitespace kept, so they join back to the text."""
    return re.findall(r"\S+\s*|\s+", text) or [text]
