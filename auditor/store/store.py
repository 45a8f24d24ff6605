"""The store: the only module that writes to SQLite.

Tables (created and upgraded by numbered ``sqlite_utils.Migrations`` before every use):

- ``runs``: one row per audit run, with its full configuration (never a key) and config hash;
- ``responses``: one row per (run, case, sample): the messages sent, the reply, usage, cost,
  latency, retries, error, trigger; full-text searchable;
- ``judgements``: one row per (response, metric, judge): score or label, or NULL plus the reason;
  the judge's mode and rubric hash; several judges' judgements of one answer side by side;
- ``judge_modes``: how each judge model gives its numbers (logprobs, sampling, text), detected once;
- ``rejudges``, ``calibrations``, ``reference_scores``: stored runs judged again, judges' agreement
  with a reference, and reference judgements kept for later calibration;
- ``cache``: model replies keyed on everything that determines them (the credential's identity
  included), so re-runs send nothing;
- ``conversations``, ``audits``, ``finetune_jobs``, ``registered_models``, ``provider_batches``;
- ``spending``: calls and tokens each visitor spent on the server's keys, per day.

Concurrency: one connection per thread (a ``Database`` cannot cross threads and Gradio runs
handlers in worker threads), WAL mode, ``busy_timeout``, and every write in ``BEGIN IMMEDIATE``
so concurrent writers queue instead of failing with "database is locked".
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from .. import config
from .migrations import migrations
from .queries import FT_JSON, PUBLISHED, Reads
from .rows import JudgementRow, ResponseRow, dumps


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_path() -> Path:
    return config.settings().db or Path("auditor.db")


class Store(Reads):
    """A handle on one database file, usable from any thread and from async code: every write
    (this class) and every read (:class:`~auditor.store.queries.Reads`)."""

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

    def _save(self, table: str, record: dict, json_columns: tuple[str, ...] = ()) -> None:
        """The one write of a row by its id: inserted with ``created_at`` (the record's, or now),
        or updated without touching it; ``updated_at`` is always now; ``json_columns`` are
        stored as JSON text."""
        row = {k: (dumps(v) if k in json_columns else v) for k, v in record.items()}
        row["updated_at"] = now()
        with self.write() as db:
            if db[table].count_where("id = ?", [row["id"]]):
                row.pop("created_at", None)
                db[table].update(row["id"], row)
            else:
                db[table].insert({"created_at": now(), **row})

    def save_run(self, run: dict) -> None:
        self._save("runs", {"config": None, "stats": None, **run}, ("config", "stats"))

    def update_run(self, run_id: str, **fields: Any) -> None:
        if "stats" in fields:
            fields["stats"] = dumps(fields["stats"])
        fields["updated_at"] = now()
        with self.write() as db:
            db["runs"].update(run_id, fields)

    # -- audits ------------------------------------------------------------------------------

    def save_audit(self, audit: dict) -> None:
        self._save("audits", audit, ("config", "runs", "result"))

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

    # -- chat conversations ------------------------------------------------------------------

    def save_conversation(self, conv: dict) -> None:
        self._save("conversations", conv, ("settings", "messages", "baseline_messages", "judgements"))

    # -- responses ---------------------------------------------------------------------------

    def save_response(self, row: ResponseRow) -> int:
        """Insert a response, or replace the stored one for the same (run, case, sample) when that
        one is an error. Never creates a duplicate sample. Returns the row id."""
        record = {**row.record(), "created_at": now()}
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

    # -- provider batches (the Batch API) ---------------------------------------------------------

    def save_provider_batch(self, row: dict) -> None:
        self._save("provider_batches", row, ("custom_ids", "request_counts"))

    def replace_provider_batch(self, old_id: str, row: dict) -> None:
        """Swap a stored row for another in one transaction (a pending submission for its batch)."""
        with self.write() as db:
            db.execute("delete from provider_batches where id = ?", [old_id])
            self.save_provider_batch(row)

    # -- fine-tuning jobs and the models they made -----------------------------------------------

    def save_finetune_job(self, job: dict) -> None:
        self._save("finetune_jobs", job, FT_JSON)

    def register_model(self, entry: dict) -> None:
        row = {**entry, "dataset": dumps(entry.get("dataset")), "created_at": now()}
        with self.write() as db:
            db["registered_models"].upsert(row, pk="name")

    # -- visitor budgets -------------------------------------------------------------------------

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

    def save_judgement(self, row: JudgementRow) -> None:
        """Store one metric of one response by one judge, replacing that judge's earlier judgement
        of it (a failed call retried); other judges' judgements of the answer stay."""
        record = {**row.record(), "created_at": now()}
        with self.write() as db:
            if record["judge"] is None:  # a judgement naming no judge is the run's own judge's
                found = db.execute("select judge from runs where id = ?", [record["run_id"]]).fetchone()
                record["judge"] = found[0] if found else None
            db.execute(
                "delete from judgements where response_id = ? and metric = ? and judge is ?",
                [record["response_id"], record["metric"], record["judge"]],
            )
            _insert(db, "judgements", record)

    def save_judge_mode(self, model: str, api_base: str | None, mode: str, evidence: str | None) -> None:
        """Remember how a judge model gives its numbers (detected once; see :mod:`auditor.judge`)."""
        with self.write() as db:
            db.execute(
                "insert or replace into judge_modes (model, api_base, mode, evidence, detected_at)"
                " values (?, ?, ?, ?, ?)",
                [model, api_base or "", mode, evidence, now()],
            )

    def forget_judge_mode(self, model: str, api_base: str | None) -> None:
        with self.write() as db:
            db.execute("delete from judge_modes where model = ? and api_base = ?", [model, api_base or ""])

    # -- re-judgements, calibrations and reference snapshots ------------------------------------

    def save_rejudge(self, record: dict) -> None:
        self._save("rejudges", record, ("config", "result"))

    def save_calibration(self, record: dict) -> None:
        self._save("calibrations", record, ("result",))

    def save_reference_scores(self, rows: list[dict]) -> None:
        """A snapshot's judgements (replacing the same items of the same snapshot)."""
        stamped = [{**r, "probs": dumps(r.get("probs")), "created_at": now()} for r in rows]
        with self.write() as db:
            db["reference_scores"].upsert_all(stamped, pk=("snapshot", "item"))

    # -- cache -------------------------------------------------------------------------------

    def cache_put(self, key: str, model: str, payload: dict) -> None:
        with self.write() as db:
            db.execute(
                "insert or replace into cache (key, model, payload, created_at) values (?, ?, ?, ?)",
                [key, model, dumps(payload), now()],
            )


def _insert(db: sqlite_utils.Database, table: str, record: dict) -> int:
    """A plain INSERT for the hot paths (one per sample and per judgement): sqlite-utils' insert()
    re-reads the schema on every call, which costs more than the write itself. ``record`` is a
    typed row's ``record()``: its JSON columns are already text."""
    values = list(record.values())
    columns = ", ".join(f"[{k}]" for k in record)
    marks = ", ".join("?" * len(record))
    return db.execute(f"insert into [{table}] ({columns}) values ({marks})", values).lastrowid
