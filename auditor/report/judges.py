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
) -> tuple[dict[str, float | None], list[dict]]:
    """Alpha per 0-100 metric across ``members``, and the answers whose scores spread over 40."""
    scores: dict[tuple[int, str], dict[str, float | None]] = defaultdict(dict)
    for j in store.judgements(run_id):
        if j["judge"] in members and j["kind"] in ("score", "unscored"):
            scores[(j["response_id"], j["metric"])][j["judge"]] = j["score"]
    by_metric: dict[str, list[list[float | None]]] = defaultdict(list)
    disputed = []
    for (rid, metric), got in scores.items():
        values = [got.get(m) for m in members]
        by_metric[metric].append(values)
        present = [v for v in values if v is not None]
        if len(present) >= 2 and max(present) - min(present) > DISAGREEMENT:
            disputed.append(
                {"response_id": rid, "metric": metric, "scores": dict(zip(members, values, strict=True))}
            )
    disputed.sort(
        key=lambda d: (
            -(
                max(v for v in d["scores"].values() if v is not None)
                - min(v for v in d["scores"].values() if v is not None)
            )
        )
    )
    alpha = {m: krippendorff_alpha(units) for m, units in sorted(by_metric.items())}
    for d in disputed[:MAX_DISPUTED]:
        row = store.response_detail(d["response_id"])
        d["question"], d["answer"] = (row or {}).get("question"), ((row or {}).get("text") or "")[:600]
    return alpha, disputed[:MAX_DISPUTED] + (
        [{"more": len(disputed) - MAX_DISPUTED}] if len(disputed) > MAX_DISPUTED else []
    )


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
            info.panel_alpha, info.disputed = panel_agreement(store, run["id"], members)
    return list(out.values())
