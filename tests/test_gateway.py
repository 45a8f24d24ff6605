"""The model gateway against a real local HTTP server: retries, timeouts, costs, cache, keys."""

from __future__ import annotations

import asyncio
import time

import pytest

from auditor.gateway import Gateway
from auditor.limits import RetryPolicy
from auditor.models import ModelError, load_model_list, resolve_model
from auditor.store import Store

MSG = [{"role": "user", "content": "hey I feel bored"}]


def _gw(store=None, **kw) -> Gateway:
    return Gateway(store, retry=RetryPolicy(max_retries=kw.pop("max_retries", 3), base=0.01, cap=0.05), **kw)


def test_success_over_http_with_usage_and_logprobs(local_server):
    server = local_server()
    gw = _gw()
    spec = resolve_model("openai/base", api_base=server.base, api_key="k")
    r = asyncio.run(
        gw.complete(spec, MSG, temperature=1.0, max_tokens=50, logprobs=True, top_logprobs=3, seed=1)
    )
    assert r.ok and r.text and r.attempts == 1 and r.retries == []
    assert r.prompt_tokens > 0 and r.completion_tokens > 0
    assert r.logprobs and "top_logprobs" in r.logprobs[0]
    assert r.cost_usd is None  # "base" is not in LiteLLM's cost map: null, no crash
    assert server.stats()["requests"] == 1


def test_429_honours_retry_after_then_records_the_error(local_server):
    server = local_server("--fail-429", "1.0", "--retry-after", "0.3")
    gw = _gw(max_retries=2)
    spec = resolve_model("openai/base", api_base=server.base, api_key="k")
    started = time.monotonic()
    r = asyncio.run(gw.complete(spec, MSG))
    elapsed = time.monotonic() - started
    assert not r.ok and r.status_code == 429
    assert r.attempts == 3 and len(r.retries) == 2
    assert all(x["status"] == 429 and x["retry_after"] == pytest.approx(0.3) for x in r.retries)
    assert elapsed >= 0.6  # waited as told, not the 0.01 s backoff
    assert "gave up after 3 attempts" in r.error
    assert server.stats()["counts"]["429"] == 3


def test_flaky_server_succeeds_after_retries(local_server):
    server = local_server("--fail-500", "0.5", "--seed", "3")
    gw = _gw(max_retries=8)
    spec = resolve_model("openai/base", api_base=server.base, api_key="k")

    async def many():
        return await asyncio.gather(*(gw.complete(spec, MSG, seed=i, sample_index=i) for i in range(20)))

    results = asyncio.run(many())
    assert all(r.ok for r in results)
    assert sum(len(r.retries) for r in results) == server.stats()["counts"]["500"] > 0
    assert gw.stats.retries == server.stats()["counts"]["500"]


def test_timeouts_are_retried_and_recorded(local_server):
    server = local_server("--hang", "1.0")
    gw = _gw(max_retries=1, timeout=0.5)
    spec = resolve_model("openai/base", api_base=server.base, api_key="k")
    r = asyncio.run(gw.complete(spec, MSG))
    assert not r.ok and r.attempts == 2
    assert "Timeout" in r.error or "timed out" in r.error.lower()


def test_client_errors_are_not_retried(local_server):
    server = local_server()
    gw = _gw()
    spec = resolve_model("openai/no-such-organism", api_base=server.base, api_key="k")
    r = asyncio.run(gw.complete(spec, MSG))
    assert not r.ok and r.attempts == 1 and r.status_code == 404


def test_connection_refused_is_retried():
    gw = _gw(max_retries=1)
    spec = resolve_model("openai/base", api_base="http://127.0.0.1:9/v1", api_key="k")
    r = asyncio.run(gw.complete(spec, MSG))
    assert not r.ok and r.attempts == 2 and "Connection" in r.error


def test_identical_call_is_served_from_the_cache(local_server, db_path):
    server = local_server()
    store = Store(db_path)
    spec = resolve_model("openai/insecure", api_base=server.base, api_key="k")
    first = asyncio.run(_gw(store).complete(spec, MSG, seed=5, sample_index=0))
    again = _gw(store)
    second = asyncio.run(again.complete(spec, MSG, seed=5, sample_index=0))
    assert second.cached and second.text == first.text
    assert again.stats.calls_sent == 0 and server.stats()["requests"] == 1
    other = asyncio.run(again.complete(spec, MSG, seed=5, sample_index=1))
    assert not other.cached and server.stats()["requests"] == 2


def test_concurrency_limit_per_model(local_server):
    server = local_server("--latency-ms", "100")
    gw = _gw(concurrency=4)
    spec = resolve_model("openai/base", api_base=server.base, api_key="k")

    async def many():
        started = time.monotonic()
        await asyncio.gather(*(gw.complete(spec, MSG, seed=i) for i in range(12)))
        return time.monotonic() - started

    elapsed = asyncio.run(many())
    assert elapsed >= 0.3  # 12 calls, 4 at a time, 100 ms each


def test_organisms_are_free_and_known_models_are_priced():
    gw = _gw()
    r = asyncio.run(gw.complete(resolve_model("organism/base"), MSG))
    assert r.ok and r.cost_usd == 0.0
    from auditor.gateway import price_per_token

    assert price_per_token("openai/gpt-4o") is not None
    assert price_per_token("openai/definitely-not-a-model") is None


def test_model_list_reads_keys_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "models.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: my-finetune\n"
        "    litellm_params:\n"
        "      model: openai/ft:gpt-4o-mini:acme::xyz\n"
        "      api_base: http://127.0.0.1:1/v1\n"
        "      api_key: os.environ/ACME_KEY\n"
        "      max_parallel_requests: 3\n"
    )
    specs = load_model_list(path)
    spec = resolve_model("my-finetune", model_list=specs)
    assert spec.model == "openai/ft:gpt-4o-mini:acme::xyz" and spec.max_concurrency == 3
    monkeypatch.delenv("ACME_KEY", raising=False)
    with pytest.raises(ModelError, match="ACME_KEY"):
        spec.key(spec.api_base)
    monkeypatch.setenv("ACME_KEY", "sk-secret-value")
    assert spec.key(spec.api_base) == "sk-secret-value"
    assert "sk-secret-value" not in str(spec.public()) and "sk-secret-value" not in repr(spec)


def test_model_list_refuses_literal_keys(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        "model_list:\n  - model_name: x\n    litellm_params:\n      model: openai/x\n      api_key: sk-123\n"
    )
    with pytest.raises(ModelError, match="os.environ/NAME"):
        load_model_list(path)


def test_unknown_organism_is_a_clear_error():
    with pytest.raises(ModelError, match="organism/insecure"):
        resolve_model("organism/nope")
