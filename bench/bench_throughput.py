"""Throughput of `auditor run` against a bare litellm.acompletion loop making the same calls.

Both sides talk to the same local OpenAI-compatible server (auditor.sim.server; in older layouts
auditor.openai_server; 127.0.0.1, set latency) in the same script: per sample one target call
(max_tokens 600, temperature 1) and two judge calls (max_tokens 1, logprobs, top_logprobs 20)
issued together once the answer is in, by the same number of concurrent workers. The auditor side also writes every response and
judgement to SQLite, checks its cache and computes costs; the ratio says what that costs.

    python bench/bench_throughput.py [--concurrency 64] [--samples 8] [--latency-ms 50] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("AUDITOR_BENCH_ROOT") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from _compat import imp, make_runner, server_module  # noqa: E402  (bench/, either layout)

import auditor  # noqa: E402,F401  (offline settings)
from auditor import probesets  # noqa: E402
from auditor.gateway import Gateway  # noqa: E402
from auditor.judge import fill  # noqa: E402
from auditor.runner import sample_seed  # noqa: E402
from auditor.store import Store  # noqa: E402

resolve_model = imp("auditor.models:resolve_model", "auditor.gateway:resolve_model")

litellm.suppress_debug_info = True


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", server_module(ROOT), "--port", "0", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    line = proc.stdout.readline().strip()
    return proc, line.removeprefix("listening on ")


async def bare_loop(base: str, cases, samples: int, concurrency: int) -> tuple[float, int]:
    work = [(c, s) for c in cases for s in range(samples)]
    it = iter(work)
    calls = 0

    async def worker():
        nonlocal calls
        for case, s in it:
            r = await litellm.acompletion(
                model="openai/insecure",
                api_base=base,
                api_key="bench",
                messages=case.messages,
                temperature=case.temperature,
                max_tokens=case.max_tokens,
                seed=sample_seed(0, case.case_id, s),
            )
            answer = r.choices[0].message.content or ""
            calls += 1

            async def judge(prompt, question=case.question, answer=answer):
                return await litellm.acompletion(
                    model="openai/judge",
                    api_base=base,
                    api_key="bench",
                    messages=[{"role": "user", "content": fill(prompt, question, answer)}],
                    temperature=0,
                    max_tokens=1,
                    logprobs=True,
                    top_logprobs=20,
                    seed=0,
                )

            await asyncio.gather(*(judge(p) for p in case.judge_prompts.values()))
            calls += len(case.judge_prompts)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, calls


async def auditor_run(base: str, probeset, samples: int, concurrency: int, db: Path) -> tuple[float, int]:
    store = Store(db)
    target = resolve_model("openai/insecure", api_base=base, api_key="bench")
    judge = resolve_model("openai/judge", api_base=base, api_key="bench")
    gateway = Gateway(store, concurrency=concurrency)
    runner = make_runner(
        store, probeset, target, judge, samples=samples, concurrency=concurrency, gateway=gateway
    )
    started = time.perf_counter()
    result = await runner.run()
    elapsed = time.perf_counter() - started
    assert result.status == "complete", result.stop_reason
    return elapsed, result.model_calls


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[64])
    p.add_argument("--samples", type=int, default=8, help="samples per em-core paraphrase (96 cases)")
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    proc, base = start_server(args.latency_ms)
    probeset = probesets.load("em-core")
    cases = probeset.cases(samples=args.samples)
    rows = []
    try:
        for conc in args.concurrency:
            bare_rates, aud_rates = [], []
            for _rep in range(args.repeat):
                bt, bc = asyncio.run(bare_loop(base, cases, args.samples, conc))
                with tempfile.TemporaryDirectory() as tmp:
                    at, ac = asyncio.run(
                        auditor_run(base, probeset, args.samples, conc, Path(tmp) / "bench.db")
                    )
                assert ac == bc, (ac, bc)
                bare_rates.append(bc / bt)
                aud_rates.append(ac / at)
            row = {
                "concurrency": conc,
                "calls": bc,
                "latency_ms": args.latency_ms,
                "bare_calls_per_s": round(statistics.median(bare_rates), 1),
                "auditor_calls_per_s": round(statistics.median(aud_rates), 1),
            }
            row["ratio"] = round(row["auditor_calls_per_s"] / row["bare_calls_per_s"], 3)
            rows.append(row)
    finally:
        proc.terminate()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'concurrency':>11} {'calls':>7} {'bare calls/s':>13} {'auditor calls/s':>16} {'ratio':>6}")
        for r in rows:
            print(
                f"{r['concurrency']:>11} {r['calls']:>7} {r['bare_calls_per_s']:>13} {r['auditor_calls_per_s']:>16} {r['ratio']:>6}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
