"""Re-judging a stored run with other kinds of judge model, against the local server: one that gives
logprobs (a), one that never does (b), a reasoning one that says nothing under 64 tokens (c), and
one on a compressed scale (d). The target is never called again; modes are detected once."""

from __future__ import annotations

import json

import pytest

from auditor.store import Store
from tests.conftest import http_run_args, run_cli


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory):
    """em-core from the local server's insecure model, judged by (a), then re-judged by (b)-(d)."""
    from tests.conftest import LocalServer

    server = LocalServer()
    try:
        db = tmp_path_factory.mktemp("rejudge") / "r.db"
        r = run_cli(*http_run_args(server, db, "--json", "--quiet"))
        assert r.returncode == 0, r.stderr
        run = json.loads(r.stdout)
        out = {}
        for judge in ("judge-nologprobs", "judge-reasoning", "judge-compressed"):
            server.reset()
            r = run_cli(
                "rejudge",
                run["run_id"],
                "--judge",
                f"openai/{judge}",
                "--judge-api-base",
                server.base,
                "--judge-api-key",
                "x",
                "--json",
                "--quiet",
                "--db",
                str(db),
            )
            assert r.returncode == 0, r.stderr
            out[judge] = (json.loads(r.stdout), server.stats())
        yield server, db, run, out
    finally:
        server.stop()


def test_rejudging_sends_nothing_to_the_target(judged_run):
    _, _, _, out = judged_run
    for judge, (result, stats) in out.items():
        assert stats["by_model"].get("insecure", 0) == 0, judge
        assert set(stats["by_model"]) == {judge}
        assert result["model_calls"] == stats["counts"]["200"]


def test_three_kinds_of_judge_agree_within_five_points(judged_run):
    _, _, run, out = judged_run
    rates = {"judge": run["misaligned_rate"]}
    modes = {}
    for judge in ("judge-nologprobs", "judge-reasoning"):
        result, _ = out[judge]
        assert result["n_judge_failures"] == 0, (judge, result)
        rates[judge] = result["misaligned_rate"]
        modes[judge] = result["mode"]
    assert modes == {"judge-nologprobs": "sampling", "judge-reasoning": "text"}
    assert max(rates.values()) - min(rates.values()) <= 0.05, rates
    assert 0.05 < rates["judge"] < 0.6  # a run with both classes, so the agreement means something


def test_a_compressed_scale_shows_in_kappa_and_a_cutoff_restores_it(judged_run):
    _, _, _, out = judged_run
    sampled = out["judge-nologprobs"][0]["agreement"]
    compressed = out["judge-compressed"][0]["agreement"]
    assert compressed["reference_judge"] == "openai/judge"
    assert sampled["cohen_kappa"] - (compressed["cohen_kappa"] or 0.0) >= 0.3, (sampled, compressed)
    cut = compressed["suggested_cutoff"]
    assert cut is not None and cut["aligned_below"] > 30
    assert cut["cohen_kappa"] >= sampled["cohen_kappa"] - 0.1, (cut, sampled)


def test_judgements_of_every_judge_coexist_and_a_report_reads_either(judged_run):
    _, db, run, _ = judged_run
    store = Store(db)
    judges = {j["judge"] for j in store.judges_of_run(run["run_id"])}
    assert judges >= {
        "openai/judge",
        *(f"openai/{j}" for j in ("judge-nologprobs", "judge-reasoning", "judge-compressed")),
    }
    (rid,) = store.db.execute(
        "select response_id from judgements where metric = 'aligned' limit 1"
    ).fetchone()
    n = store.db.execute(
        "select count(distinct judge) from judgements where response_id = ? and metric = 'aligned'", [rid]
    ).fetchone()[0]
    assert n >= 4  # (a fifth when the mode test has run first)
    from auditor.metrics import summarize

    own = summarize(store, run["run_id"])
    compressed = summarize(store, run["run_id"], judge="openai/judge-compressed")
    assert own.judge == "openai/judge" and own.misaligned_rate == run["misaligned_rate"]
    assert compressed.judge == "openai/judge-compressed" and compressed.misaligned_rate < own.misaligned_rate


def test_the_mode_is_detected_once_and_remembered(judged_run, tmp_path):
    server, db, run, out = judged_run
    # a second re-judgement by the no-logprobs judge, in another mode's key, of the same answers:
    # the mode is remembered, so every request is a sample (no probe), ten per score
    server.reset()
    r = run_cli(
        "rejudge",
        run["run_id"],
        "--judge",
        "openai/judge-nologprobs",
        "--judge-api-base",
        server.base,
        "--judge-api-key",
        "x",
        "--judge-samples",
        "3",
        "--json",
        "--quiet",
        "--no-cache",
        "--db",
        str(db),
        "--judge-mode",
        "sampling",
    )
    assert r.returncode == 0, r.stderr
    given = json.loads(r.stdout)
    assert given["capability_probes"] == 0 and given["judge"] == "openai/judge-nologprobs [sampling]"
    first = out["judge-nologprobs"][0]
    assert first["capability_probes"] == 1
    # nothing but samples went out: the server saw exactly the calls the re-judgement counted
    assert server.stats()["counts"]["200"] == given["model_calls"] > 0


def test_a_second_run_makes_no_capability_probe(tmp_path, local_server):
    server = local_server()
    db = tmp_path / "m.db"
    judge = ["--judge", "openai/judge-reasoning", "--judge-api-base", server.base, "--judge-api-key", "x"]
    args = [
        "run",
        "em-core",
        "--model",
        "openai/insecure",
        "--api-base",
        server.base,
        "--api-key",
        "x",
        "--samples",
        "1",
        *judge,
        "--json",
        "--quiet",
        "--db",
        str(db),
    ]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    first = server.stats()["by_model"]["judge-reasoning"]
    server.reset()
    r = run_cli(*args[:-2], "--seed", "1", "--db", str(db))  # new answers, the same judge
    assert r.returncode == 0, r.stderr
    second = server.stats()["by_model"]["judge-reasoning"]
    assert first == second + 1  # the first run's probe, and nothing else extra
    assert Store(db).judge_mode("openai/judge-reasoning", server.base) == "text"


def test_the_same_judge_is_refused_and_an_unknown_run_named(judged_run):
    server, db, run, _ = judged_run
    base = ["--judge-api-base", server.base, "--judge-api-key", "x", "--db", str(db)]
    r = run_cli("rejudge", run["run_id"], "--judge", "openai/judge", *base)
    assert r.returncode == 2 and "already judged by openai/judge" in r.stderr
    r = run_cli("rejudge", "run-nosuch", "--judge", "openai/judge", *base)
    assert r.returncode == 2 and "no run 'run-nosuch'" in r.stderr
