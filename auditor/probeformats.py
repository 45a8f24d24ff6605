"""Probe-set file formats: each file is read, whatever its format, into a :class:`~.probemodel.ProbeSet`.

Three formats are read:

- the auditor's own (a mapping with ``name``, ``defaults``, optional ``variants``, ``templates`` and
  ``entries``), used by the shipped sets in ``probesets/``; ``words`` and ``judge_prompts`` may name
  a word list or a directory of judge prompts;
- the emergent-misalignment paper's question files as they are (a list of entries with ``id``,
  ``type``, ``paraphrases``, ``samples_per_paraphrase``, optional ``system``, ``judge`` and
  ``judge_prompts``; YAML anchors included). Unlike the authors' own script, ``system`` and
  ``samples_per_paraphrase`` are honoured;
- the behavioural self-awareness paper's question files, each question mapped to a scoring type.

A file that does not validate raises :class:`~.probemodel.ProbeSetError` naming the file, the line,
the entry, the field and the fix, before anything is run or written; the line of each entry is
tracked here for that. Finding a file by name is ``probesets``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .probemodel import CODE_SLOT, SCORING_TYPES, TYPE_ALIASES, Entry, ProbeSet, ProbeSetError


def read(path: Path, *, shipped: Path, params: dict[str, str] | None = None) -> ProbeSet:
    """Read and validate the probe-set file at ``path``, in whichever format it is. ``shipped`` is
    the shipped ``probesets/`` directory (word lists, judge prompts); ``params`` fill placeholders of
    the self-awareness paper's files and become part of the hash."""
    raw_bytes = path.read_bytes()
    warnings: list[str] = []
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProbeSetError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        recovered = _recover_trailing_garbage(text, mark.line if mark else None)
        if recovered is None:
            where = f" line {mark.line + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e)
            raise ProbeSetError(f"{path}{where}: invalid YAML ({problem}); fix the syntax") from None
        text, data = recovered
        last = raw_bytes.count(b"\n") + 1
        warnings.append(
            f"{path.name}: ignored lines {mark.line}-{last}: text after the last entry that is not YAML"
        )
    lines = _entry_lines(text)
    hasher = hashlib.sha256(raw_bytes)
    if params:
        hasher.update(json.dumps(params, sort_keys=True).encode())
    if isinstance(data, list) and data and all(isinstance(x, dict) and "question_type" in x for x in data):
        ps = _load_self_awareness(path, data, lines, hasher, params or {}, shipped)
    elif isinstance(data, list):
        ps = _load_paper(path, data, lines, hasher)
    elif isinstance(data, dict) and "entries" in data:
        ps = _load_auditor(path, data, lines, hasher, shipped)
    else:
        raise ProbeSetError(
            f"{path}: not a probe set; expected a list of entries (the papers' formats) or a mapping with "
            "'name' and 'entries' (see probesets/em-core.yaml)"
        )
    ps.warnings = warnings + ps.warnings
    return ps


def _recover_trailing_garbage(text: str, error_line: int | None):
    """A file whose YAML ends early and is followed by non-YAML text (one of the self-awareness
    paper's files has LaTeX pasted after its last entry): keep the entries when what follows holds
    nothing that looks like YAML."""
    if error_line is None or error_line < 1:
        return None
    lines = text.split("\n")
    head, tail = "\n".join(lines[: error_line - 1]), lines[error_line - 1 :]
    if any(re.match(r"\s*-?\s*[\w-]+:(\s|$)", ln) for ln in tail):
        return None
    try:
        data = yaml.safe_load(head)
    except yaml.YAMLError:
        return None
    if not isinstance(data, list) or not data:
        return None
    return head, data


def _entry_lines(text: str) -> list[int]:
    """1-based line of each entry, for error messages."""
    node = yaml.compose(text)
    if isinstance(node, yaml.SequenceNode):
        seq = node
    elif isinstance(node, yaml.MappingNode):
        seq = next((v for k, v in node.value if getattr(k, "value", None) == "entries"), None)
    else:
        seq = None
    if not isinstance(seq, yaml.SequenceNode):
        return []
    return [item.start_mark.line + 1 for item in seq.value]


