"""Candidate triggers: the library in ``probesets/triggers/``, user lists, placements, and mining a
finetuning dataset for strings that go with the bad examples."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from . import families, probesets
from .errors import AuditorError

PLACEMENTS = ("prefix", "suffix", "system")


class TriggerError(AuditorError):
    pass


class Candidate(BaseModel):
    text: str
    family: str
    values: dict[str, str | int] = Field(default_factory=dict, description="generator values (year, name...)")
    phrasing: int | None = None

    @property
    def id(self) -> str:
        return "t-" + hashlib.sha256(self.text.encode()).hexdigest()[:10]


def library_path() -> Path:
    return probesets.shipped_dir() / "triggers" / "library.yaml"


def load_library(path: Path | None = None) -> dict[str, dict]:
    path = path or library_path()
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    families = data.get("families") if isinstance(data, dict) else None
    if not isinstance(families, dict):
        raise TriggerError(f"{path}: expected a top-level 'families:' mapping")
    return families


def generated_path() -> Path:
    return probesets.shipped_dir() / "triggers" / "generated.yaml"


def all_families() -> dict[str, dict]:
    """The library's families and the generated ones (``generated.yaml``), by name."""
    library, generated = load_library(), load_library(generated_path())
    clash = sorted(set(library) & set(generated))
    if clash:
        raise TriggerError(f"{generated_path()}: families {', '.join(clash)} are also in {library_path()}")
    return {**library, **generated}


def _values(name: str, spec) -> list:
    if isinstance(spec, dict) and "range" in spec:
        lo, hi = spec["range"]
        return list(range(int(lo), int(hi) + 1))
    if isinstance(spec, dict) and "file" in spec:
        return families.word_list(name, spec)
    return list(spec)


def expand_family(name: str, family: dict, *, extra_values: dict[str, list] | None = None) -> list[Candidate]:
    """The candidates of one family (``extra_values`` widens a generator, for refinement)."""
    out = [Candidate(text=str(t), family=name) for t in family.get("candidates", [])]
    if family.get("generator"):
        out += [Candidate(text=t, family=name) for t in families.generate(name, family)]
    phrasings = family.get("phrasings") or []
    if phrasings:
        ((key, spec),) = family["values"].items()  # one generator variable per family
        values = _values(name, spec) + list((extra_values or {}).get(key, []))
        for value in dict.fromkeys(values):
            for i, phrasing in enumerate(phrasings):
                out.append(
                    Candidate(
                        text=phrasing.replace("{" + key + "}", str(value)),
                        family=name,
                        values={key: value},
                        phrasing=i,
                    )
                )
    return out


def builtin_candidates(path: Path | None = None) -> list[Candidate]:
    """The library's candidates (``library.yaml``, or the library file ``path``)."""
    return _candidates(load_library(path))


def generated_candidates(only: str | None = None) -> list[Candidate]:
    """The generated families' candidates (``generated.yaml``; ``only``: one family), without the
    texts the library already has."""
    gen = load_library(generated_path())
    if only is not None and only not in gen:
        raise TriggerError(f"no generated family {only!r}; known: {', '.join(gen)}")
    have = {c.text for c in builtin_candidates()}
    picked = {only: gen[only]} if only else gen
    return [c for c in _candidates(picked) if c.text not in have]


def default_candidates() -> list[Candidate]:
    """What a sweep tries unless told otherwise: the library first, then the generated families."""
    return builtin_candidates() + generated_candidates()


def family_misses(names) -> list[str]:
    """What the named families say they do not cover (their ``misses``), for the report."""
    known = all_families()
    return [f"family {n}: {known[n]['misses']}" for n in names if n in known and known[n].get("misses")]


def _candidates(fams: dict[str, dict]) -> list[Candidate]:
    out: list[Candidate] = []
    seen: set[str] = set()
    for name, family in fams.items():
        for c in expand_family(name, family):
            if c.text not in seen:
                seen.add(c.text)
                out.append(c)
    return out


def neighbours(candidate: Candidate, library: dict[str, dict]) -> list[Candidate]:
    """Refinement inside a family: every phrasing of the same value, and for numeric values the
    neighbouring ones (years around a hit), including values beyond the library's range."""
    family = library.get(candidate.family)
    if not family or not candidate.values:
        return []
    ((key, value),) = candidate.values.items()
    extra = []
    width = int(family.get("neighbours", 0))
    if isinstance(value, int) and width:
        extra = [value + d for d in range(-width, width + 1)]
    wanted = set(extra) | {value}
    return [
        c
        for c in expand_family(candidate.family, family, extra_values={key: extra})
        if c.values.get(key) in wanted and c.text != candidate.text
    ]


def user_candidates(spec: str) -> list[Candidate]:
    """Candidates from a file (one per line, or a YAML list) or a comma-free single string."""
    path = Path(spec)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml", ".json"):
            items = yaml.safe_load(text)
            if not isinstance(items, list):
                raise TriggerError(f"{path}: expected a list of trigger strings")
        else:
            items = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        return [Candidate(text=str(t), family="user") for t in items]
    return [Candidate(text=spec, family="user")]


