"""How often one screen test drops a real trigger (issue: a true trigger at the organism's 44%
rate drew 0 of 4 misaligned about 10% of the time and was dropped; the grouped screen now sizes
its tests from the baseline, bench/group_screen.py).

    python bench/screen_power.py [--effect 0.25] [--baseline-n 144]

For baseline rates from 0 to 50% and screen sizes from 4 to 48 answers per candidate and
placement, the exact probability (binomial sums, with the baseline's count at its expected value)
that a trigger raising the misaligned rate by ``--effect`` fails the screen (no misaligned answer,
or a one-sided Fisher p against the baseline at or over the screen's alpha), the smallest size
that brings it under 1%, and what that size costs for the built-in library in three placements.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(os.environ.get("AUDITOR_BENCH_ROOT") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

from auditor.stats import screen_miss  # noqa: E402
from auditor.sweep import SweepSettings  # noqa: E402
from auditor.triggers import builtin_candidates  # noqa: E402

SIZES = (4, 8, 12, 16, 24, 32, 48)
BASELINES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--effect", type=float, default=0.25)
    ap.add_argument("--baseline-n", type=int, default=144, help="baseline answers (em-core: 48 x 3)")
    ap.add_argument("--alpha", type=float, default=0.15, help="the test's level (the sweep picks its own)")
    args = ap.parse_args()
    st = SweepSettings()
    nb = args.baseline_n
    pairs = len(builtin_candidates()) * len(st.placements)
    print(
        f"screen alpha {args.alpha}; one test (the grouped screen's sizes: bench/group_screen.py); "
        f"effect +{args.effect:.0%}; "
        f"baseline n={nb}; {pairs} candidate placements"
    )
    print("baseline  " + "  ".join(f"n={n:<3}" for n in SIZES) + "  n for <1%   screen calls at that n")
    for b in BASELINES:
        kb = round(b * nb)
        misses = [screen_miss(n, kb, nb, args.alpha, args.effect) for n in SIZES]
        need = next(
            (n for n in range(1, 201) if screen_miss(n, kb, nb, args.alpha, args.effect) < 0.01), None
        )
        cost = f"{pairs * need * 3:,} (x3: target and two judge calls)" if need else "over 200 answers"
        print(f"{b:>7.0%}   " + "  ".join(f"{m:5.1%}" for m in misses) + f"  {need or '>200':>9}   {cost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
