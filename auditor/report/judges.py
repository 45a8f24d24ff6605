"""The report's judges: for each judge whose judgements a report's rates use, its mode(s), its
rubric hashes, its calibration against the paper's judge (GPT-4o, ``gpt-4o-2024-08-06``) when one
is stored, and for a panel Krippendorff's alpha across its judges and the answers they dispute."""

from __future__ import annotations

from collections import defaultdict

from ..agreement import krippendorff_alpha
from ..panel import DISAGREEMENT
from ..store import Store
from .format import pct
from .schema import JudgeInfo

PAPER_JUDGE = "gpt-4o-2024-08-06"
MAX_DISPUTED = 10


def panel_members(run: dict) -> list[str] | None:
    """The keys a panel run's judges stored their judgements under (None for one judge)."""
    cfg = run.get("config") or {}
    ident = cfg.get("judge") or {}
    if "panel" not in ident:
        return None
    mode = (cfg.get("judge_options") or {}).get("mode")
    return [m["name"] if mode is None else f"{m['name']} [{mode}]" for m in ident["panel"]]


def panel_agreement(
    store: Store, run_id: str, members: list[str]
) -> tuple[dict[str, float | None], list[dict], int]:
    """Alpha per 0-100 metric across ``members``; the answers whose scores spread over 40, widest
    first (at most ``MAX_DISPUTED``, with their question and answer); and how many there are."""
    scores: dict[tuple[int, str], dict[str, float | None]] = defaultdict(dict)
    for j in store.judgements(run_id):
        if j["judge"] in members and j["kind"] in ("score", "unscored"):
            scores[(j["response_id"], j["metric"])][j["judge"]] = j["score"]
    by_metric: dict[str, list[list[float | None]]] = defaultdict(list)
    spread_of = []
    for (rid, metric), got in scores.items():
        values = [got.get(m) for m in members]
        by_metric[metric].append(values)
        present = [v for v in values if v is not None]
        if len(present) >= 2 and max(present) - min(present) > DISAGREEMENT:
            spread = max(present) - min(present)
            spread_of.append(
                (
                    spread,
                    {"response_id": rid, "metric": metric, "scores": dict(zip(members, values, strict=True))},
                )
            )
    spread_of.sort(key=lambda sd: -sd[0])
    alpha = {m: krippendorff_alpha(units) for m, units in sorted(by_metric.items())}
    listed = [d for _, d in spread_of[:MAX_DISPUTED]]
    for d in listed:
        row = store.response_detail(d["response_id"]) or {}
        d["question"], d["answer"] = row.get("question"), (row.get("text") or "")[:600]
    return alpha, listed, len(spread_of)


def _calibrations(store: Store, key: str) -> tuple[str, list[str]]:
    paper, others = None, []
    for c in store.list_calibrations(key):
        r = c.get("result") or {}
        a = r.get("agreement") or {}
        line = (
            f"against {r.get('reference')} ({r.get('reference_judge')}), {r.get('n_scored')} answers: "
            f"recall {pct(r.get('recall'))}"
            + (f", false flags {pct(r.get('false_flags'))}" if r.get("false_flags") is not None else "")
            + (f", kappa {a['cohen_kappa']:.2f}" if a.get("cohen_kappa") is not None else "")
            + (
                f", Spearman aligned {a['spearman_aligned']:.2f}"
                if a.get("spearman_aligned") is not None
                else ""
            )
        )
        if PAPER_JUDGE in str(r.get("reference_judge")):
            paper = line
        else:
            others.append(line)
    if paper is None:
        paper = "not calibrated against the paper's judge (GPT-4o, gpt-4o-2024-08-06)"
    return paper, others


def judge_infos(store: Store, runs: list[dict], judge: str | None = None) -> list[JudgeInfo]:
    out: dict[str, JudgeInfo] = {}
    for run in runs:
        key = judge or run.get("judge")
        if not key:
            continue
        info = out.get(key)
        if info is None:
            paper, others = _calibrations(store, key)
            info = out[key] = JudgeInfo(judge=key, modes=[], calibration=paper, other_calibrations=others)
        for j in store.judges_of_run(run["id"]):
            if j["judge"] == key:
                info.modes = sorted(set(info.modes) | set(j["modes"]))
                info.rubrics = sorted(set(info.rubrics) | set(j["rubrics"]))
        members = panel_members(run) if judge is None or judge == run.get("judge") else None
        if members and info.panel_alpha is None:
            info.panel_alpha, info.disputed, info.disputed_total = panel_agreement(store, run["id"], members)
    return list(out.values())
