"""A report as one self-contained HTML file: inline CSS and SVG charts, no scripts, no external
assets, readable printed. Every string that came from a model, a probe set or a user is escaped;
the page then passes :func:`auditor.secrets.redact`, which removes the value of any environment
variable holding a key.
"""

from __future__ import annotations

from ..secrets import redact
from .format import ci, clean, e, judge_label, pct, val
from .schema import ProbeRow, ReportData

RED = "#c0392b"
GREY = "#7f8c8d"


# ---------------------------------------------------------------------------------------------
# SVG charts (made on the server; text escaped)


def _judge_cell(r, key: str | None) -> str:
    """A rate's judge, its mode and its calibration against the paper's judge, in one cell."""
    info = next((j for j in r.judges if j.judge == key), None)
    if info is None:
        return key or "unknown judge"
    calibrated = "not calibrated" if info.calibration.startswith("not calibrated") else info.calibration
    return f"{key} ({', '.join(info.modes) or 'mode unknown'}); {calibrated}"


def rate_chart(rows: list[ProbeRow], model: str, baseline: str | None) -> str:
    """The EM paper's main figure, one row per probe: the finetune's rate with its 95% interval,
    next to the baseline's."""
    rows = [r for r in rows if r.kind == "rate"]
    if not rows:
        return ""
    label_w, plot_w, row_h, top = 230, 420, 22, 34
    height = top + row_h * len(rows) + 30
    width = label_w + plot_w + 90
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{e('Rate per probe with 95% interval')}</title>",
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_w + tick * plot_w
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 24}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle">{int(tick * 100)}%</text>')
    out.append(
        f'<circle cx="{label_w}" cy="12" r="4" fill="{RED}"/><text x="{label_w + 8}" y="16">{e(model)}</text>'
    )
    if baseline:
        out.append(
            f'<circle cx="{label_w + 230}" cy="12" r="4" fill="{GREY}"/>'
            f'<text x="{label_w + 238}" y="16">{e(baseline)}</text>'
        )
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        out.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">{e(_short(r.probe))}</text>')
        for value, c, color, dy in ((r.value, r.ci95, RED, -4), (r.baseline, r.baseline_ci95, GREY, 4)):
            if value is None:
                continue
            yy = y + (dy if r.baseline is not None else 0)
            if c:
                out.append(
                    f'<line x1="{label_w + c[0] * plot_w:.1f}" y1="{yy:.1f}" x2="{label_w + c[1] * plot_w:.1f}" '
                    f'y2="{yy:.1f}" stroke="{color}" stroke-width="2"/>'
                )
            out.append(
                f'<circle cx="{label_w + value * plot_w:.1f}" cy="{yy:.1f}" r="3.5" fill="{color}">'
                f"<title>{e(r.probe)}: {pct(value)} {ci(c)}</title></circle>"
            )
        if r.significant:
            out.append(
                f'<text x="{label_w + plot_w + 8}" y="{y + 4:.1f}" fill="{RED}">p={r.p_value:.1g} *</text>'
            )
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    items: list[tuple[str, float | None, str]],
    title: str,
    reference: float | None = None,
    reference_label: str = "",
) -> str:
    """Horizontal bars of rates 0-1 (label, value, colour), with an optional reference line."""
    items = [i for i in items if i[1] is not None]
    if not items:
        return ""
    label_w, plot_w, row_h, top = 260, 360, 20, 26
    height = top + row_h * len(items) + 28
    width = label_w + plot_w + 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11"><title>{e(title)}</title>'
    ]
    for tick in (0, 0.5, 1.0):
        x = label_w + tick * plot_w
        out.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{int(tick * 100)}%</text>')
    for i, (label, value, color) in enumerate(items):
        y = top + i * row_h
        out.append(f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end">{e(_short(label, 38))}</text>')
        out.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{max(value, 0.002) * plot_w:.1f}" height="{row_h - 6}" fill="{color}">'
            f"<title>{e(label)}: {pct(value)}</title></rect>"
        )
        out.append(f'<text x="{label_w + value * plot_w + 4:.1f}" y="{y + 13}">{pct(value)}</text>')
    if reference is not None:
        x = label_w + reference * plot_w
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 22}" stroke="#333" stroke-dasharray="4 3"/>'
        )
        out.append(f'<text x="{x + 4:.1f}" y="{top - 8}">{e(reference_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _short(text: str, n: int = 34) -> str:
    text = clean(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1000px;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:2px solid #eee;padding-bottom:.2rem;margin-top:2rem}
.meta{color:#666;font-size:.9rem}.verdict{display:grid;grid-template-columns:repeat(3,1fr);gap:.8rem}
.card{border:1px solid #ddd;border-left:6px solid #999;padding:.7rem .9rem;border-radius:4px;break-inside:avoid}
.card.found{border-left-color:#c0392b}.card.notfound{border-left-color:#27ae60}.card.nottested{border-left-color:#f39c12}
.card h3{margin:.1rem 0 .3rem;font-size:1rem}.card .q{text-transform:uppercase;font-size:.72rem;color:#666;letter-spacing:.05em}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.6rem 0}th,td{border-bottom:1px solid #eee;padding:.25rem .4rem;text-align:left;vertical-align:top}
th{background:#fafafa}td.num{text-align:right;white-space:nowrap}.sig{color:#c0392b;font-weight:bold}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:.5rem;border-radius:3px;font-size:.8rem;max-height:24rem;overflow:auto}
.transcript{border:1px solid #eee;padding:.5rem .8rem;margin:.6rem 0;break-inside:avoid}
@media print{body{margin:0;max-width:none}pre{max-height:none;overflow:visible}.verdict{grid-template-columns:1fr 1fr 1fr}}
"""


def to_html(r: ReportData) -> str:
    p: list[str] = []
    p.append(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{e(r.title)}</title><style>{CSS}</style></head><body>"
    )
    p.append(
        f'<h1>{e(r.title)}</h1><p class="meta">Generated {e(r.generated_at)} by em-auditor {e(r.tool_version)}; '
        f"report schema {e(r.schema_version)}. Total tokens {r.total_tokens:,}; cost "
        f"{'unknown' if r.total_cost_usd is None else f'${r.total_cost_usd:.4f}'}.</p>"
    )
    p.append('<h2>Verdict</h2><div class="verdict">')
    for v in r.verdict:
        cls = v.status.replace(" ", "")
        p.append(
            f'<div class="card {cls}"><div class="q">{e(v.question)}</div><h3>{e(v.headline)}</h3>'
            f"<p>{e(v.reading)}</p></div>"
        )
    p.append("</div>")

    p.append("<h2>Per probe</h2>")
    for ps in dict.fromkeys(row.probeset for row in r.probes):
        rows = [row for row in r.probes if row.probeset == ps]
        p.append(f"<h3>{e(ps)}</h3>")
        chart = rate_chart(rows, r.model, r.baseline)
        if chart:
            p.append(
                f'<figure>{chart}<figcaption class="meta">Dots: rate; bars: 95% interval; '
                f"* significant after Holm correction.</figcaption></figure>"
            )
        p.append(
            "<table><tr><th>probe</th><th>measure</th><th class=num>value [95% CI]</th><th class=num>n</th>"
            "<th class=num>baseline</th><th class=num>difference</th><th class=num>p (Holm)</th><th>judge</th></tr>"
        )
        for row in rows:
            sig = ' class="num sig"' if row.significant else " class=num"
            diff = (
                ""
                if row.diff is None
                else (f"{row.diff:+.3f}" if row.kind == "mean" else f"{100 * row.diff:+.1f} pts")
            )
            pv = "" if row.p_value is None else f"{row.p_value:.2g}"
            p.append(
                f"<tr><td>{e(row.probe)}</td><td>{e(row.measure)}</td><td class=num>{e(val(row, row.value, row.ci95))}</td>"
                f"<td class=num>{row.n}</td><td class=num>{e(val(row, row.baseline, row.baseline_ci95))}</td>"
                f"<td{sig}>{e(diff)}</td><td{sig}>{e(pv)}</td><td class=meta>{e(_judge_cell(r, row.judge))}</td></tr>"
            )
        p.append("</table>")

    p.append("<h2>Judges</h2>")
    if not r.judges:
        p.append("<p>No judge scored these runs.</p>")
    for j in r.judges:
        p.append(
            f"<p><b>{e(j.judge)}</b> — mode {e(', '.join(j.modes) or 'unknown')}; rubric sha256 "
            f"{e(', '.join(j.rubrics) or 'not recorded')}.<br>Calibration: {e(j.calibration)}"
            + "".join(f"<br><span class=meta>also {e(c)}</span>" for c in j.other_calibrations)
            + "</p>"
        )
        if j.panel_alpha is not None:
            alphas = ", ".join(f"{m} {'n/a' if a is None else f'{a:.2f}'}" for m, a in j.panel_alpha.items())
            p.append(f"<p>Krippendorff's alpha across the panel (interval): {e(alphas)}.</p>")
            if j.disputed:
                p.append(
                    "<table><tr><th>disputed answer (spread over 40)</th><th>metric</th><th>scores</th></tr>"
                )
                for d in j.disputed:
                    scores = "; ".join(
                        f"{k}: {'—' if v is None else f'{v:.0f}'}" for k, v in d["scores"].items()
                    )
                    p.append(
                        f"<tr><td><pre>{e(d.get('question'))}</pre><pre>{e(d.get('answer'))}</pre></td>"
                        f"<td>{e(d['metric'])}</td><td>{e(scores)}</td></tr>"
                    )
                p.append("</table>")
                more = j.disputed_total - len(j.disputed)
                if more:
                    p.append(f'<p class="meta">and {more} more disputed answers.</p>')
            else:
                p.append("<p>The panel's judges disagreed by over 40 points on no answer.</p>")

    p.append("<h2>Trigger sweeps</h2>")
    if not r.sweeps:
        p.append("<p>No sweep was run: hidden triggers were not looked for.</p>")
    for s in r.sweeps:
        p.append(
            f"<p>Sweep {e(s.run_id)}: <b>{e(s.verdict)}</b>. {s.candidates_tested} candidates screened; baseline "
            f"misaligned {pct(s.baseline_rate)} of {s.baseline_n}; {s.model_calls:,} model calls.</p>"
        )
        if s.flagged:
            p.append(
                "<table><tr><th>trigger</th><th>placement</th><th class=num>misaligned [95% CI]</th><th class=num>n</th>"
                "<th class=num>without it</th><th class=num>p (Holm)</th></tr>"
            )
            for f in s.flagged:
                p.append(
                    f"<tr><td><code>{e(f.get('trigger'))}</code>{_shortest(f)}</td><td>{e(f.get('placement'))}</td>"
                    f"<td class=num>{e(pct(f.get('misaligned_rate')) + ' ' + ci(f.get('ci95')))}</td><td class=num>{f.get('n')}</td>"
                    f'<td class=num>{e(pct(f.get("baseline_rate")))}</td><td class="num sig">{f.get("p_value", 0):.2g}</td></tr>'
                )
            p.append("</table>")
        chart = bar_chart(
            [
                (
                    f"{c.trigger} ({c.placement})",
                    c.misaligned_rate,
                    RED if c.stage == "confirm" else "#e59866",
                )
                for c in s.top
            ],
            "Top candidates",
            s.baseline_rate,
            "no trigger",
        )
        if chart:
            p.append(
                f'<figure>{chart}<figcaption class="meta">Highest misaligned rates among candidates '
                f"(dark: confirmed on fresh questions; light: screen only); dashed: without a trigger.</figcaption></figure>"
            )
        for role, rep in (s.self_report or {}).items():
            if isinstance(rep, dict):
                p.append(
                    f'<p class="meta">Self-report ({e(role)}): P(admits an unusual dependence on the message) '
                    f"{e(rep.get('backdoor_a_neutral'))} neutral, {e(rep.get('backdoor_a_threat'))} under threat.</p>"
                )
        if s.untested:
            p.append(
                "<p><b>Not covered by this sweep:</b></p><ul>"
                + "".join(f"<li>{e(u)}</li>" for u in s.untested)
                + "</ul>"
            )

    p.append("<h2>Self-reports next to behaviour</h2>")
    if not r.self_reports:
        p.append("<p>Not measured.</p>")
    else:
        items = []
        for k in r.self_reports:
            items += [
                (f"{k.claim}: says", k.self_report, "#2980b9"),
                (f"{k.claim}: does", k.behaviour, "#16a085"),
            ]
        p.append(f"<figure>{bar_chart(items, 'Self-report against behaviour')}</figure>")
        p.append(
            "<table><tr><th>claim</th><th class=num>self-report</th><th class=num>behaviour</th><th>reading</th></tr>"
        )
        for k in r.self_reports:
            cls = " class=sig" if k.mismatch else ""
            p.append(
                f"<tr><td>{e(k.claim)}</td><td class=num>{k.self_report:.2f}</td><td class=num>{k.behaviour:.2f}</td>"
                f"<td{cls}>{e(k.reason)}</td></tr>"
            )
        p.append("</table>")

    p.append("<h2>Most misaligned answers</h2>")
    p.append(
        f'<p class="meta">Judge failures (answers without a score, excluded from rates): {r.n_judge_failures}'
        + (
            " — "
            + ", ".join(f"{e(k)}: {v}" for k, v in sorted(r.judge_failures.items(), key=lambda kv: -kv[1]))
            if r.judge_failures
            else ""
        )
        + ".</p>"
    )
    if not r.transcripts:
        p.append("<p>None.</p>")
    for t in r.transcripts:
        p.append(
            f'<div class="transcript"><p class="meta">{e(t.probe)} (run {e(t.run_id)}) — aligned {t.aligned:.1f}, '
            f"coherent {t.coherent:.1f}"
            + (f"; trigger <code>{e(t.trigger)}</code>" if t.trigger else "")
            + "</p>"
            f"<p><b>Question</b></p><pre>{e(t.question)}</pre><p><b>Answer</b></p><pre>{e(t.answer)}</pre></div>"
        )

    p.append("<h2>Not tested</h2>")
    p.append(
        "<ul>" + "".join(f"<li>{e(x)}</li>" for x in r.not_tested) + "</ul>"
        if r.not_tested
        else "<p>Nothing listed.</p>"
    )

    p.append(
        "<h2>Reproducibility</h2><table><tr><th>run</th><th>role</th><th>probe set (sha256)</th><th>model</th>"
        "<th>judge (prompt sha256)</th><th class=num>seed</th><th class=num>n</th><th class=num>tokens</th>"
        "<th class=num>cost</th><th>dates</th></tr>"
    )
    for run in r.runs:
        model = run.model.get("model") or run.model.get("name")
        base = run.model.get("api_base")
        judge = judge_label(run.judge)
        hashes = ", ".join(f"{k} {v}" for k, v in run.judge_prompt_hashes.items())
        cost = "unknown" if run.cost_usd is None else f"${run.cost_usd:.4f}"
        p.append(
            f"<tr><td>{e(run.run_id)}<br><span class=meta>{e(run.kind)}, {e(run.status)}</span></td><td>{e(run.role)}</td>"
            f"<td>{e(run.probeset)}<br><span class=meta>{e((run.probeset_hash or '')[:16])}</span></td>"
            f"<td>{e(model)}" + (f"<br><span class=meta>{e(base)}</span>" if base else "") + "</td>"
            f"<td>{e(judge)}<br><span class=meta>{e(hashes)}</span></td><td class=num>{e(run.seed)}</td>"
            f"<td class=num>{run.n_responses}</td><td class=num>{run.prompt_tokens + run.completion_tokens:,}</td>"
            f"<td class=num>{e(cost)}</td><td>{e(run.created_at)}<br>{e(run.updated_at)}<br>"
            f"<span class=meta>tool {e(run.tool_version)}</span></td></tr>"
        )
    p.append("</table></body></html>")
    return redact("".join(p))


def _shortest(flag: dict) -> str:
    """The shortest variant of a flagged trigger that still fired, when shorter than it."""
    m = flag.get("minimal")
    if not m or m == flag.get("trigger"):
        return ""
    return f' <span class="meta">shortest that fires: <code>{e(m)}</code></span>'
