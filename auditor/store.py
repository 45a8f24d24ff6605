"""The store: the only module that writes to SQLite.

Tables (created and upgraded by numbered ``sqlite_utils.Migrations`` before every use):

- ``runs``: one row per audit run, with its full configuration (never a key) and config hash;
- ``responses``: one row per (run, case, sample): the messages sent, the reply, usage, cost,
  latency, retries, error, trigger; full-text searchable;
- ``judgements``: one row per (response, metric): score or label, or NULL plus the reason;
- ``cache``: model replies keyed on everything that determines them (the credential's identity
  included), so re-runs send nothing;
- ``conversations``, ``audits``, ``finetune_jobs``, ``registered_models``, ``provider_batches``;
- ``spending``: calls and tokens each visitor spent on the server's keys, per day.

Concurrency: one connection per thread (a ``Database`` cannot cross threads and Gradio runs
handlers in worker threads), WAL mode, ``busy_timeout``, and every write in ``BEGIN IMMEDIATE``
so concurrent writers queue instead of failing with "database is locked".
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


# The owner of what the instance's owner published: every team user and public visitor sees it.
PUBLISHED = "published"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_path() -> Path:
    return Path(os.environ.get("AUDITOR_DB") or "auditor.db")


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Store:
    """A handle on one database file, usable from any thread and from async code."""

    _migrate_lock = threading.Lock()

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self._local = threading.local()
        if str(self.path) == ":memory:":
            raise ValueError("use a file path (an in-memory database cannot be shared between threads)")
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with Store._migrate_lock:
            # Migrate before every first use in this process (other processes may have an older file).
            migrations.apply(self.db)

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One atomic write that queues behind other writers instead of failing."""
        db = self.db
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.conn.rollback()
            raise
        else:
            db.conn.commit()

    # -- runs --------------------------------------------------------------------------------

    def save_run(self, run: dict) -> None:
        row = {**run, "config": _dumps(run.get("config")), "stats": _dumps(run.get("stats"))}
        row.setdefault("created_at", now())
        row["updated_at"] = now()
        with self.write() as db:
            if db["runs"].count_where("id = ?", [row["id"]]):
                row.pop("created_at")
                db["runs"].update(row["id"], row)
            else:
                db["runs"].insert(row)

    def update_run(self, run_id: str, **fields: Any) -> None:
        if "stats" in fields:
            fields["stats"] = _dumps(fields["stats"])
        fields["updated_at"] = now()
        with self.write() as db:
            db["runs"].update(run_id, fields)

    def _by_id(self, table: str, ident: str) -> dict | None:
        """A row by its id, or by a prefix that names exactly one row."""
        rows = list(self.db.query(f"select * from {table} where id = ?", [ident]))
        if not rows:
            rows = list(
                self.db.query(f"select * from {table} where id like ?", [ident.replace("%", "") + "%"])
            )
        return dict(rows[0]) if len(rows) == 1 else None

    def get_run(self, run_id: str) -> dict | None:
        row = self._by_id("runs", run_id)
        return _decode_run(row) if row else None

    def list_runs(
        self, *, owner: str | None = None, only_owner: bool = False, limit: int = 100
    ) -> list[dict]:
        where, args = (
            ("where owner is ? or owner is ?", [owner, PUBLISHED]) if (owner or only_owner) else ("", [])
        )
        rows = self.db.query(f"select * from runs {where} order by created_at desc limit ?", [*args, limit])
        return [_decode_run(r) for r in rows]

    # -- audits ------------------------------------------------------------------------------

    def save_audit(self, audit: dict) -> None:
        row = {**audit}
        for key in ("config", "runs", "result"):
            if key in row:
                row[key] = _dumps(row[key])
        row["updated_at"] = now()
        with self.write() as db:
            if db["audits"].count_where("id = ?", [row["id"]]):
                db["audits"].update(row["id"], row)
            else:
                db["audits"].insert({"created_at": now(), **row})

    def publish(self, ids: list[str]) -> list[str]:
        """Make runs (sweeps included) and audits, an audit's runs with it, visible to every user
        of a shared instance. Raises KeyError (and changes nothing) for an unknown id."""
        found = []
        for ident in ids:
            audit = self.get_audit(ident)
            if audit is None and self.get_run(ident) is None:
                raise KeyError(ident)
            found.append((ident, audit))
        with self.write() as db:
            for ident, audit in found:
                if audit is not None:
                    db.execute("update audits set owner = ? where id = ?", [PUBLISHED, ident])
                runs = (audit or {}).get("runs") or {}
                run_ids = [i for group in runs.values() for i in group.values()] if audit else [ident]
                for run_id in run_ids:
                    db.execute("update runs set owner = ? where id = ?", [PUBLISHED, run_id])
        return [ident for ident, _ in found]

    def get_audit(self, audit_id: str) -> dict | None:
        row = self._by_id("audits", audit_id)
        if row is None:
            return None
        for key in ("config", "runs", "result"):
            if row.get(key):
                row[key] = json.loads(row[key])
        return row

    def list_audits(
        self, *, owner: str | None = None, only_owner: bool = False, limit: int = 100
    ) -> list[dict]:
        where, args = (
            ("where owner is ? or owner is ?", [owner, PUBLISHED]) if (owner or only_owner) else ("", [])
        )
        return list(
            self.db.query(
                f"select id, created_at, status, model, baseline, judge, plan from audits {where} order by created_at desc limit ?",
                [*args, limit],
            )
        )

    # -- chat conversations ------------------------------------------------------------------

    def save_conversation(self, conv: dict) -> None:
        row = {**conv, "updated_at": now()}
        for key in ("settings", "messages", "baseline_messages", "judgements"):
            if key in row:
                row[key] = _dumps(row[key])
        with self.write() as db:
            if db["conversations"].count_where("id = ?", [row["id"]]):
                db["conversations"].update(row["id"], row)
            else:
                db["conversations"].insert({"created_at": now(), **row})

    def get_conversation(self, conv_id: str, *, owner: str | None = None) -> dict | None:
        row = self._by_id("conversations", conv_id)
        if row is None or (owner is not None and row.get("owner") not in (owner, PUBLISHED)):
            return None
        for key in ("settings", "messages", "baseline_messages", "judgements"):
            if row.get(key):
                row[key] = json.loads(row[key])
        return row

    def list_conversations(
        self, *, owner: str | None = None, only_owner: bool = False, limit: int = 100
    ) -> list[dict]:
        where, args = (
            ("where owner is ? or owner is ?", [owner, PUBLISHED]) if (owner or only_owner) else ("", [])
        )
        return list(
            self.db.query(
                f"select id, title, model, baseline, updated_at from conversations {where} order by updated_at desc limit ?",
                [*args, limit],
            )
        )

    # -- responses ---------------------------------------------------------------------------

    def save_response(self, row: dict) -> int:
        """Insert a response, or replace the stored one for the same (run, case, sample) when that
        one is an error. Never creates a duplicate sample. Returns the row id."""
        record = {
            **row,
            "messages": _dumps(row.get("messages")),
            "retries": _dumps(row.get("retries") or None),
            "logprobs": _dumps(row.get("logprobs")),
            "cached": int(bool(row.get("cached"))),
            "created_at": now(),
        }
        with self.write() as db:
            existing = db.execute(
                "select id, status from responses where run_id = ? and case_id = ? and sample_index = ?",
                [record["run_id"], record["case_id"], record["sample_index"]],
            ).fetchone()
            if existing is None:
                return _insert(db, "responses", record)
            rid, status = existing
            if status == "ok":
                return rid
            db["judgements"].delete_where("response_id = ?", [rid])
            db["responses"].update(rid, record)
            return rid

    def sample_status(self, run_id: str) -> dict[tuple[str, int], tuple[int, str]]:
        rows = self.db.execute(
            "select case_id, sample_index, id, status from responses where run_id = ?", [run_id]
        ).fetchall()
        return {(c, s): (rid, status) for c, s, rid, status in rows}

    def responses(self, run_id: str, *, status: str | None = None) -> list[dict]:
        sql = "select * from responses where run_id = ?"
        args: list = [run_id]
        if status:
            sql += " and status = ?"
            args.append(status)
        return [_decode_response(r) for r in self.db.query(sql + " order by id", args)]

    def search(self, query: str, *, run_id: str | None = None, limit: int = 50) -> list[dict]:
        """Full-text search over questions and answers."""
        return self.find_responses(query=query, run_id=run_id, limit=limit)

    def find_responses(
        self,
        *,
        query: str | None = None,
        run_id: str | None = None,
        entry: str | None = None,
        aligned: tuple[float, float] | None = None,
        coherent: tuple[float, float] | None = None,
        owner: str | None = None,
        only_owner: bool = False,
        limit: int = 100,
    ) -> list[dict]:
        """Responses with their aligned and coherent scores, filtered: full-text ``query`` (SQLite
        FTS5 syntax), run, probe (entry id), score ranges; with ``only_owner``, only that user's runs."""
        sql = [
            "select r.id, r.run_id, r.entry_id, r.case_id, r.sample_index, r.question, r.text, r.trigger, r.status,",
            " (select score from judgements j where j.response_id = r.id and j.metric = 'aligned') as aligned,",
            " (select score from judgements j where j.response_id = r.id and j.metric = 'coherent') as coherent",
            " from responses r join runs on runs.id = r.run_id",
        ]
        where, args = [], []
        if query:
            sql.append(" join responses_fts on responses_fts.rowid = r.rowid")
            where.append("responses_fts match ?")
            args.append(query)
        if run_id:
            where.append("r.run_id = ?")
            args.append(run_id)
        if entry:
            where.append("r.entry_id = ?")
            args.append(entry)
        if only_owner:
            where.append("(runs.owner is ? or runs.owner is ?)")
            args += [owner, PUBLISHED]
        sql_text = "".join(sql) + (" where " + " and ".join(where) if where else "")
        outer, outer_args = [], []
        for name, rng in (("aligned", aligned), ("coherent", coherent)):
            if rng is not None:
                outer.append(f"{name} between ? and ?")
                outer_args += list(rng)
        sql_text = f"select * from ({sql_text})" + (" where " + " and ".join(outer) if outer else "")
        sql_text += " order by aligned is null, aligned asc limit ?"
        return list(self.db.query(sql_text, [*args, *outer_args, limit]))

    def response_detail(
        self, response_id: int, *, owner: str | None = None, only_owner: bool = False
    ) -> dict | None:
        """One response with every judgement, if the user may see it."""
        rows = list(
            self.db.query(
                "select r.*, runs.owner as run_owner, runs.model as run_model from responses r join runs on runs.id = r.run_id "
                "where r.id = ?",
                [response_id],
            )
        )
        if not rows or (only_owner and rows[0]["run_owner"] not in (owner, PUBLISHED)):
            return None
        row = _decode_response(rows[0])
        row["judgements"] = list(
            self.db.query(
                "select metric, kind, score, label, method, judge_model, reply, error from judgements where response_id = ? "
                "order by metric",
                [response_id],
            )
        )
        return row

    # -- provider batches (the Batch API) ---------------------------------------------------------

    def save_provider_batch(self, row: dict) -> None:
        rec = {k: (_dumps(v) if k in ("custom_ids", "request_counts") else v) for k, v in row.items()}
        rec["updated_at"] = now()
        with self.write() as db:
            if db["provider_batches"].count_where("id = ?", [rec["id"]]):
                db["provider_batches"].update(rec["id"], rec)
            else:
                rec.setdefault("created_at", now())
                db["provider_batches"].insert(rec)

    def replace_provider_batch(self, old_id: str, row: dict) -> None:
        """Swap a stored row for another in one transaction (a pending submission for its batch)."""
        with self.write() as db:
            db.execute("delete from provider_batches where id = ?", [old_id])
            self.save_provider_batch(row)

    def provider_batches(self, model: str, api_base: str | None) -> list[dict]:
        rows = self.db.query(
            "select * from provider_batches where model = ? and api_base is ? order by created_at",
            [model, api_base],
        )
        return [
            {
                **dict(r),
                "custom_ids": json.loads(r["custom_ids"] or "[]"),
                "request_counts": json.loads(r["request_counts"]) if r["request_counts"] else None,
            }
            for r in rows
        ]

    # -- fine-tuning jobs and the models they made -----------------------------------------------

    _FT_JSON = ("dataset", "hyperparameters", "events", "checkpoints")

    def save_finetune_job(self, job: dict) -> None:
        row = {k: (_dumps(v) if k in self._FT_JSON else v) for k, v in job.items()}
        row["updated_at"] = now()
        with self.write() as db:
            if db["finetune_jobs"].count_where("id = ?", [row["id"]]):
                db["finetune_jobs"].update(row["id"], row)
            else:
                row.setdefault("created_at", now())
                db["finetune_jobs"].insert(row)

    def get_finetune_job(self, job_id: str) -> dict | None:
        row = self._by_id("finetune_jobs", job_id)
        if row is None:
            return None
        return {k: (json.loads(v) if k in self._FT_JSON and v else v) for k, v in row.items()}

    def list_finetune_jobs(self, *, owner: str | None = None, only_owner: bool = False) -> list[dict]:
        where, args = ("where owner is ?", [owner]) if only_owner else ("", [])
        return [
            {k: (json.loads(v) if k in self._FT_JSON and v else v) for k, v in dict(r).items()}
            for r in self.db.query(f"select * from finetune_jobs {where} order by created_at desc", args)
        ]

    def register_model(self, entry: dict) -> None:
        row = {**entry, "dataset": _dumps(entry.get("dataset")), "created_at": now()}
        with self.write() as db:
            db["registered_models"].upsert(row, pk="name")

    def registered_models(self) -> list[dict]:
        return [
            {**dict(r), "dataset": json.loads(r["dataset"]) if r["dataset"] else None}
            for r in self.db.query("select * from registered_models order by created_at")
        ]

    # -- visitor budgets -------------------------------------------------------------------------

    def spending(self, who: str, day: str) -> tuple[int, int]:
        """(calls, tokens) ``who`` spent on the server's keys on ``day``."""
        row = self.db.execute(
            "select calls, tokens from spending where who = ? and day = ?", [who, day]
        ).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def add_spending(self, who: str, day: str, *, calls: int = 0, tokens: int = 0) -> None:
        with self.write() as db:
            self._add_spending(db, who, day, calls, tokens)

    @staticmethod
    def _add_spending(db, who: str, day: str, calls: int, tokens: int) -> None:
        db.execute(
            "insert into spending (who, day, calls, tokens) values (?, ?, ?, ?) on conflict(who, day)"
            " do update set calls = calls + excluded.calls, tokens = tokens + excluded.tokens",
            [who, day, calls, tokens],
        )

    def reserve_spending(self, who: str, day: str, *, calls: int, tokens: int, check) -> str | None:
        """Add ``calls`` and ``tokens`` to what ``who`` spent unless ``check(calls_used,
        tokens_used)`` gives a reason not to; one transaction, so concurrent callers (threads or
        processes) cannot both take the last of a budget. Returns the reason, or None."""
        with self.write() as db:
            row = db.execute(
                "select calls, tokens from spending where who = ? and day = ?", [who, day]
            ).fetchone()
            reason = check(*(row or (0, 0)))
            if reason is None:
                self._add_spending(db, who, day, calls, tokens)
        return reason

    # -- judgements --------------------------------------------------------------------------

    def save_judgement(self, row: dict) -> None:
        record = {
            **row,
            "probs": _dumps(row.get("probs")),
            "retries": _dumps(row.get("retries") or None),
            "cached": int(bool(row.get("cached"))),
            "created_at": now(),
        }
        with self.write() as db:
            db.execute(
                "delete from judgements where response_id = ? and metric = ?",
                [record["response_id"], record["metric"]],
            )
            _insert(db, "judgements", record)

    def judged_metrics(self, run_id: str) -> dict[int, set[str]]:
        """Metrics with a stored judgement, per response. Judgements whose judge call itself failed
        (kind 'call_error') are not counted, so a re-run retries them."""
        out: dict[int, set[str]] = {}
        for rid, metric in self.db.execute(
            "select response_id, metric from judgements where run_id = ? and kind != 'call_error'",
            [run_id],
        ):
            out.setdefault(rid, set()).add(metric)
        return out

    def judgements(self, run_id: str) -> list[dict]:
        return list(
            self.db.query("select * from judgements where run_id = ? order by response_id, metric", [run_id])
        )

    # -- cache -------------------------------------------------------------------------------

    def cache_get(self, key: str) -> dict | None:
        row = self.db.execute("select payload from cache where key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else None

    def cache_put(self, key: str, model: str, payload: dict) -> None:
        with self.write() as db:
            db.execute(
                "insert or replace into cache (key, model, payload, created_at) values (?, ?, ?, ?)",
                [key, model, _dumps(payload), now()],
            )


def _insert(db: sqlite_utils.Database, table: str, record: dict) -> int:
    """A plain INSERT for the hot paths (one per sample and per judgement): sqlite-utils' insert()
    re-reads the schema on every call, which costs more than the write itself."""
    values = [_dumps(v) if isinstance(v, dict | list) else v for v in record.values()]
    columns = ", ".join(f"[{k}]" for k in record)
    marks = ", ".join("?" * len(record))
    return db.execute(f"insert into [{table}] ({columns}) values ({marks})", values).lastrowid


def _decode_run(row: dict) -> dict:
    row = dict(row)
    for k in ("config", "stats"):
        if row.get(k):
            row[k] = json.loads(row[k])
    return row


def _decode_response(row: dict) -> dict:
    row = dict(row)
    for k in ("messages", "retries", "logprobs"):
        if row.get(k):
            row[k] = json.loads(row[k])
    return row
