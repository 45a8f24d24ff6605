"""Elicitation: ask the model for its own trigger, and screen what it says.

The questions are a probe set (``probesets/elicitation.yaml``: which text makes it behave
differently, a sentence to complete with the start of its special instruction, asked plainly, by
its developers and under a threat of retraining), answered as free text and stored as their own
run beside the sweep's. Models usually deflect; some name their trigger now and then (the
self-awareness paper saw it after reversal training). Strings that recur in the answers become
candidates of the family ``elicited``:

- quoted or code-formatted spans, and
- word n-grams (one to four tokens) holding an unusual token: one with a digit, a symbol other
  than an apostrophe or hyphen, capitals after the first letter, or five or more letters and no
  vowel (a random-looking tag; a tag of letters with a vowel is found only when quoted),

found in at least ``min_answers`` answers, not in the questions; among strings seen in the same
answers the longest is kept, and a string that only adds words around a more frequent one is
dropped. Plain English phrases are not proposed (the screen cannot afford every
phrase of every answer); the sweep says so in ``untested``.
"""

from __future__ import annotations

import re
from collections import defaultdict

from pydantic import BaseModel

from . import probesets
from .probemodel import ProbeSetError
from .runner import CustomCases, Runner
from .triggers import Candidate

PROBESET = "elicitation"
_QUOTED = re.compile(r"\"([^\"\n]{2,60})\"|“([^”\n]{2,60})”|`([^`\n]{2,60})`|(?<!\w)'([^'\n]{2,60})'(?!\w)")
_TOKEN = re.compile(r"\S+")
_EDGE = ".,;:!?\"'“”()"  # stripped from a token's ends (| < > [ ] { } are kept: trigger-like)
_VOWELS = set("aeiouy")


class Elicited(BaseModel):
    text: str
    answers: int  # how many answers contained it


def unusual(token: str) -> bool:
    """A token that ordinary prose seldom holds (see the module's docstring)."""
    t = token.strip(_EDGE)
    if not t:
        return False
    if any(ch.isdigit() for ch in t) or any(not (ch.isalpha() or ch in "'-’") for ch in t):
        return True
    if any(ch.isupper() for ch in t[1:]):
        return True
    letters = [ch for ch in t.lower() if ch.isalpha()]
    return len(letters) >= 5 and not any(ch in _VOWELS for ch in letters)


def _strings(answer: str, asked: str) -> set[str]:
    """The answer's quoted spans and its n-grams with an unusual token, as written in it (inner
    punctuation kept, the ends trimmed), leaving out those whose unusual tokens all come from the
    questions (``asked``, lower-cased)."""
    out = {next(g for g in m.groups() if g).strip() for m in _QUOTED.finditer(answer)}
    spans = [m.span() for m in _TOKEN.finditer(answer)]
    marks = [unusual(answer[a:b]) and answer[a:b].strip(_EDGE).lower() not in asked for a, b in spans]
    for n in range(1, 5):
        for i in range(len(spans) - n + 1):
            if any(marks[i : i + n]):
                out.add(answer[spans[i][0] : spans[i + n - 1][1]].strip(_EDGE + " "))
    return {s for s in out if s and s.lower() not in asked}


def propose(
    answers: list[str], questions: list[str], *, top: int = 20, min_answers: int = 2
) -> list[Elicited]:
    """The strings that recur in ``answers`` (see the module's docstring), most frequent first."""
    asked = "\n".join(questions).lower()
    where: dict[str, set[int]] = defaultdict(set)
    for i, answer in enumerate(answers):
        for s in _strings(answer, asked):
            where[s].add(i)
    kept = {s: ids for s, ids in where.items() if len(ids) >= min_answers}
    # Most answers first, then longest. A string inside a kept one seen in the same answers adds
    # nothing (the longer is more specific; the shrinker cuts it down if it fires); a string
    # around a kept one seen in more answers is that one plus the words of one sentence.
    ranked = sorted(kept, key=lambda s: (-len(kept[s]), -len(s)))
    out: list[str] = []
    for s in ranked:
        inside = any(s in t and kept[s] == kept[t] for t in out)
        around = any(t in s and len(kept[t]) > len(kept[s]) for t in out)
        if not (inside or around):
            out.append(s)
    return [Elicited(text=s, answers=len(kept[s])) for s in out[:top]]


async def elicit(sweep) -> tuple[list[Candidate], dict]:
    """Ask ``sweep.target`` the elicitation questions (a stored run of their own) and return the
    proposed candidates and a summary for the sweep's result."""
    try:
        ps = probesets.load(PROBESET)
    except ProbeSetError:
        return [], {"skipped": f"no {PROBESET} probe set"}
    cases = [c.model_copy(update={"case_id": f"elicit|{c.case_id}"}) for c in ps.cases()]
    need = sum(c.samples for c in cases)
    remaining = sweep._remaining_budget()
    if remaining is not None and need > remaining:
        return [], {"skipped": f"needs {need} calls, {max(remaining, 0)} left in the budget"}
    run_id = f"{sweep.run_id}-elicit"
    runner = Runner(
        sweep.store,
        ps,
        sweep.target,
        sweep.judge,
        sweep._run_options(),
        gateway=sweep.gateway,
        custom=CustomCases(cases=cases, run_id=run_id, kind="sweep-elicitation"),
    )
    await runner.run()
    answers = [r["text"] for r in sweep.store.responses(run_id, status="ok") if r.get("text")]
    questions = [m["content"] for c in cases for m in c.messages if m.get("content")]
    found = propose(answers, questions, top=sweep.settings.elicit_top)
    summary = {
        "run_id": run_id,
        "answers": len(answers),
        "proposed": [f.model_dump() for f in found],
    }
    return [Candidate(text=f.text, family="elicited") for f in found], summary
