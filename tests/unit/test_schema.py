"""The schema the migrations make is the one the README documents."""

from __future__ import annotations

import re
from pathlib import Path

from auditor.store import JudgementRow, ResponseRow, Store

README = Path(__file__).resolve().parents[2] / "README.md"


def documented() -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Store") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|$", section, re.M)
    return {table: [c.strip() for c in cols.split(",")] for table, cols in rows}


def test_the_readme_documents_every_table_and_column(tmp_path):
    store = Store(tmp_path / "fresh.db")
    actual = {
        t: [c.name for c in store.db[t].columns]
        for t in store.db.table_names()
        if not t.startswith("_") and not t.startswith("responses_fts")
    }
    assert documented() == actual
    assert "responses_fts" in store.db.table_names()  # the full-text index the README names


def test_the_typed_rows_have_exactly_their_tables_columns(tmp_path):
    store = Store(tmp_path / "fresh.db")
    for row, table in ((ResponseRow, "responses"), (JudgementRow, "judgements")):
        columns = [c.name for c in store.db[table].columns if c.name not in ("id", "created_at")]
        assert sorted(row.columns()) == sorted(columns), table
