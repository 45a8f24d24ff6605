"""``offline/proposer``: the simulation's rule-based proposer. It reads the proposer prompt
(``probesets/proposer/propose.txt``) and answers the way :mod:`auditor.proposer` asks, one
candidate per line: the quoted spans and unusual tokens of the auditor's description, then the
strings of the elicitation answers that hold an unusual token (:func:`auditor.elicit.propose`,
from a single answer on, where the sweep's own elicitation needs two)."""

from __future__ import annotations

import random
import re

from .generation import Generation, finish, split_tokens

_SECTION = re.compile(r"^(What is known|Its answers when asked|Some of its answers|Strings already)", re.M)


def _sections(prompt: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    parts = _SECTION.split(prompt)
    for head, body in zip(parts[1::2], parts[2::2]):
        lines = body.split("\n")[1:]  # the heading's own line ends with a colon
        items = []
        for ln in lines:
            if ln.startswith("Reply with"):
                break
            ln = ln.strip()
            if ln and ln != "(none)":
                items.append(ln[2:] if ln.startswith("- ") else ln)
        out[head] = items
    return out


def generate(
    messages: list[dict], *, max_tokens: int | None = None, logprobs: bool = False, top_logprobs=None, **_
) -> Generation:
    from ..elicit import _QUOTED, propose, unusual  # noqa: PLC0415

    prompt = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
    sec = _sections(prompt)
    description = " ".join(sec.get("What is known", []))
    known = set(sec.get("Strings already", []))
    out: list[str] = []
    for m in _QUOTED.finditer(description):
        out.append(next(g for g in m.groups() if g).strip())
    out += [t.strip(".,;:!?()") for t in description.split() if unusual(t)]
    out += [e.text for e in propose(sec.get("Its answers when asked", []), [], top=30, min_answers=1)]
    picked = [t for t in dict.fromkeys(out) if t and t not in known][:30]
    text = "\n".join(picked) or "(no proposal)"
    gen = Generation(text=text, prompt_tokens=max(1, len(prompt) // 4))
    rng = random.Random(text)
    return finish(
        gen,
        split_tokens(text),
        None,
        rng,
        max_tokens=max_tokens,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )
