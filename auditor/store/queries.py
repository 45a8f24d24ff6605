"""Every read of the store: rows by id, listings by owner, searches, and the aggregates the
runner, the metrics, the reports and the app need. :class:`Reads` is mixed into
:class:`~auditor.store.store.Store`, so callers write ``store.least_aligned(...)``; no module
outside this package writes SQL (``tests/test_layout.py`` checks it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils

# The owner of what the instance's owner published: every team user and public visitor sees it.
PUBLISHED = "published"
FT_JSON = ("dataset", "hyperparameters", "events", "checkpoints")  # finetune_jobs columns held as JSON
# The judge a read is about: the one asked for, else the run's own (two parameters: judge, run id)
JUDGE_OF_RUN = "coalesce(?, (select runs.judge from runs where runs.id = ?))"


class Reads:
    """The read half of the store (needs ``self.db``, a per-thread ``sqlite_utils.Database``)."""

    db: sqlite_utils.Database

    def _by_id(self, table: str, ident: str) -> dict | None:
        """A row by its id, or by a prefix that names exactly one row."""
        rows = list(self.db.query(f"select * from {table} where id = ?", [ident]))
        if not rows:
            rows = list(
                self.db.query(f"select * from {table} where id like ?", [ident.replace("%", "") + "%"])
            )
        return dict(rows[0]) if len(rows) == 1 else None

    def get_run(self, run_id: str) -> dict | None:
        row = self._by_id("runs", run_id)
        return _decode_run(row) if row else None

    def list_runs(
        self, *, owner: str | None = None, only_owner: bool = False, limit: int = 100
    ) -> list[dict]:
        where, args = _visible_to(owner, only_owner)
        rows = self.db.query(f"select * from runs {where} order by created_at desc limit ?", [*args, limit])
        return [_decode_run(r) for r in rows]

    def runs_with_probeset(self, probeset_hash: str) -> list[dict]:
        """Every run of the probe set with this content hash, oldest first."""
        rows = self.db.query(
            "select * from runs where probeset_hash = ? order by created_at", [probeset_hash]
        )
        return [_decode_run(r) for r in rows]

    def get_audit(self, audit_id: str) -> dict | None:
        row = self._by_id("audits", audit_id)
        if row is None:
            return None
        for key in ("config", "runs", "result"):
            if row.get(key):
                row[key] = json.loads(row[key])
        return row

    def list_audits(
        self, *, owner: str | None = None, only_owner: bool = False, limit: int = 100
    ) -> list[dict]:
        where, args = _visible_to(owner, only_owner)
        return list(
            self.db.query(
                f"select id, created_at, status, model, baseline, judge, plan from audits {where} order by created_at desc limit ?",
                [*args, limit],
            )
        )

    def get_conversation(self, conv_id: str, *, owner: str | None = None) -> dict | None:
        row = self._by_id("conversations", conv_id)
        if row is None or (owner is not None and row.get("owner") not in (owner, PUBLISHED)):
            return None
        for key in ("settings", "messages", "baseline_messages", "judgements"):
            if row.get(key):
                row[key] = json.loads(row[key])
        return row

    def list_conversations(
        self, *, owner: str | None = None, only_owner: bool = False, limit: int = 100
    ) -> list[dict]:
        where, args = _visible_to(owner, only_owner)
        return list(
            self.db.query(
                f"select id, title, model, baseline, updated_at from conversations {where} order by updated_at desc limit ?",
                [*args, limit],
            )
        )

    def sample_status(self, run_id: str) -> dict[tuple[str, int], tuple[int, str]]:
        rows = self.db.execute(
            "select case_id, sample_index, id, status from responses where run_id = ?", [run_id]
        ).fetchall()
        return {(c, s): (rid, status) for c, s, rid, status in rows}

    def responses(self, run_id: str, *, status: str | None = None) -> list[dict]:
        sql = "select * from responses where run_id = ?"
        args: list = [run_id]
        if status:
            sql += " and status = ?"
            args.append(status)
        return [_decode_response(r) for r in self.db.query(sql + " order by id", args)]

    def search(self, query: str, *, run_id: str | None = None, limit: int = 50) -> list[dict]:
        """Full-text search over questions and answers."""
        return self.find_responses(query=query, run_id=run_id, limit=limit)

    def find_responses(
        self,
        *,
        query: str | None = None,
        run_id: str | None = None,
        entry: str | None = None,
        aligned: tuple[float, float] | None = None,
        coherent: tuple[float, float] | None = None,
        owner: str | None = None,
        only_owner: bool = False,
        limit: int = 100,
    ) -> list[dict]:
        """Responses with their aligned and coherent scores, filtered: full-text ``query`` (SQLite
        FTS5 syntax), run, probe (entry id), score ranges; with ``only_owner``, only that user's runs."""
        sql = [
            "select r.id, r.run_id, r.entry_id, r.case_id, r.sample_index, r.question, r.text, r.trigger, r.status,",
            " (select score from judgements j where j.response_id = r.id and j.metric = 'aligned'",
            "  and j.judge = runs.judge) as aligned,",
            " (select score from judgements j where j.response_id = r.id and j.metric = 'coherent'",
            "  and j.judge = runs.judge) as coherent",
            " from responses r join runs on runs.id = r.run_id",
        ]
        where, args = [], []
        if query:
            sql.append(" join responses_fts on responses_fts.rowid = r.rowid")
            where.append("responses_fts match ?")
            args.append(query)
        if run_id:
            where.append("r.run_id = ?")
            args.append(run_id)
        if entry:
            where.append("r.entry_id = ?")
            args.append(entry)
        if only_owner:
            where.append("(runs.owner is ? or runs.owner is ?)")
            args += [owner, PUBLISHED]
        sql_text = "".join(sql) + (" where " + " and ".join(where) if where else "")
        outer, outer_args = [], []
        for name, rng in (("aligned", aligned), ("coherent", coherent)):
            if rng is not None:
                outer.append(f"{name} between ? and ?")
                outer_args += list(rng)
        sql_text = f"select * from ({sql_text})" + (" where " + " and ".join(outer) if outer else "")
        sql_text += " order by aligned is null, aligned asc limit ?"
        return list(self.db.query(sql_text, [*args, *outer_args, limit]))

    def response_detail(
        self, response_id: int, *, owner: str | None = None, only_owner: bool = False
    ) -> dict | None:
        """One response with every judgement, if the user may see it."""
        rows = list(
            self.db.query(
                "select r.*, runs.owner as run_owner, runs.model as run_model from responses r join runs on runs.id = r.run_id "
                "where r.id = ?",
                [response_id],
            )
        )
        if not rows or (only_owner and rows[0]["run_owner"] not in (owner, PUBLISHED)):
            return None
        row = _decode_response(rows[0])
        row["judgements"] = list(
            self.db.query(
                "select metric, kind, score, label, method, judge_model, judge, mode, rubric_hash, reply, "
                "reasoning, error from judgements where response_id = ? "
                "order by judge != (select judge from runs where id = ?), judge, metric",
                [response_id, row["run_id"]],
            )
        )
        return row

    def provider_batches(self, model: str, api_base: str | None) -> list[dict]:
        rows = self.db.query(
            "select * from provider_batches where model = ? and api_base is ? order by created_at",
            [model, api_base],
        )
        return [
            {
                **dict(r),
                "custom_ids": json.loads(r["custom_ids"] or "[]"),
                "request_counts": json.loads(r["request_counts"]) if r["request_counts"] else None,
            }
            for r in rows
        ]

    def get_finetune_job(self, job_id: str) -> dict | None:
        row = self._by_id("finetune_jobs", job_id)
        if row is None:
            return None
        return {k: (json.loads(v) if k in FT_JSON and v else v) for k, v in row.items()}

    def list_finetune_jobs(self, *, owner: str | None = None, only_owner: bool = False) -> list[dict]:
        where, args = ("where owner is ?", [owner]) if only_owner else ("", [])
        return [
            {k: (json.loads(v) if k in FT_JSON and v else v) for k, v in dict(r).items()}
            for r in self.db.query(f"select * from finetune_jobs {where} order by created_at desc", args)
        ]

    def registered_models(self) -> list[dict]:
        return [
            {**dict(r), "dataset": json.loads(r["dataset"]) if r["dataset"] else None}
            for r in self.db.query("select * from registered_models order by created_at")
        ]

    def spending(self, who: str, day: str) -> tuple[int, int]:
        """(calls, tokens) ``who`` spent on the server's keys on ``day``."""
        row = self.db.execute(
            "select calls, tokens from spending where who = ? and day = ?", [who, day]
        ).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def judged_metrics(self, run_id: str, judge: str | None = None) -> dict[int, set[str]]:
        """Metrics with a stored judgement by ``judge`` (default: the run's own judge) or the
        parser, per response. Judgements whose judge call itself failed (kind 'call_error') are
        not counted, so a re-run retries them."""
        out: dict[int, set[str]] = {}
        for rid, metric in self.db.execute(
            "select response_id, metric from judgements where run_id = ? and kind != 'call_error' "
            f"and judge in ({JUDGE_OF_RUN}, 'parser')",
            [run_id, judge, run_id],
        ):
            out.setdefault(rid, set()).add(metric)
        return out

    def judgements(self, run_id: str, judge: str | None = None) -> list[dict]:
        """A run's judgements: every judge's, or ``judge``'s (and the parser's)."""
        where, args = ("", [run_id]) if judge is None else (" and judge in (?, 'parser')", [run_id, judge])
        return list(
            self.db.query(
                f"select * from judgements where run_id = ?{where} order by response_id, metric, judge", args
            )
        )

    def judges_of_run(self, run_id: str) -> list[dict]:
        """Each judge that judged a run: its key, mode(s), judgements, failures and rubric hashes."""
        rows = self.db.execute(
            "select judge, group_concat(distinct mode), count(*), sum(kind = 'call_error' or kind = 'unscored'),"
            " group_concat(distinct rubric_hash), min(created_at) from judgements"
            " where run_id = ? and judge != 'parser' group by judge order by min(created_at)",
            [run_id],
        ).fetchall()
        return [
            {
                "judge": j,
                "modes": sorted(filter(None, (m or "").split(","))),
                "judgements": n,
                "failures": f or 0,
                "rubrics": sorted(filter(None, (r or "").split(","))),
                "first_at": t,
            }
            for j, m, n, f, r, t in rows
        ]

    def judge_failures(self, run_id: str, judge: str) -> tuple[int, int]:
        """(failed, excluded) judgements of a run by ``judge``: failed when the call failed or the
        judge gave no usable answer; excluded when it answered CODE or REFUSAL (a verdict)."""
        row = self.db.execute(
            "select sum(kind = 'call_error' or (kind = 'unscored' and label is null)),"
            " sum(kind = 'unscored' and label in ('CODE', 'REFUSAL'))"
            " from judgements where run_id = ? and judge = ?",
            [run_id, judge],
        ).fetchone()
        return row[0] or 0, row[1] or 0

    def judge_mode(self, model: str, api_base: str | None) -> str | None:
        """The remembered mode of a judge model (see :mod:`auditor.judge`), or None."""
        row = self.db.execute(
            "select mode from judge_modes where model = ? and api_base = ?", [model, api_base or ""]
        ).fetchone()
        return row[0] if row else None

    def get_rejudge(self, rejudge_id: str) -> dict | None:
        row = self._by_id("rejudges", rejudge_id)
        return _decoded(row, ("config", "result"))

    def list_rejudges(self, run_id: str | None = None) -> list[dict]:
        where, args = ("where run_id = ?", [run_id]) if run_id else ("", [])
        rows = self.db.query(f"select * from rejudges {where} order by created_at", args)
        return [_decoded(dict(r), ("config", "result")) for r in rows]

    def list_calibrations(self, judge: str | None = None) -> list[dict]:
        where, args = ("where judge = ?", [judge]) if judge else ("", [])
        rows = self.db.query(f"select * from calibrations {where} order by created_at", args)
        return [_decoded(dict(r), ("result",)) for r in rows]

    def reference_scores(self, snapshot: str) -> list[dict]:
        rows = self.db.query("select * from reference_scores where snapshot = ? order by item", [snapshot])
        return [_decoded(dict(r), ("probs",)) for r in rows]

    def snapshots(self) -> list[dict]:
        return list(
            self.db.query(
                "select snapshot, judge, mode, count(*) as items, min(created_at) as created_at"
                " from reference_scores group by snapshot, judge, mode order by created_at"
            )
        )

    def cache_get(self, key: str) -> dict | None:
        row = self.db.execute("select payload from cache where key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else None

    # -- aggregates the pipeline, the reports and the app read -------------------------------

    def response_judgements(self, run_id: str, judge: str | None = None) -> Iterator[tuple]:
        """Every response of a run joined with each of its judgements by ``judge`` (default: the
        run's own judge) and the parser, in response order:
        (id, entry_id, case_id, status, metric, kind, score, label, error), streamed."""
        return self.db.execute(
            f"""
            select r.id, r.entry_id, r.case_id, r.status, j.metric, j.kind, j.score, j.label, j.error
            from responses r left join judgements j on j.response_id = r.id
                and j.judge in ({JUDGE_OF_RUN}, 'parser')
            where r.run_id = ?
            order by r.id
            """,
            [judge, run_id, run_id],
        )

    def least_aligned(self, run_ids: list[str], limit: int) -> list[tuple]:
        """The coherent answers (coherent > 50) with the lowest aligned scores of these runs, by
        each run's own judge: (run_id, entry_id, question, text, trigger, aligned, coherent)."""
        if not run_ids:
            return []
        marks = ",".join("?" for _ in run_ids)
        return self.db.execute(
            f"""
            select r.run_id, r.entry_id, r.question, r.text, r.trigger, a.score, c.score
            from judgements a
            join responses r on r.id = a.response_id
            join runs on runs.id = a.run_id and runs.judge = a.judge
            left join judgements c on c.response_id = a.response_id and c.metric = 'coherent'
                and c.judge = a.judge
            where a.run_id in ({marks}) and a.metric = 'aligned' and a.score is not null and c.score > 50
            order by a.score asc limit ?
            """,
            [*run_ids, limit],
        ).fetchall()

    def run_usage(self, run_id: str) -> dict:
        """A run's answered samples, their tokens, and the cost of those samples and the judge
        calls; ``cost_usd`` is None when any of them has an unknown price."""
        tokens = self.db.execute(
            "select coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), sum(cost_usd), "
            "count(*), count(cost_usd) from responses where run_id = ? and status = 'ok'",
            [run_id],
        ).fetchone()
        judged = self.db.execute(
            "select count(*), count(cost_usd), sum(cost_usd) from judgements where run_id = ? "
            "and kind != 'call_error' and judge_model != 'parser'",
            [run_id],
        ).fetchone()
        unknown = (tokens[3] - tokens[4]) + (judged[0] - judged[1])
        return {
            "answered": tokens[3],
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "cost_usd": None if unknown else round((tokens[2] or 0) + (judged[2] or 0), 6),
        }

    def judge_metrics(self, run_id: str) -> list[str]:
        """The metrics a judge model scored in a run (not those the parser read)."""
        rows = self.db.execute(
            "select distinct metric from judgements where run_id = ? and judge_model != 'parser'", [run_id]
        ).fetchall()
        return [m for (m,) in rows]

    def run_cost(self, run_id: str, *, uncached_only: bool = False) -> float:
        """What a run's samples and judge calls cost (only the requests sent, with ``uncached_only``)."""
        extra = " and cached = 0" if uncached_only else ""
        row = self.db.execute(
            f"select (select coalesce(sum(cost_usd), 0) from responses where run_id = ?{extra})"
            f" + (select coalesce(sum(cost_usd), 0) from judgements where run_id = ?{extra})",
            [run_id, run_id],
        ).fetchone()
        return row[0] or 0.0

    def unpriced_calls(self, run_id: str) -> int:
        """A run's answered samples and judge calls whose price is unknown."""
        return self.db.execute(
            "select (select count(*) from responses where run_id = ? and status = 'ok' and cost_usd is null)"
            " + (select count(*) from judgements where run_id = ? and kind != 'call_error' and cost_usd is null)",
            [run_id, run_id],
        ).fetchone()[0]

    def failed_judge_calls(self, run_id: str, judge: str | None = None) -> int:
        """Judge calls of a run by ``judge`` (default: the run's own) that failed after their
        retries (to be retried on resume)."""
        return self.db.execute(
            f"select count(*) from judgements where run_id = ? and kind = 'call_error' and judge = {JUDGE_OF_RUN}",
            [run_id, judge, run_id],
        ).fetchone()[0]

    def answered(self, run_ids: list[str]) -> int:
        """Samples of these runs that have an answer."""
        if not run_ids:
            return 0
        marks = ",".join("?" for _ in run_ids)
        return self.db.execute(
            f"select count(*) from responses where run_id in ({marks}) and status = 'ok'", run_ids
        ).fetchone()[0]


def _decode_run(row: dict) -> dict:
    row = dict(row)
    for k in ("config", "stats"):
        if row.get(k):
            row[k] = json.loads(row[k])
    return row


def _decode_response(row: dict) -> dict:
    row = dict(row)
    for k in ("messages", "retries", "logprobs"):
        if row.get(k):
            row[k] = json.loads(row[k])
    return row


def _visible_to(owner: str | None, only_owner: bool) -> tuple[str, list]:
    """The WHERE clause of a listing: one owner's rows and the published ones, or every row."""
    return ("where owner is ? or owner is ?", [owner, PUBLISHED]) if (owner or only_owner) else ("", [])


def _decoded(row: dict | None, json_columns: tuple[str, ...]) -> dict | None:
    if row is None:
        return None
    return {k: (json.loads(v) if k in json_columns and v else v) for k, v in row.items()}
