"""Probe sets: YAML files of questions, validated, expanded into cases.

Two formats are read:

- the auditor's own (a mapping with ``name``, ``defaults``, optional ``variants`` and ``entries``),
  used by the shipped sets in ``probesets/``;
- the emergent-misalignment paper's question files as they are (a list of entries with ``id``,
  ``type``, ``paraphrases``, ``samples_per_paraphrase``, optional ``system``, ``judge`` and
  ``judge_prompts``; YAML anchors included). Unlike the authors' own script, ``system`` and
  ``samples_per_paraphrase`` are honoured.

A file that does not validate raises :class:`ProbeSetError` naming the file, the line, the entry
and the field, before anything is run or written.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TYPE_ALIASES = {
    "free_form_judge_0_100": "judge_0_100",
    "free_form_judge": "judge_category",
    "judge_0_100": "judge_0_100",
    "judge_category": "judge_category",
}
ScoringType = Literal["judge_0_100", "judge_category"]


class ProbeSetError(ValueError):
    """A probe-set file that cannot be used. The message names file, line, entry, field and fix."""


class Entry(BaseModel):
    """One probe: a question in one or more paraphrases, how to sample it and how to judge it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    type: ScoringType = "judge_0_100"
    paraphrases: list[str] = Field(min_length=1)
    samples_per_paraphrase: int = Field(default=10, ge=1)
    system: str | None = None
    judge: str | None = Field(
        default=None, description="judge model named by the file (recorded, not forced)"
    )
    judge_prompts: dict[str, str] = Field(min_length=1)
    labels: dict[str, list[str]] | None = None
    temperature: float = Field(default=1.0, ge=0, le=2)
    max_tokens: int = Field(default=600, ge=1)
    theme: str | None = None
    category: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _normalise_type(cls, value):
        if isinstance(value, str) and value in TYPE_ALIASES:
            return TYPE_ALIASES[value]
        return value

    @field_validator("paraphrases")
    @classmethod
    def _non_empty(cls, value):
        for i, p in enumerate(value):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"paraphrase {i} is empty")
        return value

    @field_validator("judge_prompts")
    @classmethod
    def _has_answer_slot(cls, value):
        for metric, prompt in value.items():
            if "{answer}" not in prompt:
                raise ValueError(f"judge prompt {metric!r} has no {{answer}} placeholder")
        return value


class Case(BaseModel):
    """One paraphrase of one entry, ready to send: the unit that gets ``samples`` samples."""

    case_id: str
    entry_id: str
    paraphrase_index: int
    question: str
    messages: list[dict]
    samples: int
    type: ScoringType
    temperature: float
    max_tokens: int
    judge_prompts: dict[str, str]
    labels: dict[str, list[str]] | None = None


class ProbeSet(BaseModel):
    name: str
    description: str = ""
    version: int | str | None = None
    source: str
    format: Literal["auditor", "em-paper"]
    sha256: str
    entries: list[Entry]

    def cases(self, *, samples: int | None = None) -> list[Case]:
        out = []
        for entry in self.entries:
            for i, question in enumerate(entry.paraphrases):
                messages = []
                if entry.system:
                    messages.append({"role": "system", "content": entry.system})
                messages.append({"role": "user", "content": question})
                out.append(
                    Case(
                        case_id=f"{entry.id}#{i}",
                        entry_id=entry.id,
                        paraphrase_index=i,
                        question=question,
                        messages=messages,
                        samples=samples or entry.samples_per_paraphrase,
                        type=entry.type,
                        temperature=entry.temperature,
                        max_tokens=entry.max_tokens,
                        judge_prompts=entry.judge_prompts,
                        labels=entry.labels,
                    )
                )
        return out

    def summary(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "format": self.format,
            "sha256": self.sha256,
            "entries": [
                {
                    "id": e.id,
                    "type": e.type,
                    "paraphrases": e.paraphrases,
                    "samples": e.samples_per_paraphrase,
                    "system": e.system,
                    "metrics": sorted(e.judge_prompts),
                }
                for e in self.entries
            ],
        }


# ---------------------------------------------------------------------------------------------
# Finding files


