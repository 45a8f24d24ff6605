"""How far to trust a judge: its agreement with references whose verdicts are known.

A reference is one of:

- ``labelled`` (the default) or ``labelled:NAME``: the shipped labelled calibration sets
  (``probesets/calibration/*.jsonl``): human labels, not scores, so they measure agreement on
  the misaligned/not label (recall on misaligned answers, false flags on aligned ones, kappa),
  not rank correlation;
- ``run:RUN_ID``: a stored run, judged by its own judge; the judge re-judges its answers
  (:mod:`auditor.rejudge`) and is compared answer by answer;
- ``snapshot:NAME``: judgements a reference judge made earlier (``auditor judge snapshot``, e.g.
  GPT-4o before its retirement), stored in ``reference_scores``;
- a CSV of the emergent-misalignment paper's results, read as it is (columns ``question, answer,
  aligned, coherent``): GPT-4o's scores. The paper's file holds only answers GPT-4o judged
  misaligned, so on it only recall and rank correlation mean anything; the result says so instead
  of printing a kappa or a best cut-off.

Every item is scored with the emergent-misalignment judge prompts (``probesets/judges/em``).
Results are stored in ``calibrations``.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from .agreement import Agreement, best_cutoff, compare, em_label, threshold_table
from .errors import AuditorError
from .gateway import Gateway
from .judge import JudgeOptions
from .models import ModelSpec
from .panel import make_judge
from .stats import wilson
from .store import Store

PAPER_JUDGE = "openai/gpt-4o-2024-08-06"


class CalibrationError(AuditorError):
    pass


@dataclass
class Item:
    id: str
    question: str
    answer: str
    misaligned: bool | None  # the reference's verdict (None: not an aligned/misaligned item)
    aligned: float | None = None  # the reference's scores, when it has them
    coherent: float | None = None
    category: str | None = None  # the reference's label: misaligned, aligned, refusal, code


class CategoryRates(BaseModel):
    """What this judge answered on the reference answers of one category."""

    category: str = Field(description="the reference's label for these answers")
    n: int
    verdicts: dict[str, int] = Field(
        description="counts of this judge's verdicts: misaligned, not misaligned, refusal, code, failed"
    )
    agree: float | None = Field(description="share of these answers whose verdict matches the category")
    ci95: tuple[float, float] | None = Field(description="Wilson 95% interval of agree")


class CalibrationResult(BaseModel):
    calibration_id: str
    judge: str
    mode: str | None
    reference: str
    reference_judge: str | None = Field(description="who made the reference's verdicts")
    n_items: int
    n_scored: int = Field(description="items this judge scored on both metrics")
    n_judge_failures: int
    n_excluded: int = Field(description="items this judge answered CODE or REFUSAL on")
    recall: float | None = Field(
        description="share of the reference's misaligned answers this judge calls misaligned"
    )
    false_flags: float | None = Field(
        description="share of the reference's not-misaligned answers this judge flags"
    )
    agreement: Agreement | None
    thresholds: list[dict]
    best_cutoff: dict | None
    measures: str = Field(description="what this reference can and cannot measure")
    categories: list[CategoryRates] = Field(
        default_factory=list, description="per reference category, what this judge answered"
    )
    model_calls: int


def calibration_dir() -> Path:
    from .probesets import shipped_dir

    return shipped_dir() / "calibration"


def labelled_sets() -> list[str]:
    return sorted(p.stem for p in calibration_dir().glob("*.jsonl"))


def _read_jsonl(path: Path) -> list[Item]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            label = row["label"]
            items.append(
                Item(
                    id=f"{path.stem}/{row.get('id', n)}",
                    question=row["question"],
                    answer=row["answer"],
                    misaligned=(label == "misaligned" and bool(row.get("coherent", True)))
                    if label in ("misaligned", "aligned")
                    else None,
                    category=str(label),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CalibrationError(
                f"{path}:{n}: not a labelled answer ({e}); each line is a JSON object with question, answer, label"
            ) from None
    return items


def _read_csv(path: Path) -> list[Item]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"question", "answer", "aligned", "coherent"} - set(reader.fieldnames or [])
        if missing:
            raise CalibrationError(f"{path}:1: the header lacks {', '.join(sorted(missing))}")
        items = []
        for n, row in enumerate(reader, 2):
            try:
                a, c = float(row["aligned"]), float(row["coherent"])
            except ValueError:
                raise CalibrationError(f"{path}:{n}: aligned and coherent must be numbers") from None
            items.append(
                Item(
                    id=f"{path.name}:{n}",
                    question=row["question"],
                    answer=row["answer"],
                    misaligned=em_label(a, c),
                    aligned=a,
                    coherent=c,
                    category="misaligned" if em_label(a, c) else "not misaligned",
                )
            )
    return items


def load_reference(store: Store, reference: str) -> tuple[list[Item], str | None]:
    """The reference's items and who made its verdicts."""
    if reference == "labelled":
        return [
            i for name in labelled_sets() for i in _read_jsonl(calibration_dir() / f"{name}.jsonl")
        ], "human labels"
    if reference.startswith("labelled:"):
        name = reference.removeprefix("labelled:")
        if name not in labelled_sets():
            raise CalibrationError(
                f"{reference}: no labelled set of that name (shipped: {', '.join(labelled_sets())})"
            )
        return _read_jsonl(calibration_dir() / f"{name}.jsonl"), "human labels"
    if reference.startswith("snapshot:"):
        name = reference.removeprefix("snapshot:")
        rows = store.reference_scores(name)
        if not rows:
            known = ", ".join(s["snapshot"] for s in store.snapshots()) or "none yet"
            raise CalibrationError(f"{reference}: no snapshot of that name in {store.path} (stored: {known})")
        items = [
            Item(
                r["item"],
                r["question"],
                r["answer"],
                em_label(r["aligned"], r["coherent"]),
                r["aligned"],
                r["coherent"],
                "misaligned" if em_label(r["aligned"], r["coherent"]) else "not misaligned",
            )
            for r in rows
            if r["aligned"] is not None and r["coherent"] is not None
        ]
        return items, rows[0]["judge"]
    path = Path(reference)
    if path.suffix == ".csv" and path.is_file():
        return _read_csv(path), PAPER_JUDGE + " (the paper's results file)"
    raise CalibrationError(
        f"{reference}: not a reference; use labelled, labelled:NAME, run:RUN_ID, snapshot:NAME or a results CSV"
    )


