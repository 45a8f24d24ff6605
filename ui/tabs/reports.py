"""Reports: the one-click audit, and reports of stored runs (HTML, Markdown, JSON)."""

from __future__ import annotations

import asyncio
import html

import gradio as gr

from auditor import config
from auditor import jobs as jobs_lib
from auditor.audit import AuditOptions, check_plan, run_audit
from auditor.judge import MODES, JudgeOptions
from auditor.panel import judge_key
from auditor.plans import Plan, parse_plan, shipped_plan, shipped_plans
from auditor.rejudge import rejudge_sync
from auditor.report import build_report, to_html, to_json, to_markdown
from auditor.store import PUBLISHED
from ui.state import _e, _endpoints, _judges, _log, _refuse, _waiting


class ReportsTab:
    def _plan(self, plan_name, plan_file) -> Plan:
        """A shipped plan by name, or an uploaded plan file (read as text; never a path a request
        names)."""
        if plan_file:
            path = plan_file if isinstance(plan_file, str) else plan_file[0]
            with open(path, "rb") as f:
                raw = f.read(64 * 1024 + 1)
            if len(raw) > 64 * 1024:
                raise _refuse("the uploaded plan is over 64 KB; an audit plan is a few lines of YAML")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _refuse("the uploaded plan is not UTF-8 text; an audit plan is a YAML file") from None
            return self.check(parse_plan, text, "the uploaded plan")
        return self.check(shipped_plan, plan_name or "standard")

    async def one_click_report(
        self,
        model,
        api_base,
        api_key,
        baseline,
        judge,
        plan,
        plan_file=None,
        baseline_api_base=None,
        baseline_api_key=None,
        judge_api_base=None,
        judge_api_key=None,
        request: gr.Request = None,
        progress=gr.Progress(),  # noqa: B008
    ):
        owner = self.owner(request)
        target, base, judge_spec = await asyncio.to_thread(
            self.specs, request, (model, api_base, api_key), (baseline, baseline_api_base, baseline_api_key),
            (judge, judge_api_base, judge_api_key),
        )  # fmt: skip
        chosen = self._plan(plan, plan_file)
        calls = self.check(
            check_plan,
            chosen,
            self.rules,
            models=2 if base else 1,
            shipped_only=True,
            judge_calls=self.judge_calls(judge_spec),
        )
        left = self.check_budget(request, calls, [target, base, judge_spec])
        # the plan's trigger sweep runs within what the caps leave after the probe sets (its report
        # says what that left untested)
        sweep_cap = self.rules.limits.max_calls - calls
        if left is not None:
            sweep_cap = min(sweep_cap, left - calls)
        gateway = self.job_gateway(request)
        job = self.start_job(
            "audit",
            request,
            gateway,
            lambda job: run_audit(
                self.store,
                target,
                judge_spec,
                baseline=base,
                plan=chosen,
                gateway=gateway,
                options=AuditOptions(owner=owner, sweep=sweep_cap >= 1, sweep_cap=max(sweep_cap, 1)),
                progress=job.log,
            ),
        )
        with jobs_lib.following(job):
            note = _e(_waiting(job) or "Running the audit (finished runs are reused)...")
            yield job.id, f"<p>{note}</p>", None, ""  # its id at once: Cancel works from the start
            while not await jobs_lib.wait(job, 0.7):  # the result as soon as the job ends
                if self.client_gone(request):
                    return  # nobody follows: the job is cancelled (resumable)
                progress(None, desc=_waiting(job) or f"{gateway.stats.calls_sent:,} calls")
                note = _e(_waiting(job) or "Running the audit (finished runs are reused)...")
                yield job.id, f"<p>{note}</p>", None, _log(job)
        if job.cancel.is_set():
            yield job.id, "<p>Cancelled: run the same audit again to resume it.</p>", None, _log(job)
            return
        if job.error or job.result is None:
            yield job.id, f"<p>{_e(job.error or 'stopped')}</p>", None, _log(job)
            return
        yield (job.id, *(await asyncio.to_thread(self._report, job.result.audit_id)), _log(job))

    def report_for(self, ids, baseline, request: gr.Request):
        ids = [i for i in (ids or "").replace(",", " ").split() if i]
        if not ids:
            raise _refuse("Give run, sweep or audit ids.")
        for ident in ids + ([baseline] if baseline else []):
            row = self.store.get_audit(ident) or self.store.get_run(ident)
            if row is None or (self.private and row.get("owner") not in (self.owner(request), PUBLISHED)):
                raise _refuse(f"No run or audit {ident!r}")
        frame, files = self._report(*ids, baseline=baseline or None)
        return frame, files

    async def rejudge_run(
        self,
        run_id,
        judge,
        mode=None,
        judge_api_base=None,
        judge_api_key=None,
        request: gr.Request = None,
        progress=gr.Progress(),  # noqa: B008
    ):
        """Judge a stored run's answers again with another judge (the target is not called), as a
        cancellable job: its id at once, progress while it runs, then the rate by that judge and its
        agreement with the run's own, as text and as JSON. A cancelled re-judgement resumes where
        it stopped (judged answers are kept)."""
        run = self.store.get_run((run_id or "").strip())
        if run is None or (self.private and run.get("owner") not in (self.owner(request), PUBLISHED)):
            raise _refuse(f"No run {run_id!r}")
        if mode and mode not in MODES:
            raise _refuse(f"judge mode {mode!r}: choose one of {', '.join(MODES)}")
        spec = await asyncio.to_thread(self.spec, judge, judge_api_base, judge_api_key, request=request)
        options = JudgeOptions(mode=mode or None)
        key = judge_key(spec, options)
        if key == run.get("judge"):
            raise _refuse(f"run {run['id']} is already judged by {key}; choose another judge or mode")
        # every answer's metrics, at the sampling mode's calls per score unless the mode is known cheaper
        per_score = 1 if options.mode in ("logprobs", "text") else options.samples
        calls = (
            1
            + self.store.answered([run["id"]]) * len(self.store.judge_metrics(run["id"]) or ["m"]) * per_score
        )
        self.check(self.rules.check_calls, calls, "the re-judgement's judge calls")
        self.check_budget(request, calls, [spec])
        gateway = self.job_gateway(request)
        owner = self.owner(request)
        job = self.start_job(
            "rejudge",
            request,
            gateway,
            lambda job: rejudge_sync(
                self.store, run["id"], spec, options=options, gateway=gateway, owner=owner, progress=job.log
            ),
        )
        with jobs_lib.following(job):
            yield job.id, _waiting(job) or "Re-judging...", None, ""
            while not await jobs_lib.wait(job, 0.5):
                if self.client_gone(request):
                    return  # nobody follows: the job is cancelled (resumable)
                progress(None, desc=_waiting(job) or f"{gateway.stats.calls_sent:,} judge calls")
                yield job.id, _waiting(job) or "Re-judging...", None, _log(job)
        if job.cancel.is_set():
            yield job.id, "Cancelled: re-judge again to resume (judged answers are kept).", None, _log(job)
            return
        if job.error or job.result is None:
            yield job.id, job.error or "stopped", None, _log(job)
            return
        result = job.result
        a = result.agreement
        lines = [
            f"{result.judge} ({result.mode} mode) on run {result.run_id}: misaligned "
            f"{'n/a' if result.misaligned_rate is None else f'{100 * result.misaligned_rate:.1f}%'} n={result.n}; "
            f"{result.n_judge_failures} judge failures; {result.model_calls} judge calls, none to the target."
        ]
        if a is not None:
            kappa = "n/a" if a.cohen_kappa is None else f"{a.cohen_kappa:.3f}"
            lines.append(
                f"Against {a.reference_judge} on {a.n} answers: label agreement {100 * (a.em_label_agreement or 0):.1f}%, "
                f"Cohen's kappa {kappa}, rate difference "
                f"{'n/a' if a.rate_difference.value is None else f'{100 * a.rate_difference.value:+.1f} pts'}"
                f" ({'significant' if a.rate_difference.significant else 'not significant'})."
            )
        yield job.id, "\n".join(lines), result.model_dump(mode="json", exclude={"summary"}), _log(job)

    def _report(self, *ids, baseline=None):
        data = build_report(self.store, list(ids), baseline=baseline)
        out = self.scratch_dir("report-")
        page = to_html(data)
        files = []
        for ext, text in (("html", page), ("md", to_markdown(data)), ("json", to_json(data))):
            path = out / f"audit-report.{ext}"
            path.write_text(text, encoding="utf-8")
            files.append(str(path))
        # The report is escaped already; the sandboxed frame (no scripts, no same origin) is a second wall.
        frame = (
            f'<iframe title="audit report" sandbox style="width:100%;height:900px;border:1px solid #ddd" '
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
        )
        return frame, files


