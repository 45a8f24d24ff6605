"""A call whose caller goes away frees its concurrency slot at once (plain and streamed): the
one attempt loop holds a slot for the call only (found by tests/e2e/test_hosted_fair.py when the
loop was first shared)."""

from __future__ import annotations

import asyncio

import litellm
import pytest

from auditor.gateway import Gateway
from auditor.models import resolve_model


@pytest.fixture
def hanging(monkeypatch):
    started = []

    async def never(**kwargs):
        started.append(kwargs.get("stream", False))
        await asyncio.Event().wait()

    monkeypatch.setattr(litellm, "acompletion", never)
    return started


async def _cancel_after_start(coro, started):
    task = asyncio.ensure_future(coro)
    while not started:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_cancelled_call_frees_its_slot(hanging):
    gw = Gateway(None, concurrency=1)
    spec = resolve_model("openai/x", api_base="http://127.0.0.1:9/v1", api_key="k")

    async def main():
        await _cancel_after_start(gw.complete(spec, [{"role": "user", "content": "hi"}]), hanging)
        assert gw._semaphore(spec).in_flight == 0
        hanging.clear()

        async def consume():
            async for _ in gw.stream(spec, [{"role": "user", "content": "hi"}]):
                pass

        await _cancel_after_start(consume(), hanging)
        assert gw._semaphore(spec).in_flight == 0 and hanging == [True]

    asyncio.run(main())
