"""The model gateway: every model call of the pipeline goes through it.

Every model call of the auditor (targets and judges, HTTP providers and the in-process organisms)
goes through :meth:`Gateway.complete`, which adds what an audit of thousands of calls needs:

- a concurrency limit per model;
- bounded retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection
  errors, honouring ``Retry-After``; every retry is recorded on the result, and the error is
  recorded when they run out;
- a per-call timeout;
- token usage and cost from LiteLLM's bundled cost map (null when the model is not in it);
- logprobs passed through in the OpenAI shape;
- a response cache in the store keyed on model, endpoint, messages, parameters and sample index,
  so an identical re-run sends no request (not for the in-process simulation: its reply costs
  less than the cache's read and write).

Models are :class:`auditor.models.ModelSpec` (LiteLLM strings such as ``openai/gpt-4o`` or
``organism/insecure``, or aliases from a model-list file); how failures are classified and retried
is :mod:`auditor.limits`. API keys are read from the environment (or passed in memory) and never
stored. LiteLLM is imported by the model layer only: this module, :mod:`auditor.models`,
:mod:`auditor.limits`, :mod:`auditor.batch`, :mod:`auditor.finetune.jobs` and the simulation's
provider (``tests/test_layout.py`` checks it).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import config, credentials, quota

config.offline_defaults()  # before LiteLLM is imported

import litellm  # noqa: E402
from litellm.types.utils import ModelResponse  # noqa: E402

from .limits import (  # noqa: E402
    AdaptiveLimit,
    RetryPolicy,
    retry_after,
    retryable,
    short_error,
    status_of,
    throttled,
)
from .models import LOCAL_PROVIDERS, ModelError, ModelSpec  # noqa: E402
from .netguard import public_net_only  # noqa: E402

if TYPE_CHECKING:
    from .store import Store

litellm.suppress_debug_info = True
litellm.telemetry = False

CANCELLED = "cancelled before a reply: the job was cancelled (run it again to resume)"


class JobCancelled(Exception):
    """The job a call belonged to was cancelled while the call waited."""


def _install_per_loop_logging() -> None:
    """LiteLLM hands each call's success-logging coroutine to one process-wide worker whose queue
    is bound to a single event loop. The app runs several loops at once (Gradio's, and one per
    background job thread); the worker then rebinds back and forth, re-awaits coroutines
    ("cannot reuse already awaited coroutine") and floods stderr. Run each logging coroutine as a
    task on the loop that produced it instead: the same work, no shared queue."""
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # an older or newer LiteLLM without the worker: nothing to do
        return
    if getattr(GLOBAL_LOGGING_WORKER.ensure_initialized_and_enqueue, "_auditor", False):
        return  # (installed by an earlier gateway)
    tasks: set[asyncio.Task] = set()

    def _done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # logging is best effort; never "exception was never retrieved"

    def enqueue(async_coroutine, *args, **kwargs) -> None:
        if not (litellm.callbacks or litellm.success_callback or litellm._async_success_callback):
            async_coroutine.close()  # nobody listens: the handler would only spend CPU
            return
        try:
            task = asyncio.get_running_loop().create_task(async_coroutine)
        except RuntimeError:  # no running loop: drop it, as LiteLLM itself does
            async_coroutine.close()
            return
        tasks.add(task)
        task.add_done_callback(_done)

    enqueue._auditor = True  # type: ignore[attr-defined]
    GLOBAL_LOGGING_WORKER.ensure_initialized_and_enqueue = enqueue


@dataclass
class CallResult:
    """What one logical call produced, after retries (or from the cache)."""

    text: str | None = None
    error: str | None = None
    status_code: int | None = None
    finish_reason: str | None = None
    logprobs: list[dict] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    attempts: int = 0
    retries: list[dict] = field(default_factory=list)
    cached: bool = False
    model: str | None = None
    response_id: str | None = None
    reasoning: str | None = None  # a reasoning model's thinking, when the provider returns it

    @property
    def ok(self) -> bool:
        return self.error is None

    def cache_payload(self) -> dict:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "logprobs": self.logprobs,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "model": self.model,
            "response_id": self.response_id,
            **({"reasoning": self.reasoning} if self.reasoning else {}),
        }


@dataclass
class GatewayStats:
    calls_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    cost_usd: float = 0.0
    cost_unknown_calls: int = 0


def cache_key(spec: ModelSpec, messages: list[dict], params: dict, sample_index: int) -> str:
    blob = json.dumps(
        {
            "model": spec.model,
            "api_base": spec.api_base,
            "extra": spec.extra,
            "messages": messages,
            "params": params,
            "sample_index": sample_index,
            # an answer bought with one key is served only to callers presenting that key
            **({"credential": credential} if (credential := credentials.credential_id(spec)) else {}),
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class Gateway:
    """Async access to any model, with limits, retries, costs and the response cache."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        concurrency: int = 16,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        use_cache: bool = True,
        adaptive: bool = True,
        meter: quota.Meter | None = None,
    ):
        """``meter``: the budget of the person these calls are for; calls that carry a key the
        server holds are counted against it and refused once it is spent (public instances)."""
        self.store = store
        self.meter = meter
        self.adaptive = adaptive
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = retry or RetryPolicy.from_settings()
        self.use_cache = use_cache and store is not None
        self.stats = GatewayStats()
        self._limits: dict[tuple, AdaptiveLimit] = {}
        _install_per_loop_logging()
        # Set from another thread (the app's Cancel button) to stop the runs using this gateway.
        self.cancel_event: threading.Event | None = None

    def for_meter(self, meter: quota.Meter | None) -> Gateway:
        """This gateway for one person's calls: the same limits, cache and statistics, their budget."""
        if meter is None:
            return self
        view = copy.copy(self)
        view.meter = meter
        return view

    async def _unless_cancelled(self, call):
        """Await a model call; when this gateway's job is cancelled meanwhile, close the call (its
        connection) at once and raise :class:`JobCancelled` instead of waiting for a reply."""
        if self.cancel_event is None:
            return await call
        task = asyncio.ensure_future(call)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    return task.result()
                if self.cancel_event.is_set():
                    raise JobCancelled
        finally:
            if not task.done():
                task.cancel()

    async def _cancelled_during(self, seconds: float) -> bool:
        """Wait out a retry's backoff, or until this gateway's job is cancelled (True)."""
        ends = time.monotonic() + seconds
        while True:
            if self.cancel_event is not None and self.cancel_event.is_set():
                return True
            left = ends - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, 0.25) if self.cancel_event is not None else left)

    def _credentials(self, spec: ModelSpec, base: str | None, kwargs: dict) -> str | None:
        """Put the address and the key for one attempt into ``kwargs`` (the key the policy allows
        toward that address, never a fallback); returns the key, for redaction."""
        key = spec.key(base)
        kwargs.pop("api_key", None)
        kwargs.pop("api_base", None)
        if key:
            kwargs["api_key"] = key
        if base:
            kwargs["api_base"] = base
        return key

    def _charge(
        self, spec: ModelSpec, messages: list[dict], max_tokens: int | None
    ) -> tuple[str | None, int]:
        """When the call spends a credential the server holds, reserve one call and the tokens it
        may use from the person's budget; returns the refusal (or None) and the tokens reserved."""
        if self.meter is None or not credentials.uses_server_key(spec):
            return None, 0
        tokens = quota.reserved_tokens(messages, max_tokens)
        return self.meter.take(tokens), tokens

    def _settle(
        self, reserved: int, messages: list[dict], tokens: int | None = None, reply_chars: int = 0
    ) -> None:
        """Replace a reservation with the tokens the reply reported (``tokens``; None for a failed
        call, which counts nothing); a reply that reports no usage is counted at about four
        characters a token, prompt included."""
        if not reserved or self.meter is None:
            return
        if tokens == 0:
            tokens = quota.reserved_tokens(messages, 0) + reply_chars // 4 + 1
        self.meter.settle(reserved, tokens or 0)

    def _pick(self, spec: ModelSpec) -> str | None:
        """The address for the next call: with replicas, the one with the fewest calls in flight
        relative to its limit (ties go to the first)."""
        if not spec.replicas:
            return spec.api_base

        def load(base: str | None) -> float:
            lim = self._semaphore(spec, base)
            return lim.in_flight / lim.limit

        return min([spec.api_base, *spec.replicas], key=load)

    def _semaphore(self, spec: ModelSpec, api_base: str | None = None) -> AdaptiveLimit:
        """The concurrency limit of one model at one address (in-process models never throttle)."""
        key = (spec.model, api_base or spec.api_base)
        lim = self._limits.get(key)
        if lim is None:
            lim = self._limits[key] = AdaptiveLimit(
                spec.max_concurrency or self.concurrency, adaptive=self.adaptive and not spec.is_local
            )
        return lim

    def concurrency_report(self) -> dict:
        """Per model: the limit's maximum, lowest and final value, its cuts (on 429) and grows."""
        return {
            f"{m}@{b}" if b else m: lim.summary()
            for (m, b), lim in self._limits.items()
            if not m.startswith(LOCAL_PROVIDERS)
        }

    async def complete(
        self,
        spec: ModelSpec,
        messages: list[dict],
        *,
        temperature: float | None = 1.0,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        seed: int | None = None,
        sample_index: int = 0,
        cache: bool = True,
        max_completion_tokens: int | None = None,
    ) -> CallResult:
        """One call (from the cache if asked before); ``temperature=None`` sends none (reasoning
        models take only their default), ``max_completion_tokens`` includes their thinking."""
        given = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        given["max_completion_tokens"] = max_completion_tokens
        params: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if logprobs:
            params["logprobs"] = True
            if top_logprobs:
                params["top_logprobs"] = top_logprobs
        key = None
        if cache and self.use_cache and not spec.is_local:
            key = cache_key(spec, messages, params, sample_index)
            hit = self.store.cache_get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                return CallResult(**hit, cached=True, attempts=0, latency_ms=0.0)
        result = await self._call_with_retries(spec, messages, params)
        if key is not None and result.ok:
            self.store.cache_put(key, spec.model, result.cache_payload())
        return result

    async def _call_with_retries(self, spec: ModelSpec, messages: list[dict], params: dict) -> CallResult:
        result = CallResult()
        sent = await self._send(spec, messages, params, result)
        if sent is None:
            return result
        response, limit, reserved, _ = sent
        await limit.success()
        fill_result(result, response, spec, self.stats)
        self._settle(
            reserved,
            messages,
            (result.prompt_tokens or 0) + (result.completion_tokens or 0),
            len(result.text or ""),
        )
        return result

    async def _send(
        self, spec: ModelSpec, messages: list[dict], params: dict, result: CallResult, *, stream: bool = False
    ) -> tuple[Any, AdaptiveLimit, int, str | None] | None:
        """The one attempt loop of every call, plain or streamed. Each attempt picks an address
        (a retry may go to another replica), takes the key the policy allows toward it, reserves
        the person's budget and holds one concurrency slot for the call only: a call waiting out
        a 429's backoff holds none. Retries are recorded on ``result``; when they run out, or the
        error cannot be retried, ``result.error`` says why and None is returned. On success
        returns the response, its limit, the tokens reserved and the key sent (for redaction); a streamed response still holds
        its slot, which the caller releases when the stream ends."""
        if spec.is_local:
            from .sim import provider  # (a spec made by hand, not resolved: plug the simulation in)

            provider.register()
        kwargs = {**params, **spec.extra}
        if not spec.is_local:
            kwargs["drop_params"] = True
        for attempt in range(self.retry.max_retries + 1):
            result.attempts = attempt + 1
            base = self._pick(spec)
            try:
                key = self._credentials(spec, base, kwargs)
            except ModelError as e:
                result.error = str(e)
                return None
            limit = self._semaphore(spec, base)
            refused, reserved = self._charge(spec, messages, params.get("max_tokens"))
            if refused is not None:
                result.error = refused
                self.stats.failures += 1
                return None
            await limit.__aenter__()
            try:
                started = time.perf_counter()
                self.stats.calls_sent += 1
                with public_net_only(spec.public_net):
                    response = await self._unless_cancelled(
                        asyncio.wait_for(
                            litellm.acompletion(
                                model=spec.model,
                                messages=messages,
                                stream=stream,
                                timeout=self.timeout,
                                num_retries=0,
                                max_retries=0,
                                **kwargs,
                            ),
                            timeout=self.timeout + 10,
                        )
                    )
            except JobCancelled:
                await limit.__aexit__(None, None, None)
                self._settle(reserved, messages)
                result.error = CANCELLED
                return None
            except asyncio.CancelledError:  # the caller went away (a chat's client, a cancelled task)
                await limit.__aexit__(None, None, None)  # its slot is free at once, not at GC
                self._settle(reserved, messages)
                raise
            except Exception as exc:  # noqa: BLE001  (every provider error is classified below)
                await limit.__aexit__(None, None, None)
                self._settle(reserved, messages)
                status = status_of(exc)
                if throttled(exc, status):
                    limit.throttled()
                if isinstance(exc, asyncio.TimeoutError):
                    exc = TimeoutError(f"no reply within {self.timeout:.0f}s")
                # In-process models fail the same way every time: no point in waiting and retrying.
                if not retryable(exc) or spec.is_local or attempt == self.retry.max_retries:
                    result.error = short_error(exc, key)
                    result.status_code = status
                    if retryable(exc) and not spec.is_local:
                        result.error = f"gave up after {attempt + 1} attempts: {result.error}"
                    self.stats.failures += 1
                    return None
                wait = self.retry.backoff(attempt)
                after = retry_after(exc)
                if after is not None:
                    if after > self.retry.max_retry_after:
                        result.error = (
                            f"provider asked to wait {after:.0f}s (over the "
                            f"{self.retry.max_retry_after:.0f}s limit): {short_error(exc, key)}"
                        )
                        result.status_code = status
                        self.stats.failures += 1
                        return None
                    wait = after + random.uniform(0, 0.1 * after + 0.05)
                result.retries.append(
                    {
                        "attempt": attempt + 1,
                        "status": status,
                        "error": short_error(exc, key)[:160],
                        "retry_after": after,
                        "wait_s": round(wait, 3),
                    }
                )
                self.stats.retries += 1
                if await self._cancelled_during(wait):
                    result.error = CANCELLED
                    return None
                continue
            result.latency_ms = (time.perf_counter() - started) * 1000
            if not stream:
                await limit.__aexit__(None, None, None)
            return response, limit, reserved, key
        return None  # pragma: no cover (the loop always returns)

    async def stream(
        self,
        spec: ModelSpec,
        messages: list[dict],
        *,
        temperature: float = 1.0,
        max_tokens: int | None = None,
        seed: int | None = None,
        result: CallResult | None = None,
    ):
        """Yield the reply as text pieces as they arrive (for chat). Errors before the first piece
        are retried by the same loop as :meth:`complete` (recorded on ``result`` when given); the
        in-process models stream their reply word by word."""
        if spec.is_local:
            done = await self.complete(
                spec, messages, temperature=temperature, max_tokens=max_tokens, seed=seed, cache=False
            )
            if result is not None:
                result.__dict__.update(done.__dict__)
            if not done.ok:
                raise ModelError(done.error)
            for piece in re.findall(r"\S+\s*|\s+", done.text or ""):
                yield piece
                await asyncio.sleep(0)
            return
        params: dict[str, Any] = {"temperature": temperature}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if seed is not None:
            params["seed"] = seed
        if self.meter is not None and credentials.uses_server_key(spec):
            params["stream_options"] = {"include_usage": True}  # the tokens a visitor's budget counts
        result = result if result is not None else CallResult()
        sent = await self._send(spec, messages, params, result, stream=True)
        if sent is None:
            raise ModelError(result.error)
        response, limit, reserved, key = sent
        tokens, chars, pieces = 0, 0, []
        chunks = response.__aiter__()
        try:
            while True:
                # Some providers connect only when the first chunk is asked for: the address
                # guard holds for every step (set and reset around it, never across a yield).
                with public_net_only(spec.public_net):
                    try:
                        chunk = await self._unless_cancelled(chunks.__anext__())
                    except StopAsyncIteration:
                        break
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    tokens = (getattr(usage, "prompt_tokens", 0) or 0) + (
                        getattr(usage, "completion_tokens", 0) or 0
                    )
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    chars += len(delta)
                    pieces.append(delta)
                    yield delta
            await limit.success()
        except JobCancelled:
            raise ModelError(CANCELLED) from None
        except Exception as exc:  # noqa: BLE001  (a stream broken halfway: one redacted line)
            raise ModelError(short_error(exc, key)) from None
        finally:
            result.text = "".join(pieces)
            await limit.__aexit__(None, None, None)
            self._settle(reserved, messages, tokens, chars)


