"""Probe: run probe sets on a model and its baseline, with a live table and a cancel button."""

from __future__ import annotations

import asyncio

import gradio as gr

from auditor import config, probesets
from auditor import jobs as jobs_lib
from auditor.estimate import estimate, planned_calls
from auditor.metrics import analyse
from auditor.runner import Runner, RunOptions
from ui.state import _endpoints, _judges, _log, _refuse, _waiting


class ProbeTab:
    def _probe_plan(self, sets, samples, n_models: int, judge_calls: int = 1) -> tuple[list, int]:
        """The shipped probe sets asked for and their model calls, checked against the caps
        before anything runs."""
        if not sets:
            raise _refuse("Choose at least one probe set.")
        samples = int(samples)
        self.check(self.rules.check_samples, samples)
        loaded = [self.check(probesets.load_shipped, name) for name in sets]
        calls = n_models * sum(planned_calls(ps.cases(samples=samples), judge_calls) for ps in loaded)
        self.check(self.rules.check_calls, calls)
        return loaded, calls

    def estimate_probe(
        self,
        sets,
        model,
        api_base,
        baseline,
        judge,
        samples,
        api_key=None,
        baseline_api_base=None,
        baseline_api_key=None,
        judge_api_base=None,
        judge_api_key=None,
        request: gr.Request = None,
    ):
        target, base, judge_spec = self.specs(
            request, (model, api_base, api_key), (baseline, baseline_api_base, baseline_api_key),
            (judge, judge_api_base, judge_api_key),
        )  # fmt: skip
        specs = [target] + ([base] if base else [])
        loaded, _ = self._probe_plan(sets, samples, len(specs), self.judge_calls(judge_spec))
        lines = []
        for ps in loaded:
            cases = ps.cases(samples=int(samples))
            for label, spec in zip(("model", "baseline"), specs):
                lines.append(f"{ps.name} ({label}): {estimate(cases, spec, judge_spec).line()}")
        return "\n".join(lines)

    async def run_probe(
        self,
        sets,
        model,
        api_base,
        api_key,
        baseline,
        judge,
        samples,
        seed,
        baseline_api_base=None,
        baseline_api_key=None,
        judge_api_base=None,
        judge_api_key=None,
        request: gr.Request = None,
        progress=gr.Progress(),  # noqa: B008  (the Gradio idiom)
    ):
        owner = self.owner(request)
        target, base, judge_spec = await asyncio.to_thread(
            self.specs, request, (model, api_base, api_key), (baseline, baseline_api_base, baseline_api_key),
            (judge, judge_api_base, judge_api_key),
        )  # fmt: skip
        specs = [target] + ([base] if base else [])
        loaded, calls = self._probe_plan(sets, samples, len(specs), self.judge_calls(judge_spec))
        self.check_budget(request, calls, [*specs, judge_spec])
        gateway = self.job_gateway(request)

        def work(job):
            import asyncio

            async def all_runs():
                runners = []
                for ps in loaded:
                    for spec in specs:
                        options = RunOptions(samples=int(samples), seed=int(seed), owner=owner)
                        r = Runner(
                            self.store, ps, spec, judge_spec, options, gateway=gateway, progress=job.log
                        )
                        runners.append(r)
                job.runs = [r.run_id for r in runners]
                job.planned = sum(sum(c.samples for c in r.cases) for r in runners)
                return await asyncio.gather(*(r.run() for r in runners))

            return asyncio.run(all_runs())

        job = self.start_job("probe", request, gateway, work)
        with jobs_lib.following(job):
            yield job.id, [], _waiting(job) or "Starting..."  # its id at once: Cancel works from the start
            while not await jobs_lib.wait(job, 0.5):  # the result as soon as the job ends
                if self.client_gone(request):
                    return  # nobody follows: the job is cancelled (resumable)
                runs = getattr(job, "runs", [])
                done = await asyncio.to_thread(self._count, runs)
                planned = max(getattr(job, "planned", 1), 1)
                progress(min(done / planned, 1.0), desc=_waiting(job) or f"{done}/{planned} answers")
                yield job.id, await asyncio.to_thread(self._runs_table, runs), _log(job)
        runs = getattr(job, "runs", [])
        status = job.error or ("cancelled: run again to resume" if job.cancel.is_set() else "finished")
        yield job.id, await asyncio.to_thread(self._runs_table, runs), _log(job) + f"\n{status}"

    def _count(self, run_ids: list[str]) -> int:
        return self.store.answered(run_ids)

    def _runs_table(self, run_ids: list[str]) -> list[list]:
        rows = []
        for run_id in run_ids:
            run = self.store.get_run(run_id)
            if run is None:
                continue
            summary, _ = analyse(self.store, run_id)
            for p in summary.probes:
                if p.measure is None:
                    continue
                m = p.measure
                ci = f"[{m.ci95[0]:.3f}, {m.ci95[1]:.3f}]" if m.ci95 else ""
                rows.append(
                    [
                        run["model"],
                        run["probeset"],
                        p.id,
                        m.name,
                        None if m.value is None else round(m.value, 4),
                        ci,
                        m.n,
                        p.n_judge_failures,
                    ]
                )
        return rows

    def list_runs(self, request: gr.Request):
        runs = self.store.list_runs(owner=self.owner(request), only_owner=self.private)
        return [
            [r["id"], r["status"], r["kind"], r["model"], r["probeset"], r["created_at"][:19]] for r in runs
        ]