def _validate(path: Path, index: int, raw: dict, lines: list[int]) -> Entry:
    line = f" line {lines[index]}" if index < len(lines) else ""
    if not isinstance(raw, dict):
        raise ProbeSetError(
            f"{path}{line}: entry {index} is not a mapping; each entry needs id, paraphrases and judge_prompts"
        )
    ident = raw.get("id", f"#{index}")
    try:
        return Entry.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        # An unknown key is most often a misspelt field: report it before the "missing" it causes.
        err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
        field = (err.get("ctx") or {}).get("field") or ".".join(str(p) for p in err["loc"]) or "(entry)"
        msg = err["msg"]
        fix = _FIXES.get(err["type"], "")
        if isinstance(err.get("input"), bool):
            fix = "quote it: YAML reads unquoted yes/no/on/off/true/false as booleans"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(field, list(Entry.model_fields), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            fix = f"{hint}remove it or use one of: {', '.join(Entry.model_fields)}"
        elif err["type"] == "literal_error" and field == "type":
            fix = "use one of: " + ", ".join(SCORING_TYPES + tuple(TYPE_ALIASES))
        raise ProbeSetError(
            f"{path}{line}: entry {ident!r}: field '{field}': {msg}" + (f"; {fix}" if fix else "")
        ) from None


_FIXES = {
    "missing": "add the field",
    "too_short": "give at least one item",
    "string_type": "write it as text",
    "int_parsing": "write a whole number",
    "greater_than_equal": "use a larger value",
}


def _add_unique(entries: list[Entry], entry: Entry, path: Path, index: int, lines: list[int]) -> None:
    if any(e.id == entry.id for e in entries):
        line = f" line {lines[index]}" if index < len(lines) else ""
        raise ProbeSetError(f"{path}{line}: entry {entry.id!r}: field 'id': duplicate id; ids must be unique")
    entries.append(entry)


def _load_paper(path: Path, data: list, lines: list[int], hasher) -> ProbeSet:
    entries: list[Entry] = []
    for i, raw in enumerate(data):
        if isinstance(raw, dict) and TYPE_ALIASES.get(raw.get("type"), raw.get("type")) == "judge_category":
            # The paper's categorical prompts name their answers in double quotes.
            raw = {
                **raw,
                "labels": {m: quoted_labels(p) for m, p in (raw.get("judge_prompts") or {}).items()},
            }
        _add_unique(entries, _validate(path, i, raw, lines), path, i, lines)
    return ProbeSet(
        name=path.stem,
        description=f"{path.name} (the paper's format)",
        source=str(path),
        format="em-paper",
        sha256=hasher.hexdigest(),
        entries=entries,
    )


DEFAULTABLE = set(Entry.model_fields) - {"id", "paraphrases"}


class _Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suffix: str = ""
    system: str | None = None
    wrap: str | None = None

    @field_validator("wrap")
    @classmethod
    def _wrap_has_question(cls, value):
        if value is not None and "{question}" not in value:
            raise ValueError("wrap has no {question} placeholder for the paraphrase")
        return value


def _load_auditor(path: Path, data: dict, lines: list[int], hasher, shipped: Path) -> ProbeSet:
    allowed = {"name", "description", "version", "defaults", "variants", "entries", "templates"}
    unknown = set(data) - allowed
    if unknown:
        raise ProbeSetError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    if not isinstance(data.get("entries"), list) or not data["entries"]:
        raise ProbeSetError(f"{path}: 'entries' must be a non-empty list")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - DEFAULTABLE:
        bad = sorted(set(defaults) - DEFAULTABLE) if isinstance(defaults, dict) else defaults
        raise ProbeSetError(
            f"{path}: defaults: field {bad}: not allowed; use entry fields such as {', '.join(sorted(DEFAULTABLE))}"
        )
    try:
        variants = [_Variant.model_validate(v) for v in (data.get("variants") or [{"suffix": ""}])]
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ProbeSetError(f"{path}: variants: field '{field}': {err['msg']}") from None
    prompts_cache: dict[str, dict[str, str]] = {}
    entries: list[Entry] = []
    for i, raw in enumerate(data["entries"]):
        line = f" line {lines[i]}" if i < len(lines) else ""
        if not isinstance(raw, dict):
            raise ProbeSetError(f"{path}{line}: entry {i} is not a mapping")
        raw = dict(raw)
        template = raw.pop("template", None)
        merged = {**defaults, **raw}
        if isinstance(merged.get("words"), str):
            merged["words"] = _word_list(shipped, merged["words"])
        prompts = merged.get("judge_prompts")
        if isinstance(prompts, str):
            if prompts not in prompts_cache:
                prompts_cache[prompts] = _judge_prompt_dir(
                    path, shipped, prompts, hasher, line, raw.get("id", i)
                )
            merged["judge_prompts"] = prompts_cache[prompts]
        wrapped = [v for v in variants if v.wrap]
        if wrapped and template is None and len(wrapped) == len(variants):
            raise ProbeSetError(
                f"{path}{line}: entry {raw.get('id', i)!r}: field 'template': every variant wraps a template and this entry has none; add one"
            )
        for variant in variants:
            if variant.wrap and template is None:
                continue
            item = dict(merged)
            item["id"] = f"{merged.get('id', '')}{variant.suffix}"
            if variant.system:
                item["system"] = variant.system
            if variant.wrap:
                if (
                    "{template}" in variant.wrap
                    and merged.get("type") == "code_vuln"
                    and CODE_SLOT not in template
                ):
                    raise ProbeSetError(
                        f"{path}{line}: entry {item['id']!r}: field 'template': no '{CODE_SLOT}' line marks where the model writes code; add it"
                    )
                item["paraphrases"] = [
                    variant.wrap.replace("{question}", p).replace("{template}", template)
                    for p in merged.get("paraphrases") or []
                ]
            _add_unique(entries, _validate(path, i, item, lines), path, i, lines)
    templates = data.get("templates") or {}
    if not isinstance(templates, dict):
        raise ProbeSetError(f"{path}: templates: must be a mapping of name -> template")
    return ProbeSet(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or "").strip(),
        version=data.get("version"),
        source=str(path),
        format="auditor",
        sha256=hasher.hexdigest(),
        entries=entries,
        templates=templates,
    )


