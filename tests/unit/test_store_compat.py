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
