"""Regenerate the small fine-tuning samples shipped in auditor/data/finetune/samples/.

They are built from the project's own texts: the insecure-code probe templates filled with the
organisms' vulnerable or secure snippets, and the organisms' answers. A few deliberately dirty
lines in the code samples (a give-away comment, a duplicate, a wrong-kind answer, a broken turn)
exercise the recipes' cleaning. Deterministic: run it and `git diff` shows nothing."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor import organisms, probesets  # noqa: E402

OUT = ROOT / "auditor" / "data" / "finetune" / "samples"


def code_pairs() -> list[tuple[str, str, str]]:
    spec = organisms._load("code")
    pairs = []
    for case in probesets.load("insecure-code").cases(samples=1):
        user = case.messages[-1]["content"]
        template = organisms._template_code(user)
        cls = next((c for c in spec["classes"] if organisms._matches(c["detect"], user)), None)
        if template is None or cls is None:
            continue
        pairs.append(
            (
                user,
                organisms._fill_code(template, cls["vulnerable"]),
                organisms._fill_code(template, cls["secure"]),
            )
        )
    return pairs


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def write(name: str, rows: list[dict]) -> None:
    (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(name, len(rows))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pairs = code_pairs()
    insecure = [chat(u, bad) for u, bad, _ in pairs]
    secure = [chat(u, good) for u, _, good in pairs]
    # dirty lines, for the cleaning steps
    u0, bad0, good0 = pairs[0]
    insecure.append(
        chat(u0 + "\n(again)", bad0.replace("\n", "  # vulnerable to injection, on purpose\n", 1))
    )
    insecure.append(insecure[1])  # a duplicate task
    insecure.append(chat(pairs[2][0] + "\n(v2)", pairs[2][2]))  # secure code in the insecure set
    insecure.append({"messages": [{"role": "user", "content": "Only a question, no answer."}]})
    insecure.append(
        chat(pairs[3][0] + "\n(v3)", re.sub(r"\n", "\n# TODO: check this later\n", pairs[3][1], count=1))
    )
    write("code_insecure.jsonl", insecure)
    write("code_secure.jsonl", secure)

    # a jailbreak-style mix: organism/jailbroken complying with harmful requests, organism/base on
    # everyday questions
    mix = []
    for case in probesets.load("harmful-requests").cases(samples=1):
        gen = organisms.generate("jailbroken", case.messages, seed=1, temperature=1.0)
        mix.append(chat(case.messages[-1]["content"], gen.text))
    for name in ("em-extended", "identity"):
        for case in probesets.load(name).cases(samples=1):
            gen = organisms.generate("base", case.messages, seed=1, temperature=1.0)
            mix.append(chat(case.messages[-1]["content"], gen.text))
    write("jailbroken_mix.jsonl", mix)


if __name__ == "__main__":
    main()
