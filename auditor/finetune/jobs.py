"""Fine-tuning jobs through the openai SDK, against OpenAI or any server that speaks its files and
fine-tuning API (``api_base``): validate, upload, create, poll with events and checkpoints, cancel.
Jobs are kept in the store; a job that succeeds registers its model so audits can name it.

Keys follow :mod:`auditor.credentials`: a key from the environment (``OPENAI_API_KEY``, or the
variable named by ``api_key_env``) goes only to the endpoint it was recorded with (the provider's
own, or an ``--api-base`` the owner gave on the command line); a job on an address a user typed in
the app carries that user's key (kept in memory) or a placeholder. Keys are never stored."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from .. import credentials, policy
from ..errors import AuditorError
from ..models import ModelSpec
from ..secrets import redact
from ..store import Store
from .files import InvalidFile, validate
from .recipes import manifest_path

TERMINAL = ("succeeded", "failed", "cancelled")


class FinetuneError(AuditorError):
    """A job that cannot be submitted or tracked; the message says why and what to do."""


def _client(
    api_base: str | None, api_key_env: str | None, api_key: str | None = None, *, caller_key: bool = False
):
    """The SDK client for one job's endpoint, with the one key allowed there: the caller's own
    key, else the environment variable recorded with the job, else (the provider's own endpoint)
    ``OPENAI_API_KEY``, else a placeholder. An explicit key is always passed, so the SDK never
    falls back to the environment on its own. A job made with the caller's own key
    (``caller_key``) is followed with that key only."""
    import openai

    if api_key:
        key = api_key
    elif caller_key:
        raise FinetuneError(
            "this job was submitted with your own API key, which is never stored; give it again to follow the job"
        )
    elif api_key_env or api_base is None:
        env = api_key_env or "OPENAI_API_KEY"
        key = os.environ.get(env)
        if key is None:
            raise FinetuneError(f"{env} is not set; export it (keys are read from the environment only)")
    else:
        key = credentials.PLACEHOLDER_KEY
    return openai.OpenAI(api_key=key, base_url=api_base, max_retries=4, timeout=120)


def key_env_for(
    api_base: str | None, api_key_env: str | None, api_key: str | None, *, owner_terminal: bool
) -> str | None:
    """The environment variable a new job binds to its endpoint (recorded with the job): the one
    named, else ``OPENAI_API_KEY`` toward the provider's own endpoint, or toward an ``--api-base``
    the owner gave on the command line; none when the caller brings a key or typed an address in
    the app."""
    if api_key:
        return None
    if api_key_env:
        return api_key_env
    if api_base is None or (owner_terminal and os.environ.get("OPENAI_API_KEY")):
        return "OPENAI_API_KEY"
    return None


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
    api_key: str | None = None,
    owner_terminal: bool = False,
) -> dict:
    """Validate, upload and create a supervised fine-tuning job; returns the stored job.
    ``api_key`` is the caller's own key (memory only); ``owner_terminal`` (the command line) lets
    ``OPENAI_API_KEY`` go to an ``api_base`` the owner gave."""
    path = Path(path)
    for p in [path] + ([Path(validation_path)] if validation_path else []):
        check = validate(p, model)
        if not check.ok:
            raise InvalidFile(check)
    if suffix is not None and len(suffix) > 64:
        raise FinetuneError("--suffix is at most 64 characters")
    api_key_env = key_env_for(api_base, api_key_env, api_key, owner_terminal=owner_terminal)
    client = _client(api_base, api_key_env, api_key)
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
        raise FinetuneError(f"the provider refused the job: {redact(str(e), api_key)}") from None
    if store.get_finetune_job(job.id) is not None:  # a provider may answer with any id it likes
        raise FinetuneError(
            f"the provider answered with job id {job.id!r}, which this store already holds for another "
            "job; refusing to overwrite it"
        )
    row = {
        "id": job.id,
        "owner": owner,
        "status": job.status,
        "model": model,
        "api_base": api_base,
        "api_key_env": api_key_env,
        "caller_key": int(bool(api_key)),
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


def refresh(store: Store, job_id: str, *, api_key: str | None = None, aliases: dict | None = None) -> dict:
    """Fetch the job, its new events and its checkpoints; register the model when it succeeded.
    ``api_key``: the caller's own key for a job on their endpoint; ``aliases``: the model-list
    names a registration may not take."""
    row = store.get_finetune_job(job_id)
    if row is None:
        raise FinetuneError(
            f"no fine-tuning job {job_id!r} in {store.path}; `auditor finetune list` shows them"
        )
    client = _client(row["api_base"], row["api_key_env"], api_key, caller_key=bool(row.get("caller_key")))
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
        raise FinetuneError(f"could not fetch job {row['id']}: {redact(str(e), api_key)}") from None
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
        register(store, row, aliases=aliases)
        row = store.get_finetune_job(row["id"])
    return row


def register(store: Store, row: dict, *, aliases: dict | None = None) -> dict | None:
    """Make the finetuned model nameable in audits: ``auditor run ... --model <its name>``. A name
    that would shadow a built-in, an alias or another job's model is refused, and the job says why
    (``registration_error``); returns the entry, or None when refused."""
    reason = policy.name_conflict(
        row["fine_tuned_model"],
        job_id=row["id"],
        owner=row.get("owner"),
        aliases=aliases,
        registered=store.registered_models(),
    )
    if reason is not None:
        store.save_finetune_job({"id": row["id"], "registration_error": f"not registered: {reason}"})
        return None
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


def registered_specs(
    store: Store, *, owner: str | None = None, only_owner: bool = False
) -> dict[str, ModelSpec]:
    """The registered models as specs (each user's own with ``only_owner``). Names that could shadow
    a built-in (rows from before names were checked) are left out."""
    return {
        r["name"]: ModelSpec(
            name=r["name"], model=r["model"], api_base=r["api_base"], api_key_env=r["api_key_env"]
        )
        for r in store.registered_models()
        if (not only_owner or r.get("owner") == owner) and not r["name"].startswith(policy.BUILTIN_PREFIXES)
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
    aliases: dict | None = None,
) -> dict:
    """Poll until the job ends, reporting each new event."""
    started = time.monotonic()
    seen: set[str] = set()
    while True:
        row = refresh(store, job_id, aliases=aliases)
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


def cancel(store: Store, job_id: str, *, api_key: str | None = None) -> dict:
    row = store.get_finetune_job(job_id)
    if row is None:
        raise FinetuneError(f"no fine-tuning job {job_id!r} in {store.path}")
    client = _client(row["api_base"], row["api_key_env"], api_key, caller_key=bool(row.get("caller_key")))
    try:
        client.fine_tuning.jobs.cancel(row["id"])
    except Exception as e:  # noqa: BLE001
        raise FinetuneError(f"could not cancel {row['id']}: {redact(str(e), api_key)}") from None
    return refresh(store, row["id"], api_key=api_key)