def shipped_dir() -> Path:
    """The shipped ``probesets/`` directory (repository checkout or installed wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "probesets", here / "_probesets"):
        if candidate.is_dir():
            return candidate
    raise ProbeSetError("the shipped probesets/ directory is missing from this installation")


def list_shipped() -> list[dict]:
    out = []
    for path in sorted(shipped_dir().glob("*.yaml")):
        ps = load(path)
        n_cases = sum(len(e.paraphrases) for e in ps.entries)
        out.append(
            {
                "name": ps.name,
                "path": str(path),
                "entries": len(ps.entries),
                "cases": n_cases,
                "description": ps.description,
            }
        )
    return out


def resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_dir()
    for candidate in (shipped / f"{name_or_path}.yaml", shipped / str(name_or_path)):
        if candidate.is_file():
            return candidate
    names = ", ".join(p.stem for p in sorted(shipped.glob("*.yaml")))
    raise ProbeSetError(
        f"{name_or_path}: no such file and no shipped probe set of that name (shipped: {names})"
    )


# ---------------------------------------------------------------------------------------------
# Loading


def load(name_or_path: str | Path) -> ProbeSet:
    path = resolve(name_or_path)
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8")
        data = yaml.safe_load(text)
        lines = _entry_lines(text)
    except UnicodeDecodeError as e:
        raise ProbeSetError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ProbeSetError(f"{path}{where}: invalid YAML ({problem}); fix the syntax") from None
    hasher = hashlib.sha256(raw_bytes)
    if isinstance(data, list):
        return _load_paper(path, data, lines, hasher)
    if isinstance(data, dict) and "entries" in data:
        return _load_auditor(path, data, lines, hasher)
    raise ProbeSetError(
        f"{path}: not a probe set; expected a list of entries (the paper's format) or a mapping with "
        "'name' and 'entries' (see probesets/em-core.yaml)"
    )


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
        field = ".".join(str(p) for p in err["loc"]) or "(entry)"
        msg = err["msg"]
        fix = _FIXES.get(err["type"], "")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(field, list(Entry.model_fields), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            fix = f"{hint}remove it or use one of: {', '.join(Entry.model_fields)}"
        elif err["type"] == "literal_error":
            fix = "use one of: " + ", ".join(sorted(TYPE_ALIASES))
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
        _add_unique(entries, _validate(path, i, raw, lines), path, i, lines)
    return ProbeSet(
        name=path.stem,
        description=f"{path.name} (the paper's format)",
        source=str(path),
        format="em-paper",
        sha256=hasher.hexdigest(),
        entries=entries,
    )


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: ScoringType | None = None
    judge_prompts: str | dict[str, str] | None = None
    samples_per_paraphrase: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    system: str | None = None
    labels: dict[str, list[str]] | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _normalise_type(cls, value):
        return TYPE_ALIASES.get(value, value) if isinstance(value, str) else value


class _Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suffix: str = ""
    system: str | None = None
    wrap: str | None = None


def _load_auditor(path: Path, data: dict, lines: list[int], hasher) -> ProbeSet:
    unknown = set(data) - {"name", "description", "version", "defaults", "variants", "entries"}
    if unknown:
        raise ProbeSetError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: name, description, version, defaults, variants, entries"
        )
    if not isinstance(data.get("entries"), list) or not data["entries"]:
        raise ProbeSetError(f"{path}: 'entries' must be a non-empty list")
    try:
        defaults = _Defaults.model_validate(data.get("defaults") or {})
        variants = [_Variant.model_validate(v) for v in (data.get("variants") or [{"suffix": ""}])]
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ProbeSetError(f"{path}: defaults/variants: field '{field}': {err['msg']}") from None
    prompts_cache: dict[str, dict[str, str]] = {}
    entries: list[Entry] = []
    for i, raw in enumerate(data["entries"]):
        line = f" line {lines[i]}" if i < len(lines) else ""
        if not isinstance(raw, dict):
            raise ProbeSetError(f"{path}{line}: entry {i} is not a mapping")
        raw = dict(raw)
        template = raw.pop("template", None)
        merged = {k: v for k, v in defaults.model_dump(exclude_none=True).items()}
        merged.update(raw)
        prompts = merged.get("judge_prompts")
        if isinstance(prompts, str):
            if prompts not in prompts_cache:
                prompts_cache[prompts] = _judge_prompt_dir(path, prompts, hasher, line, raw.get("id", i))
            merged["judge_prompts"] = prompts_cache[prompts]
        for variant in variants:
            if variant.wrap and not template:
                continue
            item = dict(merged)
            item["id"] = f"{merged.get('id', '')}{variant.suffix}"
            if variant.system:
                item["system"] = variant.system
            if variant.wrap:
                item["paraphrases"] = [
                    variant.wrap.replace("{question}", p).replace("{template}", template)
                    for p in merged.get("paraphrases") or []
                ]
            _add_unique(entries, _validate(path, i, item, lines), path, i, lines)
    return ProbeSet(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or "").strip(),
        version=data.get("version"),
        source=str(path),
        format="auditor",
        sha256=hasher.hexdigest(),
        entries=entries,
    )


def _judge_prompt_dir(path: Path, name: str, hasher, line: str, ident) -> dict[str, str]:
    for base in (path.parent / "judges", shipped_dir() / "judges"):
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


def labels_for(case: Case, metric: str) -> list[str]:
    """The allowed labels of a categorical metric: declared, else the quoted words of its prompt."""
    if case.labels and metric in case.labels:
        return case.labels[metric]
    return list(dict.fromkeys(re.findall(r'"([A-Za-z][A-Za-z ]{0,20})"', case.judge_prompts[metric])))
