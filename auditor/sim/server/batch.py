"""The Batch API for the local OpenAI-compatible server: ``/v1/batches`` over uploaded JSONL.

A batch moves validating -> in_progress -> finalizing -> completed, taking at least
``batch_seconds``; its output file holds one line per request (in a shuffled order, as OpenAI
allows) and failed lines go to the error file. Only ``/v1/chat/completions`` is served."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

from aiohttp import web

from .finetuning import _err, _ft, _now, add_file


class BatchState:
    def __init__(self, batch_seconds: float):
        self.batch_seconds = batch_seconds
        self.batches: dict[str, dict] = {}
        self.tasks: set[asyncio.Task] = set()


def _bs(request) -> BatchState:
    return request.app["batches"]


async def _process(app, batch: dict) -> None:
    from .. import organisms
    from .app import _generate, completion_json

    state, ft, bs = app["state"], app["ft"], app["batches"]
    started = time.monotonic()
    lines = ft.contents[batch["input_file_id"]].decode("utf-8", errors="replace").splitlines()
    requests, errors = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            assert (
                req["method"] == "POST" and req["url"] == batch["endpoint"] and isinstance(req["body"], dict)
            )
            requests.append(req)
        except Exception:  # noqa: BLE001
            errors.append(
                {
                    "code": "invalid_request",
                    "line": n,
                    "message": "each line needs custom_id, method POST, url and body",
                }
            )
    ids = [r.get("custom_id") for r in requests]
    if errors or len(set(ids)) != len(ids) or not requests:
        if len(set(ids)) != len(ids):
            errors.append(
                {"code": "duplicate_custom_id", "line": None, "message": "custom_id values must be unique"}
            )
        batch.update(status="failed", failed_at=_now(), errors={"object": "list", "data": errors[:100]})
        return
    batch.update(status="in_progress", in_progress_at=_now())
    batch["request_counts"]["total"] = len(requests)
    out, err = [], []
    for i, req in enumerate(requests):
        if batch["status"] == "cancelling":
            break
        body = req["body"]
        try:
            gen = _generate(body.get("model", ""), body, state.aliases)
            state.counts["batch_200"] += 1
            out.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:20]}",
                    "custom_id": req["custom_id"],
                    "response": {
                        "status_code": 200,
                        "request_id": uuid.uuid4().hex[:16],
                        "body": completion_json(gen, body.get("model", "")),
                    },
                    "error": None,
                }
            )
            batch["request_counts"]["completed"] += 1
        except (organisms.UnknownOrganism, KeyError, TypeError) as e:
            err.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:20]}",
                    "custom_id": req["custom_id"],
                    "response": {
                        "status_code": 400,
                        "request_id": uuid.uuid4().hex[:16],
                        "body": {"error": {"message": str(e), "type": "invalid_request_error"}},
                    },
                    "error": None,
                }
            )
            batch["request_counts"]["failed"] += 1
        if i % 50 == 0:
            await asyncio.sleep(0)  # keep serving other requests
    rest = bs.batch_seconds - (time.monotonic() - started)
    if rest > 0:
        await asyncio.sleep(rest)
    if batch["status"] == "cancelling":
        batch.update(status="cancelled", cancelled_at=_now())
    else:
        batch.update(status="finalizing", finalizing_at=_now())
    random.Random(batch["id"]).shuffle(out)  # output order is not the input order
    if out:
        data = "".join(json.dumps(o) + "\n" for o in out).encode()
        batch["output_file_id"] = add_file(ft, data, f"{batch['id']}_output.jsonl", "batch_output")["id"]
    if err:
        data = "".join(json.dumps(o) + "\n" for o in err).encode()
        batch["error_file_id"] = add_file(ft, data, f"{batch['id']}_error.jsonl", "batch_output")["id"]
    if batch["status"] == "finalizing":
        batch.update(status="completed", completed_at=_now())


async def create_batch(request: web.Request) -> web.Response:
    body = await request.json()
    ft, bs = _ft(request), _bs(request)
    fid = body.get("input_file_id")
    if fid not in ft.files or ft.files[fid]["purpose"] != "batch":
        return _err(
            400, f"input_file_id {fid!r} is not an uploaded file with purpose 'batch'", "input_file_id"
        )
    if body.get("endpoint") != "/v1/chat/completions":
        return _err(400, "this server batches /v1/chat/completions only", "endpoint")
    if body.get("completion_window") != "24h":
        return _err(400, "completion_window must be '24h'", "completion_window")
    bid = f"batch_{uuid.uuid4().hex[:24]}"
    batch = {
        "id": bid,
        "object": "batch",
        "endpoint": body["endpoint"],
        "errors": None,
        "input_file_id": fid,
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": _now(),
        "in_progress_at": None,
        "expires_at": _now() + 86400,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
    }
    bs.batches[bid] = batch
    task = asyncio.get_running_loop().create_task(_process(request.app, batch))
    bs.tasks.add(task)
    task.add_done_callback(bs.tasks.discard)
    return web.json_response(batch)


async def get_batch(request: web.Request) -> web.Response:
    batch = _bs(request).batches.get(request.match_info["batch_id"])
    return web.json_response(batch) if batch else _err(404, "No such batch", "batch_id")


async def list_batches(request: web.Request) -> web.Response:
    """Newest first, ``limit`` per page, ``after`` a batch id: OpenAI's cursor pagination."""
    items = sorted(_bs(request).batches.values(), key=lambda b: b["created_at"], reverse=True)
    after = request.query.get("after")
    if after:
        ids = [b["id"] for b in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit = int(request.query.get("limit", 20))
    return web.json_response(
        {
            "object": "list",
            "data": items[:limit],
            "first_id": items[0]["id"] if items else None,
            "last_id": items[:limit][-1]["id"] if items else None,
            "has_more": len(items) > limit,
        }
    )


async def cancel_batch(request: web.Request) -> web.Response:
    batch = _bs(request).batches.get(request.match_info["batch_id"])
    if batch is None:
        return _err(404, "No such batch", "batch_id")
    if batch["status"] in ("validating", "in_progress"):
        batch.update(status="cancelling", cancelling_at=_now())
    return web.json_response(batch)


def add_batch_routes(app: web.Application, batch_seconds: float = 2.0) -> None:
    app["batches"] = BatchState(batch_seconds)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/batches", create_batch)
        app.router.add_get(f"{prefix}/batches", list_batches)
        app.router.add_get(f"{prefix}/batches/{{batch_id}}", get_batch)
        app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", cancel_batch)
