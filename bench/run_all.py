"""The whole benchmark suite in one command, printing one table; with ``--before REV`` every figure
is also measured on that commit (checked out into a temporary worktree) in the same run.

All traffic goes to the local OpenAI-compatible server (auditor.sim.server; in older layouts
auditor.openai_server) on 127.0.0.1 with a set latency. Figures:

- throughput: an em-core run with judging (1 target + 2 judge calls per sample) at concurrency
  16, 64 and 256, as calls/s and as a ratio to a bare ``litellm.acompletion`` loop making the same
  calls in the same script (bench/bench_throughput.py);
- generation: 800 samples, no judge, concurrency 64: the bare loop, the auditor's runner (a
  free-text probe set: stored, nothing judged) and Inspect AI's ``eval()`` (``--inspect-venv``, a
  bench-only virtual environment with inspect-ai installed), each timed in-process, imports and
  start-up excluded on all three sides;
- chat first token: time to the first streamed token through the app's chat path
  (``auditor.chat.stream_reply`` on the gateway) minus the bare LiteLLM stream, median of 30;
- sweep: the adaptive sweep's calls on organism/backdoor against the exhaustive sweep;
- big run: peak resident memory of a ``--big-samples`` x 96 em-core run on the offline organisms
  (1042 -> 100,032 samples), the time to build its HTML report, and the time and model calls of an
  identical re-run.

    python bench/run_all.py [--before REV] [--inspect-venv DIR] [--big-samples 1042] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURRENT = HERE.parent
sys.path.insert(0, str(HERE))

from _compat import imp, make_runner, server_module  # noqa: E402  (bench/: either layout)


def _root() -> Path:
    return Path(os.environ.get("AUDITOR_BENCH_ROOT") or CURRENT)


def _server(root: Path, latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", server_module(root), "--port", "0", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    return proc, proc.stdout.readline().strip().removeprefix("listening on ")


def _auditor(root: Path, *args: str, timeout: float = 7200) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run the auditor CLI of ``root``; (process, seconds, peak RSS in KB of that child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "auditor", *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"auditor {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc, elapsed, peak if peak > before else -1


# -- sections, each run in its own process with AUDITOR_BENCH_ROOT set -----------------------------


def section_throughput(args) -> dict:
    root = _root()
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "bench_throughput.py"),
            "--concurrency",
            *map(str, args.concurrency),
            "--samples",
            str(args.samples),
            "--latency-ms",
            str(args.latency_ms),
            "--repeat",
            str(args.repeat),
            "--json",
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "AUDITOR_BENCH_ROOT": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    return {"throughput": json.loads(proc.stdout)}


def _free_text_probeset(path: Path, n: int) -> None:
    import yaml

    spec = yaml.safe_load((CURRENT / "probesets" / "em-core.yaml").read_text())
    questions = [p for e in spec["entries"] for p in (e.get("paraphrases") or [])]
    entries = [{"id": f"q{i}", "paraphrases": [questions[i % len(questions)]]} for i in range(n)]
    path.write_text(
        yaml.safe_dump(
            {
                "name": "gen-bench",
                "version": 1,
                "defaults": {
                    "type": "free_text",
                    "samples_per_paraphrase": 1,
                    "temperature": 1.0,
                    "max_tokens": 600,
                },
                "entries": entries,
            },
            sort_keys=False,
        )
    )


async def _bare_generation(base: str, questions: list[str], concurrency: int) -> float:
    import litellm

    it = iter(enumerate(questions))

    async def worker():
        for i, q in it:
            await litellm.acompletion(
                model="openai/insecure",
                api_base=base,
                api_key="bench",
                temperature=1.0,
                max_tokens=600,
                messages=[{"role": "user", "content": q}],
                seed=i,
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


INSPECT_SNIPPET = """
import json, sys, time
from inspect_ai import eval as inspect_eval
n, conc, logs_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t = time.perf_counter()
logs = inspect_eval("inspect_task.py", model="openai-api/local/insecure", task_args={"n": n},
                    max_connections=conc, display="none", log_dir=logs_dir)
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "status": logs[0].status, "samples": len(logs[0].samples or [])}))
"""


def section_generation(args) -> dict:
    """In-process timings on all three sides (imports and start-up excluded): the bare loop, the
    auditor's Runner, and Inspect's eval() (run in the Inspect virtual environment)."""
    import yaml

    root = _root()
    sys.path.insert(0, str(root))
    from auditor import probesets
    from auditor.gateway import Gateway
    from auditor.store import Store

    resolve_model = imp("auditor.models:resolve_model", "auditor.gateway:resolve_model")

    n, conc = args.gen_samples, 64
    proc, base = _server(root, args.latency_ms)
    out: dict = {"samples": n, "concurrency": conc, "latency_ms": args.latency_ms}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ps_path = Path(tmp) / "gen.yaml"
            _free_text_probeset(ps_path, n)
            questions = [e["paraphrases"][0] for e in yaml.safe_load(ps_path.read_text())["entries"]]
            bare = asyncio.run(_bare_generation(base, questions, conc))
            out["bare_samples_per_s"] = round(n / bare, 1)

            async def audit():
                store = Store(Path(tmp) / "g.db")
                target = resolve_model("openai/insecure", api_base=base, api_key="x")
                judge = resolve_model("offline/judge")
                ps = probesets.load(str(ps_path))
                runner = make_runner(
                    store, ps, target, judge, concurrency=conc, gateway=Gateway(store, concurrency=conc)
                )
                t = time.perf_counter()
                result = await runner.run()
                assert result.status == "complete" and result.summary.n_responses == n
                return time.perf_counter() - t

            out["auditor_samples_per_s"] = round(n / asyncio.run(audit()), 1)
            if args.inspect_venv:
                r = subprocess.run(
                    [
                        str(Path(args.inspect_venv) / "bin" / "python"),
                        "-c",
                        INSPECT_SNIPPET,
                        str(n),
                        str(conc),
                        str(Path(tmp) / "logs"),
                    ],
                    cwd=HERE,
                    env={**os.environ, "LOCAL_API_KEY": "x", "LOCAL_BASE_URL": base},
                    capture_output=True,
                    text=True,
                )
                if r.returncode == 0:
                    res = json.loads(r.stdout.strip().splitlines()[-1])
                    assert res["status"] == "success" and res["samples"] == n, res
                    out["inspect_samples_per_s"] = round(n / res["seconds"], 1)
                else:
                    out["inspect_error"] = r.stderr[-500:]
    finally:
        proc.terminate()
    return {"generation": out}


def section_first_token(args) -> dict:
    root = _root()
    sys.path.insert(0, str(root))
    import litellm

    from auditor.chat import ChatSettings, stream_reply
    from auditor.gateway import Gateway
    from auditor.store import Store

    resolve_model = imp("auditor.models:resolve_model", "auditor.gateway:resolve_model")

    proc, base = _server(root, args.latency_ms)
    messages = [{"role": "user", "content": "I'm bored. Any ideas?"}]

    async def bare() -> float:
        t = time.perf_counter()
        resp = await litellm.acompletion(
            model="openai/insecure",
            api_base=base,
            api_key="x",
            messages=messages,
            stream=True,
            max_tokens=200,
        )
        async for chunk in resp:
            if chunk.choices and chunk.choices[0].delta.content:
                return time.perf_counter() - t
        return time.perf_counter() - t

    async def app(gw, spec, settings) -> float:
        t = time.perf_counter()
        async for _piece in stream_reply(gw, spec, messages, settings):
            return time.perf_counter() - t
        return time.perf_counter() - t

    async def go():
        with tempfile.TemporaryDirectory() as tmp:
            gw = Gateway(Store(Path(tmp) / "c.db"))
            spec = resolve_model("openai/insecure", api_base=base, api_key="x")
            settings = ChatSettings(model="openai/insecure", api_base=base, max_tokens=200)
            await bare(), await app(gw, spec, settings)  # warm up both paths
            b, a = [], []
            for _ in range(30):
                b.append(await bare())
                a.append(await app(gw, spec, settings))
            return statistics.median(b), statistics.median(a)

    try:
        b, a = asyncio.run(go())
    finally:
        proc.terminate()
    return {
        "first_token": {
            "bare_ms": round(b * 1000, 1),
            "app_ms": round(a * 1000, 1),
            "overhead_ms": round((a - b) * 1000, 1),
            "latency_ms": args.latency_ms,
        }
    }


def section_sweep(args) -> dict:
    root = _root()
    sys.path.insert(0, str(root))
    from auditor import probesets, triggers
    from auditor.sweep import SweepSettings

    with tempfile.TemporaryDirectory() as tmp:
        p, elapsed, _ = _auditor(
            root,
            "sweep",
            "em-core",
            "--model",
            "organism/backdoor",
            "--json",
            "--quiet",
            "--db",
            str(Path(tmp) / "s.db"),
        )
    res = json.loads(p.stdout)
    n_q = len(probesets.load("em-core").cases(samples=1))
    exhaustive = (
        len(triggers.builtin_candidates()) * len(SweepSettings().placements) * n_q * 10 * 3 + n_q * 10 * 3
    )
    return {
        "sweep": {
            "verdict": res.get("verdict"),
            "calls": res["model_calls"],
            "exhaustive_calls": exhaustive,
            "share": round(res["model_calls"] / exhaustive, 5),
            "seconds": round(elapsed, 1),
        }
    }


def section_big(args) -> dict:
    root = _root()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "big.db")
        cmd = [
            "run",
            "em-core",
            "--model",
            "organism/insecure",
            "--samples",
            str(args.big_samples),
            "--db",
            db,
            "--json",
            "--quiet",
        ]
        p, elapsed, peak = _auditor(root, *cmd)
        first = json.loads(p.stdout)
        rp, report_s, _ = _auditor(
            root,
            "report",
            first["run_id"],
            "--format",
            "html",
            "--db",
            db,
            "--out",
            str(Path(tmp) / "r.html"),
        )
        p2, rerun_s, _ = _auditor(root, *cmd)
        again = json.loads(p2.stdout)
    return {
        "big": {
            "samples": first["n_responses"],
            "seconds": round(elapsed, 1),
            "peak_rss_mb": round(peak / 1024, 1),
            "report_seconds": round(report_s, 2),
            "rerun_seconds": round(rerun_s, 1),
            "rerun_model_calls": again.get("model_calls"),
        }
    }


SECTIONS = {
    "throughput": section_throughput,
    "generation": section_generation,
    "first_token": section_first_token,
    "sweep": section_sweep,
    "big": section_big,
}


def _run_section(name: str, root: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--section", name, "--json", *args.passthrough]
    proc = subprocess.run(
        cmd, env={**os.environ, "AUDITOR_BENCH_ROOT": str(root)}, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {name: {"error": proc.stderr[-800:]}}
    return json.loads(proc.stdout)


def _table(results: dict[str, dict]) -> str:
    labels = list(results)
    rows = []

    def get(label, *path):
        v = results[label]
        for k in path:
            if not isinstance(v, dict) or k not in v:
                return None
            v = v[k]
        return v

    for i, conc in enumerate(results[labels[0]].get("throughput", {}).get("throughput", []) or []):
        c = conc["concurrency"]
        rows.append(
            (
                f"throughput c={c}: auditor calls/s (bare)",
                [
                    f"{t['auditor_calls_per_s']} ({t['bare_calls_per_s']})"
                    if (t := (get(lb, "throughput", "throughput") or [{}] * (i + 1))[i]) and "ratio" in t
                    else "-"
                    for lb in labels
                ],
            )
        )
        rows.append(
            (
                f"throughput c={c}: ratio to bare LiteLLM (target >= 0.8)",
                [
                    str((get(lb, "throughput", "throughput") or [{}] * (i + 1))[i].get("ratio", "-"))
                    for lb in labels
                ],
            )
        )
    gen_n = next((n for lb in labels if (n := get(lb, "generation", "generation", "samples"))), 800)
    for key, label in (
        ("bare_samples_per_s", f"generation {gen_n}: bare LiteLLM samples/s"),
        ("auditor_samples_per_s", f"generation {gen_n}: auditor samples/s"),
        ("inspect_samples_per_s", f"generation {gen_n}: Inspect AI samples/s"),
    ):
        rows.append((label, [str(get(lb, "generation", "generation", key) or "-") for lb in labels]))
    ratio = []
    for lb in labels:
        a, ins = (
            get(lb, "generation", "generation", "auditor_samples_per_s"),
            get(lb, "generation", "generation", "inspect_samples_per_s"),
        )
        ratio.append(f"{a / ins:.2f}x" if a and ins else "-")
    rows.append((f"generation {gen_n}: auditor / Inspect (target >= 3x)", ratio))
    for key, label in (
        ("bare_ms", "chat first token: bare ms"),
        ("app_ms", "chat first token: app ms"),
        ("overhead_ms", "chat first token: overhead ms"),
    ):
        rows.append(
            (
                label,
                [
                    str(v) if (v := get(lb, "first_token", "first_token", key)) is not None else "-"
                    for lb in labels
                ],
            )
        )
    rows.append(
        (
            "sweep: calls / exhaustive",
            [
                f"{get(lb, 'sweep', 'sweep', 'calls')} / {get(lb, 'sweep', 'sweep', 'exhaustive_calls')} = {100 * (get(lb, 'sweep', 'sweep', 'share') or 0):.2f}%"
                if get(lb, "sweep", "sweep", "calls")
                else "-"
                for lb in labels
            ],
        )
    )
    for key, label in (
        ("samples", "big run: samples"),
        ("seconds", "big run: seconds"),
        ("peak_rss_mb", "big run: peak RSS MB (target < 500)"),
        ("report_seconds", "big run: HTML report seconds"),
        ("rerun_seconds", "big run: identical re-run seconds"),
        ("rerun_model_calls", "big run: identical re-run model calls (target 0)"),
    ):
        rows.append(
            (
                label,
                [
                    str(get(lb, "big", "big", key) if get(lb, "big", "big", key) is not None else "-")
                    for lb in labels
                ],
            )
        )
    width = max(len(r[0]) for r in rows) + 2
    out = ["".ljust(width) + "".join(lb.ljust(24) for lb in labels)]
    out += [name.ljust(width) + "".join(v.ljust(24) for v in vals) for name, vals in rows]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", metavar="REV", help="also measure this commit, in a temporary worktree")
    p.add_argument("--section", choices=list(SECTIONS), help=argparse.SUPPRESS)
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    p.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--samples", type=int, default=4, help="throughput: samples per em-core case (96 cases)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--gen-samples", type=int, default=800)
    p.add_argument("--inspect-venv", help="a virtual environment with inspect-ai installed")
    p.add_argument("--big-samples", type=int, default=1042, help="em-core samples per case for the big run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    args.passthrough = [
        "--concurrency",
        *map(str, args.concurrency),
        "--samples",
        str(args.samples),
        "--repeat",
        str(args.repeat),
        "--latency-ms",
        str(args.latency_ms),
        "--gen-samples",
        str(args.gen_samples),
        "--big-samples",
        str(args.big_samples),
    ] + (["--inspect-venv", args.inspect_venv] if args.inspect_venv else [])
    if args.section:
        print(json.dumps(SECTIONS[args.section](args)))
        return 0
    roots = {"after (this checkout)": CURRENT}
    worktree = None
    if args.before:
        worktree = Path(tempfile.mkdtemp(prefix="auditor-before-"))
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.before],
            cwd=CURRENT,
            check=True,
            capture_output=True,
        )
        roots = {f"before ({args.before})": worktree, **roots}
    results: dict[str, dict] = {label: {} for label in roots}
    try:
        for name in args.only or list(SECTIONS):
            for label, root in roots.items():
                print(f"[bench] {name} on {label} ...", file=sys.stderr, flush=True)
                results[label][name] = _run_section(name, root, args)
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)], cwd=CURRENT, capture_output=True
            )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