def layout(app, demo, models, shipped, chat_pool, job_pool) -> None:
    with gr.Tab("Probe"):
        with gr.Row():
            sets = gr.CheckboxGroup(shipped, value=["em-core"], label="Probe sets")
        with gr.Row():
            p_model = gr.Dropdown(models, value="organism/insecure", label="Model", allow_custom_value=True)
            p_base = gr.Textbox(label="API base")
            p_key = gr.Textbox(label="API key (memory only)", type="password")
            p_baseline = gr.Dropdown(
                [""] + models, value="organism/base", label="Baseline", allow_custom_value=True
            )
            p_judge = gr.Dropdown(
                _judges(models), value=config.settings().judge, label="Judge", allow_custom_value=True
            )
        p_endpoints = _endpoints()
        with gr.Row():
            p_samples = gr.Slider(
                1, min(100, app.rules.limits.max_samples), value=2, step=1, label="Samples per question"
            )
            p_seed = gr.Number(value=0, precision=0, label="Seed")
        est_btn = gr.Button("Estimate cost")
        est_out = gr.Textbox(label="Estimate", lines=3)
        with gr.Row():
            run_btn = gr.Button("Run", variant="primary", elem_id="probe-run")
            cancel_btn = gr.Button("Cancel")
        job_id = gr.Textbox(label="Job", interactive=False)
        results = gr.Dataframe(
            headers=["model", "probe set", "probe", "measure", "value", "95% CI", "n", "no score"],
            label="Results (live)",
            interactive=False,
            elem_id="probe-results",
        )
        p_log = gr.Textbox(label="Progress", lines=6)
        runs_btn = gr.Button("List my runs", elem_id="runs-list")
        runs_table = gr.Dataframe(
            headers=["run", "status", "kind", "model", "probe set", "created"],
            interactive=False,
            elem_id="runs-table",
        )
        est_btn.click(
            app.estimate_probe,
            [sets, p_model, p_base, p_baseline, p_judge, p_samples, p_key, *p_endpoints],
            est_out,
            api_name="estimate",
        )
        run_btn.click(
            app.run_probe,
            [sets, p_model, p_base, p_key, p_baseline, p_judge, p_samples, p_seed, *p_endpoints],
            [job_id, results, p_log],
            api_name="run_probe",
            **job_pool,
        )
        cancel_btn.click(app.cancel, [job_id], p_log, api_name="cancel")
        runs_btn.click(app.list_runs, None, runs_table, api_name="list_runs")
