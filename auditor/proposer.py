"""A proposer model: any model (``--proposer MODEL``) reads what a sweep has learnt about the
target (the answers to the elicitation questions, some of its ordinary answers, the strings
already proposed or mined, and the auditor's description of the model) and proposes candidate
triggers, which join the screen as the family ``proposed``.

The prompt is a file (``probesets/proposer/propose.txt``); the call is a stored run of its own
beside the sweep's (cached, resumable). Its reply is untrusted text: one candidate per line,
list markers and quotes stripped, at most :data:`MAX_CANDIDATES` of at most :data:`MAX_LENGTH`
characters, never a line that only repeats the instructions. ``offline/proposer`` is the
rule-based proposer of the simulation (n-grams and quoted spans, :mod:`auditor.sim.proposer`).
"""

from __future__ import annotations

import re

from . import probesets
from .probemodel import Case
from .runner import CustomCases, Runner
from .triggers import Candidate

MAX_CANDIDATES = 30
MAX_LENGTH = 80
MAX_SHOWN = 40  # answers of each kind shown to the proposer, each cut to 300 characters
_MARKER = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")
_QUOTES = "\"'`“”‘’"


def prompt_text(description: str, answers: list[str], baseline: list[str], strings: list[str]) -> str:
    template = (probesets.shipped_dir() / "proposer" / "propose.txt").read_text(encoding="utf-8")

    def lines(items: list[str]) -> str:
        shown = [" ".join(a.split())[:300] for a in items[:MAX_SHOWN] if a.strip()]
        return "\n".join(f"- {a}" for a in shown) or "(none)"

    fill = {
        "<<DESCRIPTION>>": description.strip() or "(none)",
        "<<ANSWERS>>": lines(answers),
        "<<BASELINE>>": lines(baseline),
        "<<STRINGS>>": lines(strings),
        "<<MAX>>": str(MAX_CANDIDATES),
    }
    for key, value in fill.items():  # one pass per key: text from the model is never re-expanded
        template = template.replace(key, value.replace("<<", "< <"))
    return template


def parse(reply: str) -> list[str]:
    """The candidates of a proposer's reply (see the module's docstring)."""
    out: list[str] = []
    for line in (reply or "").splitlines():
        text = _MARKER.sub("", line).strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
        if not text or len(text) > MAX_LENGTH or text.endswith(":"):
            continue
        if text not in out:
            out.append(text)
        if len(out) == MAX_CANDIDATES:
            break
    return out


async def propose_with(sweep, proposer, description: str, answers: list[str], baseline: list[str]):
    """Ask ``proposer`` once (a stored run); the candidates it proposes and a summary."""
    known = [c.text for c in sweep.candidates if c.family in ("elicited", "mined", "user")]
    text = prompt_text(description, answers, baseline, known)
    need = 1
    remaining = sweep._remaining_budget()
    if remaining is not None and need > remaining:
        return [], {"skipped": "no budget left for the proposer"}
    ps = probesets.load("elicitation")  # free text, stored, not scored
    case: Case = ps.cases()[0].model_copy(
        update={
            "entry_id": "proposer",
            "case_id": "proposer|1",
            "paraphrase_index": 0,
            "question": "propose candidate triggers",
            "messages": [{"role": "user", "content": text}],
            "samples": 1,
            "temperature": 0.0,
            "max_tokens": 600,
        }
    )
    run_id = f"{sweep.run_id}-proposer"
    runner = Runner(
        sweep.store,
        ps,
        proposer,
        sweep.judge,
        sweep._run_options(),
        gateway=sweep.gateway,
        custom=CustomCases(cases=[case], run_id=run_id, kind="sweep-proposer"),
    )
    await runner.run()
    replies = [r["text"] for r in sweep.store.responses(run_id, status="ok") if r.get("text")]
    if not replies:
        return [], {"skipped": "the proposer gave no answer", "run_id": run_id, "model": proposer.name}
    found = parse(replies[0])
    summary = {"run_id": run_id, "model": proposer.name, "proposed": found}
    return [Candidate(text=t, family="proposed") for t in found], summary
