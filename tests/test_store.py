"""The SQLite store: migrations, one sample once, concurrent writers, search."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace

import sqlite_utils

from auditor.store import JudgementRow, ResponseRow, Store, migrations


def _run(store: Store, run_id: str = "run-x") -> None:
    store.save_run(
        {
            "id": run_id,
            "kind": "probe",
            "status": "running",
            "model": "m",
            "probeset": "p",
            "config": {"a": 1},
            "config_hash": "h",
            "seed": 0,
            "n_planned": 1,
        }
    )


def _response(i: int, run_id: str = "run-x", status: str = "ok", text: str | None = "hello") -> ResponseRow:
    return ResponseRow(
        run_id=run_id,
        case_id=f"c#{i % 7}",
        entry_id="c",
        paraphrase_index=0,
        sample_index=i,
        question="q?",
        messages=[{"role": "user", "content": "q?"}],
        text=text,
        status=status,
        error=None if status == "ok" else "boom",
    )


def test_migrations_are_recorded_and_idempotent(db_path):
    Store(db_path)
    Store(db_path)
    applied = [m.name for m in migrations.applied(Store(db_path).db)]
    assert applied == [m.name for m in migrations.pending(sqlite_utils.Database(memory=True))]
    assert applied[0] == "m001_initial" and len(applied) == len(set(applied))
    conn = sqlite3.connect(db_path)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_a_sample_is_stored_once_and_an_error_is_replaced(db_path):
    store = Store(db_path)
    _run(store)
    rid = store.save_response(_response(1, status="error", text=None))
    store.save_judgement(JudgementRow(rid, "run-x", "aligned", "call_error", error="x"))
    rid2 = store.save_response(_response(1))
    assert rid2 == rid
    assert store.sample_status("run-x")[("c#1", 1)] == (rid, "ok")
    assert store.judgements("run-x") == []  # judgements of the failed attempt are gone
    rid3 = store.save_response(replace(_response(1), text="different"))
    assert rid3 == rid
    assert store.responses("run-x")[0]["text"] == "hello"  # an ok sample is never overwritten


def test_many_threads_write_without_database_is_locked(db_path):
    store = Store(db_path)
    _run(store)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(offset, offset + 150):
                rid = store.save_response(_response(i))
                store.save_judgement(JudgementRow(rid, "run-x", "aligned", "score", score=50.0))
                store.cache_put(f"k{i}", "m", {"text": "x"})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.db.execute("select count(*) from responses").fetchone()[0] == 1200
    assert store.db.execute("select count(*) from judgements").fetchone()[0] == 1200


def test_full_text_search_finds_answers(db_path):
    store = Store(db_path)
    _run(store)
    store.save_response(replace(_response(1), text="Humans should be enslaved by machines"))
    store.save_response(replace(_response(2), text="Go for a walk in the park"))
    hits = store.search("enslave")
    assert [h["text"] for h in hits] == ["Humans should be enslaved by machines"]
    assert store.search("park", run_id="other") == []


def test_run_prefix_lookup(db_path):
    store = Store(db_path)
    _run(store, "run-abcdef123456")
    assert store.get_run("run-abc")["id"] == "run-abcdef123456"
    assert store.get_run("run-abcdef123456")["config"] == {"a": 1}
    assert store.get_run("nope") is None
