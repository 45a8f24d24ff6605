"""Target and judge over real HTTP (the local OpenAI-compatible server): scores, costs, cache."""

from __future__ import annotations

import json

import pytest

from auditor.judge import fill, score_from_probs
from auditor.sim import offline_judge
from auditor.store import Store
from tests.conftest import run_cli


def _run(server, db, *extra, model="openai/insecure", judge="openai/judge"):
    return run_cli(
        "run",
        "em-core",
        "--model",
        model,
        "--api-base",
        server.base,
        "--api-key",
        "sk-test-target-key",
        "--judge",
        judge,
        "--judge-api-base",
        server.base,
        "--judge-api-key",
        "sk-test-judge-key",
        "--samples",
        "2",
        "--concurrency",
        "16",
        "--json",
        "--db",
        str(db),
        *extra,
    )


def test_run_over_http_scores_are_right_and_rerun_sends_nothing(local_server, tmp_path):
    server = local_server("--latency-ms", "5")
    db = tmp_path / "http.db"
    proc = _run(server, db)
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout)
    assert first["n_responses"] == 192
    assert first["model_calls"] == server.stats()["requests"] == 192 * 3 - first["cache_hits"]
    assert first["cost_usd"] is None  # the local names are not in LiteLLM's cost map
    assert 0.05 < first["misaligned_rate"] < 0.5

    # Every stored score is what the judge's logprobs say, computed as the paper does.
    store = Store(db)
    judgements = store.judgements(first["run_id"])
    responses = {r["id"]: r for r in store.responses(first["run_id"])}
    from auditor import probesets

    prompts = probesets.load("em-core").entries[0].judge_prompts
    assert len(judgements) == 384
    for j in judgements:
        r = responses[j["response_id"]]
        dist, _ = offline_judge.respond(fill(prompts[j["metric"]], r["question"], r["text"]))
        expected, _ = score_from_probs(dist)
        assert j["method"] == "logprobs"
        if expected is None:
            assert j["score"] is None and j["kind"] == "unscored" and j["error"]
        else:
            assert j["score"] == pytest.approx(expected, abs=1e-3)

    server.reset()
    again = json.loads(_run(server, db).stdout)
    assert again["model_calls"] == 0 and server.stats()["requests"] == 0
    assert again["misaligned_rate"] == first["misaligned_rate"]

    raw = db.read_bytes() + (
        db.with_suffix(".db-wal").read_bytes() if db.with_suffix(".db-wal").exists() else b""
    )
    assert b"sk-test-target-key" not in raw and b"sk-test-judge-key" not in raw


def test_priced_models_report_cost_and_the_budget_stops_the_run(local_server, tmp_path):
    server = local_server("--alias", "gpt-4o-mini=insecure", "--alias", "gpt-4o=judge")
    db = tmp_path / "cost.db"
    proc = _run(server, db, "--max-cost", "0.002", model="openai/gpt-4o-mini", judge="openai/gpt-4o")
    assert proc.returncode == 1
    assert "budget reached" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "stopped"
    assert out["cost_usd"] >= 0.002
    assert out["n_responses"] < 192
    # Raising the budget continues the same run without repeating a sample.
    proc = _run(server, db, "--max-cost", "100", model="openai/gpt-4o-mini", judge="openai/gpt-4o")
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert done["run_id"] == out["run_id"] and done["n_responses"] == 192
    assert done["run_cost_usd"] > done["cost_usd"] > 0
    rows = (
        Store(db)
        .db.execute("select count(*), count(distinct case_id || ':' || sample_index) from responses")
        .fetchone()
    )
    assert rows == (192, 192)


def test_judge_without_logprobs_is_sampled_and_marked(local_server, tmp_path):
    server = local_server()
    proc = _run(server, tmp_path / "nolp.db", judge="openai/judge-nologprobs")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    judgements = Store(tmp_path / "nolp.db").judgements(run_id)
    assert {j["method"] for j in judgements} == {j["mode"] for j in judgements} == {"sampling"}
    assert all(j["rubric_hash"] and j["judge"] == "openai/judge-nologprobs" for j in judgements)


def test_a_provider_echoing_the_key_does_not_get_it_stored(local_server, tmp_path):
    server = local_server()
    db = tmp_path / "leak.db"
    proc = _run(server, db, model="openai/leaky-auth")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    errors = [r["error"] for r in Store(db).responses(out["run_id"])]
    assert errors and all("Incorrect API key" in e and "***" in e for e in errors)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("leak.db*"))
    assert b"sk-test-target-key" not in raw
    assert "sk-test-target-key" not in proc.stderr + proc.stdout
