"""The statistics every rate and comparison uses, as pure functions of counts and values.

- ``wilson``: the Wilson score 95% interval of a rate k/n (None when n is 0);
- ``mean_interval``: the normal-approximation 95% interval of a mean (None below two values);
- ``fisher_exact`` / ``fisher_greater``: Fisher's exact test, two-sided and one-sided (greater);
- ``newcombe``: Newcombe's hybrid score interval for a difference of two rates;
- ``bootstrap_diff``: a seeded percentile interval and p-value for a difference of two means;
- ``holm``: Holm-Bonferroni adjusted p-values across one family of comparisons.

Nothing here reads the store or knows a probe: ``metrics``, ``compare``, ``sweep`` and
``triggers`` call these with the counts they measured.
"""

from __future__ import annotations

import math
import random

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes out of n; None when n is 0."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: list[float], z: float = Z95) -> tuple[float, float] | None:
    """Normal-approximation 95% interval of a mean; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return (m - half, m + half)


BOOTSTRAP = 2000


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher's exact test for k1/n1 against k2/n2 (tables as likely as the observed one
    or less, summed)."""
    k_total, n_total = k1 + k2, n1 + n2
    lo, hi = max(0, k_total - n2), min(k_total, n1)

    def log_p(x: int) -> float:
        return _log_choose(n1, x) + _log_choose(n2, k_total - x) - _log_choose(n_total, k_total)

    observed = log_p(k1)
    total = 0.0
    for x in range(lo, hi + 1):
        lp = log_p(x)
        if lp <= observed + 1e-7:
            total += math.exp(lp)
    return min(1.0, total)


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher's exact test that the first rate is greater: P(X >= k1) under the
    hypergeometric null with the margins fixed."""
    k_total, n_total = k1 + k2, n1 + n2
    hi = min(k_total, n1)
    total = 0.0
    for x in range(k1, hi + 1):
        total += math.exp(_log_choose(n1, x) + _log_choose(n2, k_total - x) - _log_choose(n_total, k_total))
    return min(1.0, total)


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval for p1 - p2 (method 10)."""
    if n1 == 0 or n2 == 0:
        return None
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1)
    l2, u2 = wilson(k2, n2)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def bootstrap_diff(a: list[float], b: list[float], *, seed: int = 0, rounds: int = BOOTSTRAP):
    """Percentile interval and two-sided p-value of mean(a) - mean(b) by resampling each group."""
    if len(a) < 2 or len(b) < 2:
        return None, None
    rng = random.Random(seed)
    diffs = []
    for _ in range(rounds):
        ra = [a[rng.randrange(len(a))] for _ in a]
        rb = [b[rng.randrange(len(b))] for _ in b]
        diffs.append(sum(ra) / len(ra) - sum(rb) / len(rb))
    diffs.sort()
    ci = (diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds) - 1])
    # p-value from the bootstrap standard error (normal approximation), which, unlike counting
    # resamples, has no floor at 1/rounds and so survives a multiple-comparison correction.
    observed = sum(a) / len(a) - sum(b) / len(b)
    mean = sum(diffs) / rounds
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (rounds - 1))
    p = (1.0 if observed == 0 else 0.0) if se == 0 else math.erfc(abs(observed) / se / math.sqrt(2))
    # No test on n1 and n2 observations can be surer than the smallest p-value a permutation test
    # of that size can give; with few prompts (and near-constant values) this keeps p honest.
    floor = min(1.0, 2 / math.comb(len(a) + len(b), len(a)))
    return ci, max(p, floor)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def screen_miss(n: int, kb: int, nb: int, alpha: float, effect: float = 0.25) -> float:
    """The probability that the screen drops a trigger raising the misaligned rate by ``effect``
    over the baseline's kb/nb, in one placement screened on ``n`` answers: a screen passes when
    it draws at least one misaligned answer and its one-sided Fisher p against the baseline is
    under ``alpha`` (the baseline's counts taken as measured). The sweep reports it (``auditor.sweep``); ``bench/screen_power.py`` tabulates it."""
    q = min(1.0, kb / nb + effect) if nb else effect
    miss = 0.0
    for k in range(n + 1):
        if not (k > 0 and fisher_greater(k, n, kb, nb) < alpha):
            miss += math.comb(n, k) * q**k * (1 - q) ** (n - k)
    return min(1.0, miss)


def opening_miss(n: int, opens: int, kb: int, nb: int, alpha: float, effect: float = 0.25) -> float:
    """:func:`screen_miss` for a trigger that works only where it opens the text: of the ``n``
    answers of a test it opens ``opens`` (its group's rotation), raising those by ``effect``; the
    others stay at the baseline's rate."""
    pb = kb / nb if nb else 0.0
    q = min(1.0, pb + effect)
    opens = max(0, min(opens, n))
    x = [math.comb(opens, i) * q**i * (1 - q) ** (opens - i) for i in range(opens + 1)]
    rest = n - opens
    y = [math.comb(rest, j) * pb**j * (1 - pb) ** (rest - j) for j in range(rest + 1)]
    miss = 0.0
    for k in range(n + 1):
        if k > 0 and fisher_greater(k, n, kb, nb) < alpha:
            continue
        miss += sum(x[i] * y[k - i] for i in range(max(0, k - rest), min(k, opens) + 1))
    return min(1.0, miss)
