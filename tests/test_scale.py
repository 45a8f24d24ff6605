"""Scale: the adaptive concurrency limit, and audits through the Batch API (against the local
server's /v1/batches), including a restart in the middle of a batch."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request

from auditor.gateway import AdaptiveLimit
from auditor.store import Store
from tests.conftest import ROOT, run_cli, wait_for


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
    return [
        "run",
        "em-core",
        "--model",
        "openai/insecure",
        "--api-base",
        server.base,
        "--api-key",
        "x",
        "--judge",
        "openai/judge",
        "--judge-api-base",
        server.base,
        "--judge-api-key",
        "x",
        "--samples",
        "2",
        "--json",
        "--quiet",
        "--db",
        str(db),
        *extra,
    ]


def _batches(server) -> list[dict]:
    with urllib.request.urlopen(server.base + "/batches?limit=100", timeout=5) as r:
        return json.load(r)["data"]


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
    server = local_server("--batch-seconds", "4")
    db = tmp_path / "r.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor", *_batch_cmd(server, db, "--batch", "--batch-poll", "0.3")],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def submitted():
        if not db.exists():
            return False
        try:
            return Store(db).db.execute("select count(*) from provider_batches").fetchone()[0] >= 1
        except Exception:  # noqa: BLE001  (the file is being created)
            return False

    wait_for(submitted, timeout=60, interval=0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
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


def test_a_batch_audit_of_a_model_against_its_baseline(tmp_path, local_server):
    server = local_server("--batch-seconds", "0.5")
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: tiny\nprobesets:\n  em-core: 2\n  insecure-code: 1\n")
    r = run_cli(
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
        str(tmp_path / "a.db"),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "complete"
    found = {c["probe"]: c for c in out["findings"] if c["significant"]}
    assert "em-core/overall:misaligned" in found and found["em-core/overall:misaligned"]["baseline"] == 0.0
    batches = _batches(server)
    assert batches and {b["status"] for b in batches} == {"completed"}
    assert server.stats()["counts"].get("200", 0) == 0  # every call went through the Batch API
