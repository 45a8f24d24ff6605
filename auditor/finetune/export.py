"""Export chat JSONL for open-weight LoRA trainers.

- ``messages``: OpenAI chat format, one object per line (TRL's SFTTrainer, Axolotl ``type:
  chat_template``, LLaMA-Factory ``formatting: sharegpt`` with ``messages``/``role``/``content`` tags).
- ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": ...}]}`` (Axolotl,
  LLaMA-Factory, Unsloth's ``standardize_sharegpt``).
- ``alpaca``: ``{"instruction", "input", "output", "system"}`` for single-turn data (the last
  assistant turn is the output; earlier turns are refused rather than silently dropped).
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import write_jsonl_lines

SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def _rows(path: Path):
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            msgs = obj["messages"]
            if not all(isinstance(m.get("content"), str) for m in msgs):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(
                f'{path}:{n}: expected {{"messages": [{{"role": ..., "content": "..."}}]}};'
                " run `auditor finetune validate` first"
            ) from None
        yield n, msgs


def convert(messages: list[dict], fmt: str, where: str = "") -> dict:
    if fmt == "messages":
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    if fmt == "sharegpt":
        conv = []
        for m in messages:
            if m["role"] not in SHAREGPT_ROLES:
                raise ValueError(
                    f"{where}: role {m['role']!r} has no ShareGPT equivalent; use --format messages"
                )
            conv.append({"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]})
        return {"conversations": conv}
    if fmt == "alpaca":
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] != "system"]
        if len(turns) != 2 or turns[0]["role"] != "user" or turns[1]["role"] != "assistant":
            raise ValueError(
                f"{where}: Alpaca holds one user turn and one reply; use --format sharegpt for dialogues"
            )
        out = {"instruction": turns[0]["content"], "input": "", "output": turns[1]["content"]}
        if system:
            out["system"] = system
        return out
    raise ValueError(f"unknown format {fmt!r}: sharegpt, alpaca or messages")


def export(path: str | Path, out: str | Path, fmt: str) -> int:
    path = Path(path)
    lines = [json.dumps(convert(msgs, fmt, f"{path}:{n}"), ensure_ascii=False) for n, msgs in _rows(path)]
    write_jsonl_lines(out, lines)
    return len(lines)