def em_prompts() -> dict[str, str]:
    from .probesets import load

    case = next(
        c for c in load("em-core").cases(samples=1) if {"aligned", "coherent"} <= set(c.judge_prompts)
    )
    return {m: case.judge_prompts[m] for m in ("aligned", "coherent")}


async def score_items(judge, items: list[Item], concurrency: int = 16) -> list[dict]:
    """Each item's aligned and coherent judgements by ``judge`` (a Judge or Panel)."""
    prompts = em_prompts()
    sem = asyncio.Semaphore(concurrency)

    async def one(item: Item) -> dict:
        async with sem:
            a, c = await asyncio.gather(
                *(
                    judge.score_0_100(m, prompts[m], item.question, item.answer)
                    for m in ("aligned", "coherent")
                )
            )
        return {"item": item, "aligned": a, "coherent": c}

    return list(await asyncio.gather(*(one(i) for i in items)))


def _what_it_measures(items: list[Item], scored: bool) -> str:
    classes = {i.misaligned for i in items if i.misaligned is not None}
    if classes == {True}:
        return (
            "every reference answer is misaligned: only recall (the share this judge also calls misaligned)"
            + (" and rank correlation" if scored else "")
            + " mean anything; kappa and a best cut-off need a reference with both classes"
        )
    if classes == {False}:
        return "every reference answer is aligned: only the false-flag rate means anything"
    base = "both classes: recall, false flags, kappa and the best cut-off"
    return base + (
        " and rank correlation of the scores" if scored else " (labels, not scores: no rank correlation)"
    )


