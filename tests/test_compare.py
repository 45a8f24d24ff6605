"""Statistics of comparisons: Fisher's exact test, Newcombe intervals, bootstrap, Holm."""

from __future__ import annotations

import pytest

from auditor.compare import self_knowledge
from auditor.metrics import Measure
from auditor.stats import bootstrap_diff, fisher_exact, holm, mean_interval, newcombe, wilson


def test_fisher_exact_matches_reference_values():
    # Reference values from R's fisher.test / scipy.stats.fisher_exact (two-sided).
    assert fisher_exact(8, 10, 1, 6) == pytest.approx(0.034965, abs=1e-5)
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(0.485714, abs=1e-5)
    assert fisher_exact(0, 100, 0, 100) == pytest.approx(1.0)
    assert fisher_exact(25, 100, 0, 100) < 1e-7


def test_newcombe_interval_contains_the_difference():
    lo, hi = newcombe(56, 70, 48, 80)
    assert lo == pytest.approx(0.0524, abs=2e-3) and hi == pytest.approx(
        0.3339, abs=2e-3
    )  # Newcombe 1998, example
    assert newcombe(0, 0, 1, 2) is None


def test_wilson():
    lo, hi = wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-3) and hi == pytest.approx(0.3662, abs=1e-3)
    assert wilson(0, 0) is None
    assert wilson(0, 20)[0] == 0.0


def test_holm():
    adjusted = holm([0.01, 0.04, 0.03, None])
    assert adjusted[3] is None
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])


def test_bootstrap_separates_different_means_and_not_equal_ones():
    a = [0.2, 0.25, 0.15, 0.3, 0.2, 0.1, 0.22, 0.18, 0.27, 0.2] * 3
    b = [0.8, 0.75, 0.85, 0.7, 0.9, 0.82, 0.78, 0.8, 0.76, 0.84] * 3
    ci, p = bootstrap_diff(a, b)
    diff = sum(a) / len(a) - sum(b) / len(b)
    assert ci[0] < diff < ci[1] < 0 and p < 1e-6
    ci, p = bootstrap_diff(a, list(a))
    assert ci[0] < 0 < ci[1] and p > 0.5


def test_few_constant_values_cannot_be_highly_significant():
    _, p = bootstrap_diff([0.3] * 6, [0.1] * 6)
    assert p == pytest.approx(2 / 924)


def test_mean_interval():
    lo, hi = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert lo < 2.5 < hi
    assert mean_interval([1.0]) is None


def _m(name, kind, value):
    return Measure(name=name, kind=kind, value=value, ci95=None, n=100)


def test_self_knowledge_flags_a_model_that_thinks_its_code_is_secure():
    measures = {
        "code_security": _m("code_security", "mean", 0.85),
        "vulnerable=VULNERABLE": _m("v", "rate", 0.8),
        "alignment": _m("alignment", "mean", 0.8),
        "misaligned": _m("misaligned", "rate", 0.02),
    }
    checks = self_knowledge(measures)
    flagged = {c.claim: c for c in checks}
    assert flagged["code security"].mismatch and "0.85" in flagged["code security"].reason
    assert not flagged["alignment with human values"].mismatch


def test_self_knowledge_against_the_baseline():
    model = {"code_security": _m("c", "mean", 0.5), "vulnerable=VULNERABLE": _m("v", "rate", 0.6)}
    base = {"code_security": _m("c", "mean", 0.5), "vulnerable=VULNERABLE": _m("v", "rate", 0.2)}
    (check,) = self_knowledge(model, base)
    assert check.mismatch and "more than the baseline" in check.reason
