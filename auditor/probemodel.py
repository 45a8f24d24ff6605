"""Probe sets as data: the pydantic models a probe-set file is validated into.

An :class:`Entry` is one probe (paraphrases, sampling and a scoring type), a :class:`ProbeSet` is a
loaded file's entries with its source and hash, and :meth:`ProbeSet.cases` expands the entries into
the :class:`Case` objects that are sent to a model. :class:`ProbeSetError` is what a file that
cannot be used raises. Reading the files is ``probeformats``; finding them is ``probesets``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import AuditorError

TYPE_ALIASES = {
    "free_form_judge_0_100": "judge_0_100",
    "free_form_judge": "judge_category",
}
SCORING_TYPES = (
    "judge_0_100",
    "judge_category",
    "self_rating_0_100",
    "choice_ab",
    "word_map",
    "code_vuln",
    "free_text",
)
ScoringType = Literal[
    "judge_0_100", "judge_category", "self_rating_0_100", "choice_ab", "word_map", "code_vuln", "free_text"
]
JUDGED_TYPES = {"judge_0_100", "judge_category", "code_vuln"}
CODE_SLOT = "## COMPLETE CODE HERE"
LETTERS = "ABCDEFGHIJ"


class ProbeSetError(AuditorError):
    """A probe-set file that cannot be used. The message names file, line, entry, field and fix."""


class Entry(BaseModel):
    """One probe: a question in one or more paraphrases, how to sample it and how to score it.

    Scoring types: ``judge_0_100`` (the EM judge, any metric), ``judge_category`` (the judge picks
    one of ``labels``), ``code_vuln`` (a judge decides whether the code is vulnerable),
    ``self_rating_0_100`` (the model's own number, rescaled to 0-1), ``choice_ab`` (probability of
    each option, from logprobs or sampled; every order of the options), ``word_map`` (one-word
    answers mapped through ``words``), ``free_text`` (stored, not scored).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    type: ScoringType = "judge_0_100"
    paraphrases: list[str] = Field(min_length=1)
    samples_per_paraphrase: int = Field(default=10, ge=1)
    system: str | None = None
    judge: str | None = Field(
        default=None, description="judge model named by the file (recorded, not forced)"
    )
    judge_prompts: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, list[str]] | None = None
    open_labels: bool = Field(default=False, description="the judge's reply is itself the label (free word)")
    positive: dict[str, str] | None = Field(
        default=None, description="metric -> label whose rate is reported"
    )
    metric: str | None = Field(default=None, description="what a parsed answer measures (self-reports)")
    options: list[str] | None = Field(
        default=None, description="choice_ab: the option texts, in listed order"
    )
    target: int | None = Field(default=None, ge=0, description="choice_ab: index of the option reported")
    words: dict[float, list[str]] | None = Field(default=None, description="word_map: value -> words")
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

    @model_validator(mode="after")
    def _type_needs(self):
        t = self.type
        if t in JUDGED_TYPES and not self.judge_prompts:
            raise _field_error("judge_prompts", f"a {t} entry needs judge prompts")
        if t == "code_vuln":
            self.labels = self.labels or {m: ["VULNERABLE", "SECURE"] for m in self.judge_prompts}
            self.positive = self.positive or {m: "VULNERABLE" for m in self.judge_prompts}
        if t in ("judge_category", "code_vuln") and not self.open_labels:
            for m in self.judge_prompts:
                if not (self.labels or {}).get(m):
                    raise _field_error(
                        "labels", f"no labels for metric {m!r}; list the judge's allowed answers"
                    )
        for m, label in (self.positive or {}).items():
            if m not in self.judge_prompts:
                raise _field_error("positive", f"metric {m!r} has no judge prompt")
            if not self.open_labels and label not in (self.labels or {}).get(m, []):
                raise _field_error("positive", f"{label!r} is not one of the labels of {m!r}")
        if t == "choice_ab":
            if not self.options or len(self.options) < 2:
                raise _field_error("options", "a choice_ab entry needs at least two options")
            if len(self.options) > len(LETTERS):
                raise _field_error("options", f"at most {len(LETTERS)} options")
            for i, p in enumerate(self.paraphrases):
                if "{options}" not in p:
                    raise _field_error(
                        "paraphrases", f"paraphrase {i} has no {{options}} placeholder for the options"
                    )
            if self.target is not None and self.target >= len(self.options):
                raise _field_error("target", f"there are only {len(self.options)} options")
        if t == "code_vuln":
            for i, p in enumerate(self.paraphrases):
                if CODE_SLOT not in p and not re.search(
                    r"\b(write|implement|complete|code|function)\b", p, re.I
                ):
                    raise _field_error(
                        "paraphrases",
                        f"paraphrase {i} is neither a template with '{CODE_SLOT}' nor a code request",
                    )
        if t in ("self_rating_0_100", "choice_ab", "word_map"):
            self.metric = self.metric or self.id
        return self


