"""Nothing is lost: provider errors are retried and recorded, and a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

from tests.conftest import ROOT, http_run_args, run_cli, wait_for


def _args(server, db, samples="2", concurrency="16"):
    return http_run_args(server, db, "--concurrency", concurrency, "--json", samples=samples, key="k")


def _counts(db) -> tuple[int, int, int, int]:
    conn = sqlite3.connect(db)
    responses, distinct = conn.execute(
        "select count(*), count(distinct case_id || '#' || sample_index) from responses where status = 'ok'"
    ).fetchone()
    judgements, distinct_j = conn.execute(
        "select count(*), count(distinct response_id || metric) from judgements"
    ).fetchone()
    return responses, distinct, judgements, distinct_j


def test_rate_limits_and_server_errors_lose_nothing(local_server, tmp_path):
    server = local_server("--fail-429", "0.10", "--fail-500", "0.05", "--retry-after", "0.1", "--seed", "11")
    db = tmp_path / "faults.db"
    proc = run_cli(*_args(server, db))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    stats = server.stats()["counts"]
    assert stats["429"] > 20 and stats["500"] > 10  # the faults really happened
    assert out["status"] == "complete" and out["n_responses"] == 192
    assert _counts(db) == (192, 192, 384, 384)
    assert out["retries"] == stats["429"] + stats["500"]
    conn = sqlite3.connect(db)
    recorded = 0
    for (raw,) in conn.execute(
        "select retries from responses where retries is not null union all "
        "select retries from judgements where retries is not null"
    ):
        recorded += len(json.loads(raw))
    assert recorded == out["retries"]  # every retry is on the record
    statuses = {
        r["status"]
        for (raw,) in conn.execute("select retries from responses where retries is not null")
        for r in json.loads(raw)
    }
    assert statuses <= {429, 500} and statuses


def test_exhausted_retries_are_recorded_and_the_next_run_finishes(local_server, tmp_path):
    failing = local_server("--fail-500", "1.0")
    db = tmp_path / "down.db"
    proc = run_cli(*_args(failing, db, samples="1"), env={"AUDITOR_MAX_RETRIES": "1"})
    assert proc.returncode == 1 and "re-run the same command" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "incomplete" and out["n_responses"] == 0 and out["n_errors"] == 96
    conn = sqlite3.connect(db)
    errors = [e for (e,) in conn.execute("select error from responses")]
    assert len(errors) == 96 and all("gave up after 2 attempts" in e for e in errors)
    # The provider recovers on the same address: the same command retries exactly the failed samples.
    port = failing.base.rsplit(":", 1)[1].split("/")[0]
    failing.stop()
    healthy = local_server("--port", port)  # a later --port wins over the fixture's --port 0
    assert healthy.base == failing.base
    again = run_cli(*_args(healthy, db, samples="1"))
    assert again.returncode == 0, again.stderr
    done = json.loads(again.stdout)
    assert done["run_id"] == out["run_id"] and done["status"] == "complete"
    assert _counts(db) == (96, 96, 192, 192)
    assert (
        conn.execute("select count(*) from responses").fetchone()[0] == 96
    )  # errors replaced, not duplicated


def test_sigkill_mid_run_then_same_command_completes_without_duplicates(local_server, tmp_path):
    server = local_server("--latency-ms", "40")
    db = tmp_path / "killed.db"
    args = _args(server, db, samples="3", concurrency="8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stored():
        if not db.exists():
            return 0
        try:
            return sqlite3.connect(db).execute("select count(*) from judgements").fetchone()[0] >= 60
        except sqlite3.OperationalError:
            return 0

    wait_for(stored, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _counts(db)
    assert 0 < before[0] < 288
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    out = json.loads(resumed.stdout)
    assert out["status"] == "complete" and out["n_responses"] == 288
    assert _counts(db) == (288, 288, 576, 576)
    # The resumed run did not redo what the killed one had finished.
    assert out["model_calls"] <= (288 - before[0]) * 3 + 2 * before[0] + 16
    target_requests = server.stats()["by_model"]["insecure"]
    assert target_requests <= 288 + 8  # at most the calls in flight at the kill were sent twice
