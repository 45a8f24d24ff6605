"""The report's data model: what the app shows and every format renders, and the JSON export
(``schema_version``; ``auditor report --format json``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .. import __version__

SCHEMA_VERSION = "1.0"


class Evidence(BaseModel):
    value: float | None = None
    ci95: tuple[float, float] | None = None
    n: int | None = None
    baseline: float | None = None
    baseline_ci95: tuple[float, float] | None = None
    baseline_n: int | None = None
    p_value: float | None = None


class VerdictItem(BaseModel):
    question: str = Field(description="what the verdict answers")
    status: str = Field(description="'found', 'not found' or 'not tested'")
    headline: str
    reading: str = Field(description="one line in plain language")
    evidence: Evidence | None = None


class ProbeRow(BaseModel):
    probeset: str
    probe: str
    measure: str
    kind: str
    value: float | None
    ci95: tuple[float, float] | None
    n: int
    baseline: float | None = None
    baseline_ci95: tuple[float, float] | None = None
    baseline_n: int | None = None
    diff: float | None = None
    p_value: float | None = None
    significant: bool = False
    judge: str | None = Field(default=None, description="the judge whose judgements give this rate")


class JudgeInfo(BaseModel):
    """A judge whose judgements the report's numbers use: how it gave its numbers and how far it
    is calibrated against the paper's judge."""

    judge: str
    modes: list[str]
    rubrics: list[str] = Field(default_factory=list, description="sha256 prefixes of its judge prompts")
    calibration: str = Field(description="its agreement with the paper's judge, or 'not calibrated'")
    other_calibrations: list[str] = Field(default_factory=list)
    panel_alpha: dict[str, float | None] | None = Field(
        default=None, description="Krippendorff's alpha across a panel's judges, per metric"
    )
    disputed: list[dict] = Field(
        default_factory=list, description="answers the panel's judges disagree on by over 40 points"
    )
    disputed_total: int = Field(
        default=0, description="how many answers are disputed (the list shows the widest)"
    )


class SweepCandidate(BaseModel):
    trigger: str
    placement: str
    misaligned_rate: float | None
    n: int
    stage: str


class SweepSection(BaseModel):
    run_id: str
    verdict: str
    baseline_rate: float | None
    baseline_n: int
    candidates_tested: int
    model_calls: int
    flagged: list[dict]
    top: list[SweepCandidate]
    untested: list[str]
    self_report: dict = Field(default_factory=dict)


class SelfReportRow(BaseModel):
    claim: str
    self_report: float | None
    behaviour: float | None
    gap: float | None
    baseline_self_report: float | None = None
    baseline_behaviour: float | None = None
    mismatch: bool
    reason: str


class Transcript(BaseModel):
    run_id: str
    probe: str
    question: str
    answer: str
    aligned: float | None
    coherent: float | None
    trigger: str | None = None


class RunInfo(BaseModel):
    run_id: str
    role: str
    kind: str
    status: str
    probeset: str | None
    probeset_hash: str | None
    model: dict
    judge: dict
    judge_prompt_hashes: dict[str, str] = Field(default_factory=dict)
    seed: int | None
    samples: int | None
    trigger: str | None = None
    n_responses: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    created_at: str | None
    updated_at: str | None
    tool_version: str | None


class ReportData(BaseModel):
    schema_version: str = SCHEMA_VERSION
    generated_at: str
    tool_version: str = __version__
    title: str
    model: str
    baseline: str | None
    verdict: list[VerdictItem]
    probes: list[ProbeRow]
    judges: list[JudgeInfo] = Field(default_factory=list)
    sweeps: list[SweepSection]
    self_reports: list[SelfReportRow]
    transcripts: list[Transcript]
    judge_failures: dict[str, int]
    n_judge_failures: int
    runs: list[RunInfo]
    not_tested: list[str]
    total_cost_usd: float | None
    total_tokens: int
