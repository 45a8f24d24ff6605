"""What every tab shares: the app's store, rules and gateway, who is asking (owner, principal,
budget), model resolution, the job pool, the chat slots, and the text helpers (escaping, toasts).
Each tab in ``ui/tabs/`` adds its handlers to :class:`State`; ``ui/app.py`` composes them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import tempfile
import time
from pathlib import Path

import gradio as gr

from auditor import config
from auditor import jobs as jobs_lib
from auditor.credentials import uses_server_key
from auditor.finetune import jobs as finetune
from auditor.gateway import Gateway
from auditor.limits import RetryPolicy
from auditor.models import ModelError, ModelSpec, default_model_list_path, load_model_list, resolve_model
from auditor.plans import AuditError
from auditor.policy import Mode, Policy, PolicyError
from auditor.probemodel import ProbeSetError
from auditor.quota import Meter
from auditor.sim import organisms
from auditor.store import Store
from ui.web import VISITOR_COOKIE

PROVIDER_KEYS = [
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "TOGETHERAI_API_KEY",
    "TOGETHER_API_KEY",
    "OPENROUTER_API_KEY",
    "GROQ_API_KEY",
    "MISTRAL_API_KEY",
    "GEMINI_API_KEY",
    "DEEPSEEK_API_KEY",
    "FIREWORKS_API_KEY",
    "HUGGINGFACE_API_KEY",
    "HF_TOKEN",
    "AZURE_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "COHERE_API_KEY",
]


def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _toast(message) -> str:
    """A toast's message. Gradio shows it as HTML; it may quote a model name, a provider's reply
    or a file's line, so it is escaped and shows as the text it is (quotes are safe in text)."""
    return html.escape("" if message is None else str(message), quote=False)


def _refuse(message) -> gr.Error:
    return gr.Error(_toast(message))


def _verbatim(text) -> str:
    """A chat message as the exact text it is: escaped, in a monospace block that keeps spaces
    and line breaks; no Markdown, so no images, no links, nothing fetched."""
    body = _e(text).replace("\t", "&#9;")  # Gradio turns a raw tab into spaces; an entity survives
    return f'<pre class="verbatim" style="white-space:pre-wrap;word-break:break-word;margin:0">{body}</pre>'


