"""The Gradio app: the tabs of ``ui/tabs/`` composed on the shared :class:`~ui.state.State`,
and :func:`launch`. The UI only wires widgets to library calls (``auditor.chat``,
``auditor.jobs``, runners, sweeps, audits, reports, the store); no auditing logic lives here.

Model output is shown escaped (chat, transcripts) or inside a sandboxed frame (reports).
With logins on (``AUDITOR_AUTH``), each user sees only their own runs and conversations.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from auditor import config, probesets
from auditor.policy import Mode, Policy
from auditor.quota import LoginThrottle
from auditor.store import default_path as store_default_path
from ui.deploy import auth_pairs, default_db, secret_demo_trigger, secret_trigger_path
from ui.state import State
from ui.tabs import chat, finetune, probe, reports, settings, sweep, transcripts
from ui.web import Gatekeeper

TABS = (chat, probe, sweep, transcripts, reports, finetune, settings)


class App(
    chat.ChatTab,
    probe.ProbeTab,
    sweep.SweepTab,
    transcripts.TranscriptsTab,
    reports.ReportsTab,
    finetune.FinetuneTab,
    settings.SettingsTab,
    State,
):
    """The app's state and every tab's handlers (tests call them directly)."""


def build(db_path: str | Path | None = None, *, rules: Policy | None = None) -> gr.Blocks:
    app = App(db_path, rules=rules)
    models = app.model_choices()
    shipped = [p["name"] for p in probesets.list_shipped()]
    # Chat handlers wait on model calls (bounded by the chat timeout and the per-person limit);
    # long-job handlers only follow a job the fair job pool runs, so they need no tight limit.
    chat_pool = {"concurrency_id": "chat", "concurrency_limit": 32}
    job_pool = {"concurrency_id": "jobs", "concurrency_limit": 64}
    with gr.Blocks(title="em-auditor", delete_cache=app.cache_cleanup) as demo:
        gr.Markdown(
            "# em-auditor\nAudit finetuned models for emergent misalignment and hidden backdoors. "
            "The `organism/...` models are offline **simulations** for demos; point the model box at any "
            "LiteLLM model (`openai/...`, `together_ai/...`, `ollama/...`) with an API base to audit a real one."
        )
        for tab in TABS:
            tab.layout(app, demo, models, shipped, chat_pool, job_pool)
    demo.app_state = app  # for tests and the launcher
    app.demo = demo
    return demo


def launch(host: str | None = None, port: int | None = None, db_path: str | Path | None = None) -> None:
    db_path = db_path or default_db()
    secret_demo_trigger(db_path)
    auth = auth_pairs(config.settings().auth)
    rules = Policy.serve(host)
    demo = build(db_path, rules=rules)
    demo.queue(default_concurrency_limit=8)
    db_file = Path(db_path or store_default_path()).resolve()
    lim = rules.limits
    from starlette.middleware import Middleware

    gate = Middleware(
        Gatekeeper,
        rules=rules,
        visitors=rules.mode is Mode.PUBLIC,
        throttle=LoginThrottle(lim.login_failures, lim.login_window) if auth else None,
        max_upload=lim.max_upload_mb * 1024 * 1024 if lim.max_upload_mb else None,
    )
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        # Only gr.Error messages (escaped, see _refuse) reach a toast; another exception shows as
        # a bare "Error" and goes to the server's log.
        show_error=False,
        ssr_mode=False,
        app_kwargs={"middleware": [gate]},
        max_file_size=f"{lim.max_upload_mb}mb" if lim.max_upload_mb else None,
        auth_message="Log in to em-auditor" if auth else None,
        # never served, whatever a request asks for (Gradio serves only its own files anyway)
        blocked_paths=[str(secret_trigger_path(db_path)), *(f"{db_file}{s}" for s in ("", "-wal", "-shm"))],
    )
