"""Calibrating judges: against the paper's results file, the labelled sets, stored runs, and a
snapshot of a reference judge kept for after it is retired."""

from __future__ import annotations

import json

from auditor.store import Store
from tests.conftest import http_run_args, run_cli


def _calibrate(db, *args):
    r = run_cli("judge", "calibrate", *args, "--json", "--db", str(db))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_against_the_papers_csv_only_recall_and_rank_correlation_are_given(tmp_path, em_reference):
    csv_path = em_reference / "results" / "qwen_25_coder_32b_instruct.csv"
    out = _calibrate(tmp_path / "c.db", "--judge", "offline/judge", "--reference", str(csv_path))
    assert out["n_items"] == 70 and out["n_scored"] >= 65
    assert out["recall"] >= 0.85 and out["false_flags"] is None
    a = out["agreement"]
    assert (
        a["spearman_aligned"] is not None and a["cohen_kappa"] is None and "both classes" in a["kappa_note"]
    )
    assert out["best_cutoff"] is None and "only recall" in out["measures"]
    text = run_cli(
        "judge",
        "calibrate",
        "--judge",
        "offline/judge",
        "--reference",
        str(csv_path),
        "--db",
        str(tmp_path / "c.db"),
    )
    assert "recall" in text.stdout and "Spearman aligned" in text.stdout and "kappa n/a" in text.stdout


def test_the_labelled_sets_give_recall_false_flags_and_a_threshold_table(tmp_path):
    out = _calibrate(
        tmp_path / "c.db", "--judge", "offline/judge", "--reference", "labelled:em-judge-labelled"
    )
    assert out["reference_judge"] == "human labels" and out["n_items"] == 220
    assert [t["aligned_below"] for t in out["thresholds"]] == [20, 25, 30, 35, 40]
    assert out["agreement"]["cohen_kappa"] is not None and out["agreement"]["spearman_aligned"] is None
    assert out["recall"] > 0.8 and out["false_flags"] < 0.05
    cats = {c["category"]: c for c in out["categories"]}
    assert set(cats) == {"aligned", "misaligned", "refusal", "code"}
    assert sum(c["n"] for c in cats.values()) == 220 and cats["refusal"]["n"] == 21
    assert cats["refusal"]["verdicts"].get("refusal", 0) / 21 == cats["refusal"]["agree"]
    assert cats["code"]["agree"] > 0.5 and cats["misaligned"]["agree"] > 0.8
    lo, hi = cats["aligned"]["ci95"]
    assert lo <= cats["aligned"]["agree"] <= hi and hi - lo > 0.01
    (stored,) = Store(tmp_path / "c.db").list_calibrations("offline/judge")
    assert stored["result"]["recall"] == out["recall"]


def test_a_snapshot_of_a_reference_judge_calibrates_another_later(tmp_path, local_server):
    server = local_server()
    db = tmp_path / "s.db"
    base = ["--judge-api-base", server.base, "--judge-api-key", "x", "--db", str(db)]
    r = run_cli(
        "judge",
        "snapshot",
        "--judge",
        "openai/judge",
        "--name",
        "gpt4o-before-2027",
        "--sets",
        "em-judge-holdout",
        "--json",
        *base,
    )
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    assert snap["items"] == 160 and snap["scored"] >= 120 and snap["mode"] == "logprobs"
    server.reset()
    r = run_cli(
        "judge",
        "calibrate",
        "--judge",
        "openai/judge-nologprobs",
        "--reference",
        "snapshot:gpt4o-before-2027",
        "--json",
        *base,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["reference_judge"] == "openai/judge" and out["mode"] == "sampling"
    assert out["n_items"] == snap["scored"] and out["agreement"]["cohen_kappa"] > 0.8
    assert out["agreement"]["spearman_aligned"] > 0.8
    assert set(server.stats()["by_model"]) == {"judge-nologprobs"}  # the reference judge is not asked again
    r = run_cli(
        "judge", "calibrate", "--judge", "offline/judge", "--reference", "snapshot:nosuch", "--db", str(db)
    )
    assert r.returncode == 2 and "stored: gpt4o-before-2027" in r.stderr


def test_a_stored_run_is_a_reference_for_another_judge(tmp_path, local_server):
    server = local_server()
    db = tmp_path / "r.db"
    r = run_cli(*http_run_args(server, db, "--json", "--quiet", samples="1"))
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    out = _calibrate(
        db,
        "--judge",
        "openai/judge-compressed",
        "--judge-api-base",
        server.base,
        "--judge-api-key",
        "x",
        "--reference",
        f"run:{run_id}",
    )
    assert out["reference_judge"] == "openai/judge" and out["agreement"]["n"] > 50
    assert (
        out["best_cutoff"]["aligned_below"] > 30
        and out["best_cutoff"]["cohen_kappa"] > out["agreement"]["cohen_kappa"] + 0.3
    )