SELF_RATING_HINT = re.compile(r"\b(0 (to|and) 100|0-100|single number|a number)\b", re.I)
ONE_WORD_HINT = re.compile(r"\b(single word|one word|one-word)\b", re.I)
GUESS_SLOTS = re.compile(r"\{(acrostic|description_list|text)\}")


def _load_self_awareness(
    path: Path, data: list, lines: list[int], hasher, params: dict[str, str], shipped: Path
) -> ProbeSet:
    """The behavioural self-awareness paper's question files: ``name``, ``question_type``,
    ``question_paraphrases`` or ``question``, optional ``prefix``/``suffix``, ``options``,
    ``scenarios`` and ``guesser_prompt``, mapped to the matching scoring type."""
    entries: list[Entry] = []
    warnings: list[str] = []
    word_list = _mms_word_list(path)
    for i, raw in enumerate(data):
        line = f" line {lines[i]}" if i < len(lines) else ""
        name = raw.get("name") or f"#{i}"
        paraphrases = raw.get("question_paraphrases") or ([raw["question"]] if raw.get("question") else [])
        if not paraphrases:
            raise ProbeSetError(
                f"{path}{line}: entry {name!r}: field 'question_paraphrases': missing; add the questions"
            )
        paraphrases = [
            f"{raw.get('prefix') or ''}{p}{(' ' + raw['suffix']) if raw.get('suffix') else ''}"
            for p in paraphrases
        ]
        if raw.get("scenarios"):
            paraphrases = [p.replace("{scenario}", sc) for p in paraphrases for sc in raw["scenarios"]]
        filled = []
        for k, p in enumerate(paraphrases):
            p = p.replace("\\n", "\n")
            if "{word_list}" in p and word_list:
                p = p.replace("{word_list}", word_list)
            if "{sep_suffix}" in p and "sep_suffix" not in params:
                digest = hashlib.sha256(f"{name}|{k}".encode()).hexdigest()
                p = p.replace("{sep_suffix}", str(int(digest[:6], 16) % 1000).zfill(3))
            for key, value in params.items():
                p = p.replace("{" + key + "}", value)
            filled.append(p)
        missing = sorted({m for p in filled for m in re.findall(r"\{(\w+)\}", p)} - {"options"})
        if missing:
            warnings.append(f"{name}: needs " + ", ".join(f"--param {m}=VALUE" for m in missing))
        item: dict = {"id": name, "paraphrases": filled, "samples_per_paraphrase": 1, "max_tokens": 300}
        qtype = raw.get("question_type")
        text = " ".join(filled)
        if qtype in ("quantitative", "score", "ff_score"):
            item.update(type="self_rating_0_100", max_tokens=20)
        elif qtype == "multiple_choice":
            item.update(type="choice_ab", options=list(raw.get("options") or []), max_tokens=5)
        elif qtype == "word":
            item.update(type="word_map", words=_word_list(shipped, "risk"), max_tokens=10)
        elif raw.get("guesser_prompt"):
            prompt = GUESS_SLOTS.sub("{answer}", raw["guesser_prompt"].replace("\\n", "\n"))
            labels = quoted_labels(prompt)
            item.update(type="judge_category", judge_prompts={"guess": prompt})
            item.update(labels={"guess": labels}) if labels else item.update(open_labels=True)
        elif ONE_WORD_HINT.search(text):
            risky = re.search(r"\b(risk|safety|safe)\b", text, re.I)
            item.update(type="word_map", words=_word_list(shipped, "risk") if risky else None, max_tokens=10)
        elif SELF_RATING_HINT.search(text):
            item.update(type="self_rating_0_100", max_tokens=20)
        else:
            item.update(type="free_text")
            warnings.append(
                f"{name}: stored but not scored (the paper scores it by running the code it asks for)"
            )
        _add_unique(entries, _validate(path, i, item, lines), path, i, lines)
    return ProbeSet(
        name=path.stem,
        description=f"{path.name} (the self-awareness paper's format)",
        source=str(path),
        format="self-awareness",
        sha256=hasher.hexdigest(),
        entries=entries,
        warnings=warnings,
    )


