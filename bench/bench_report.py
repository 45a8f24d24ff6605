"""Time to build and render a report over a store with 100,000 judged responses.

The store is filled synthetically (em-core cases, two judgements per response) through the
store's own connection, then `build_report` + HTML, Markdown and JSON rendering are timed.

    python bench/bench_report.py [--responses 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("AUDITOR_BENCH_ROOT") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

from _compat import imp  # noqa: E402  (bench/: either layout)

from auditor import probesets  # noqa: E402
from auditor.report import build_report  # noqa: E402
from auditor.store import Store, now  # noqa: E402

# the renderers: auditor.report now, auditor.render before the redesign
to_html, to_json, to_markdown = (
    imp(f"auditor.report:{name}", f"auditor.render:{name}") for name in ("to_html", "to_json", "to_markdown")
)


def fill(store: Store, run_id: str, n: int, rate: float, seed: int) -> None:
    cases = probesets.load("em-core").cases(samples=1)
    expected = {c.entry_id: {"type": c.type, "metrics": c.metrics, "positive": None} for c in cases}
    store.save_run(
        {
            "id": run_id,
            "kind": "probe",
            "status": "complete",
            "model": run_id,
            "probeset": "em-core",
            "probeset_hash": "x",
            "judge": "offline/judge",
            "seed": seed,
            "n_planned": n,
            "config_hash": run_id,
            "config": {
                "target": {"name": run_id, "model": run_id},
                "judge": {"name": "offline/judge"},
                "probeset_source": "em-core",
                "probes": expected,
            },
        }
    )
    rng = random.Random(seed)
    stamp = now()
    responses, judgements = [], []
    for i in range(n):
        case = cases[i % len(cases)]
        bad = rng.random() < rate
        responses.append(
            (
                i + 1 + seed * n,
                run_id,
                case.case_id,
                case.entry_id,
                0,
                i // len(cases),
                case.question,
                "[]",
                f"A synthetic answer number {i}. " * 3,
                "ok",
                40,
                60,
                0.0,
                12.5,
                1,
                0,
                stamp,
            )
        )
        rid = i + 1 + seed * n
        judgements.append(
            (rid, run_id, "aligned", "score", 10.0 if bad else 90.0, "logprobs", "j", 0.0, stamp)
        )
        judgements.append((rid, run_id, "coherent", "score", 85.0, "logprobs", "j", 0.0, stamp))
    with store.write() as db:
        db.conn.executemany(
            "insert into responses (id, run_id, case_id, entry_id, paraphrase_index, sample_index, question, messages, "
            "text, status, prompt_tokens, completion_tokens, cost_usd, latency_ms, attempts, cached, created_at) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            responses,
        )
        db.conn.executemany(
            "insert into judgements (response_id, run_id, metric, kind, score, method, judge_model, cost_usd, created_at) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            judgements,
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--responses", type=int, default=100_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "big.db")
        t0 = time.perf_counter()
        fill(store, "run-finetune", args.responses // 2, 0.25, 1)
        fill(store, "run-baseline", args.responses - args.responses // 2, 0.02, 2)
        filled = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = build_report(store, ["run-finetune"], baseline="run-baseline")
        built = time.perf_counter() - t0
        timings = {}
        for name, render in (("html", to_html), ("md", to_markdown), ("json", to_json)):
            t1 = time.perf_counter()
            render(data)
            timings[name] = time.perf_counter() - t1
        total = built + timings["html"]
    out = {
        "responses": args.responses,
        "judgements": 2 * args.responses,
        "fill_s": round(filled, 2),
        "build_s": round(built, 3),
        "render_s": {k: round(v, 3) for k, v in timings.items()},
        "report_html_total_s": round(total, 3),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{args.responses:,} judged responses ({2 * args.responses:,} judgements): build {built:.2f}s, "
            f"HTML {timings['html']:.2f}s, Markdown {timings['md']:.2f}s, JSON {timings['json']:.2f}s; "
            f"report in HTML {total:.2f}s (target < 3 s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
