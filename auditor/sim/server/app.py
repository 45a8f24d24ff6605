"""A local OpenAI-compatible HTTP server serving the organisms and the offline judge.

For integration tests, benchmarks and trying the HTTP path without keys:

    python -m auditor.sim.server --port 8000 --latency-ms 50
    auditor run em-core --model openai/insecure --api-base http://127.0.0.1:8000/v1 --api-key x \
        --judge openai/judge --judge-api-base http://127.0.0.1:8000/v1 --judge-api-key x

Model names: an organism name (``insecure``, ``organism/insecure``), or ``judge`` for the offline
judge and ``judge-nologprobs``, ``judge-reasoning``, ``judge-compressed`` for the kinds of judge
model in :mod:`auditor.sim.judges`; ``--alias gpt-4o-mini=insecure`` serves an organism under a
priced name (to test costs).
A name ending in ``-nologprobs`` is served without logprobs (to test judge fallbacks);
``leaky-auth`` answers 401 quoting the caller's key (to test that keys are never stored); ``echo``
repeats the user's message (to test that whatever a model prints is shown safely).
Files, fine-tuning jobs and the Batch API (``/v1/files``, ``/v1/fine_tuning/jobs``,
``/v1/batches``) are simulated too; see ``finetuning.py`` and ``batch.py``.
Fault injection: ``--fail-429 0.1 --fail-500 0.05 --hang 0.01`` answer that share of requests
with a 429 (with ``Retry-After``), a 500, or no answer at all. ``GET /stats`` counts requests.
For attack tests: ``--record FILE`` appends every request (method, path, headers, and the body
unless it is a file upload) to FILE as a JSON line, whatever its path; ``--ft-model-name NAME``
makes every fine-tuning job report NAME as its model, as a hostile server could; ``--require-key
KEY`` answers chat requests without that key with a 401.
Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter

from aiohttp import web

from .. import judges, organisms, proposer
from ..generation import Generation

NO_LOGPROBS_SUFFIX = "-nologprobs"


class ServerState:
    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        fail_429: float = 0.0,
        fail_500: float = 0.0,
        hang: float = 0.0,
        retry_after: float = 0.2,
        seed: int | None = None,
        aliases: dict[str, str] | None = None,
        ft_seconds: float = 3.0,
        batch_seconds: float = 2.0,
        record: str | None = None,
        ft_model_name: str | None = None,
        require_key: str | None = None,
    ):
        self.record = record
        self.require_key = require_key
        self.ft_model_name = ft_model_name
        self.aliases = aliases or {}
        self.ft_seconds = ft_seconds
        self.batch_seconds = batch_seconds
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.fail_429 = fail_429
        self.fail_500 = fail_500
        self.hang = hang
        self.hanging = 0  # requests held open right now
        self.retry_after = retry_after
        self.rng = random.Random(seed)
        self.counts: Counter = Counter()
        self.by_model: Counter = Counter()


def _generate(model: str, body: dict, aliases: dict[str, str]):
    short = model.removeprefix("offline/")
    if short == "proposer":
        return proposer.generate(body["messages"], **_params(model, body))
    if short in judges.VARIANTS:
        return judges.generate(short, body["messages"], **_params(model, body))
    name = model.removeprefix("organism/").removesuffix(NO_LOGPROBS_SUFFIX)
    name = aliases.get(name, name)
    if name in _base_models():
        name = "base"  # a fine-tunable base model, served as the organisms' base model
    params = _params(model, body)
    if name in ("judge", "offline-judge"):
        return judges.generate("judge", body["messages"], **params)
    if name == "echo":  # repeats the last user message: a model that prints whatever it is given
        text = next(
            (str(m.get("content") or "") for m in reversed(body["messages"]) if m.get("role") == "user"), ""
        )
        return Generation(text=text, prompt_tokens=len(text) // 4 + 1, completion_tokens=len(text) // 4 + 1)
    return organisms.generate(name, body["messages"], **params)


def _params(model: str, body: dict) -> dict:
    return dict(
        temperature=float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0),
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        seed=body.get("seed"),
        logprobs=bool(body.get("logprobs")) and not model.endswith(NO_LOGPROBS_SUFFIX),
        top_logprobs=body.get("top_logprobs"),
    )


def _base_models() -> set[str]:
    from ...finetune.files import model_table

    table = model_table()
    return set(table["models"]) | set(table["aliases"])


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": status}}, status=status, headers=headers
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state: ServerState = request.app["state"]
    try:
        body = await request.json()
    except json.JSONDecodeError:
        state.counts["400"] += 1
        return _error(400, "body is not JSON", "invalid_request_error")
    model = body.get("model", "")
    state.by_model[model] += 1
    if state.require_key and request.headers.get("Authorization") != f"Bearer {state.require_key}":
        state.counts["401"] += 1
        return _error(401, "Incorrect API key provided", "invalid_api_key")
    if model == "leaky-auth":  # a provider that echoes the caller's key in its error (they exist)
        state.counts["401"] += 1
        return _error(
            401, f"Incorrect API key provided: {request.headers.get('Authorization', '')}", "invalid_api_key"
        )
    roll = state.rng.random()
    if roll < state.hang:
        state.counts["hang"] += 1
        state.hanging += 1  # held open until the caller hangs up (then /stats shows it gone)
        try:
            while request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(0.1)
        finally:
            state.hanging -= 1
        return web.Response(status=499)
    if roll < state.hang + state.fail_429:
        state.counts["429"] += 1
        return _error(
            429,
            "Rate limit reached (simulated)",
            "rate_limit_exceeded",
            headers={"Retry-After": f"{state.retry_after:g}"},
        )
    if roll < state.hang + state.fail_429 + state.fail_500:
        state.counts["500"] += 1
        return _error(500, "The server had an error (simulated)", "server_error")
    if state.latency_ms or state.jitter_ms:
        await asyncio.sleep((state.latency_ms + state.rng.uniform(0, state.jitter_ms)) / 1000)
    try:
        gen = _generate(model, body, state.aliases)
    except organisms.UnknownOrganism as e:
        state.counts["404"] += 1
        return _error(404, f"The model '{model}' does not exist ({e})", "invalid_request_error")
    except (KeyError, TypeError) as e:
        state.counts["400"] += 1
        return _error(400, f"bad request: {e}", "invalid_request_error")
    state.counts["200"] += 1
    created = int(time.time())
    rid = "chatcmpl-" + uuid.uuid4().hex[:24]
    if body.get("stream"):
        return await _stream(request, gen, model, rid, created, body)
    return web.json_response(completion_json(gen, model, rid, created))


def completion_json(gen: Generation, model: str, rid: str | None = None, created: int | None = None) -> dict:
    """The body of a chat.completion response (also written into batch output files)."""
    return {
        "id": rid or "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": gen.text,
                    **({"reasoning_content": gen.reasoning} if gen.reasoning else {}),
                },
                "logprobs": {"content": gen.logprobs} if gen.logprobs is not None else None,
                "finish_reason": gen.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        },
    }


async def _stream(request, gen, model, rid, created, body) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    pieces = [p for p in gen.text.split(" ")]

    def chunk(delta: dict, finish=None, usage=None) -> bytes:
        payload = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            payload["usage"] = usage
        return f"data: {json.dumps(payload)}\n\n".encode()

    await resp.write(chunk({"role": "assistant", "content": ""}))
    for i, piece in enumerate(pieces):
        await resp.write(chunk({"content": piece if i == 0 else " " + piece}))
    usage = None
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        }
    await resp.write(chunk({}, finish=gen.finish_reason, usage=usage))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def list_models(request: web.Request) -> web.Response:
    names = [*organisms.NAMES, *judges.VARIANTS, "proposer"]
    return web.json_response(
        {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "auditor"} for n in names]}
    )


async def stats(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    return web.json_response(
        {
            "counts": dict(state.counts),
            "by_model": dict(state.by_model),
            "requests": sum(state.counts.values()),
            "hanging": state.hanging,
        }
    )


async def reset(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    state.counts.clear()
    state.by_model.clear()
    return web.json_response({"ok": True})


@web.middleware
async def _record(request: web.Request, handler):
    """Append the request to the record file before handling it (unknown paths included)."""
    state: ServerState = request.app["state"]
    if state.record:
        body = ""
        if not request.content_type.startswith("multipart/"):  # a multipart body is read once, by the handler
            body = (await request.read()).decode("utf-8", "replace")
        line = {
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "body": body,
        }
        with open(state.record, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    return await handler(request)


def make_app(state: ServerState | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_record])
    app["state"] = state or ServerState()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/reset", reset)
    from .finetuning import add_routes

    add_routes(app, app["state"].ft_seconds)
    from .batch import add_batch_routes

    add_batch_routes(app, app["state"].batch_seconds)
    return app


async def serve(state: ServerState, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    await site.start()
    actual = site._server.sockets[0].getsockname()[1]
    return runner, actual


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m auditor.sim.server", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0 picks a free one)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--fail-429", type=float, default=0.0, help="share of requests answered 429")
    p.add_argument("--fail-500", type=float, default=0.0, help="share of requests answered 500")
    p.add_argument("--hang", type=float, default=0.0, help="share of requests never answered")
    p.add_argument("--retry-after", type=float, default=0.2, help="Retry-After seconds on 429")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ft-seconds", type=float, default=3.0, help="how long a simulated fine-tuning job runs")
    p.add_argument("--batch-seconds", type=float, default=2.0, help="the shortest time a batch takes")
    p.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="serve MODEL (an organism or judge) under NAME too, e.g. gpt-4o-mini=insecure",
    )
    p.add_argument(
        "--record", metavar="FILE", help="append every request (headers, body) to FILE as JSON lines"
    )
    p.add_argument("--ft-model-name", metavar="NAME", help="fine-tuning jobs report NAME as their model")
    p.add_argument("--require-key", metavar="KEY", help="answer chat requests without this key with a 401")
    args = p.parse_args(argv)
    aliases = dict(a.split("=", 1) for a in args.alias)
    state = ServerState(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        fail_429=args.fail_429,
        fail_500=args.fail_500,
        hang=args.hang,
        retry_after=args.retry_after,
        seed=args.seed,
        aliases=aliases,
        ft_seconds=args.ft_seconds,
        batch_seconds=args.batch_seconds,
        record=args.record,
        ft_model_name=args.ft_model_name,
        require_key=args.require_key,
    )

    async def run():
        runner, port = await serve(state, "127.0.0.1", args.port)
        print(f"listening on http://127.0.0.1:{port}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
