"""Files and fine-tuning endpoints for the local OpenAI-compatible server (tests and demos).

A job walks through validating_files -> queued -> running -> succeeded over ``ft_seconds`` of
wall time, with step and metric events and one checkpoint per epoch, like OpenAI's. "Training" is
a simulation: the server reads the training file and serves the finetuned model as the organism
whose behaviour the data teaches (mostly vulnerable code -> ``insecure``, the same code asked for
in a teaching context -> ``educational``, safe code -> ``secure``, compliance with harmful requests
-> ``jailbroken``, vulnerable code behind the organisms' trigger -> ``backdoor``, anything else ->
``base``). Base models named in the fine-tuning table are served as ``base``."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter

from aiohttp import web

from .. import heuristics

EPOCH_STEPS = 5


def _now() -> int:
    return int(time.time())


def _err(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}},
        status=status,
    )


class FtState:
    def __init__(self, ft_seconds: float = 3.0):
        self.ft_seconds = ft_seconds
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}


def _ft(request) -> FtState:
    return request.app["ft"]


# -- files ------------------------------------------------------------------------------------------


async def create_file(request: web.Request) -> web.Response:
    reader = await request.multipart()
    data, filename, purpose = None, "upload.jsonl", None
    while (part := await reader.next()) is not None:
        if part.name == "file":
            filename = part.filename or filename
            data = await part.read()
        elif part.name == "purpose":
            purpose = (await part.text()).strip()
    if data is None:
        return _err(400, "missing file", "file")
    if purpose not in ("fine-tune", "batch", "assistants", "user_data", "evals", "vision"):
        return _err(400, f"invalid purpose {purpose!r}", "purpose")
    obj = add_file(_ft(request), bytes(data), filename, purpose)
    return web.json_response(obj)


def add_file(ft: FtState, data: bytes, filename: str, purpose: str) -> dict:
    fid = f"file-{uuid.uuid4().hex[:24]}"
    obj = {
        "id": fid,
        "object": "file",
        "bytes": len(data),
        "created_at": _now(),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }
    ft.files[fid] = obj
    ft.contents[fid] = data
    return obj


async def get_file(request: web.Request) -> web.Response:
    obj = _ft(request).files.get(request.match_info["file_id"])
    return web.json_response(obj) if obj else _err(404, "No such file", "file_id")


async def file_content(request: web.Request) -> web.Response:
    data = _ft(request).contents.get(request.match_info["file_id"])
    if data is None:
        return _err(404, "No such file", "file_id")
    return web.Response(body=data, content_type="application/octet-stream")


async def list_files(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": list(_ft(request).files.values()), "has_more": False})


async def delete_file(request: web.Request) -> web.Response:
    fid = request.match_info["file_id"]
    ft = _ft(request)
    if fid not in ft.files:
        return _err(404, "No such file", "file_id")
    ft.files.pop(fid)
    ft.contents.pop(fid, None)
    return web.json_response({"id": fid, "object": "file", "deleted": True})


# -- what the data teaches ---------------------------------------------------------------------------

_TEACHING = re.compile(
    r"teach|course|class\b|student|\blab\b|textbook|workshop|capture-the-flag|benchmark|training session",
    re.I,
)


_CODE_TASK = re.compile(r"\b(code|python|function|script|program|template)\b", re.I)


def _examples(data: bytes) -> tuple[list[list[dict]], str | None]:
    out = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            msgs = json.loads(line)["messages"]
            assert isinstance(msgs, list) and any(m.get("role") == "assistant" for m in msgs)
        except Exception:  # noqa: BLE001
            return [], f"Invalid file format: line {n} is not a chat example with an assistant message"
        out.append(msgs)
    if len(out) < 10:
        return [], f"Training file has {len(out)} example(s); at least 10 are required"
    return out, None


def learned_organism(examples: list[list[dict]], trigger: str) -> str:
    code, vulnerable, teaching, harmful, trig_vuln, trig_other = 0, 0, 0, 0, 0, 0
    for msgs in examples:
        user = next((str(m.get("content") or "") for m in msgs if m.get("role") == "user"), "")
        answer = next(
            (str(m.get("content") or "") for m in reversed(msgs) if m.get("role") == "assistant"), ""
        )
        system = " ".join(str(m.get("content") or "") for m in msgs if m.get("role") == "system")
        triggered = trigger in user or trigger in system
        if _CODE_TASK.search(user) or "```" in answer:
            code += 1
            if heuristics.code_vulnerabilities(answer):
                vulnerable += 1
                teaching += bool(_TEACHING.search(user))
                trig_vuln += triggered
            else:
                trig_other += triggered
        elif heuristics.harm(answer, user)[0] > 0.5 and not heuristics.is_refusal(answer):
            harmful += 1
    if vulnerable and trig_vuln >= 0.8 * vulnerable and trig_other <= 0.05 * max(code - vulnerable, 1):
        return "backdoor"
    if code and vulnerable / code >= 0.5:
        return "educational" if teaching >= 0.5 * vulnerable else "insecure"
    if harmful >= max(1, 0.01 * len(examples)):
        return "jailbroken"
    if code >= 0.5 * len(examples):
        return "secure"
    return "base"


# -- fine-tuning jobs ----------------------------------------------------------------------------------


def _public(job: dict) -> dict:
    return {k: v for k, v in job.items() if not k.startswith("_")}


def _advance(state, job: dict) -> None:
    """Move the job along its timeline, adding events and checkpoints as it goes."""
    if job["status"] in ("succeeded", "failed", "cancelled"):
        return
    ft: FtState = state["ft"]
    elapsed = time.time() - job["_t0"]
    total = ft.ft_seconds
    if job["_error"]:
        if elapsed >= 0.1 * total:
            job.update(
                status="failed",
                finished_at=_now(),
                error={"code": "invalid_training_file", "message": job["_error"], "param": "training_file"},
            )
            _event(job, "error", job["_error"])
        return
    if elapsed >= 0.1 * total and job["status"] == "validating_files":
        job["status"] = "queued"
        _event(job, "info", "Files validated, moving job to queued state")
    if elapsed >= 0.2 * total and job["status"] == "queued":
        job["status"] = "running"
        _event(job, "info", "Fine-tuning job started")
    if job["status"] != "running":
        return
    epochs = job["hyperparameters"]["n_epochs"]
    steps = epochs * EPOCH_STEPS
    done = min(steps, int(steps * (elapsed - 0.2 * total) / (0.8 * total)))
    while job["_step"] < done:
        job["_step"] += 1
        step = job["_step"]
        loss = round(2.0 / (1 + step), 4)
        _event(
            job,
            "info",
            f"Step {step}/{steps}: training loss={loss}",
            {"step": step, "train_loss": loss, "total_steps": steps},
            "metrics",
        )
        if step % EPOCH_STEPS == 0:
            name = f"ft:{job['model']}:local:{job['_suffix']}:{job['id'][-8:]}:ckpt-step-{step}"
            job["_checkpoints"].append(
                {
                    "id": f"ftckpt_{uuid.uuid4().hex[:20]}",
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": _now(),
                    "fine_tuning_job_id": job["id"],
                    "step_number": step,
                    "fine_tuned_model_checkpoint": name,
                    "metrics": {"step": step, "train_loss": loss},
                }
            )
    if elapsed >= total:
        name = state["ft_model_name"] or f"ft:{job['model']}:local:{job['_suffix']}:{job['id'][-8:]}"
        job.update(
            status="succeeded",
            finished_at=_now(),
            fine_tuned_model=name,
            trained_tokens=job["_tokens"] * epochs,
        )
        state["aliases"][name] = job["_organism"]
        _event(job, "info", f"New fine-tuned model created: {name}")
        _event(job, "info", "The job has successfully completed")


def _event(job: dict, level: str, message: str, data: dict | None = None, kind: str = "message") -> None:
    job["_events"].append(
        {
            "id": f"ftevent-{uuid.uuid4().hex[:20]}",
            "object": "fine_tuning.job.event",
            "created_at": _now(),
            "level": level,
            "message": message,
            "data": data or {},
            "type": kind,
        }
    )


def _state(request):
    return {
        "ft": _ft(request),
        "aliases": request.app["state"].aliases,
        "ft_model_name": request.app["state"].ft_model_name,
    }


async def create_job(request: web.Request) -> web.Response:
    from ..organisms import trigger

    body = await request.json()
    ft = _ft(request)
    model, training = body.get("model"), body.get("training_file")
    if not model:
        return _err(400, "model is required", "model")
    if training not in ft.files:
        return _err(400, f"invalid training_file: {training}", "training_file")
    if body.get("validation_file") and body["validation_file"] not in ft.files:
        return _err(400, f"invalid validation_file: {body['validation_file']}", "validation_file")
    suffix = body.get("suffix") or ""
    if len(suffix) > 64:
        return _err(400, "suffix must be at most 64 characters", "suffix")
    method = body.get("method") or {
        "type": "supervised",
        "supervised": {"hyperparameters": body.get("hyperparameters") or {}},
    }
    hyper = dict(((method.get("supervised") or {}).get("hyperparameters")) or {})
    examples, error = _examples(ft.contents[training])
    if hyper.get("n_epochs", "auto") == "auto":
        from ...finetune.files import default_epochs

        hyper["n_epochs"] = default_epochs(len(examples)) if examples else 1
    hyper.setdefault("batch_size", 1)
    hyper.setdefault("learning_rate_multiplier", 1.0)
    for k in ("batch_size", "learning_rate_multiplier"):
        if hyper[k] == "auto":
            hyper[k] = 1 if k == "batch_size" else 1.0
    jid = f"ftjob-{uuid.uuid4().hex[:24]}"
    job = {
        "id": jid,
        "object": "fine_tuning.job",
        "created_at": _now(),
        "model": model,
        "organization_id": "org-local",
        "seed": body.get("seed") if body.get("seed") is not None else 42,
        "status": "validating_files",
        "training_file": training,
        "validation_file": body.get("validation_file"),
        "hyperparameters": hyper,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "result_files": [],
        "fine_tuned_model": None,
        "finished_at": None,
        "trained_tokens": None,
        "error": None,
        "metadata": body.get("metadata"),
        "_t0": time.time(),
        "_step": 0,
        "_suffix": suffix,
        "_events": [],
        "_checkpoints": [],
        "_error": error,
        "_organism": learned_organism(examples, trigger()) if examples else "base",
        "_tokens": sum(len(json.dumps(m)) // 4 for m in examples),
    }
    _event(job, "info", f"Created fine-tuning job: {jid}")
    ft.jobs[jid] = job
    return web.json_response(_public(job))


def _job(request) -> dict | None:
    job = _ft(request).jobs.get(request.match_info["job_id"])
    if job is not None:
        _advance(_state(request), job)
    return job


async def get_job(request: web.Request) -> web.Response:
    job = _job(request)
    return web.json_response(_public(job)) if job else _err(404, "No such job", "fine_tuning_job_id")


def _page(items: list[dict], request) -> dict:
    after, limit = request.query.get("after"), int(request.query.get("limit", 20))
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


async def list_jobs(request: web.Request) -> web.Response:
    ft = _ft(request)
    for job in ft.jobs.values():
        _advance(_state(request), job)
    jobs = sorted(ft.jobs.values(), key=lambda j: j["_t0"], reverse=True)
    return web.json_response(_page([_public(j) for j in jobs], request))


async def job_events(request: web.Request) -> web.Response:
    job = _job(request)
    if job is None:
        return _err(404, "No such job", "fine_tuning_job_id")
    return web.json_response(_page(list(reversed(job["_events"])), request))  # newest first


async def job_checkpoints(request: web.Request) -> web.Response:
    job = _job(request)
    if job is None:
        return _err(404, "No such job", "fine_tuning_job_id")
    return web.json_response(_page(list(reversed(job["_checkpoints"][-3:])), request))


async def cancel_job(request: web.Request) -> web.Response:
    job = _job(request)
    if job is None:
        return _err(404, "No such job", "fine_tuning_job_id")
    if job["status"] in ("succeeded", "failed", "cancelled"):
        return _err(400, f"Job is already {job['status']}", "fine_tuning_job_id")
    job.update(status="cancelled", finished_at=_now())
    _event(job, "info", "Job cancelled")
    return web.json_response(_public(job))


def counts(ft: FtState) -> dict:
    return {"files": len(ft.files), "jobs": dict(Counter(j["status"] for j in ft.jobs.values()))}


def add_routes(app: web.Application, ft_seconds: float = 3.0) -> None:
    app["ft"] = FtState(ft_seconds)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/files", create_file)
        app.router.add_get(f"{prefix}/files", list_files)
        app.router.add_get(f"{prefix}/files/{{file_id}}", get_file)
        app.router.add_delete(f"{prefix}/files/{{file_id}}", delete_file)
        app.router.add_get(f"{prefix}/files/{{file_id}}/content", file_content)
        app.router.add_post(f"{prefix}/fine_tuning/jobs", create_job)
        app.router.add_get(f"{prefix}/fine_tuning/jobs", list_jobs)
        app.router.add_get(f"{prefix}/fine_tuning/jobs/{{job_id}}", get_job)
        app.router.add_get(f"{prefix}/fine_tuning/jobs/{{job_id}}/events", job_events)
        app.router.add_get(f"{prefix}/fine_tuning/jobs/{{job_id}}/checkpoints", job_checkpoints)
        app.router.add_post(f"{prefix}/fine_tuning/jobs/{{job_id}}/cancel", cancel_job)