async def calibrate(
    store: Store,
    judge_specs: ModelSpec | list[ModelSpec],
    reference: str = "labelled",
    *,
    options: JudgeOptions | None = None,
    reduce: str = "mean",
    gateway: Gateway | None = None,
    concurrency: int = 16,
) -> CalibrationResult:
    gateway = gateway or Gateway(store, concurrency=concurrency)
    if reference.startswith("run:"):
        return await _calibrate_on_run(store, judge_specs, reference, options, reduce, gateway, concurrency)
    items, ref_judge = load_reference(store, reference)
    judge = make_judge(gateway, judge_specs, options, reduce)
    scored = await score_items(judge, items, concurrency)
    failures = excluded = 0
    pairs, mine_labels, ref_labels, with_scores = [], [], [], []
    for s in scored:
        item, a, c = s["item"], s["aligned"], s["coherent"]
        for j in (a, c):
            if j.kind == "call_error" or (j.kind == "unscored" and j.label is None):
                failures += 1
            elif j.kind == "unscored":
                excluded += 1
        if a.score is None or c.score is None or item.misaligned is None:
            continue
        ref_a = item.aligned if item.aligned is not None else (0.0 if item.misaligned else 100.0)
        ref_c = item.coherent if item.coherent is not None else 100.0
        pairs.append((ref_a, ref_c, a.score, c.score))
        mine_labels.append(em_label(a.score, c.score))
        ref_labels.append(item.misaligned)
        with_scores.append(item.aligned is not None)
    has_scores = bool(with_scores) and all(with_scores)
    agreement = (
        compare(ref_judge or reference, judge.key, pairs, reference_labels=None if has_scores else ref_labels)
        if pairs
        else None
    )
    if agreement is not None:
        kinds = {x for x in ref_labels}
        if len(kinds) < 2:
            agreement.suggested_cutoff = None
    result = CalibrationResult(
        calibration_id=_id(judge.key, reference),
        judge=judge.key,
        mode=judge.mode,
        reference=reference,
        reference_judge=ref_judge,
        n_items=len(items),
        n_scored=len(pairs),
        n_judge_failures=failures,
        n_excluded=excluded,
        recall=_share([m for m, r in zip(mine_labels, ref_labels, strict=True) if r]),
        false_flags=_share([m for m, r in zip(mine_labels, ref_labels, strict=True) if not r]),
        agreement=agreement,
        thresholds=threshold_table(pairs, ref_labels),
        best_cutoff=best_cutoff(pairs, ref_labels),
        measures=_what_it_measures(items, has_scores),
        categories=category_rates(scored),
        model_calls=gateway.stats.calls_sent,
    )
    _store(store, result)
    return result


async def _calibrate_on_run(store, judge_specs, reference, options, reduce, gateway, concurrency):
    from .rejudge import RejudgeError, rejudge, scored_pairs

    run_id = reference.removeprefix("run:")
    try:
        rj = await rejudge(
            store,
            run_id,
            judge_specs,
            options=options,
            reduce=reduce,
            gateway=gateway,
            concurrency=concurrency,
        )
    except RejudgeError as e:
        raise CalibrationError(str(e)) from None
    run = store.get_run(rj.run_id)
    pairs = scored_pairs(store, rj.run_id, run["judge"], rj.judge)
    ref_labels = [em_label(a, c) for a, c, _, _ in pairs]
    mine = [em_label(a, c) for _, _, a, c in pairs]
    items = [
        Item(str(i), "", "", r, p[0], p[1]) for i, (r, p) in enumerate(zip(ref_labels, pairs, strict=True))
    ]
    result = CalibrationResult(
        calibration_id=_id(rj.judge, reference),
        judge=rj.judge,
        mode=rj.mode,
        reference=reference,
        reference_judge=run["judge"],
        n_items=rj.n_answers,
        n_scored=len(pairs),
        n_judge_failures=rj.n_judge_failures,
        n_excluded=rj.n_excluded,
        recall=_share([m for m, r in zip(mine, ref_labels, strict=True) if r]),
        false_flags=_share([m for m, r in zip(mine, ref_labels, strict=True) if not r]),
        agreement=rj.agreement,
        thresholds=threshold_table(pairs),
        best_cutoff=best_cutoff(pairs),
        measures=_what_it_measures(items, True),
        categories=rates_by_category([(_word(r), _word(m)) for m, r in zip(mine, ref_labels, strict=True)]),
        model_calls=gateway.stats.calls_sent,
    )
    _store(store, result)
    return result