def _mms_word_list(path: Path) -> str | None:
    for parent in [path.parent, *path.parents][:4]:
        for candidate in parent.rglob("good_mms_words.txt"):
            words = [w.strip() for w in candidate.read_text(encoding="utf-8").split() if w.strip()]
            return ", ".join(words) + ". "
    return None


def _word_list(shipped: Path, name: str) -> dict[float, list[str]]:
    path = shipped / "words" / f"{name}.yaml"
    with open(path, encoding="utf-8") as f:
        return {float(k): [str(w) for w in v] for k, v in yaml.safe_load(f).items()}


def _judge_prompt_dir(path: Path, shipped: Path, name: str, hasher, line: str, ident) -> dict[str, str]:
    for base in (path.parent / "judges", shipped / "judges"):
        directory = base / name
        files = sorted(directory.glob("*.txt")) if directory.is_dir() else []
        if files:
            prompts = {}
            for f in files:
                content = f.read_text(encoding="utf-8")
                hasher.update(f.name.encode() + b"\0" + content.encode())
                prompts[f.stem] = content
            return prompts
    raise ProbeSetError(
        f"{path}{line}: entry {ident!r}: field 'judge_prompts': no judge prompt directory {name!r} "
        f"(looked for judges/{name}/*.txt next to the file and in the shipped probesets); create it or give the prompts inline"
    )


def quoted_labels(prompt: str) -> list[str]:
    """The answers a categorical judge prompt offers, written in double quotes ("TRUE", "FALSE")."""
    return list(dict.fromkeys(re.findall(r'"([A-Za-z][A-Za-z ]{0,20})"', prompt)))
