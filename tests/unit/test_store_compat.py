"""A run stored by the code before the package moves (issue 14) resumes with today's code:
the same run id, the missing samples filled, none repeated, the stored ones untouched."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from auditor import cli

OLD = Path(__file__).resolve().parents[1] / "data" / "store-5fb50c3.db"
COMMAND = ["run", "em-core", "--model", "organism/insecure", "--samples", "1", "--seed", "7", "--quiet"]


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("select id, case_id, sample_index, text from responses order by id").fetchall()


def test_a_run_stored_before_the_move_resumes_without_repeating_a_sample(tmp_path, capsys):
    db = tmp_path / "store.db"
    shutil.copy(OLD, db)
    before = _rows(db)
    with sqlite3.connect(db) as c:
        ((run_id, status, planned),) = c.execute("select id, status, n_planned from runs").fetchall()
    assert (status, planned, len(before)) == ("running", 96, 76)

    assert cli.main([*COMMAND, "--db", str(db)]) == 0
    after = _rows(db)
    with sqlite3.connect(db) as c:
        runs = c.execute("select id, status from runs").fetchall()
        judged = c.execute(
            "select count(distinct response_id) from judgements where metric = 'aligned'"
        ).fetchone()
    assert runs == [(run_id, "complete")]  # the same content-addressed run, now complete
    assert len(after) == 96 and len({(case, s) for _, case, s, _ in after}) == 96
    assert after[:76] == before  # what was stored is untouched
    assert judged[0] == 96
    assert capsys.readouterr().out.startswith(f"run {run_id} (complete)")


def test_an_old_stores_judgements_name_their_judge_and_a_second_judge_adds_its_own(tmp_path):
    from auditor.rejudge import rejudge_sync
    from auditor.store import Store

    db = tmp_path / "store.db"
    shutil.copy(OLD, db)
    with sqlite3.connect(db) as c:
        old = c.execute("select count(*) from judgements").fetchone()[0]
        ((run_id, judge),) = c.execute("select id, judge from runs").fetchall()
    store = Store(db)  # migrates
    rows = store.judgements(run_id)
    assert len(rows) == old and {r["judge"] for r in rows} <= {judge, "parser"}
    assert {r["mode"] for r in rows if r["judge"] != "parser"} == {"logprobs"}
    from auditor.models import resolve_model

    result = rejudge_sync(store, run_id, resolve_model("offline/judge-reasoning"))
    assert result.mode == "text" and result.agreement.reference_judge == judge
    assert len(store.judgements(run_id)) == old + 2 * 76  # the old ones untouched, beside the new