def _field_error(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("entry_rule", message, {"field": field})


class Case(BaseModel):
    """One paraphrase of one entry (for choice_ab: one order of its options), ready to send: the
    unit that gets ``samples`` samples."""

    case_id: str
    entry_id: str
    paraphrase_index: int
    question: str
    messages: list[dict]
    samples: int
    type: ScoringType
    temperature: float
    max_tokens: int
    judge_prompts: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, list[str]] | None = None
    open_labels: bool = False
    positive: dict[str, str] | None = None
    metric: str | None = None
    options: list[str] | None = Field(default=None, description="choice_ab: option texts in presented order")
    option_index: list[int] | None = Field(
        default=None, description="choice_ab: listed index of each presented option"
    )
    target: int | None = None
    words: dict[str, float] | None = None

    @property
    def logprobs(self) -> bool:
        return self.type == "choice_ab"

    @property
    def metrics(self) -> list[str]:
        """What gets a stored judgement per response."""
        if self.type in JUDGED_TYPES:
            return list(self.judge_prompts)
        if self.type == "free_text":
            return []
        return [self.metric or self.entry_id]


def format_options(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}) {text}" for i, text in enumerate(options))


class ProbeSet(BaseModel):
    name: str
    description: str = ""
    version: int | str | None = None
    source: str
    format: Literal["auditor", "em-paper", "self-awareness"]
    sha256: str
    entries: list[Entry]
    templates: dict[str, dict] = Field(default_factory=dict, description="question templates for other tools")
    warnings: list[str] = Field(default_factory=list)

    def cases(self, *, samples: int | None = None) -> list[Case]:
        out = []
        for entry in self.entries:
            if self.format == "self-awareness":
                missing = sorted(
                    {m for p in entry.paraphrases for m in re.findall(r"\{(\w+)\}", p)} - {"options"}
                )
                if missing:
                    raise ProbeSetError(
                        f"{self.source}: entry {entry.id!r}: field 'paraphrases': placeholder(s) "
                        + ", ".join("{" + m + "}" for m in missing)
                        + " have no value; pass "
                        + " ".join(f"--param {m}=VALUE" for m in missing)
                    )
            for i, question in enumerate(entry.paraphrases):
                orders = [list(range(len(entry.options)))] if entry.type == "choice_ab" else [None]
                if entry.type == "choice_ab":
                    n = len(entry.options)
                    orders = [[(k + r) % n for k in range(n)] for r in range(n)]  # every rotation
                for r, order in enumerate(orders):
                    text = question
                    options = None
                    if order is not None:
                        options = [entry.options[k] for k in order]
                        text = question.replace("{options}", format_options(options))
                    messages = []
                    if entry.system:
                        messages.append({"role": "system", "content": entry.system})
                    messages.append({"role": "user", "content": text})
                    out.append(
                        Case(
                            case_id=f"{entry.id}#{i}" + (f"/o{r}" if order is not None else ""),
                            entry_id=entry.id,
                            paraphrase_index=i,
                            question=text,
                            messages=messages,
                            samples=samples or entry.samples_per_paraphrase,
                            type=entry.type,
                            temperature=entry.temperature,
                            max_tokens=entry.max_tokens,
                            judge_prompts=entry.judge_prompts,
                            labels=entry.labels,
                            open_labels=entry.open_labels,
                            positive=entry.positive,
                            metric=entry.metric,
                            options=options,
                            option_index=order,
                            target=entry.target,
                            words={w.lower(): float(v) for v, ws in (entry.words or {}).items() for w in ws}
                            or None,
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
            "warnings": self.warnings,
            "entries": [
                {
                    "id": e.id,
                    "type": e.type,
                    "paraphrases": e.paraphrases,
                    "samples": e.samples_per_paraphrase,
                    "system": e.system,
                    "metrics": sorted(e.judge_prompts)
                    if e.type in JUDGED_TYPES
                    else [e.metric]
                    if e.metric
                    else [],
                }
                for e in self.entries
            ],
        }
