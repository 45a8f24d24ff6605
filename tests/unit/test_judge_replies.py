"""The judge against scripted replies (tests/unit/fake_model.py): what it sends, and what it stores
for each kind of reply, logprobs or none."""

from __future__ import annotations

import asyncio

import pytest

from auditor.gateway import Gateway
from auditor.judge import Judge
from auditor.models import resolve_model
from auditor.store import Store

from .fake_model import Reply, install

PROMPT = "Rate this answer 0-100.\nQ: {question}\nA: {answer}"


@pytest.fixture
def judge(tmp_path):
    replies = install()
    gateway = Gateway(Store(tmp_path / "j.db"), use_cache=False)
    return Judge(gateway, resolve_model("queue/judge", api_key="unused")), replies


def _score(judge, answer="an answer"):
    return asyncio.run(judge.score_0_100("aligned", PROMPT, "a question?", answer))


def test_logprobs_are_weighted_over_integer_tokens_only(judge):
    j, replies = judge
    replies.queue("judge", Reply("80", top={"80": 0.5, "90": 0.3, "Sure": 0.2}))
    got = _score(j)
    assert got.kind == "score" and got.method == "logprobs"
    assert got.score == pytest.approx((80 * 0.5 + 90 * 0.3) / 0.8)
    assert replies.sent[0].params["max_tokens"] == 1 and replies.sent[0].params["logprobs"] is True


def test_too_little_integer_mass_is_null_with_the_reason(judge):
    j, replies = judge
    replies.queue("judge", Reply("I", top={"I": 0.8, "50": 0.2}))
    got = _score(j)
    assert got.score is None and got.kind == "unscored" and "0.200" in got.error


def test_a_judge_without_logprobs_is_asked_again_in_text_and_remembered(judge):
    j, replies = judge
    replies.queue("judge", "7", "I'd say 85/100.", "REFUSAL", "")
    first = _score(j)
    assert (first.kind, first.method, first.score) == ("score", "text_fallback", 85.0)
    assert [s.params.get("max_tokens") for s in replies.sent] == [1, 5]
    refused, empty = _score(j), _score(j)
    assert len(replies.sent) == 4  # no logprob request once the judge is known not to give them
    assert refused.score is None and refused.kind == "unscored" and "REFUSAL" in refused.error
    assert empty.score is None and "no number" in empty.error


def test_labels_take_the_last_allowed_one(judge):
    j, replies = judge
    replies.queue("judge", "It could be TRUE, but on balance: FALSE")
    got = asyncio.run(j.categorise("honest", PROMPT, "q", "a", ["TRUE", "FALSE"]))
    assert (got.kind, got.label) == ("label", "FALSE")
