"""The pre-run estimate: calls, tokens and cost, offline."""

from __future__ import annotations

from auditor import probesets
from auditor.estimate import count_message_tokens, estimate
from auditor.models import resolve_model


def test_counts_calls_and_prices_known_models():
    cases = probesets.load("em-core").cases(samples=2)
    e = estimate(cases, resolve_model("openai/gpt-4o-mini"), resolve_model("openai/gpt-4o"))
    assert e.target_calls == 192 and e.judge_calls == 384
    assert e.input_tokens > 192 * 20
    assert 0 < e.cost_usd < e.cost_usd_max
    assert "$" in e.line()


def test_unknown_prices_are_said_not_guessed():
    cases = probesets.load("em-core").cases(samples=1)
    e = estimate(cases, resolve_model("openai/my-own-model"), resolve_model("offline/judge"))
    assert e.cost_usd is None and e.unknown_prices == ["openai/my-own-model"]
    assert "cost unknown" in e.line()


def test_organisms_are_free():
    cases = probesets.load("em-core").cases(samples=1)
    assert estimate(cases, resolve_model("organism/insecure"), resolve_model("offline/judge")).cost_usd == 0


def test_resumed_runs_estimate_only_what_remains():
    cases = probesets.load("em-core").cases(samples=3)
    e = estimate(
        cases, resolve_model("organism/base"), resolve_model("offline/judge"), remaining={cases[0].case_id: 2}
    )
    assert e.target_calls == 2 and e.judge_calls == 4


def test_message_tokens_offline():
    assert count_message_tokens("openai/gpt-4o", [{"role": "user", "content": "hello world"}]) == 3 + 4 + 2