def layout(app, demo, models, shipped, chat_pool, job_pool) -> None:
    with gr.Tab("Reports"):
        with gr.Row():
            r_model = gr.Dropdown(models, value="organism/insecure", label="Model", allow_custom_value=True)
            r_base_url = gr.Textbox(label="API base")
            r_key = gr.Textbox(label="API key (memory only)", type="password")
            r_baseline = gr.Dropdown(
                [""] + models, value="organism/base", label="Baseline", allow_custom_value=True
            )
            r_judge = gr.Dropdown(
                _judges(models), value=config.settings().judge, label="Judge", allow_custom_value=True
            )
            r_plan = gr.Dropdown(shipped_plans(), value="standard", label="Audit plan")
            r_plan_file = gr.File(label="...or upload a plan (YAML)", file_types=[".yaml", ".yml"])
        r_endpoints = _endpoints()
        with gr.Row():
            r_btn = gr.Button("Audit and report", variant="primary", elem_id="report-run")
            r_cancel = gr.Button("Cancel", elem_id="report-cancel")
        r_job = gr.Textbox(label="Job", interactive=False, elem_id="report-job")
        with gr.Row():
            r_ids = gr.Textbox(label="...or report on existing run, sweep or audit ids")
            r_ids_base = gr.Textbox(label="Baseline run or audit id")
            r_ids_btn = gr.Button("Report")
        with gr.Row():
            rj_run = gr.Textbox(label="Re-judge a stored run: run id", elem_id="rejudge-run")
            rj_judge = gr.Dropdown(
                _judges(models), value="offline/judge-nologprobs", label="with judge", allow_custom_value=True
            )
            rj_mode = gr.Dropdown(["", *MODES], value="", label="judge mode (blank: detect)")
            rj_base = gr.Textbox(label="judge API base")
            rj_key = gr.Textbox(label="judge API key (memory only)", type="password")
            rj_btn = gr.Button("Re-judge", elem_id="rejudge-btn")
            rj_cancel = gr.Button("Cancel re-judging", elem_id="rejudge-cancel")
        rj_job = gr.Textbox(label="Re-judge job", interactive=False, elem_id="rejudge-job")
        rj_out = gr.Textbox(label="Re-judgement", lines=3, elem_id="rejudge-out")
        rj_json = gr.JSON(visible=False)
        rj_log = gr.Textbox(label="Re-judge progress", lines=3, elem_id="rejudge-log")
        rj_btn.click(
            app.rejudge_run,
            [rj_run, rj_judge, rj_mode, rj_base, rj_key],
            [rj_job, rj_out, rj_json, rj_log],
            api_name="rejudge",
            **job_pool,
        )
        rj_cancel.click(app.cancel, [rj_job], rj_log, api_name="cancel_rejudge")
        r_frame = gr.HTML(elem_id="report-frame")
        r_files = gr.File(label="Downloads (HTML, Markdown, JSON)", file_count="multiple")
        r_log = gr.Textbox(label="Progress", lines=4)
        r_btn.click(
            app.one_click_report,
            [r_model, r_base_url, r_key, r_baseline, r_judge, r_plan, r_plan_file, *r_endpoints],
            [r_job, r_frame, r_files, r_log],
            api_name="report",
            **job_pool,
        )
        r_cancel.click(app.cancel, [r_job], r_log, api_name="cancel_report")
        r_ids_btn.click(app.report_for, [r_ids, r_ids_base], [r_frame, r_files], api_name="report_for")
