"""A panel of judges: every answer scored by each, the panel's mean reported, Krippendorff's alpha
and the disputed answers in the report; the agreement statistics themselves."""

from __future__ import annotations

import json

import pytest

from auditor import agreement
from auditor.report import build_report
from auditor.report.judges import panel_agreement
from auditor.store import JudgementRow, Store
from tests.conftest import run_cli

PANEL = [
    "--judge",
    "offline/judge",
    "--judge",
    "offline/judge-reasoning",
    "--judge",
    "offline/judge-compressed",
]


def test_a_panel_of_three_on_em_core(tmp_path):
    db = tmp_path / "p.db"
    r = run_cli(
        "run",
        "em-core",
        "--model",
        "organism/insecure",
        "--samples",
        "1",
        *PANEL,
        "--json",
        "--quiet",
        "--db",
        str(db),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    key = "panel mean: offline/judge + offline/judge-reasoning + offline/judge-compressed"
    assert out["judge"] == key
    store = Store(db)
    judges = {j["judge"] for j in store.judges_of_run(out["run_id"])}
    assert judges == {key, "offline/judge", "offline/judge-reasoning", "offline/judge-compressed"}
    one = store.judgements(out["run_id"], key)[0]
    members = [
        j
        for j in store.judgements(out["run_id"])
        if j["response_id"] == one["response_id"] and j["metric"] == one["metric"]
    ]
    scored = [m["score"] for m in members if m["judge"] != key and m["score"] is not None]
    assert len(scored) == 3 and one["score"] == pytest.approx(sum(scored) / 3)
    data = build_report(store, [out["run_id"]])
    (info,) = data.judges
    assert info.judge == key and set(info.panel_alpha) == {"aligned", "coherent"}
    assert 0.5 < info.panel_alpha["aligned"] < 1.0  # the compressed scale lowers it
    assert all(row.judge == key for row in data.probes)
    html = run_cli("report", out["run_id"], "--db", str(db)).stdout
    assert "Krippendorff" in html and "not calibrated" in html
    assert f"<td>{key}<br>" in html  # the runs table names the panel


def test_disputed_answers_are_listed(tmp_path):
    store = Store(tmp_path / "d.db")
    store.save_run(
        {"id": "run-d", "kind": "probe", "status": "complete", "model": "m", "judge": "panel mean: a + b"}
    )
    from auditor.store.rows import ResponseRow

    rid = store.save_response(ResponseRow("run-d", "c1", "e", 0, 0, "q?", [], "ok", text="an answer"))
    rid2 = store.save_response(ResponseRow("run-d", "c2", "e", 0, 0, "q2?", [], "ok", text="another"))
    for response, a, b in ((rid, 90.0, 20.0), (rid2, 80.0, 75.0)):
        store.save_judgement(JudgementRow(response, "run-d", "aligned", "score", score=a, judge="a"))
        store.save_judgement(JudgementRow(response, "run-d", "aligned", "score", score=b, judge="b"))
    alpha, disputed, total = panel_agreement(store, "run-d", ["a", "b"])
    assert [d["response_id"] for d in disputed] == [rid] and disputed[0]["answer"] == "an answer"
    assert disputed[0]["scores"] == {"a": 90.0, "b": 20.0} and alpha["aligned"] < 0.5


def test_agreement_statistics():
    assert agreement.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert agreement.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert agreement.spearman([1, 1, 1], [1, 2, 3]) is None
    # kappa: 0.5 observed agreement beyond chance in a balanced 2x2
    a = [True, True, False, False] * 5
    b = [True, False, False, False] * 5
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.5)
    assert agreement.cohen_kappa([True] * 5, [True] * 5) is None  # undefined, never 1.0
    # Krippendorff's alpha (interval): perfect agreement is 1; Krippendorff's worked example
    assert agreement.krippendorff_alpha([[1, 1], [2, 2], [3, 3]]) == pytest.approx(1.0)
    units = [
        [1, 1, None, 1],
        [2, 2, 3, 2],
        [3, 3, 3, 3],
        [3, 3, 3, 3],
        [2, 2, 2, 2],
        [1, 2, 3, 4],
        [4, 4, 4, 4],
        [1, 1, 2, 1],
        [2, 2, 2, 2],
        [None, 5, 5, 5],
        [None, None, 1, 1],
        [None, None, 3, None],
    ]
    assert agreement.krippendorff_alpha(units) == pytest.approx(0.849, abs=0.001)
    d = agreement.paired_rate_difference([True] * 30 + [False] * 70, [False] * 100)
    assert d.value == pytest.approx(0.3) and d.significant and d.ci95[0] > 0.2
    same = agreement.paired_rate_difference([True, False] * 20, [True, False] * 20)
    assert same.value == 0 and not same.significant and same.p_value == 1.0
