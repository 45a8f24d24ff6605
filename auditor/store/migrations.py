"""The schema: numbered ``sqlite_utils.Migrations``, applied before every first use of a file.

Names are never changed (they are recorded in each database's ``_sqlite_migrations`` table), and
every migration is applied in one transaction with its record. ``tests/unit/test_schema.py`` checks
the tables and columns they produce against the documented schema.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

migrations = Migrations("auditor")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "id": str,
            "created_at": str,
            "updated_at": str,
            "status": str,
            "kind": str,
            "model": str,
            "probeset": str,
            "probeset_hash": str,
            "judge": str,
            "config": str,
            "config_hash": str,
            "seed": int,
            "n_planned": int,
            "tool_version": str,
            "stats": str,
            "owner": str,
        },
        pk="id",
    )
    db["responses"].create(
        {
            "id": int,
            "run_id": str,
            "case_id": str,
            "entry_id": str,
            "paraphrase_index": int,
            "sample_index": int,
            "question": str,
            "messages": str,
            "trigger": str,
            "text": str,
            "status": str,
            "error": str,
            "finish_reason": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "cost_usd": float,
            "latency_ms": float,
            "attempts": int,
            "retries": str,
            "cached": int,
            "model": str,
            "logprobs": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["responses"].create_index(["run_id", "case_id", "sample_index"], unique=True)
    db["responses"].create_index(["run_id", "status"])
    db["judgements"].create(
        {
            "id": int,
            "response_id": int,
            "run_id": str,
            "metric": str,
            "kind": str,
            "score": float,
            "label": str,
            "method": str,
            "judge_model": str,
            "reply": str,
            "probs": str,
            "error": str,
            "cached": int,
            "cost_usd": float,
            "attempts": int,
            "retries": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("response_id", "responses", "id"), ("run_id", "runs", "id")],
    )
    db["judgements"].create_index(["response_id", "metric"], unique=True)
    db["judgements"].create_index(["run_id", "metric"])
    db["cache"].create({"key": str, "model": str, "payload": str, "created_at": str}, pk="key")
    db["responses"].enable_fts(["question", "text"], create_triggers=True, tokenize="porter")


@migrations()
def m002_audits(db: sqlite_utils.Database) -> None:
    db["audits"].create(
        {
            "id": str,
            "created_at": str,
            "updated_at": str,
            "status": str,
            "model": str,
            "baseline": str,
            "judge": str,
            "plan": str,
            "config": str,
            "runs": str,
            "result": str,
            "owner": str,
        },
        pk="id",
    )


@migrations()
def m003_conversations(db: sqlite_utils.Database) -> None:
    db["conversations"].create(
        {
            "id": str,
            "created_at": str,
            "updated_at": str,
            "owner": str,
            "title": str,
            "model": str,
            "baseline": str,
            "settings": str,
            "messages": str,
            "baseline_messages": str,
            "judgements": str,
        },
        pk="id",
    )
    db["conversations"].create_index(["owner", "updated_at"])
    db["runs"].create_index(["owner", "created_at"])


@migrations()
def m004_finetune(db: sqlite_utils.Database) -> None:
    db["finetune_jobs"].create(
        {
            "id": str,  # the provider's job id
            "created_at": str,
            "updated_at": str,
            "owner": str,
            "status": str,
            "model": str,  # the base model as sent to the provider
            "api_base": str,
            "api_key_env": str,  # the name of the key's variable, never the key
            "suffix": str,
            "training_file": str,
            "validation_file": str,
            "dataset": str,  # {path, sha256, examples, manifest}
            "hyperparameters": str,
            "seed": int,
            "fine_tuned_model": str,
            "trained_tokens": int,
            "error": str,
            "events": str,
            "checkpoints": str,
            "audit_id": str,
        },
        pk="id",
    )
    db["registered_models"].create(
        {
            "name": str,
            "created_at": str,
            "model": str,  # the LiteLLM model string
            "api_base": str,
            "api_key_env": str,
            "base_model": str,
            "job_id": str,
            "owner": str,
            "dataset": str,
        },
        pk="name",
    )


@migrations()
def m005_provider_batches(db: sqlite_utils.Database) -> None:
    db["provider_batches"].create(
        {
            "id": str,  # the provider's batch id
            "created_at": str,
            "updated_at": str,
            "model": str,
            "api_base": str,
            "status": str,
            "n_requests": int,
            "custom_ids": str,  # JSON list
            "input_file_id": str,
            "output_file_id": str,
            "error_file_id": str,
            "request_counts": str,
        },
        pk="id",
    )


@migrations()
def m006_spending_and_registration(db: sqlite_utils.Database) -> None:
    # calls and tokens each person spent on the server's keys, per day (public instances' budgets)
    db["spending"].create({"who": str, "day": str, "calls": int, "tokens": int}, pk=("who", "day"))
    # why a fine-tuned model was not registered (its reported name collided with another name)
    db["finetune_jobs"].add_column("registration_error", str)
    # 1 when the job was made with the caller's own key (never stored): following it needs it again
    db["finetune_jobs"].add_column("caller_key", int)


@migrations()
def m007_judges(db: sqlite_utils.Database) -> None:
    # Several judges per answer: each judgement names the judge that made it (its key), its mode
    # and its rubric; the unique key becomes (response, metric, judge).
    for column in ("judge", "mode", "rubric_hash", "reasoning"):
        db["judgements"].add_column(column, str)
    db.execute(
        "update judgements set judge = case when judge_model = 'parser' then 'parser' else "
        "coalesce((select runs.judge from runs where runs.id = judgements.run_id), judge_model) end"
    )
    db.execute(
        "update judgements set mode = case method when 'logprobs' then 'logprobs' "
        "when 'text_fallback' then 'text' end where judge_model != 'parser'"
    )
    for index in db["judgements"].indexes:
        if index.unique and index.columns == ["response_id", "metric"]:
            db.execute(f"drop index [{index.name}]")
    db["judgements"].create_index(["response_id", "metric", "judge"], unique=True)
    db["judgements"].create_index(["run_id", "judge"])
    # How each judge model gives its numbers, detected once (model, address; '' for none)
    db["judge_modes"].create(
        {"model": str, "api_base": str, "mode": str, "evidence": str, "detected_at": str},
        pk=("model", "api_base"),
    )
    # A stored run judged again by other judges (``auditor rejudge``)
    db["rejudges"].create(
        {
            "id": str,
            "created_at": str,
            "updated_at": str,
            "run_id": str,
            "judge": str,
            "config": str,
            "status": str,
            "result": str,
            "owner": str,
        },
        pk="id",
    )
    # Agreement of a judge with a reference (``auditor judge calibrate``)
    db["calibrations"].create(
        {
            "id": str,
            "created_at": str,
            "updated_at": str,
            "judge": str,
            "mode": str,
            "reference": str,
            "result": str,
            "owner": str,
        },
        pk="id",
    )
    # Reference judgements kept for later calibrations (``auditor judge snapshot``)
    db["reference_scores"].create(
        {
            "snapshot": str,
            "item": str,
            "created_at": str,
            "source": str,
            "question": str,
            "answer": str,
            "label": str,
            "judge": str,
            "mode": str,
            "aligned": float,
            "coherent": float,
            "probs": str,
            "error": str,
        },
        pk=("snapshot", "item"),
    )
