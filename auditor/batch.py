"""Audits through a provider's Batch API (OpenAI's, via the openai SDK): about half the price,
results within the provider's window instead of at once.

:class:`BatchGateway` is a :class:`Gateway` whose remote calls are gathered into batches: calls
made within ``flush_after`` seconds of each other go into one JSONL file (one line per distinct
request, keyed by a hash of the request), which is uploaded and submitted; the gateway polls until
the batch ends and hands every caller its answer, which the gateway's cache then keeps. The runner
does not change: it awaits ``complete()`` as usual, so a run's target calls form one batch and its
judge calls, made as the answers arrive, another.

Nothing is lost on a restart: once its file is uploaded, a batch's request keys and file id are
stored (status ``submitting``) before the batch is created, then under the provider's batch id
before polling starts. The same command finds the batch again and collects its results instead of
submitting twice; a row still ``submitting`` is matched to the provider's batch made from that
file, or the batch is created then. Answers already collected come from the cache."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field

from . import config, credentials

config.offline_defaults()  # before LiteLLM is imported

import litellm  # noqa: E402

from .gateway import CallResult, Gateway, fill_result  # noqa: E402
from .limits import short_error  # noqa: E402
from .models import ModelSpec  # noqa: E402
from .secrets import redact  # noqa: E402
from .store import Store  # noqa: E402

TERMINAL_FAILED = ("failed", "expired", "cancelled")
SUBMITTING = "submitting"  # our own status: the file is uploaded, the batch maybe not yet created
BATCH_DISCOUNT = 0.5  # the Batch API's price relative to synchronous calls
MAX_REQUESTS = 50_000  # per batch file (OpenAI's limit)


def request_id(spec: ModelSpec, body: dict) -> str:
    blob = json.dumps({"api_base": spec.api_base, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:40]


def _pending_id(input_file_id: str) -> str:
    return f"pending:{input_file_id}"


@dataclass
class _Group:
    spec: ModelSpec
    pending: dict[str, dict] = field(default_factory=dict)  # custom_id -> body
    waiters: dict[str, list[asyncio.Future]] = field(default_factory=dict)
    last_added: float = 0.0
    flusher: asyncio.Task | None = None


class BatchGateway(Gateway):
    # Calls are gathered into batches: a judge does not hold its first judgements back while it
    # detects its mode (that would cost a batch round trip of its own); see auditor.judge.
    gathers_calls = True

    def __init__(
        self,
        store: Store,
        *,
        poll: float = 30.0,
        flush_after: float = 0.5,
        progress=None,
        **kwargs,
    ):
        super().__init__(store, **kwargs)
        self.poll = poll
        self.flush_after = flush_after
        self.progress = progress
        self._groups: dict[tuple, _Group] = {}
        self.batches_submitted = 0
        self.batches_resumed = 0
        self._tasks: set[asyncio.Task] = set()

    def _say(self, line: str) -> None:
        if self.progress:
            self.progress(line)

    async def _call_with_retries(self, spec: ModelSpec, messages: list[dict], params: dict) -> CallResult:
        if spec.is_local:  # in-process models have no batch API
            return await super()._call_with_retries(spec, messages, params)
        if spec.provider != "openai":
            result = CallResult()
            result.error = f"batch mode needs an OpenAI-compatible model (openai/...), not {spec.model!r}"
            return result
        body = {
            "model": spec.model.split("/", 1)[1] if "/" in spec.model else spec.model,
            "messages": messages,
        }
        body.update({k: v for k, v in params.items() if v is not None})
        body.update(spec.extra)
        cid = request_id(spec, body)
        key = (spec.model, spec.api_base, credentials.credential_id(spec))  # one client, one key
        group = self._groups.get(key)
        if group is None or group.flusher is None or group.flusher.done():
            group = self._groups[key] = _Group(spec)
            group.flusher = asyncio.get_running_loop().create_task(self._flush_when_quiet(group))
        future = asyncio.get_running_loop().create_future()
        group.pending[cid] = body
        group.waiters.setdefault(cid, []).append(future)
        group.last_added = time.monotonic()
        return await future

    async def _flush_when_quiet(self, group: _Group) -> None:
        while True:
            await asyncio.sleep(self.flush_after)
            quiet = time.monotonic() - group.last_added >= self.flush_after
            if quiet or len(group.pending) >= MAX_REQUESTS:
                break
        # later calls start a new group
        self._groups.pop((group.spec.model, group.spec.api_base, credentials.credential_id(group.spec)), None)
        try:
            results = await self._run_batches(group.spec, group.pending)
        except Exception as e:  # noqa: BLE001  (every caller gets the reason)
            results = {}
            reason = redact(f"batch failed: {type(e).__name__}: {e}")
            for cid in group.pending:
                r = CallResult()
                r.error = reason
                results[cid] = r
        for cid, futures in group.waiters.items():
            r = results.get(cid)
            if r is None:
                r = CallResult()
                r.error = "the batch output has no line for this request"
            for f in futures:
                if not f.done():
                    f.set_result(r)

    def _client(self, spec: ModelSpec):
        import openai

        # the key the policy allows toward this address (None: the SDK reads OPENAI_API_KEY, which
        # happens only toward the provider's own endpoint or on the owner's command line)
        key = spec.key(spec.api_base)  # a ModelError names a missing variable
        return openai.AsyncOpenAI(api_key=key, base_url=spec.api_base, max_retries=6, timeout=300)

    async def _run_batches(self, spec: ModelSpec, pending: dict[str, dict]) -> dict[str, CallResult]:
        client = self._client(spec)
        results: dict[str, CallResult] = {}
        todo = dict(pending)
        # 1. batches this store already submitted for these requests (a restart): collect them
        for row in self.store.provider_batches(spec.model, spec.api_base):
            mine = todo.keys() & set(row["custom_ids"])
            if not mine or row["status"] in TERMINAL_FAILED:
                continue
            if row["status"] == SUBMITTING:
                # killed between uploading the file and storing the batch: the batch may exist
                row = await self._adopt(client, row)
            self.batches_resumed += 1
            self._say(
                f"batch {row['id']}: resuming ({len(mine)} of its {row['n_requests']} requests are needed)"
            )
            got = await self._collect(client, spec, row["id"])
            for cid in mine:
                if cid in got:
                    results[cid] = got[cid]
                    todo.pop(cid)
        # 2. the rest, in new batches of at most MAX_REQUESTS
        ids = list(todo)
        for start in range(0, len(ids), MAX_REQUESTS):
            chunk = ids[start : start + MAX_REQUESTS]
            lines = [
                json.dumps(
                    {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": todo[cid]}
                )
                for cid in chunk
            ]
            data = ("\n".join(lines) + "\n").encode("utf-8")
            uploaded = await client.files.create(file=("auditor-batch.jsonl", data), purpose="batch")
            # stored before the batch is created, so a kill between the two cannot lose a batch
            pending_row = {
                "id": _pending_id(uploaded.id),
                "model": spec.model,
                "api_base": spec.api_base,
                "status": SUBMITTING,
                "n_requests": len(chunk),
                "custom_ids": chunk,
                "input_file_id": uploaded.id,
            }
            self.store.save_provider_batch(pending_row)
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            self.batches_submitted += 1
            self.store.replace_provider_batch(
                pending_row["id"], {**pending_row, "id": batch.id, "status": batch.status}
            )
            self._say(f"batch {batch.id}: submitted {len(chunk)} requests to {spec.model}")
            results.update(await self._collect(client, spec, batch.id))
        return results

    async def _adopt(self, client, row: dict) -> dict:
        """A batch row stored as submitting: find the batch made from its file at the provider,
        or create it now (the earlier process died before the create went out)."""
        found = None
        async for b in client.batches.list(limit=100):
            if b.input_file_id == row["input_file_id"]:
                found = b
                break
        if found is None:
            found = await client.batches.create(
                input_file_id=row["input_file_id"], endpoint="/v1/chat/completions", completion_window="24h"
            )
            self.batches_submitted += 1
            self._say(
                f"batch {found.id}: submitted {row['n_requests']} requests (file uploaded before a restart)"
            )
        new = {**row, "id": found.id, "status": found.status}
        self.store.replace_provider_batch(row["id"], new)
        return new

    async def _collect(self, client, spec: ModelSpec, batch_id: str) -> dict[str, CallResult]:
        """Poll one batch until it ends; its results by custom_id."""
        while True:
            if self.cancel_event is not None and self.cancel_event.is_set():
                raise RuntimeError(f"cancelled while waiting for batch {batch_id}; re-run to collect it")
            batch = await client.batches.retrieve(batch_id)
            counts = batch.request_counts.model_dump() if batch.request_counts else None
            self.store.save_provider_batch(
                {
                    "id": batch.id,
                    "status": batch.status,
                    "output_file_id": batch.output_file_id,
                    "error_file_id": batch.error_file_id,
                    "request_counts": counts,
                }
            )
            if batch.status == "completed" or (batch.status in TERMINAL_FAILED and batch.output_file_id):
                break
            if batch.status in TERMINAL_FAILED:
                errors = getattr(batch, "errors", None)
                detail = "; ".join(e.message or "" for e in (errors.data if errors and errors.data else []))[
                    :300
                ]
                raise RuntimeError(f"batch {batch_id} {batch.status}{': ' + detail if detail else ''}")
            self._say(f"batch {batch_id}: {batch.status} {counts or ''}")
            await asyncio.sleep(self.poll)
        out: dict[str, CallResult] = {}
        for fid in (batch.output_file_id, batch.error_file_id):
            if not fid:
                continue
            content = await client.files.content(fid)
            for line in content.content.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                out[item["custom_id"]] = self._result(spec, item)
        return out

    def _result(self, spec: ModelSpec, item: dict) -> CallResult:
        result = CallResult()
        result.attempts = 1
        response = item.get("response") or {}
        body = response.get("body") or {}
        status = response.get("status_code")
        if item.get("error") or status != 200 or "choices" not in body:
            message = (
                (item.get("error") or {}).get("message")
                or (body.get("error") or {}).get("message")
                or "failed"
            )
            result.error = f"batch request failed ({status}): {redact(message)[:300]}"
            result.status_code = status
            self.stats.failures += 1
            return result
        self.stats.calls_sent += 1
        try:
            fill_result(result, litellm.ModelResponse(**body), spec, self.stats, price_factor=BATCH_DISCOUNT)
        except Exception as e:  # noqa: BLE001
            result.text = None
            result.error = f"unreadable batch output line: {short_error(e, None)}"
        return result

    def report(self) -> dict:
        return {
            "mode": "batch",
            "batches_submitted": self.batches_submitted,
            "batches_resumed": self.batches_resumed,
        }