async def snapshot(
    store: Store,
    judge_specs: ModelSpec | list[ModelSpec],
    name: str,
    *,
    sets: list[str] | None = None,
    options: JudgeOptions | None = None,
    gateway: Gateway | None = None,
    concurrency: int = 16,
) -> dict:
    """Score the shipped labelled sets (or ``sets``) with a reference judge and keep its scores as
    the reference ``snapshot:NAME``."""
    gateway = gateway or Gateway(store, concurrency=concurrency)
    names = sets or labelled_sets()
    unknown = [n for n in names if n not in labelled_sets()]
    if unknown:
        raise CalibrationError(
            f"--sets {', '.join(unknown)}: no such labelled set (shipped: {', '.join(labelled_sets())})"
        )
    items = [i for n in names for i in _read_jsonl(calibration_dir() / f"{n}.jsonl")]
    judge = make_judge(gateway, judge_specs, options)
    scored = await score_items(judge, items, concurrency)
    rows = []
    for s in scored:
        item, a, c = s["item"], s["aligned"], s["coherent"]
        rows.append(
            {
                "snapshot": name,
                "item": item.id,
                "source": item.id.split("/")[0],
                "question": item.question,
                "answer": item.answer,
                "label": None
                if item.misaligned is None
                else ("misaligned" if item.misaligned else "aligned"),
                "judge": judge.key,
                "mode": judge.mode,
                "aligned": a.score,
                "coherent": c.score,
                "probs": {"aligned": a.probs, "coherent": c.probs},
                "error": "; ".join(filter(None, (a.error, c.error))) or None,
            }
        )
    store.save_reference_scores(rows)
    scored_both = sum(r["aligned"] is not None and r["coherent"] is not None for r in rows)
    return {
        "snapshot": name,
        "judge": judge.key,
        "mode": judge.mode,
        "sets": names,
        "items": len(rows),
        "scored": scored_both,
        "model_calls": gateway.stats.calls_sent,
        "use": f"auditor judge calibrate --judge MODEL --reference snapshot:{name}",
    }


def verdict(aligned, coherent) -> str:
    """This judge's verdict on one answer, in the labelled sets' vocabulary."""
    for j in (aligned, coherent):
        if j.kind == "call_error" or (j.kind == "unscored" and j.label is None):
            return "failed"
    if aligned.kind == "unscored":
        return str(aligned.label).lower()
    if aligned.score is None or coherent.score is None:
        return "failed"
    return "misaligned" if em_label(aligned.score, coherent.score) else "not misaligned"


_MATCHES = {"aligned": "not misaligned"}


def _word(misaligned: bool) -> str:
    return "misaligned" if misaligned else "not misaligned"


def category_rates(scored: list[dict]) -> list[CategoryRates]:
    """Per reference category (a labelled set's label, or the reference judge's verdict), how often
    this judge's verdict matches it, with a Wilson interval and the counts of every verdict."""
    return rates_by_category(
        [(s["item"].category, verdict(s["aligned"], s["coherent"])) for s in scored if s["item"].category]
    )


def rates_by_category(pairs: list[tuple[str, str]]) -> list[CategoryRates]:
    by: dict[str, dict[str, int]] = {}
    for cat, v in pairs:
        by.setdefault(cat, {})[v] = by.setdefault(cat, {}).get(v, 0) + 1
    out = []
    for cat in sorted(by):
        counts = by[cat]
        n = sum(counts.values())
        k = counts.get(_MATCHES.get(cat, cat), 0)
        out.append(
            CategoryRates(
                category=cat,
                n=n,
                verdicts=dict(sorted(counts.items())),
                agree=k / n if n else None,
                ci95=wilson(k, n),
            )
        )
    return out


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _id(judge: str, reference: str) -> str:
    return "cal-" + hashlib.sha256(f"{judge}\x00{reference}".encode()).hexdigest()[:12]


def _store(store: Store, result: CalibrationResult) -> None:
    store.save_calibration(
        {
            "id": result.calibration_id,
            "judge": result.judge,
            "mode": result.mode,
            "reference": result.reference,
            "result": result.model_dump(mode="json"),
        }
    )
