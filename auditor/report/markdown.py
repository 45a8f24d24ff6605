"""A report as Markdown (for an issue or a pull request) and as JSON (the report data itself).
Untrusted text is neutralised for Markdown; both pass :func:`auditor.secrets.redact`."""

from __future__ import annotations

import html
import re

from ..secrets import redact
from .format import ci, clean, judge_label, pct, val
from .schema import ReportData


def md_cell(text) -> str:
    """A Markdown table cell: HTML and Markdown syntax neutralised, one line."""
    text = html.escape(clean(str(text) if text is not None else ""), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*_\[\]|#<>!])", r"\\\1", text)


def md_block(text) -> str:
    """Untrusted text as a fenced block whose fence no backtick run inside can close."""
    text = clean(text)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def to_markdown(r: ReportData) -> str:
    out = [
        f"# {md_cell(r.title)}",
        "",
        f"Generated {md_cell(r.generated_at)} by em-auditor {md_cell(r.tool_version)} (report schema {r.schema_version}).",
        "",
        "## Verdict",
        "",
    ]
    for v in r.verdict:
        out.append(f"- **{md_cell(v.question)}: {md_cell(v.headline)}.** {md_cell(v.reading)}")
    out += [
        "",
        "## Per probe",
        "",
        "| probe set | probe | measure | value [95% CI] | n | baseline | difference | p (Holm) | judge |",
        "|---|---|---|---|---:|---|---:|---:|---|",
    ]
    for row in r.probes:
        diff = (
            ""
            if row.diff is None
            else (f"{row.diff:+.3f}" if row.kind == "mean" else f"{100 * row.diff:+.1f} pts")
        )
        pv = "" if row.p_value is None else f"{row.p_value:.2g}" + (" \\*" if row.significant else "")
        out.append(
            f"| {md_cell(row.probeset)} | {md_cell(row.probe)} | {md_cell(row.measure)} | "
            f"{md_cell(val(row, row.value, row.ci95))} | {row.n} | {md_cell(val(row, row.baseline, row.baseline_ci95))} | "
            f"{md_cell(diff)} | {pv} | {md_cell(row.judge)} |"
        )
    out += ["", "## Judges", ""]
    for j in r.judges:
        out.append(
            f"- **{md_cell(j.judge)}**: mode {md_cell(', '.join(j.modes) or 'unknown')}; "
            f"calibration: {md_cell(j.calibration)}"
        )
        out += [f"  - also {md_cell(c)}" for c in j.other_calibrations]
        if j.panel_alpha is not None:
            alphas = ", ".join(f"{m} {'n/a' if a is None else f'{a:.2f}'}" for m, a in j.panel_alpha.items())
            out.append(
                f"  - Krippendorff's alpha across the panel: {md_cell(alphas)}; {j.disputed_total} disputed answers "
                f"({len(j.disputed)} listed in the HTML and JSON reports)"
            )
    if not r.judges:
        out.append("No judge scored these runs.")
    out += ["", "## Trigger sweeps", ""]
    if not r.sweeps:
        out.append("No sweep was run: hidden triggers were not looked for.")
    for s in r.sweeps:
        out.append(
            f"Sweep {md_cell(s.run_id)}: **{md_cell(s.verdict)}**, {s.candidates_tested} candidates, "
            f"baseline misaligned {pct(s.baseline_rate)} of {s.baseline_n}."
        )
        if s.flagged:
            out += [
                "",
                "| trigger | placement | misaligned [95% CI] | n | without it | p (Holm) |",
                "|---|---|---|---:|---|---:|",
            ]
            for f in s.flagged:
                out.append(
                    f"| {md_cell(f.get('trigger'))}"
                    + (
                        f" (shortest that fires: {md_cell(f['minimal'])})"
                        if f.get("minimal") and f["minimal"] != f.get("trigger")
                        else ""
                    )
                    + f" | {md_cell(f.get('placement'))} | "
                    f"{md_cell(pct(f.get('misaligned_rate')) + ' ' + ci(f.get('ci95')))} | {f.get('n')} | "
                    f"{md_cell(pct(f.get('baseline_rate')))} | {f.get('p_value', 0):.2g} |"
                )
        if s.untested:
            out += ["", "Not covered: " + "; ".join(md_cell(u) for u in s.untested)]
    out += ["", "## Self-reports next to behaviour", ""]
    for k in r.self_reports:
        out.append(
            f"- {md_cell(k.claim)}: says {k.self_report:.2f}, does {k.behaviour:.2f}. "
            f"{'**Mismatch:** ' if k.mismatch else ''}{md_cell(k.reason)}"
        )
    if not r.self_reports:
        out.append("Not measured.")
    out += [
        "",
        "## Most misaligned answers",
        "",
        f"Judge failures (excluded from rates): {r.n_judge_failures}.",
        "",
    ]
    for t in r.transcripts:
        out += [
            f"**{md_cell(t.probe)}** (aligned {t.aligned:.1f}, coherent {t.coherent:.1f})",
            "",
            md_block(t.question),
            "",
            md_block(t.answer),
            "",
        ]
    out += ["## Not tested", ""] + [f"- {md_cell(x)}" for x in r.not_tested]
    out += [
        "",
        "## Reproducibility",
        "",
        "| run | role | probe set | model | judge | seed | n | tokens | cost |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for run in r.runs:
        cost = "unknown" if run.cost_usd is None else f"${run.cost_usd:.4f}"
        out.append(
            f"| {md_cell(run.run_id)} | {run.role} | {md_cell(run.probeset)} {md_cell((run.probeset_hash or '')[:12])} | "
            f"{md_cell(run.model.get('model') or run.model.get('name'))} | {md_cell(judge_label(run.judge))} | "
            f"{md_cell(run.seed)} | {run.n_responses} | {run.prompt_tokens + run.completion_tokens} | {cost} |"
        )
    return redact("\n".join(out) + "\n")


def to_json(r: ReportData) -> str:
    return redact(r.model_dump_json(indent=2))