def fill_result(
    result: CallResult,
    response: ModelResponse,
    spec: ModelSpec,
    stats: GatewayStats,
    *,
    price_factor: float = 1.0,
) -> None:
    """Copy a LiteLLM response into ``result``: text, finish reason, logprobs, usage and cost
    (counted in ``stats``; ``price_factor`` is the Batch API's discount). The gateway and the
    Batch API path both use it."""
    choice = response.choices[0]
    result.text = choice.message.content or ""
    result.reasoning = getattr(choice.message, "reasoning_content", None) or None
    result.finish_reason = choice.finish_reason
    result.model = getattr(response, "model", None) or spec.model
    result.response_id = getattr(response, "id", None)
    lp = getattr(choice, "logprobs", None)
    if lp is not None:
        content = lp.get("content") if isinstance(lp, dict) else getattr(lp, "content", None)
        if content is not None:
            result.logprobs = [c if isinstance(c, dict) else c.model_dump(exclude={"bytes"}) for c in content]
    usage = getattr(response, "usage", None)
    if usage is not None:
        result.prompt_tokens = usage.prompt_tokens
        result.completion_tokens = usage.completion_tokens
    cost = call_cost(spec, result)
    result.cost_usd = None if cost is None else cost * price_factor
    if result.cost_usd is None:
        stats.cost_unknown_calls += 1
    else:
        stats.cost_usd += result.cost_usd


def call_cost(spec: ModelSpec, result: CallResult) -> float | None:
    if spec.is_local:
        return 0.0
    price = price_per_token(spec.model)
    if price is None or result.prompt_tokens is None:
        return None
    return result.prompt_tokens * price[0] + (result.completion_tokens or 0) * price[1]


_PRICES: dict[str, tuple[float, float] | None] = {}


def price_per_token(model: str) -> tuple[float, float] | None:
    """(input, output) USD per token from LiteLLM's bundled cost map; None when unknown."""
    if model in _PRICES:
        return _PRICES[model]
    provider, _, name = model.partition("/")
    if provider in LOCAL_PROVIDERS:
        _PRICES[model] = (0.0, 0.0)
        return _PRICES[model]
    price = None
    for candidate in (model, name) if name else (model,):
        try:
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=candidate, prompt_tokens=1_000_000, completion_tokens=1_000_000
            )
        except Exception:  # noqa: BLE001  (LiteLLM raises for models it does not map)
            continue
        price = (prompt_cost / 1_000_000, completion_cost / 1_000_000)
        break
    _PRICES[model] = price
    return price


def litellm_version() -> str:
    from importlib.metadata import version

    return version("litellm")
