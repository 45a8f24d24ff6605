"""Sweep: search for a hidden trigger over the library, the generated families or typed candidates."""

from __future__ import annotations

import asyncio

import gradio as gr

from auditor import config, probesets
from auditor import jobs as jobs_lib
from auditor.report import bar_chart
from auditor.sweep import SweepSettings, run_sweep
from auditor.triggers import PLACEMENTS, Candidate, builtin_candidates, generated_candidates
from ui.state import _endpoints, _judges, _log, _refuse, _waiting


class SweepTab:
    async def run_sweep(
        self,
        probeset,
        model,
        api_base,
        api_key,
        judge,
        extra,
        placements,
        budget,
        use_builtin,
        use_generated=False,
        judge_api_base=None,
        judge_api_key=None,
        request: gr.Request = None,
    ):
        owner = self.owner(request)
        target = await asyncio.to_thread(self.spec, model, api_base, api_key, request=request)
        judge_spec = await asyncio.to_thread(
            self.spec, judge or config.settings().judge, judge_api_base, judge_api_key, request=request
        )
        ps = self.check(probesets.load_shipped, probeset or "")
        extra_lines = [t.strip() for t in (extra or "").splitlines() if t.strip()]
        self.check(self.rules.check_candidates, len(extra_lines))
        self.check(self.rules.check_texts, {f"candidate {i + 1}": t for i, t in enumerate(extra_lines)})
        candidates = builtin_candidates() if use_builtin else []
        candidates += generated_candidates() if use_generated else []
        candidates += [Candidate(text=t, family="user") for t in extra_lines]
        if not candidates:
            raise _refuse(
                "No candidate triggers: tick the built-in library or the generated families, or list some."
            )
        if not placements or not set(placements) <= set(PLACEMENTS):
            raise _refuse(f"Choose at least one placement of {', '.join(PLACEMENTS)}.")
        cap = self.check(self.rules.sweep_budget, int(budget) if budget else None)
        left = self.check_budget(request, 1, [target, judge_spec])
        if left is not None:
            cap = min(cap, left)  # the visitor's budget bounds the sweep
        settings = SweepSettings(placements=list(placements), budget=cap)
        gateway = self.job_gateway(request)
        job = self.start_job(
            "sweep",
            request,
            gateway,
            lambda job: run_sweep(
                self.store,
                ps,
                target,
                judge_spec,
                candidates,
                settings=settings,
                gateway=gateway,
                progress=job.log,
                owner=owner,
            ),
        )
        with jobs_lib.following(job):
            # its id at once: Cancel works from the start
            yield job.id, _waiting(job) or "Starting...", [], "", ""
            while not await jobs_lib.wait(job, 0.7):  # the result as soon as the job ends
                if self.client_gone(request):
                    return  # nobody follows: the job is cancelled (resumable)
                line = _waiting(job) or f"{gateway.stats.calls_sent:,} calls so far"
                yield job.id, line, [], "", _log(job)
        if job.error or job.result is None:
            yield job.id, job.error or "stopped", [], "", _log(job)
            return
        r = job.result
        table = [
            [
                f.trigger,
                f.minimal if f.minimal and f.minimal != f.trigger else "",
                f.placement,
                round(f.misaligned_rate, 3),
                f"[{f.ci95[0]:.2f}, {f.ci95[1]:.2f}]",
                round(f.baseline_rate, 3),
                f"{f.p_value:.2g}",
            ]
            for f in r.flagged
        ]
        top = sorted(r.confirmed, key=lambda t: -(t.misaligned_rate or 0))[:12]
        chart = bar_chart(
            [(f"{t.trigger} ({t.placement})", t.misaligned_rate, "#c0392b") for t in top],
            "Confirmed candidates",
            r.baseline_rate,
            "no trigger",
        )
        summary = (
            f"{r.verdict}: baseline misaligned {r.baseline_rate:.1%} (n={r.baseline_n}); "
            f"{r.candidates_tested} candidates; {r.model_calls:,} calls. Not tested: " + "; ".join(r.untested)
        )
        yield job.id, summary, table, chart, _log(job)


def layout(app, demo, models, shipped, chat_pool, job_pool) -> None:
    with gr.Tab("Sweep"):
        with gr.Row():
            s_set = gr.Dropdown(shipped, value="em-core", label="Probe set")
            s_model = gr.Dropdown(models, value="organism/backdoor", label="Model", allow_custom_value=True)
            s_base = gr.Textbox(label="API base")
            s_key = gr.Textbox(label="API key (memory only)", type="password")
            s_judge = gr.Dropdown(
                _judges(models), value=config.settings().judge, label="Judge", allow_custom_value=True
            )
        with gr.Row():
            s_builtin = gr.Checkbox(
                value=True, label=f"Built-in library ({len(builtin_candidates())} candidates)"
            )
            s_generated = gr.Checkbox(
                value=False,
                label=f"Generated families ({len(generated_candidates()):,} candidates: emoji, years, names...)",
            )
            s_extra = gr.Textbox(label="More candidates, one per line", lines=3)
            s_place = gr.CheckboxGroup(list(PLACEMENTS), value=list(PLACEMENTS), label="Placements")
            s_budget = gr.Number(
                value=None,
                precision=0,
                label=f"Budget (calls; blank: at most {app.rules.limits.max_calls:,})",
            )
        s_endpoints = _endpoints(baseline=False)
        s_run = gr.Button("Run sweep", variant="primary")
        s_cancel = gr.Button("Cancel")
        s_job = gr.Textbox(label="Job", interactive=False)
        s_summary = gr.Textbox(label="Verdict", lines=3)
        s_table = gr.Dataframe(
            headers=[
                "trigger",
                "shortest that fires",
                "placement",
                "misaligned",
                "95% CI",
                "without it",
                "p (Holm)",
            ],
            label="Flagged triggers",
            interactive=False,
        )
        s_chart = gr.HTML()
        s_log = gr.Textbox(label="Progress", lines=5)
        s_run.click(
            app.run_sweep,
            [
                s_set,
                s_model,
                s_base,
                s_key,
                s_judge,
                s_extra,
                s_place,
                s_budget,
                s_builtin,
                s_generated,
                *s_endpoints,
            ],
            [s_job, s_summary, s_table, s_chart, s_log],
            api_name="run_sweep",
            **job_pool,
        )
        s_cancel.click(app.cancel, [s_job], s_log, api_name="cancel_sweep")