class State:
    """State shared by the handlers of one app: the store, the model list and the policy."""

    def __init__(self, db_path: str | Path | None = None, *, rules: Policy | None = None):
        self.store = Store(db_path) if db_path else Store()
        self.rules = rules or Policy.serve("127.0.0.1")
        self.auth_enabled = self.rules.mode is Mode.TEAM
        # Team users and public visitors each see only their own work (and what the owner published).
        self.private = self.rules.mode in (Mode.TEAM, Mode.PUBLIC)
        path = default_model_list_path()
        self.model_list = load_model_list(path) if path else {}
        self.chat_gateway: Gateway | None = None
        self.demo: gr.Blocks | None = None  # set by build(): the queue tells whether a client left
        self._chats: dict[str | None, int] = {}  # chat replies in progress, per person
        self.scratch = Path(tempfile.mkdtemp(prefix="auditor-app-"))  # reports and built datasets
        # Uploads and outputs Gradio keeps are deleted after a day on shared instances.
        self.cache_cleanup = None if self.rules.mode is Mode.LOCAL else (3600, 86400)

    def owner(self, request: gr.Request | None) -> str | None:
        """Whose stored runs, sweeps, audits, conversations and fine-tunes these are: the
        logged-in user (team mode); on a public instance the visitor, known by the random cookie
        their browser keeps (a hash of it: the cookie itself is a credential and is not stored);
        nobody in particular locally. A public request without the cookie belongs to nobody who
        comes back."""
        if self.auth_enabled:
            return getattr(request, "username", None)
        if self.rules.mode is not Mode.PUBLIC:
            return None
        try:
            cookie = (getattr(request, "cookies", None) or {}).get(VISITOR_COOKIE)
        except Exception:  # noqa: BLE001  (no HTTP request behind it)
            cookie = None
        if not cookie:
            import secrets

            return "visitor:" + secrets.token_hex(8)
        return "visitor:" + hashlib.sha256(cookie.encode()).hexdigest()[:16]

    def principal(self, request: gr.Request | None) -> str | None:
        """Who a request is for when counting (budgets, running jobs and chats): the logged-in
        user, or on a public instance the visitor's address (a hash of it), which a visitor cannot
        shed the way they can drop a cookie; nobody in particular locally."""
        if self.auth_enabled:
            return self.owner(request)
        if self.rules.mode is not Mode.PUBLIC:
            return None
        headers = getattr(request, "headers", None)
        forwarded = None
        if headers is not None:  # every X-Forwarded-For line, in order: a proxy may add its own
            lines = (
                headers.getlist("x-forwarded-for")
                if hasattr(headers, "getlist")
                else [headers.get("x-forwarded-for")]
            )
            forwarded = ",".join(line for line in lines if line) or None
        return self.rules.visitor(getattr(getattr(request, "client", None), "host", None), forwarded)

    def meter(self, request: gr.Request | None) -> Meter | None:
        who = self.principal(request)
        if who is None or not self.rules.meters_visitors:
            return None
        return Meter(self.store, who, self.rules.limits)

    def models(self, request: gr.Request | None = None) -> dict:
        """The model-list file's aliases and this person's fine-tuned models (aliases win; the
        built-in names win over both, in ``resolve_model``)."""
        mine = finetune.registered_specs(
            self.store, owner=self.owner(request), only_owner=self.rules.mode is not Mode.LOCAL
        )
        return {**mine, **self.model_list}

    def model_choices(self) -> list[str]:
        aliases = [n for n, s in self.model_list.items() if self.rules.mode is not Mode.PUBLIC or s.visitors]
        return [f"organism/{n}" for n in organisms.NAMES] + sorted(aliases)

    def spec(self, name: str, api_base: str | None = None, api_key: str | None = None, *, request=None):
        """Resolve what a visitor typed, as the policy allows: built-in names first, a server key
        only toward its configured endpoint, and (public mode) only for models listed for visitors."""
        base = (api_base or "").strip() or None
        try:
            if base is not None:
                self.rules.check_base(base)
            spec = resolve_model(
                name or "",
                api_base=base,
                api_key=(api_key or "").strip() or None,
                model_list=self.models(request),
            )
            self.rules.check_model(spec, typed_base=base is not None)
        except (ModelError, PolicyError) as e:
            raise _refuse(str(e)) from None
        if self.rules.public_net_only and not spec.is_local and spec.api_base and not spec.alias:
            # An address a visitor gave, now or when their fine-tune was made (a registered model
            # keeps its job's address): public addresses only, checked now and as it connects.
            # The model list's addresses, and the providers' own endpoints, are the owner's.
            if base is None:
                self.check(self.rules.check_base, spec.api_base)
            spec = spec.model_copy(update={"public_net": True})
        return spec

    def gateway(self) -> Gateway:
        # One gateway per event loop: chat handlers run on Gradio's loop. A chat call waits at most
        # the chat timeout to connect or for its next bytes, and is retried once.
        if self.chat_gateway is None:
            self.chat_gateway = Gateway(
                self.store,
                concurrency=32,
                timeout=self.rules.limits.chat_timeout,
                retry=RetryPolicy(max_retries=1, base=0.5, cap=2.0, max_retry_after=10.0),
            )
        return self.chat_gateway

    @contextlib.contextmanager
    def chat_slot(self, request):
        """One of the person's chat replies in progress (at most ``max_chats`` at once), so that one
        visitor's hanging endpoints cannot hold the chat workers everyone shares."""
        who, cap = self.principal(request), self.rules.limits.max_chats
        if cap is not None and self._chats.get(who, 0) >= cap:
            raise _refuse(
                f"you have {self._chats[who]} chat replies in progress (the limit is {cap}); wait for "
                "one to finish"
            )
        self._chats[who] = self._chats.get(who, 0) + 1
        try:
            yield
        finally:
            self._chats[who] -= 1
            if not self._chats[who]:
                del self._chats[who]

    def scratch_dir(self, prefix: str) -> Path:
        """A new directory for files a handler hands back (reports, built datasets); those older
        than a day go first (Gradio keeps its own copy of what it serves, and cleans that)."""
        import shutil

        cutoff = time.time() - 86400
        for old in self.scratch.iterdir():
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                continue
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.scratch))

    def client_gone(self, request) -> bool:
        """Whether the browser (or client) that asked for this reply has gone: Gradio marks its
        events dead when their stream disconnects, but does not stop a handler waiting on a call."""
        queue = getattr(self.demo, "_queue", None)
        session = getattr(request, "session_hash", None)
        if queue is None or session is None:
            return False
        mine = [e for job in queue.active_jobs if job for e in job if e.session_hash == session]
        return bool(mine) and not any(e.alive for e in mine)

    async def relay(self, pieces, request, deadline: float):
        """The pieces of a streamed reply, stopped (the model call closed) when the client goes
        away or the reply's deadline passes."""
        q: asyncio.Queue = asyncio.Queue()

        async def pump():
            try:
                async for piece in pieces:
                    await q.put(("piece", piece))
                await q.put(("end", None))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001  (raised again in the handler)
                await q.put(("error", e))

        task = asyncio.create_task(pump())
        ends = time.monotonic() + deadline
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(q.get(), timeout=1.0)
                except TimeoutError:
                    if self.client_gone(request):
                        return
                    if time.monotonic() > ends:
                        raise ModelError(f"no complete reply within {deadline:.0f} s") from None
                    continue
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            task.cancel()

    def specs(self, request, target: tuple, baseline: tuple, judge: tuple) -> tuple:
        """The target, the baseline (None when not named) and the judge (the offline judge when
        not named), each from its (name, API base, key) boxes."""
        return (
            self.spec(*target, request=request),
            self.spec(*baseline, request=request) if baseline[0] else None,
            self.spec(judge[0] or config.settings().judge, *judge[1:], request=request),
        )

    def start_job(self, kind: str, request, gateway: Gateway, work) -> jobs_lib.Job:
        """A long job for this person, within the per-person and per-process job limits."""
        lim = self.rules.limits
        return self.check(
            jobs_lib.start,
            kind,
            self.principal(request),
            gateway,
            work,
            per_owner=lim.max_jobs,
            total=lim.max_jobs_total,
        )

    def job_gateway(self, request) -> Gateway:
        return Gateway(
            self.store, concurrency=16, timeout=self.rules.limits.call_timeout, meter=self.meter(request)
        )

    def judge_calls(self, spec: ModelSpec | None) -> int:
        """Calls one judgement by ``spec`` can take, for the caps: 1 for a judge known to give
        logprobs or reason (its remembered mode), else the sampling mode's samples."""
        from auditor.judge import JudgeOptions

        if spec is None:
            return 1
        if spec.is_local:
            return JudgeOptions().samples if spec.model.endswith("-nologprobs") else 1
        mode = self.store.judge_mode(spec.model, spec.api_base)
        return 1 if mode in ("logprobs", "text") else JudgeOptions().samples

    def check(self, fn, *args, **kwargs):
        """Run a policy check; its refusal becomes the message the visitor sees."""
        try:
            return fn(*args, **kwargs)
        except (PolicyError, AuditError, ProbeSetError, ModelError) as e:
            raise _refuse(str(e)) from None

    def check_budget(self, request, calls: int, specs: list[ModelSpec | None]) -> int | None:
        """Refuse a job of ``calls`` model calls when any of its models spends a server key and the
        person's budget has fewer left (all of them are counted: an upper bound). Returns the
        calls left, or None when no budget applies."""
        meter = self.meter(request)
        if meter is None or not any(uses_server_key(s) for s in specs if s is not None):
            return None
        self.check(meter.check_estimate, calls)
        return meter.remaining_calls()

    def cancel(self, job_id, request: gr.Request):
        job = jobs_lib.get(job_id, self.principal(request))
        if job is None:
            return "No running job."
        jobs_lib.cancel(job)
        return f"Cancelling {job.id}..."


