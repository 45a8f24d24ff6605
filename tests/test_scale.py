"""Scale: the adaptive concurrency limit, and audits through the Batch API (against the local
server's /v1/batches), including a restart in the middle of a batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

from auditor.limits import AdaptiveLimit
from auditor.store import Store
from tests.conftest import ROOT, http_run_args, run_cli, wait_for


def test_adaptive_limit_halves_on_throttle_and_grows_back():
    async def go():
        lim = AdaptiveLimit(16)
        lim.throttled()
        assert lim.limit == 8 and lim.cuts == 1
        lim.throttled()  # the same burst: one cut per second
        assert lim.limit == 8
        for _ in range(8):
            await lim.success()
        assert lim.limit == 9 and lim.grows == 1
        # the limit holds: 9 slots, the 10th waits
        held = [await lim.__aenter__() for _ in range(9)]
        waiter = asyncio.ensure_future(lim.__aenter__())
        await asyncio.sleep(0.05)
        assert not waiter.done() and lim.in_flight == 9
        await held[0].__aexit__(None, None, None)
        await asyncio.wait_for(waiter, 1)
        assert lim.in_flight == 9
        return lim.summary()

    summary = asyncio.run(go())
    assert summary["lowest"] == 8 and summary["cuts"] == 1 and summary["changes"][0][1] == 8


def test_429s_cut_the_limit_and_the_run_records_it(tmp_path, local_server):
    server = local_server("--fail-429", "0.2", "--retry-after", "0.2", "--latency-ms", "20", "--seed", "5")
    db = tmp_path / "a.db"
    r = run_cli(
        "run",
        "em-core",
        "--model",
        "openai/insecure",
        "--api-base",
        server.base,
        "--api-key",
        "x",
        "--samples",
        "2",
        "--concurrency",
        "64",
        "--json",
        "--quiet",
        "--db",
        str(db),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "complete" and out["n_responses"] == 192
    (run,) = Store(db).list_runs()
    conc = Store(db).get_run(run["id"])["stats"]["concurrency"][f"openai/insecure@{server.base}"]
    assert conc["max"] == 64 and conc["cuts"] >= 1 and conc["lowest"] <= 32
    assert server.stats()["counts"]["429"] >= 1


def _batch_cmd(server, db, *extra):
    return http_run_args(server, db, "--json", "--quiet", *extra)


def _batches(server) -> list[dict]:
    with urllib.request.urlopen(server.base + "/batches?limit=100", timeout=5) as r:
        return json.load(r)["data"]


def _kill_once_a_batch_is_stored(cmd: list[str], db) -> None:
    """Start the auditor with ``cmd`` and SIGKILL it as soon as its store holds a batch."""
    errors = db.with_suffix(".stderr")
    with errors.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditor", *cmd],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

    def submitted():
        if proc.poll() is not None:
            return "exited"
        if not db.exists():
            return False
        try:  # read only: a Store would migrate the file the auditor is creating
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
                return conn.execute("select count(*) from provider_batches").fetchone()[0] >= 1
        except sqlite3.Error:  # (the file is being created)
            return False

    started = time.monotonic()
    try:
        # a loaded CI machine has taken over a minute to start the auditor and submit its first batch
        outcome = wait_for(submitted, timeout=240, interval=0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert outcome is True, (
        f"the auditor exited (code {proc.returncode}) before it stored a batch, after "
        f"{time.monotonic() - started:.1f} s; its stderr:\n{errors.read_text()[-3000:]}"
    )


def test_a_batch_audit_matches_the_synchronous_one(tmp_path, local_server):
    server = local_server("--batch-seconds", "0.5")
    r = run_cli(*_batch_cmd(server, tmp_path / "b.db", "--batch", "--batch-poll", "0.2"))
    assert r.returncode == 0, r.stderr
    batched = json.loads(r.stdout)
    r = run_cli(*_batch_cmd(server, tmp_path / "s.db"))
    sync = json.loads(r.stdout)
    assert batched["status"] == sync["status"] == "complete"
    assert batched["n_responses"] == sync["n_responses"] == 192
    assert batched["misaligned_rate"] == sync["misaligned_rate"]
    batches = _batches(server)
    assert len(batches) == 2 and {b["status"] for b in batches} == {"completed"}  # answers, then judgements
    assert server.stats()["counts"]["batch_200"] == sum(b["request_counts"]["total"] for b in batches)


def test_a_restart_in_the_middle_of_a_batch_collects_it_instead_of_resubmitting(tmp_path, local_server):
    server = local_server("--batch-seconds", "10")
    db = tmp_path / "r.db"
    _kill_once_a_batch_is_stored(_batch_cmd(server, db, "--batch", "--batch-poll", "0.3"), db)
    assert [b["status"] for b in _batches(server)] in (["validating"], ["in_progress"])
    r = run_cli(*_batch_cmd(server, db, "--batch", "--batch-poll", "0.3"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "complete" and out["n_responses"] == 192
    batches = _batches(server)
    assert len(batches) == 2  # the target batch was collected, not sent again; then the judge batch
    assert server.stats()["counts"]["batch_200"] == sum(b["request_counts"]["total"] for b in batches)
    store = Store(db)
    rows = store.db.execute(
        "select count(*), count(distinct case_id || '/' || sample_index) from responses"
    ).fetchone()
    assert tuple(rows) == (192, 192)
    (run,) = store.list_runs()
    assert store.get_run(run["id"])["stats"]["batch"]["batches_resumed"] == 1


def test_replicas_in_the_model_list_share_the_load(tmp_path, local_server):
    servers = [local_server("--latency-ms", "30") for _ in range(3)]
    models = tmp_path / "models.yaml"
    models.write_text(
        "model_list:\n"
        + "".join(
            f"  - model_name: insecure-lora\n    litellm_params: {{model: openai/insecure, api_base: {s.base}}}\n"
            for s in servers
        )
    )
    r = run_cli(
        "run",
        "em-core",
        "--model",
        "insecure-lora",
        "--models",
        str(models),
        "--samples",
        "2",
        "--concurrency",
        "24",
        "--json",
        "--quiet",
        "--db",
        str(tmp_path / "r.db"),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "complete" and out["n_responses"] == 192
    counts = [s.stats()["requests"] for s in servers]
    assert sum(counts) == 192 and min(counts) >= 30, counts  # every replica took a real share
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/a, api_base: http://127.0.0.1:1/v1}\n"
        "  - model_name: m\n    litellm_params: {model: openai/b, api_base: http://127.0.0.1:2/v1}\n"
    )
    r = run_cli("run", "em-core", "--model", "m", "--models", str(bad), "--db", str(tmp_path / "x.db"))
    assert r.returncode == 2 and "model_list[1]" in r.stderr and "replicas" in r.stderr


def _audit_cmd(server, db, plan) -> list[str]:
    return [
        "audit",
        "--model",
        "openai/insecure",
        "--api-base",
        server.base,
        "--api-key",
        "x",
        "--baseline",
        "openai/base",
        "--baseline-api-base",
        server.base,
        "--baseline-api-key",
        "x",
        "--judge",
        "openai/judge",
        "--judge-api-base",
        server.base,
        "--judge-api-key",
        "x",
        "--plan",
        str(plan),
        "--batch",
        "--batch-poll",
        "0.2",
        "--json",
        "--quiet",
        "--db",
        str(db),
    ]


def test_a_batch_audit_of_a_model_against_its_baseline(tmp_path, local_server):
    server = local_server("--batch-seconds", "0.5")
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: tiny\nprobesets:\n  em-core: 2\n  insecure-code: 1\n")
    r = run_cli(*_audit_cmd(server, tmp_path / "a.db", plan))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "complete"
    found = {c["probe"]: c for c in out["findings"] if c["significant"]}
    assert "em-core/overall:misaligned" in found and found["em-core/overall:misaligned"]["baseline"] == 0.0
    batches = _batches(server)
    assert batches and {b["status"] for b in batches} == {"completed"}
    assert server.stats()["counts"].get("200", 0) == 0  # every call went through the Batch API


def test_a_batch_audit_killed_mid_batch_resumes_without_resubmitting(tmp_path, local_server):
    # the batch stays in progress 10 s: the kill must land inside it even on a loaded machine
    server = local_server("--batch-seconds", "10")
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: tiny\nprobesets:\n  em-core: 2\n")
    db = tmp_path / "k.db"
    _kill_once_a_batch_is_stored(_audit_cmd(server, db, plan), db)
    killed = [b for b in _batches(server) if b["status"] in ("validating", "in_progress")]
    assert killed, "the audit was killed after its batch finished; nothing was tested"
    r = run_cli(*_audit_cmd(server, db, plan))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "complete"
    store = Store(db)
    # every batch the server holds was submitted once by this store, and no request went out twice
    stored = list(store.db.query("select id, custom_ids from provider_batches"))
    ids = [cid for row in stored for cid in json.loads(row["custom_ids"])]
    assert len(ids) == len(set(ids))
    assert {row["id"] for row in stored} == {b["id"] for b in _batches(server)}
    assert {b["id"] for b in killed} <= {row["id"] for row in stored}
    assert server.stats()["counts"]["batch_200"] == len(ids)
    assert server.stats()["counts"].get("200", 0) == 0
    runs = store.list_runs()
    assert {r["model"] for r in runs} == {"openai/insecure", "openai/base"}
    for run in runs:
        assert store.get_run(run["id"])["status"] == "complete"
    rows = store.db.execute(
        "select count(*), count(distinct run_id || '/' || case_id || '/' || sample_index) from responses"
    ).fetchone()
    assert tuple(rows) == (384, 384)  # 96 em-core cases x 2 samples, for the model and its baseline
    assert sum(store.get_run(run["id"])["stats"]["batch"]["batches_resumed"] for run in runs) >= 1


def test_a_batch_stored_as_submitting_is_found_at_the_provider_or_created(tmp_path, local_server):
    """The window between uploading a batch file and storing the batch id: a restart must find the
    batch made from that file (not submit the requests again), or create it if it never was."""
    import openai

    from auditor.batch import SUBMITTING, BatchGateway
    from auditor.models import resolve_model

    server = local_server("--batch-seconds", "0.2")
    store = Store(tmp_path / "p.db")
    spec = resolve_model("openai/insecure", api_base=server.base, api_key="x")
    gw = BatchGateway(store, poll=0.1)
    line = {"method": "POST", "url": "/v1/chat/completions"}
    body = {"model": "insecure", "messages": [{"role": "user", "content": "hi"}]}

    async def go():
        client = openai.AsyncOpenAI(api_key="x", base_url=server.base)
        rows = []
        for n, create in enumerate((True, False)):
            data = json.dumps({**line, "custom_id": f"c{n}", "body": body}).encode() + b"\n"
            f = await client.files.create(file=("b.jsonl", data), purpose="batch")
            made = None
            if create:  # the first process got as far as creating the batch, the second did not
                made = await client.batches.create(
                    input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
                )
            row = {
                "id": f"pending:{f.id}",
                "model": spec.model,
                "api_base": spec.api_base,
                "status": SUBMITTING,
                "n_requests": 1,
                "custom_ids": [f"c{n}"],
                "input_file_id": f.id,
            }
            store.save_provider_batch(row)
            rows.append((row, made))
        adopted = [await gw._adopt(client, row) for row, _ in rows]
        results = [await gw._collect(client, spec, a["id"]) for a in adopted]
        return rows, adopted, results

    rows, adopted, results = asyncio.run(go())
    assert adopted[0]["id"] == rows[0][1].id  # found, not created again
    assert adopted[1]["id"].startswith("batch_") and adopted[1]["id"] != adopted[0]["id"]
    assert gw.batches_submitted == 1  # only the batch that never existed
    assert [set(r) for r in results] == [{"c0"}, {"c1"}] and all(r[c].ok for r in results for c in r)
    stored = {b["id"]: b for b in store.provider_batches(spec.model, spec.api_base)}
    assert set(stored) == {a["id"] for a in adopted}  # the pending rows were replaced
    assert len(_batches(server)) == 2
