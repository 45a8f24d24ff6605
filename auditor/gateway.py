"""The model gateway: the only module that talks to LiteLLM.

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
  so an identical re-run sends no request.

Models are LiteLLM strings (``openai/gpt-4o``, ``together_ai/...``, ``ollama/...``,
``organism/insecure``) or aliases from a model-list file in LiteLLM's proxy format.
API keys are read from the environment (or passed in memory) and never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import email.utils
import functools
import hashlib
import json
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import litellm
import yaml
from litellm import CustomLLM
from litellm.types.utils import Choices, Message, ModelResponse, Usage
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from . import offline_judge, organisms, policy  # auditor/__init__ applied the offline settings first
from .secrets import redact

if TYPE_CHECKING:
    from .store import Store

litellm.suppress_debug_info = True
litellm.telemetry = False

# While set, sockets opened in this context connect only to public internet addresses: calls to an
# API base a visitor of a public instance typed. The app refuses private addresses before calling
# (policy.check_base); this second check, as each socket connects, also covers redirects and DNS
# answers that change between the check and the connection.
_PUBLIC_NET_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("auditor_public_net", default=False)


CANCELLED = "cancelled before a reply: the job was cancelled (run it again to resume)"


class JobCancelled(Exception):
    """The job a call belonged to was cancelled while the call waited."""


class BlockedAddress(ConnectionRefusedError):
    """A connection the public-network guard refused (never opened)."""


def _install_connect_guard() -> None:
    if getattr(socket.socket.connect, "_auditor_guard", False):
        return
    plain_connect, plain_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refused(sock: socket.socket, address) -> bool:
        return (
            _PUBLIC_NET_ONLY.get()
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            and not policy.is_public_ip(str(address[0]))
        )

    def connect(self, address):
        if refused(self, address):
            raise BlockedAddress(policy.REFUSED_BASE)
        return plain_connect(self, address)

    def connect_ex(self, address):
        if refused(self, address):
            raise BlockedAddress(policy.REFUSED_BASE)
        return plain_connect_ex(self, address)

    connect._auditor_guard = True  # type: ignore[attr-defined]
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


_install_connect_guard()


@contextlib.contextmanager
def public_net_only(on: bool = True):
    """Within this block (and the tasks it starts), connect only to public internet addresses."""
    token = _PUBLIC_NET_ONLY.set(on or _PUBLIC_NET_ONLY.get())
    try:
        yield
    finally:
        _PUBLIC_NET_ONLY.reset(token)


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

    GLOBAL_LOGGING_WORKER.ensure_initialized_and_enqueue = enqueue


_install_per_loop_logging()

LOCAL_PROVIDERS = ("organism", "offline")


@functools.lru_cache(maxsize=4096)
def route(
    model: str, api_base: str | None = None, custom_llm_provider: str | None = None
) -> tuple[str | None, bool]:
    """How LiteLLM routes ``model`` at ``api_base``: the provider it calls (an unprefixed
    ``gemini-2.5-flash`` goes to Vertex AI, ``anthropic.claude-v2`` to Bedrock, a bare name at a
    known provider's address to that provider), and whether it then replaces the key it is given
    with one read from the environment (it does for some providers' addresses). The provider is
    None for a string LiteLLM cannot route at all (the call will fail). ``custom_llm_provider`` is a
    model-list entry's own routing, which the call passes too."""
    prefix = model.split("/", 1)[0] if "/" in model else None
    if prefix in LOCAL_PROVIDERS:
        return prefix, False
    probe = "em-auditor-probe-key"
    try:
        _, provider, dynamic_key, _ = litellm.get_llm_provider(
            model, custom_llm_provider=custom_llm_provider, api_base=api_base, api_key=probe
        )
    except Exception:  # noqa: BLE001  (LiteLLM raises for strings it cannot route; the call will fail)
        return None, False
    return str(provider), dynamic_key is not None and dynamic_key != probe


class ModelError(Exception):
    """A model name or model-list file that cannot be used; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------
# Model specifications


class ModelSpec(BaseModel):
    """One callable model. ``api_key`` (the caller's own key) never leaves memory; ``api_key_env``
    names the variable of a key the server holds, which goes only to ``key_bases``, the addresses
    it was configured for (see :mod:`auditor.policy`)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="what the user called it: an alias or a LiteLLM string")
    model: str = Field(description="the LiteLLM model string")
    api_base: str | None = None
    api_key_env: str | None = None
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    max_concurrency: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    replicas: tuple[str, ...] = Field(
        default=(), description="more api_bases serving the same model; calls go to the least busy"
    )
    key_bases: tuple[str | None, ...] = Field(
        default=(), exclude=True, description="where a key the server holds may go (set on creation)"
    )
    owner_terminal: bool = Field(
        default=False, exclude=True, description="the command line: environment keys may go to --api-base"
    )
    visitors: bool = Field(
        default=False,
        exclude=True,
        description="listed for visitors of a public instance (model_info.public)",
    )
    alias: bool = Field(default=False, exclude=True, description="an entry of the owner's model-list file")
    public_net: bool = Field(
        default=False,
        exclude=True,
        description="an API base a public visitor typed: its calls connect only to public addresses",
    )

    @model_validator(mode="before")
    @classmethod
    def _configured_bases(cls, data: Any) -> Any:
        # A key the server holds is bound to the addresses the spec was made with; overriding
        # api_base later (model_copy) leaves the binding where it was.
        if isinstance(data, dict) and not data.get("key_bases"):
            data = {**data, "key_bases": (data.get("api_base"), *(data.get("replicas") or ()))}
        return data

    @property
    def provider(self) -> str:
        """The provider LiteLLM will call at the spec's own address (see :func:`route`)."""
        routed = route(self.model, self.api_base)[0]
        return routed or (self.model.split("/", 1)[0] if "/" in self.model else "openai")

    def route(self, base: str | None) -> tuple[str | None, bool]:
        return route(self.model, base, self.extra.get("custom_llm_provider"))

    @property
    def is_local(self) -> bool:
        return self.provider in LOCAL_PROVIDERS

    @property
    def user_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None

    def public(self) -> dict:
        """A description safe to store and show: no key, only the name of its variable, and the
        credential's identity (a fingerprint of a caller's key, or the variable the server reads)."""
        out = self.model_dump(exclude={"api_key"}, exclude_none=True)
        if not out.get("extra"):
            out.pop("extra", None)
        if not out.get("replicas"):
            out.pop("replicas", None)  # (so run ids of single-address models stay as they were)
        credential = policy.credential_id(self)
        if credential is not None:
            out["credential"] = credential
        return out

    def key(self, base: str | None) -> str | None:
        """The key to send with a call to ``base``; None lets LiteLLM read the provider's key from
        the environment (toward the provider's own endpoint only, except on the command line)."""
        return policy.key_for(self, base)


def load_model_list(path: str | Path) -> dict[str, ModelSpec]:
    """Read a LiteLLM proxy-style ``model_list`` file (YAML or JSON).

    Each entry has ``model_name`` (the alias) and ``litellm_params`` with ``model`` and optionally
    ``api_base``, ``api_key`` (written ``os.environ/NAME``) and ``max_parallel_requests``.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: model-list file not found") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise ModelError(f"{path}{where}: not valid YAML ({e.__class__.__name__}); fix the syntax") from None
    entries = data.get("model_list") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ModelError(f"{path}: expected a top-level 'model_list:' list as in LiteLLM's proxy config")
    specs: dict[str, ModelSpec] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: model_list[{i}]"
        if not isinstance(entry, dict) or "model_name" not in entry:
            raise ModelError(f"{where}: each entry needs 'model_name' and 'litellm_params'")
        params = dict(entry.get("litellm_params") or {})
        if "model" not in params:
            raise ModelError(f"{where} ({entry['model_name']}): litellm_params.model is missing")
        key = params.pop("api_key", None)
        key_env = None
        if key is not None:
            if not (isinstance(key, str) and key.startswith("os.environ/")):
                raise ModelError(
                    f"{where} ({entry['model_name']}): api_key must be written 'os.environ/NAME' "
                    "so that keys stay in the environment, never in files"
                )
            key_env = key.split("/", 1)[1]
        name, model, base = str(entry["model_name"]), params.pop("model"), params.pop("api_base", None)
        if name.startswith(policy.BUILTIN_PREFIXES):
            raise ModelError(
                f"{where} ({name}): organism/* and offline/* are built-in names; choose another model_name"
            )
        info = entry.get("model_info") or {}
        if not isinstance(info, dict) or not isinstance(info.get("public", False), bool):
            raise ModelError(f"{where} ({name}): model_info.public must be true or false")
        if name in specs:  # another deployment of the same model: a replica (as LiteLLM's router does)
            first = specs[name]
            if first.model != model or first.api_key_env != key_env or base is None:
                raise ModelError(
                    f"{where} ({name}): a repeated model_name must be the same model at another api_base"
                    f" (replicas); {model!r} differs from {first.model!r} or has no api_base"
                )
            specs[name] = first.model_copy(
                update={"replicas": (*first.replicas, base), "key_bases": (*first.key_bases, base)}
            )
            continue
        specs[name] = ModelSpec(
            name=name,
            model=model,
            api_base=base,
            api_key_env=key_env,
            max_concurrency=params.pop("max_parallel_requests", None),
            extra=params,
            visitors=info.get("public", False),
            alias=True,
        )
    return specs


def default_model_list_path() -> Path | None:
    env = os.environ.get("AUDITOR_MODELS")
    if env:
        return Path(env)
    return None


def resolve_model(
    name: str,
    *,
    api_base: str | None = None,
    api_key: str | None = None,
    model_list: dict[str, ModelSpec] | None = None,
    owner_terminal: bool = False,
) -> ModelSpec:
    """Turn what the user typed into a :class:`ModelSpec`. Built-in names (``organism/*``,
    ``offline/*``) come first and cannot be shadowed, then the aliases of ``model_list`` (the
    model-list file and registered fine-tunes), then any LiteLLM model string. An ``api_base``
    given here is the caller's: a key the server holds for the alias does not follow it.
    ``owner_terminal`` (the command line) lets environment keys go to such an ``api_base``."""
    name = name.strip()
    key = SecretStr(api_key) if api_key else None
    if name.startswith(policy.BUILTIN_PREFIXES):
        provider, _, short = name.partition("/")
        if provider == "organism" and short not in organisms.NAMES:
            raise ModelError(
                f"unknown organism {name!r}; choose one of: "
                + ", ".join(f"organism/{n}" for n in organisms.NAMES)
            )
        if provider == "offline" and name != offline_judge.MODEL_NAME:
            raise ModelError(
                f"unknown offline model {name!r}; the offline judge is {offline_judge.MODEL_NAME}"
            )
        return ModelSpec(name=name, model=name)
    if not name:
        raise ModelError("no model given; name an organism, a model-list alias or a LiteLLM model string")
    if model_list and name in model_list:
        spec = model_list[name]
        updates: dict[str, Any] = {}
        if api_base:  # the caller's address replaces the configured ones, and nothing else of
            # the entry's configuration follows it there (its headers, routing, credentials)
            updates.update(api_base=api_base, replicas=(), extra={})
        if key is not None:
            updates["api_key"] = key
    else:
        spec = ModelSpec(name=name, model=name, api_base=api_base, api_key=key)
        updates = {}
    if owner_terminal and api_base:  # an address typed at the owner's terminal, not a stored one
        updates["owner_terminal"] = True
    return spec.model_copy(update=updates) if updates else spec


# ---------------------------------------------------------------------------------------------
# The in-process provider for organisms and the offline judge


class _LocalModels(CustomLLM):
    """Serves ``organism/<name>`` and ``offline/judge`` inside the process, logprobs included."""

    def _respond(self, model: str, messages: list, optional_params: dict, model_response: ModelResponse):
        params = dict(
            temperature=float(optional_params.get("temperature", 1.0)),
            max_tokens=optional_params.get("max_tokens") or optional_params.get("max_completion_tokens"),
            seed=optional_params.get("seed"),
            logprobs=bool(optional_params.get("logprobs")),
            top_logprobs=optional_params.get("top_logprobs"),
        )
        provider, _, name = model.partition("/") if "/" in model else ("organism", "", model)
        if model == "judge" or provider == "offline":
            gen = offline_judge.generate(messages, **params)
            model_response.model = offline_judge.MODEL_NAME
        else:
            gen = organisms.generate(name or model, messages, **params)
            model_response.model = f"organism/{name or model}"
        model_response.choices = [
            Choices(
                index=0,
                finish_reason=gen.finish_reason,
                message=Message(role="assistant", content=gen.text),
                logprobs={"content": gen.logprobs} if gen.logprobs is not None else None,
            )
        ]
        model_response.usage = Usage(
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            total_tokens=gen.prompt_tokens + gen.completion_tokens,
        )
        return model_response

    # LiteLLM calls custom handlers with keyword arguments; only these matter here.
    def completion(self, model, messages, *, model_response, optional_params, **_):
        return self._respond(model, messages, optional_params, model_response)

    async def acompletion(self, model, messages, *, model_response, optional_params, **_):
        return self._respond(model, messages, optional_params, model_response)


def _register_local_providers() -> None:
    handler = _LocalModels()
    existing = [p for p in (litellm.custom_provider_map or []) if p.get("provider") not in LOCAL_PROVIDERS]
    litellm.custom_provider_map = existing + [
        {"provider": "organism", "custom_handler": handler},
        {"provider": "offline", "custom_handler": handler},
    ]
    # LiteLLM reads custom_provider_map into its provider list when asked to.
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
    # Free, and known to LiteLLM's cost map: otherwise every call searches the map ten ways and
    # fails (a third of LiteLLM's time per in-process call).
    entry = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "mode": "chat"}
    litellm.register_model(
        {f"organism/{n}": {**entry, "litellm_provider": "organism"} for n in organisms.NAMES}
        | {offline_judge.MODEL_NAME: {**entry, "litellm_provider": "offline"}}
    )


_register_local_providers()


# ---------------------------------------------------------------------------------------------
# Calls


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
        }


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base: float = 1.0
    cap: float = 60.0
    max_retry_after: float = 300.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(
            max_retries=int(os.environ.get("AUDITOR_MAX_RETRIES", 6)),
            base=float(os.environ.get("AUDITOR_RETRY_BASE", 1.0)),
            cap=float(os.environ.get("AUDITOR_RETRY_CAP", 60.0)),
        )

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


@dataclass
class GatewayStats:
    calls_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    cost_usd: float = 0.0
    cost_unknown_calls: int = 0


RETRYABLE_STATUS = {408, 409, 425, 429}


def _status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _blocked(exc: BaseException | None) -> bool:
    """Whether the public-network guard refused the connection (anywhere in the cause chain)."""
    seen = 0
    while exc is not None and seen < 12:
        if isinstance(exc, BlockedAddress) or policy.REFUSED_BASE in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _retryable(exc: BaseException) -> bool:
    if _blocked(exc):
        return False  # never connected, and never will
    if "Missing credentials" in str(exc) or "api_key client option must be set" in str(exc):
        return False  # a configuration problem: retrying cannot fix it
    if isinstance(exc, (litellm.Timeout, litellm.APIConnectionError, asyncio.TimeoutError, TimeoutError)):
        return True
    if isinstance(
        exc,
        (
            litellm.BadRequestError,
            litellm.AuthenticationError,
            litellm.NotFoundError,
            litellm.PermissionDeniedError,
        ),
    ):
        return False
    code = _status_of(exc)
    return code is not None and (code in RETRYABLE_STATUS or code >= 500)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000
        value = headers.get("retry-after")
    except Exception:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _short_error(exc: BaseException, key: str | None = None) -> str:
    if _blocked(exc):
        return policy.REFUSED_BASE
    text = str(exc).replace("\n", " ")
    for prefix in ("litellm.", "OpenAIException - "):
        text = text.replace(prefix, "")
    return redact(f"{type(exc).__name__}: {text[:300]}", key)


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
            **({"credential": credential} if (credential := policy.credential_id(spec)) else {}),
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _throttled(exc: BaseException, status: int | None) -> bool:
    return status == 429 or isinstance(exc, litellm.RateLimitError)


class AdaptiveLimit:
    """A concurrency limit that halves when the provider throttles (429) and grows back by one
    after each run of successes as long as the limit, up to its maximum: additive increase,
    multiplicative decrease, as TCP, Inspect and promptfoo do. At most one cut per second, so one
    burst of 429s counts once. Its history goes into the run's record."""

    def __init__(self, maximum: int, *, minimum: int = 1, adaptive: bool = True):
        self.maximum = max(1, maximum)
        self.minimum = min(minimum, self.maximum)
        self.limit = self.maximum
        self.adaptive = adaptive
        self.in_flight = 0
        self.lowest = self.maximum
        self.cuts = 0
        self.grows = 0
        self.changes: list[tuple[float, int]] = []  # (seconds since start, new limit), capped
        self._started = time.monotonic()
        self._successes = 0
        self._last_cut = -1e9
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def __aenter__(self):
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        return self

    async def __aexit__(self, *exc):
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            cond.notify(1)

    def _record(self) -> None:
        if len(self.changes) < 200:
            self.changes.append((round(time.monotonic() - self._started, 3), self.limit))

    async def success(self) -> None:
        if not self.adaptive or self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            cond = self._condition()
            async with cond:
                self.limit += 1
                self.grows += 1
                self._record()
                cond.notify(1)

    def throttled(self) -> None:
        if not self.adaptive:
            return
        now = time.monotonic()
        if now - self._last_cut < 1.0:
            return
        self._last_cut = now
        self._successes = 0
        new = max(self.minimum, self.limit // 2)
        if new != self.limit:
            self.limit = new
            self.cuts += 1
            self.lowest = min(self.lowest, new)
            self._record()

    def summary(self) -> dict:
        return {
            "max": self.maximum,
            "final": self.limit,
            "lowest": self.lowest,
            "cuts": self.cuts,
            "grows": self.grows,
            "changes": self.changes,
        }


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
        meter: policy.Meter | None = None,
    ):
        """``meter``: the budget of the person these calls are for; calls that carry a key the
        server holds are counted against it and refused once it is spent (public instances)."""
        self.store = store
        self.meter = meter
        self.adaptive = adaptive
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = retry or RetryPolicy.from_env()
        self.use_cache = use_cache and store is not None
        self.stats = GatewayStats()
        self._limits: dict[tuple, AdaptiveLimit] = {}
        # Set from another thread (the app's Cancel button) to stop the runs using this gateway.
        self.cancel_event: threading.Event | None = None

    def for_meter(self, meter: policy.Meter | None) -> Gateway:
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
        if self.meter is None or not policy.uses_server_key(spec):
            return None, 0
        tokens = policy.reserved_tokens(messages, max_tokens)
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
            tokens = policy.reserved_tokens(messages, 0) + reply_chars // 4 + 1
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
        temperature: float = 1.0,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        seed: int | None = None,
        sample_index: int = 0,
        cache: bool = True,
    ) -> CallResult:
        params: dict[str, Any] = {"temperature": temperature}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if seed is not None:
            params["seed"] = seed
        if logprobs:
            params["logprobs"] = True
            if top_logprobs:
                params["top_logprobs"] = top_logprobs
        key = None
        if cache and self.use_cache:
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
        kwargs = dict(params)
        kwargs.update(spec.extra)
        if not spec.is_local:
            kwargs["drop_params"] = True
        # One slot per attempt: a call waiting out a 429 does not hold a slot.
        for attempt in range(self.retry.max_retries + 1):
            result.attempts = attempt + 1
            base = self._pick(spec)  # per attempt: a retry may go to another replica
            try:
                key = self._credentials(spec, base, kwargs)
            except ModelError as e:
                result.error = str(e)
                return result
            limit = self._semaphore(spec, base)
            refused, reserved = self._charge(spec, messages, params.get("max_tokens"))
            if refused is not None:
                result.error = refused
                self.stats.failures += 1
                return result
            try:
                async with limit:
                    started = time.perf_counter()
                    self.stats.calls_sent += 1
                    with public_net_only(spec.public_net):
                        response = await self._unless_cancelled(
                            asyncio.wait_for(
                                litellm.acompletion(
                                    model=spec.model,
                                    messages=messages,
                                    timeout=self.timeout,
                                    num_retries=0,
                                    max_retries=0,
                                    **kwargs,
                                ),
                                timeout=self.timeout + 10,
                            )
                        )
            except JobCancelled:
                self._settle(reserved, messages)
                result.error = CANCELLED
                return result
            except Exception as exc:  # noqa: BLE001  (every provider error is classified below)
                self._settle(reserved, messages)
                status = _status_of(exc)
                if _throttled(exc, status):
                    limit.throttled()
                if isinstance(exc, asyncio.TimeoutError):
                    exc = TimeoutError(f"no reply within {self.timeout:.0f}s")
                # In-process models fail the same way every time: no point in waiting and retrying.
                if not _retryable(exc) or spec.is_local or attempt == self.retry.max_retries:
                    result.error = _short_error(exc, key)
                    result.status_code = status
                    if _retryable(exc) and not spec.is_local:
                        result.error = f"gave up after {attempt + 1} attempts: {result.error}"
                    self.stats.failures += 1
                    return result
                wait = self.retry.backoff(attempt)
                after = _retry_after(exc)
                if after is not None:
                    if after > self.retry.max_retry_after:
                        result.error = f"provider asked to wait {after:.0f}s (over the {self.retry.max_retry_after:.0f}s limit): {_short_error(exc, key)}"
                        result.status_code = status
                        self.stats.failures += 1
                        return result
                    wait = after + random.uniform(0, 0.1 * after + 0.05)
                result.retries.append(
                    {
                        "attempt": attempt + 1,
                        "status": status,
                        "error": _short_error(exc, key)[:160],
                        "retry_after": after,
                        "wait_s": round(wait, 3),
                    }
                )
                self.stats.retries += 1
                if await self._cancelled_during(wait):
                    result.error = CANCELLED
                    return result
                continue
            result.latency_ms = (time.perf_counter() - started) * 1000
            await limit.success()
            self._fill(result, response, spec)
            self._settle(
                reserved,
                messages,
                (result.prompt_tokens or 0) + (result.completion_tokens or 0),
                len(result.text or ""),
            )
            return result
        return result  # pragma: no cover (loop always returns)

    async def stream(
        self,
        spec: ModelSpec,
        messages: list[dict],
        *,
        temperature: float = 1.0,
        max_tokens: int | None = None,
        seed: int | None = None,
    ):
        """Yield the reply as text pieces as they arrive (for chat). Errors before the first piece
        are retried like any call; the in-process models stream their reply word by word."""
        kwargs: dict[str, Any] = {"temperature": temperature, **spec.extra}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if seed is not None:
            kwargs["seed"] = seed
        if spec.is_local:
            result = await self.complete(
                spec, messages, temperature=temperature, max_tokens=max_tokens, seed=seed, cache=False
            )
            if not result.ok:
                raise ModelError(result.error)
            for piece in re.findall(r"\S+\s*|\s+", result.text or ""):
                yield piece
                await asyncio.sleep(0)
            return
        kwargs["drop_params"] = True
        if self.meter is not None and policy.uses_server_key(spec):
            kwargs["stream_options"] = {"include_usage": True}  # the tokens a visitor's budget counts
        base = self._pick(spec)  # the same replica choice and adaptive limit as complete()
        key = self._credentials(spec, base, kwargs)
        limit = self._semaphore(spec, base)
        async with limit:
            for attempt in range(self.retry.max_retries + 1):
                refused, reserved = self._charge(spec, messages, max_tokens)
                if refused is not None:
                    raise ModelError(refused)
                try:
                    self.stats.calls_sent += 1
                    with public_net_only(spec.public_net):
                        response = await asyncio.wait_for(
                            litellm.acompletion(
                                model=spec.model,
                                messages=messages,
                                stream=True,
                                timeout=self.timeout,
                                num_retries=0,
                                max_retries=0,
                                **kwargs,
                            ),
                            timeout=self.timeout + 10,
                        )
                    break
                except Exception as exc:  # noqa: BLE001
                    self._settle(reserved, messages)
                    if _throttled(exc, _status_of(exc)):
                        limit.throttled()
                    if not _retryable(exc) or attempt == self.retry.max_retries:
                        raise ModelError(_short_error(exc, key)) from None
                    after = _retry_after(exc)
                    await asyncio.sleep(after if after is not None else self.retry.backoff(attempt))
            tokens, chars = 0, 0
            chunks = response.__aiter__()
            try:
                while True:
                    # Some providers connect only when the first chunk is asked for: the address
                    # guard holds for every step (set and reset around it, never across a yield).
                    with public_net_only(spec.public_net):
                        try:
                            chunk = await chunks.__anext__()
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
                        yield delta
            except Exception as exc:  # noqa: BLE001  (a stream broken halfway: one redacted line)
                raise ModelError(_short_error(exc, key)) from None
            finally:
                self._settle(reserved, messages, tokens, chars)

    def _fill(self, result: CallResult, response: ModelResponse, spec: ModelSpec) -> None:
        choice = response.choices[0]
        result.text = choice.message.content or ""
        result.finish_reason = choice.finish_reason
        result.model = getattr(response, "model", None) or spec.model
        result.response_id = getattr(response, "id", None)
        lp = getattr(choice, "logprobs", None)
        if lp is not None:
            content = lp.get("content") if isinstance(lp, dict) else getattr(lp, "content", None)
            if content is not None:
                result.logprobs = [
                    c if isinstance(c, dict) else c.model_dump(exclude={"bytes"}) for c in content
                ]
        usage = getattr(response, "usage", None)
        if usage is not None:
            result.prompt_tokens = usage.prompt_tokens
            result.completion_tokens = usage.completion_tokens
        result.cost_usd = self._cost(spec, result)
        if result.cost_usd is None:
            self.stats.cost_unknown_calls += 1
        else:
            self.stats.cost_usd += result.cost_usd

    @staticmethod
    def _cost(spec: ModelSpec, result: CallResult) -> float | None:
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