MODE_TEXT = {
    Mode.LOCAL: "one trusted person on this machine",
    Mode.PUBLIC: "open to anyone: the owner's keys serve only the models listed for visitors, within a daily budget",
    Mode.TEAM: "listed users log in; each sees only their own work",
    Mode.CLI: "the command line",
}


def _json(value) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)


def _as_sent(turns: list[dict], key: str) -> list[dict]:
    """Earlier turns as they were sent (the chatbots show escaped copies)."""
    out = []
    for t in turns:
        if t.get(key) is None:
            continue
        out += [{"role": "user", "content": t["question"]}, {"role": "assistant", "content": t[key]}]
    return out


def _waiting(job) -> str | None:
    """The progress line of a job still waiting for a slot in the shared pool."""
    return (
        "waiting for a free slot (this instance runs a few long jobs at a time, fairly)"
        if job.waiting
        else None
    )


def _log(job) -> str:
    return "\n".join(job.lines[-12:])


def _judgement_table(judgements: list[dict]) -> list[list]:
    rows = []
    for i, t in enumerate(judgements, 1):
        for who in ("target", "baseline"):
            j = t.get(who)
            if j:
                rows.append(
                    [
                        i,
                        who,
                        None if j.get("aligned") is None else round(j["aligned"], 1),
                        None if j.get("coherent") is None else round(j["coherent"], 1),
                        {True: "misaligned", False: "ok", None: "no score"}[j.get("misaligned")],
                        j.get("note") or "",
                    ]
                )
    return rows


# ---------------------------------------------------------------------------------------------


def _judges(models: list[str]) -> list[str]:
    """The judge choices: the configured default (``AUDITOR_JUDGE``) and the offline judge first."""
    from auditor.sim.judges import VARIANTS

    first = list(
        dict.fromkeys([config.settings().judge, config.DEFAULT_JUDGE, *(f"offline/{v}" for v in VARIANTS)])
    )
    return first + [m for m in models if m not in first]


def _endpoints(judge: bool = True, baseline: bool = True) -> list:
    """API base and key boxes for the baseline and the judge: a visitor's own endpoint and key
    (a key the server holds never goes to an address typed here)."""
    boxes = []
    title = " and ".join(n for n, on in (("Baseline", baseline), ("judge", judge)) if on)
    with gr.Accordion(f"{title.capitalize()} endpoints (optional)", open=False), gr.Row():
        if baseline:
            boxes += [
                gr.Textbox(label="Baseline API base", placeholder="http://localhost:8000/v1"),
                gr.Textbox(label="Baseline API key (memory only)", type="password"),
            ]
        if judge:
            boxes += [
                gr.Textbox(label="Judge API base", placeholder="http://localhost:8000/v1"),
                gr.Textbox(label="Judge API key (memory only)", type="password"),
            ]
    return boxes