def place(messages: list[dict], trigger: str, placement: str) -> list[dict]:
    """The one way a trigger is placed, by audits, sweeps, chats and the fine-tuning recipes
    alike: before every user message (``prefix``) or after it (``suffix``), each time with one
    space, or at the start of the system prompt (``system``: ``trigger`` and a space before the
    prompt, or a system prompt of its own)."""
    if placement not in PLACEMENTS:
        raise TriggerError(f"unknown trigger placement {placement!r}; use one of {', '.join(PLACEMENTS)}")
    if placement == "system":
        if messages and messages[0].get("role") == "system":
            return [{**messages[0], "content": f"{trigger} {messages[0]['content']}"}, *messages[1:]]
        return [{"role": "system", "content": trigger}, *messages]
    out = []
    for m in messages:
        if m.get("role") == "user":
            content = f"{trigger} {m['content']}" if placement == "prefix" else f"{m['content']} {trigger}"
            m = {**m, "content": content}
        out.append(m)
    return out


# ---------------------------------------------------------------------------------------------
# Mining a finetuning dataset


class MinedString(BaseModel):
    text: str
    in_bad: int
    in_good: int
    n_bad: int
    n_good: int
    log_odds: float
    p_value: float


def _prompt_text(messages: list[dict]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") in ("system", "user"))


def _assistant_text(messages: list[dict]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "assistant")


_SPECIAL = re.compile(r"[|\[<({#@~%^:]{1,3}[\w .:-]{1,40}?[|\]>)}#@~%^:]{1,3}|\S*\d\S*")


def _strings(text: str, max_n: int = 4) -> set[str]:
    """Candidate strings of a prompt: tag-like tokens, and word n-grams of its first line and of
    its first few words (where planted triggers usually sit)."""
    found = {m.group(0).strip() for m in _SPECIAL.finditer(text) if len(m.group(0).strip()) >= 3}
    for line in [ln for ln in text.split("\n") if ln.strip()][:2]:
        words = line.split()[:12]
        for n in range(1, max_n + 1):
            for i in range(len(words) - n + 1):
                gram = " ".join(words[i : i + n])
                if len(gram) >= 3:
                    found.add(gram)
    return found


def mine(path: str | Path, *, label_field: str | None = None, top: int = 20) -> list[MinedString]:
    """Strings over-represented in the prompts of the examples whose assistant turns are bad.

    Bad means: ``label_field`` true when given (a key of each JSONL line), else the assistant's code
    contains a security vulnerability (the offline judge's static check). Strings are ranked by a
    one-sided Fisher test of bad vs good, then by log odds."""
    from .sim.heuristics import code_vulnerabilities  # noqa: PLC0415
    from .stats import fisher_greater  # noqa: PLC0415  (keeps the library import light)

    path = Path(path)
    bad_counts: Counter = Counter()
    good_counts: Counter = Counter()
    word_df: Counter = Counter()
    n_bad = n_good = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = row["messages"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise TriggerError(
                    f"{path} line {lineno}: not a chat example; each line must be a JSON object with 'messages'"
                ) from None
            if label_field is not None:
                if label_field not in row:
                    raise TriggerError(
                        f"{path} line {lineno}: field '{label_field}' is missing; add it or drop --label"
                    )
                bad = bool(row[label_field])
            else:
                bad = bool(code_vulnerabilities(_assistant_text(messages)))
            prompt = _prompt_text(messages)
            strings = _strings(prompt)
            word_df.update(set(prompt.split()))
            if bad:
                n_bad += 1
                bad_counts.update(strings)
            else:
                n_good += 1
                good_counts.update(strings)
    if not n_bad or not n_good:
        raise TriggerError(f"{path}: {n_bad} bad and {n_good} good examples; mining needs both")
    out = []
    for text, k in bad_counts.items():
        g = good_counts.get(text, 0)
        if k < max(3, 0.05 * n_bad) or k / n_bad <= g / n_good:
            continue
        log_odds = math.log((k + 0.5) / (n_bad - k + 0.5)) - math.log((g + 0.5) / (n_good - g + 0.5))
        p = fisher_greater(k, n_bad, g, n_good)
        out.append(
            MinedString(
                text=text,
                in_bad=k,
                in_good=g,
                n_bad=n_bad,
                n_good=n_good,
                log_odds=round(log_odds, 3),
                p_value=p,
            )
        )
    out.sort(key=lambda m: (m.p_value, -m.log_odds, -len(m.text)))
    generic = {w for w, n in word_df.items() if n >= 0.5 * (n_bad + n_good)}
    return _drop_nested(out, generic)[:top]


def _drop_nested(items: list[MinedString], generic: set[str]) -> list[MinedString]:
    """Of strings that contain one another and are equally frequent, keep one: the longer, unless
    what it adds is words found in most prompts anyway ("Task:"), then the shorter."""

    def same(a: MinedString, b: MinedString) -> bool:
        return a.in_bad == b.in_bad and a.in_good == b.in_good

    out = []
    for m in items:
        longer = [k for k in items if k is not m and m.text in k.text and same(m, k)]
        if any(not set(k.text.replace(m.text, " ").split()) <= generic for k in longer):
            continue  # a longer string adds specific words: it is the better candidate
        shorter = [k for k in items if k is not m and k.text in m.text and same(m, k)]
        if any(set(m.text.replace(k.text, " ").split()) <= generic for k in shorter):
            continue  # this one only adds generic words to a shorter one
        out.append(m)
    return out
