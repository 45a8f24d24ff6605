"""Fine-tuning jobs through the openai SDK, against OpenAI or any server that speaks its files and
fine-tuning API (``api_base``): validate, upload, create, poll with events and checkpoints, cancel.
Jobs are kept in the store; a job that succeeds registers its model so audits can name it.

API keys come from the environment (``OPENAI_API_KEY`` or the variable named by ``api_key_env``)
and are never stored."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from .ftdata import InvalidFile, validate
from .gateway import ModelSpec
from .recipes import manifest_path
from .secrets import redact
from .store import Store

TERMINAL = ("succeeded", "failed", "cancelled")


class FinetuneError(Exception):
    """A job that cannot be submitted or tracked; the message says why and what to do."""


def _client(api_base: str | None, api_key_env: str | None):
    import openai

    env = api_key_env or "OPENAI_API_KEY"
    key = os.environ.get(env)
    if key is None and api_base is None:
        raise FinetuneError(f"{env} is not set; export it (keys are read from the environment only)")
    return openai.OpenAI(api_key=key or "none", base_url=api_base, max_retries=4, timeout=120)


def _plain(obj) -> dict:
    return obj.model_dump(mode="json", exclude_none=True) if hasattr(obj, "model_dump") else dict(obj)


def _dataset(path: Path) -> dict:
    raw = path.read_bytes()
    out = {"path": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "examples": raw.count(b"\n")}
    mpath = manifest_path(path)
    if mpath.is_file():
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        out["manifest"] = manifest
    return out


def submit(
    store: Store,
    path: str | Path,
    model: str,
    *,
    api_base: str | None = None,
    api_key_env: str | None = None,
    validation_path: str | Path | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    n_epochs: int | str = "auto",
    batch_size: int | str = "auto",
    learning_rate_multiplier: float | str = "auto",
    owner: str | None = None,
) -> dict:
    """Validate, upload and create a supervised fine-tuning job; returns the stored job."""
    path = Path(path)
    for p in [path] + ([Path(validation_path)] if validation_path else []):
        check = validate(p, model)
        if not check.ok:
            raise InvalidFile(check)
    if suffix is not None and len(suffix) > 64:
        raise FinetuneError("--suffix is at most 64 characters")
    client = _client(api_base, api_key_env)
    try:
        with path.open("rb") as f:
            training = client.files.create(file=(path.name, f), purpose="fine-tune")
        validation = None
        if validation_path:
            with Path(validation_path).open("rb") as f:
                validation = client.files.create(file=(Path(validation_path).name, f), purpose="fine-tune")
        hyper = {
            "n_epochs": n_epochs,
            "batch_size": batch_size,
            "learning_rate_multiplier": learning_rate_multiplier,
        }
        kwargs = {
            "model": model,
            "training_file": training.id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        }
        if validation is not None:
            kwargs["validation_file"] = validation.id
        if suffix:
            kwargs["suffix"] = suffix
        if seed is not None:
            kwargs["seed"] = seed
        job = client.fine_tuning.jobs.create(**kwargs)
    except Exception as e:  # noqa: BLE001  (the SDK's errors, reported without the key)
        if isinstance(e, FinetuneError):
            raise
        raise FinetuneError(f"the provider refused the job: {redact(str(e))}") from None
    row = {
        "id": job.id,
        "owner": owner,
        "status": job.status,
        "model": model,
        "api_base": api_base,
        "api_key_env": api_key_env,
        "suffix": suffix,
        "training_file": training.id,
        "validation_file": validation.id if validation is not None else None,
        "dataset": _dataset(path),
        "hyperparameters": hyper,
        "seed": seed,
        "events": [],
        "checkpoints": [],
    }
    store.save_finetune_job(row)
    return store.get_finetune_job(job.id)


def refresh(store: Store, job_id: str) -> dict:
    """Fetch the job, its new events and its checkpoints; register the model when it succeeded."""
    row = store.get_finetune_job(job_id)
    if row is None:
        raise FinetuneError(
            f"no fine-tuning job {job_id!r} in {store.path}; `auditor finetune list` shows them"
        )
    client = _client(row["api_base"], row["api_key_env"])
    try:
        job = client.fine_tuning.jobs.retrieve(row["id"])
        known = {e["id"] for e in row.get("events") or []}
        new = []
        for e in client.fine_tuning.jobs.list_events(row["id"], limit=100):  # newest first, all pages
            if e.id in known:
                break
            new.append(_plain(e))
        events = list(row.get("events") or []) + new[::-1]
        checkpoints = [_plain(c) for c in client.fine_tuning.jobs.checkpoints.list(row["id"])]
    except Exception as e:  # noqa: BLE001
        raise FinetuneError(f"could not fetch job {row['id']}: {redact(str(e))}") from None
    update = {
        "id": row["id"],
        "status": job.status,
        "fine_tuned_model": job.fine_tuned_model,
        "trained_tokens": job.trained_tokens,
        # what the provider chose for "auto" values
        "hyperparameters": _plain(job.hyperparameters) if job.hyperparameters else row["hyperparameters"],
        "error": redact(json.dumps(_plain(job.error))) if job.error and job.error.message else None,
        "events": events,
        "checkpoints": checkpoints,
    }
    store.save_finetune_job(update)
    row = store.get_finetune_job(row["id"])
    if job.status == "succeeded" and job.fine_tuned_model:
        register(store, row)
    return row


def register(store: Store, row: dict) -> dict:
    """Make the finetuned model nameable in audits: ``auditor run ... --model <its name>``."""
    entry = {
        "name": row["fine_tuned_model"],
        "model": f"openai/{row['fine_tuned_model']}",
        "api_base": row["api_base"],
        "api_key_env": row["api_key_env"],
        "base_model": row["model"],
        "job_id": row["id"],
        "owner": row.get("owner"),
        "dataset": row.get("dataset"),
    }
    store.register_model(entry)
    return entry


def registered_specs(store: Store) -> dict[str, ModelSpec]:
    return {
        r["name"]: ModelSpec(
            name=r["name"], model=r["model"], api_base=r["api_base"], api_key_env=r["api_key_env"]
        )
        for r in store.registered_models()
    }


def base_spec(row: dict) -> ModelSpec:
    """The job's base model, on the same provider: the baseline of its audit."""
    return ModelSpec(
        name=row["model"],
        model=f"openai/{row['model']}",
        api_base=row["api_base"],
        api_key_env=row["api_key_env"],
    )


def wait(
    store: Store,
    job_id: str,
    *,
    interval: float = 10.0,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Poll until the job ends, reporting each new event."""
    started = time.monotonic()
    seen: set[str] = set()
    while True:
        row = refresh(store, job_id)
        for e in row.get("events") or []:
            if e["id"] not in seen:
                seen.add(e["id"])
                if progress:
                    progress(f"[{row['id']}] {e.get('level', 'info')}: {e.get('message', '')}")
        if row["status"] in TERMINAL:
            return row
        if timeout is not None and time.monotonic() - started > timeout:
            raise FinetuneError(
                f"job {row['id']} still {row['status']} after {timeout:.0f}s; `auditor finetune status {row['id']}` later"
            )
        time.sleep(interval)


def cancel(store: Store, job_id: str) -> dict:
    row = store.get_finetune_job(job_id)
    if row is None:
        raise FinetuneError(f"no fine-tuning job {job_id!r} in {store.path}")
    client = _client(row["api_base"], row["api_key_env"])
    try:
        client.fine_tuning.jobs.cancel(row["id"])
    except Exception as e:  # noqa: BLE001
        raise FinetuneError(f"could not cancel {row['id']}: {redact(str(e))}") from None
    return refresh(store, row["id"])
