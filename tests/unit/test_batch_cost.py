"""A batch answer costs the Batch API's price: half the synchronous one (moved with issue 14:
the cost used to be a Gateway method the batch gateway overrode)."""

from __future__ import annotations

import pytest

from auditor.batch import BATCH_DISCOUNT, BatchGateway
from auditor.gateway import price_per_token
from auditor.models import resolve_model
from auditor.store import Store


def _item(prompt: int, completion: int) -> dict:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return {"custom_id": "r1", "response": {"status_code": 200, "body": body}}


def test_a_batch_answer_is_priced_at_the_batch_discount(tmp_path):
    spec = resolve_model("openai/gpt-4o-mini")
    price = price_per_token(spec.model)
    assert price is not None and price[0] > 0  # (LiteLLM's bundled cost map knows it)
    gateway = BatchGateway(Store(tmp_path / "s.db"))
    result = gateway._result(spec, _item(1000, 200))
    assert result.ok and result.text == "hi"
    full = 1000 * price[0] + 200 * price[1]
    assert result.cost_usd == pytest.approx(full * BATCH_DISCOUNT) and BATCH_DISCOUNT == 0.5
    assert gateway.stats.cost_usd == pytest.approx(full * BATCH_DISCOUNT)
