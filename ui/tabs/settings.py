"""Settings: the mode, the caps, which provider keys are set (never their values)."""

from __future__ import annotations

import os

import gradio as gr

from auditor import __version__, config
from auditor.policy import Mode
from auditor.sim import organisms
from ui.state import MODE_TEXT, PROVIDER_KEYS


class SettingsTab:
    def settings_text(self, request: gr.Request = None) -> str:
        public = self.rules.mode is Mode.PUBLIC
        lim = self.rules.limits
        lines = [
            f"em-auditor {__version__}" + ("" if public else f"; store: {self.store.path}"),
            f"Mode: {self.rules.mode.value} ({MODE_TEXT[self.rules.mode]})",
            "Simulated organisms (offline): " + ", ".join(f"organism/{n}" for n in organisms.NAMES),
            f"Offline judge: {config.DEFAULT_JUDGE}",
            f"Limits: {lim.max_samples:,} samples per question, {lim.max_calls:,} model calls per job, "
            f"{lim.max_chat_tokens:,} tokens per chat reply, {lim.max_examples:,} examples per dataset",
        ]
        if self.model_list:
            lines.append(
                "Models from the model-list file" + (" (listed for visitors: *)" if public else "") + ":"
            )
            for name, spec in self.model_list.items():
                if public and not spec.visitors:
                    continue
                pub = spec.public()
                mark = " *" if spec.visitors else ""
                lines.append(
                    f"  {name}{mark}: {pub['model']} {pub.get('api_base', '')} key from {pub.get('api_key_env') or 'provider default'}"
                )
        else:
            lines.append("No model-list file (set AUDITOR_MODELS to a LiteLLM proxy-style model_list YAML).")
        if public:
            meter = self.meter(request)
            if meter is not None:
                calls, tokens = meter.used()

                def of(cap: int | None) -> str:
                    return "unlimited" if cap is None else f"{cap:,}"

                lines.append(
                    f"Your budget today on this instance's keys: {calls:,} of {of(lim.visitor_calls)} calls, "
                    f"{tokens:,} of {of(lim.visitor_tokens)} tokens"
                )
            lines.append("Other models need your own API key (kept in memory for one request).")
        else:
            lines.append("Provider keys set in the environment (names only):")
            for name in PROVIDER_KEYS:
                lines.append(f"  {name}: {'set' if os.environ.get(name) else 'not set'}")
        lines.append(f"Logins: {'on (AUDITOR_AUTH)' if self.auth_enabled else 'off'}")
        return "\n".join(lines)


def layout(app, demo, models, shipped, chat_pool, job_pool) -> None:
    with gr.Tab("Settings"):
        s_text = gr.Textbox(label="Settings", lines=24, value=app.settings_text, interactive=False)
        gr.Button("Refresh").click(app.settings_text, None, s_text, api_name="settings")
