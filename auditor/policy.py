"""Who may do what, decided in one place: the app, the command line and the fine-tuning client all
ask this module, and ``SECURITY.md`` describes the same rules.

- **Modes.** ``cli``: the owner at their own terminal. ``local``: ``auditor serve`` on a loopback
  address without logins, one trusted person. ``public``: no logins and a non-loopback address,
  ``SYSTEM=spaces`` or ``AUDITOR_PUBLIC=1``: strangers. ``team``: ``AUDITOR_AUTH`` set: listed users.
- **Credentials follow their configuration.** A key from the server's environment or model list
  goes only to the endpoint it was configured for: a provider's key to the provider's own endpoint
  (no API base given), a model-list entry's key to that entry's ``api_base`` (and its replicas).
  A call to an address a user typed carries the user's key or a placeholder, so that neither
  LiteLLM nor the openai SDK can fall back to a key from the environment; providers whose
  credentials are ambient (cloud accounts) never go there. Only the command line may send
  environment keys to an ``--api-base`` typed at it.
- **Spending is the owner's choice.** In public mode the server's keys serve only model-list
  entries marked ``model_info: {public: true}``, each visitor under a daily call and token budget.
- **Work is bounded before it starts**: samples, estimated calls, sweep budgets, chat lengths,
  dataset sizes and running jobs have caps (stricter in public mode), checked before anything runs.
- **Names cannot be taken over**: a fine-tuned model's reported name never shadows a built-in
  name, a model string LiteLLM routes by itself, a model-list alias or another job's model.
- **Cached answers are keyed on the credential** that bought them (a fingerprint, never the key).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict

from . import config
from .errors import AuditorError

if TYPE_CHECKING:
    from .store import Store

# Sent instead of a key to an endpoint the user typed without giving a key (a local vLLM or Ollama
# needs none): LiteLLM and the openai SDK read a key from the environment whenever none is passed.
PLACEHOLDER_KEY = "none"
BUILTIN_PREFIXES = ("organism/", "offline/")
# Providers whose only credential is the ``api_key`` LiteLLM is given (as LiteLLM resolves a model
# string, unprefixed names included): the ones a request may send to an API base it typed, with
# its own key. Others (Azure, Vertex AI, Bedrock, SageMaker, watsonx...) authenticate with
# ambient credentials from the environment (service accounts, AWS keys, Azure AD tokens) that no
# key replaces: they count as the server's credentials and are reachable only at their own
# endpoints.
KEY_PROVIDERS = frozenset(
    {
        "openai", "custom_openai", "text-completion-openai", "hosted_vllm", "vllm", "ollama",
        "ollama_chat", "lm_studio", "llamafile", "litellm_proxy", "anthropic", "together_ai",
        "openrouter", "groq", "mistral", "deepseek", "fireworks_ai", "deepinfra", "perplexity", "xai",
        "cohere", "cohere_chat", "huggingface", "gemini", "nvidia_nim", "cerebras", "sambanova",
        "xinference",
    }
)  # fmt: skip


# Model-list ``litellm_params`` that only shape a request. Any other (``custom_llm_provider``,
# ``azure``, ``deployment_id``, ``extra_headers``, cloud credentials...) carries the owner's
# routing or credentials: such an entry counts as a server credential and its configuration never
# follows a visitor's API base.
PLAIN_PARAMS = frozenset(
    {
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop", "n", "timeout",
        "stream_timeout", "rpm", "tpm", "num_retries", "max_retries", "drop_params", "presence_penalty",
        "frequency_penalty", "logit_bias", "response_format", "reasoning_effort",
        "input_cost_per_token", "output_cost_per_token",
    }
)  # fmt: skip


class PolicyError(AuditorError):
    """A request the deployment's policy refuses; the message says why and what to do instead."""


class Mode(StrEnum):
    CLI = "cli"
    LOCAL = "local"
    PUBLIC = "public"
    TEAM = "team"


# ---------------------------------------------------------------------------------------------
# Modes and caps


def _loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _settings(env: Mapping[str, str] | None) -> config.Settings:
    return config.settings() if env is None else config.read(env)


def detect_mode(host: str | None, env: Mapping[str, str] | None = None) -> Mode:
    """The mode of ``auditor serve --host HOST`` (or the Space's ``app.py``) in this environment."""
    s = _settings(env)
    if s.auth:
        return Mode.TEAM
    if s.spaces or s.public:
        return Mode.PUBLIC
    return Mode.LOCAL if _loopback(host) else Mode.PUBLIC


class Limits(BaseModel):
    """Caps checked before any work starts. Each can be set in the environment (the variable named
    beside each field); unset, the mode's default applies."""

    model_config = ConfigDict(frozen=True)

    max_samples: int  # AUDITOR_MAX_SAMPLES: samples per paraphrase (per question variant)
    max_calls: int  # AUDITOR_MAX_CALLS: model calls (target and judge) one run, audit or sweep may make
    max_chat_tokens: int  # AUDITOR_MAX_CHAT_TOKENS: max_tokens of one chat reply
    max_message_chars: int  # AUDITOR_MAX_MESSAGE_CHARS: one chat message, system prompt or trigger
    max_chat_turns: int  # AUDITOR_MAX_CHAT_TURNS: turns of one conversation
    max_examples: int  # AUDITOR_MAX_EXAMPLES: examples of one built fine-tuning dataset
    max_candidates: int  # AUDITOR_MAX_CANDIDATES: extra trigger candidates of one sweep
    max_jobs: int | None  # AUDITOR_MAX_JOBS: long jobs (runs, sweeps, audits) one person runs at once
    max_jobs_total: int | None  # AUDITOR_MAX_JOBS_TOTAL: long jobs the process runs at once
    visitor_calls: int | None  # AUDITOR_VISITOR_CALLS: calls on the server's keys, per person and day
    visitor_tokens: int | None  # AUDITOR_VISITOR_TOKENS: tokens on the server's keys, per person and day
    chat_timeout: int  # AUDITOR_CHAT_TIMEOUT: seconds a chat call may wait to connect or for the next bytes
    call_timeout: int  # AUDITOR_CALL_TIMEOUT: seconds one call of a long job (run, sweep, audit) may wait
    max_chats: int | None  # AUDITOR_MAX_CHATS: chat replies one person waits for at once
    max_upload_mb: int | None  # AUDITOR_MAX_UPLOAD_MB: megabytes of one uploaded file
    login_failures: int  # AUDITOR_LOGIN_FAILURES: failed logins per user or address in a window
    login_window: int  # AUDITOR_LOGIN_WINDOW: seconds the failed logins are counted over


LIMIT_NAMES = tuple(Limits.model_fields)

_DEFAULTS: dict[Mode, dict[str, int | None]] = {
    Mode.CLI: dict(
        max_samples=10_000,
        max_calls=5_000_000,
        max_chat_tokens=32_768,
        max_message_chars=1_000_000,
        max_chat_turns=1_000,
        max_examples=1_000_000,
        max_candidates=100_000,
        max_jobs=None,
        max_jobs_total=None,
        visitor_calls=None,
        visitor_tokens=None,
        chat_timeout=120,
        call_timeout=120,
        max_chats=None,
        max_upload_mb=None,
        login_failures=10,
        login_window=60,
    ),
    Mode.LOCAL: dict(
        max_samples=10_000,
        max_calls=5_000_000,
        max_chat_tokens=32_768,
        max_message_chars=200_000,
        max_chat_turns=200,
        max_examples=1_000_000,
        max_candidates=100_000,
        max_jobs=None,
        max_jobs_total=16,
        visitor_calls=None,
        visitor_tokens=None,
        chat_timeout=60,
        call_timeout=120,
        max_chats=None,
        max_upload_mb=None,
        login_failures=10,
        login_window=60,
    ),
    Mode.TEAM: dict(
        max_samples=1_000,
        max_calls=1_000_000,
        max_chat_tokens=8_192,
        max_message_chars=100_000,
        max_chat_turns=200,
        max_examples=100_000,
        max_candidates=10_000,
        max_jobs=4,
        max_jobs_total=16,
        visitor_calls=None,
        visitor_tokens=None,
        chat_timeout=60,
        call_timeout=120,
        max_chats=4,
        max_upload_mb=50,
        login_failures=10,
        login_window=60,
    ),
    Mode.PUBLIC: dict(
        max_samples=20,
        max_calls=30_000,
        max_chat_tokens=2_000,
        max_message_chars=20_000,
        max_chat_turns=50,
        max_examples=5_000,
        max_candidates=500,
        max_jobs=2,
        max_jobs_total=8,
        visitor_calls=200,
        visitor_tokens=200_000,
        chat_timeout=60,
        call_timeout=60,
        max_chats=2,
        max_upload_mb=5,
        login_failures=10,
        login_window=60,
    ),
}


def limits_for(mode: Mode, env: Mapping[str, str] | None = None) -> Limits:
    written = _settings(env).limits
    values: dict[str, Any] = dict(_DEFAULTS[mode])
    for name in values:
        raw = written.get(name)
        if raw is None:
            continue
        try:
            number = int(raw.replace("_", ""))
        except ValueError:
            raise PolicyError(
                f"AUDITOR_{name.upper()}={raw!r}: write a whole number (0 means no limit for the job "
                "counts and the visitor budgets)"
            ) from None
        optional = Limits.model_fields[name].annotation is not int  # (int | None): 0 means no limit
        values[name] = None if optional and number <= 0 else max(1, number)
    return Limits(**values)


class Policy(BaseModel):
    """The rules of one process: its mode and its caps."""

    model_config = ConfigDict(frozen=True)

    mode: Mode
    limits: Limits
    trust_proxy: int = 0  # proxies in front that append to X-Forwarded-For (a Space has one)
    allow_private: bool = False  # AUDITOR_ALLOW_PRIVATE_BASES: public visitors may type private addresses

    @classmethod
    def cli(cls, env: Mapping[str, str] | None = None) -> Policy:
        return cls(mode=Mode.CLI, limits=limits_for(Mode.CLI, env))

    @classmethod
    def serve(cls, host: str | None, env: Mapping[str, str] | None = None) -> Policy:
        s = _settings(env)
        mode = detect_mode(host, env)
        raw = s.trust_proxy or ("1" if s.spaces else "0")
        if not raw.isdigit():
            raise PolicyError(
                f"AUDITOR_TRUST_PROXY={raw!r}: write the number of proxies in front (0, 1, 2...)"
            )
        return cls(
            mode=mode,
            limits=limits_for(mode, env),
            trust_proxy=int(raw),
            allow_private=s.allow_private_bases,
        )

    def visitor(self, host: str | None, forwarded_for: str | None) -> str:
        """A public visitor's identity, for budgets, jobs and fine-tunes: a hash of their address.
        Behind ``trust_proxy`` proxies it is the address the outermost one saw, the Nth hop of
        ``X-Forwarded-For`` from the right (the hops to its left are whatever the client wrote)."""
        hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
        if self.trust_proxy and len(hops) >= self.trust_proxy:
            host = hops[-self.trust_proxy]
        return "visitor:" + hashlib.sha256((host or "unknown").encode()).hexdigest()[:12]

    @property
    def owner_terminal(self) -> bool:
        """The command line: the owner may send environment keys to an API base of their own."""
        return self.mode is Mode.CLI

    # -- work caps ---------------------------------------------------------------------------

    def _cap(self, value: int, cap: int, what: str, setting: str) -> None:
        if value > cap:
            raise PolicyError(
                f"{what} is {value:,}, over this {self.mode.value} deployment's limit of {cap:,}; "
                f"ask for less (the owner can raise the limit with {setting})"
            )

    def check_samples(self, samples: int | None, what: str = "samples per question") -> None:
        if samples is None:
            return
        if samples < 1:
            raise PolicyError(f"{what} must be at least 1")
        self._cap(samples, self.limits.max_samples, what, "AUDITOR_MAX_SAMPLES")

    def check_calls(self, calls: int, what: str = "the estimated number of model calls") -> None:
        self._cap(calls, self.limits.max_calls, what, "AUDITOR_MAX_CALLS")

    def sweep_budget(self, budget: int | None) -> int:
        """A sweep's call budget: what was asked for, never more than the cap (the cap when unset)."""
        if budget is not None and budget < 1:
            raise PolicyError("a sweep budget must be at least 1 call")
        if budget is None:
            return self.limits.max_calls
        self._cap(budget, self.limits.max_calls, "the sweep budget", "AUDITOR_MAX_CALLS")
        return budget

    def check_texts(self, texts: dict[str, str | None]) -> None:
        """Text a request hands over (a message, a system prompt, a trigger, a candidate)."""
        for what, text in texts.items():
            self._cap(
                len(text or ""),
                self.limits.max_message_chars,
                f"the {what} length",
                "AUDITOR_MAX_MESSAGE_CHARS",
            )

    def check_chat(self, *, max_tokens: int, texts: dict[str, str | None], turns: int) -> None:
        self._cap(max_tokens, self.limits.max_chat_tokens, "max tokens", "AUDITOR_MAX_CHAT_TOKENS")
        self.check_texts(texts)
        self._cap(turns, self.limits.max_chat_turns, "the number of turns", "AUDITOR_MAX_CHAT_TURNS")

    def check_examples(self, n: int | None) -> None:
        if n is not None:
            if n < 1:
                raise PolicyError("the number of examples must be at least 1")
            self._cap(n, self.limits.max_examples, "the number of examples", "AUDITOR_MAX_EXAMPLES")

    def check_candidates(self, n: int) -> None:
        self._cap(n, self.limits.max_candidates, "the number of extra candidates", "AUDITOR_MAX_CANDIDATES")

    # -- addresses a request types ----------------------------------------------------------

    @property
    def public_net_only(self) -> bool:
        """Whether an API base a request types may reach only public internet addresses."""
        return self.mode is Mode.PUBLIC and not self.allow_private

    def check_base(self, base: str) -> None:
        """An API base typed into the app: http or https, and on a public instance (unless the
        owner allows private addresses) a name whose every address is on the public internet.
        The refusal is one message, decided before any connection, whatever is at that address;
        the gateway checks the address again as it connects (redirects, DNS answers that change)."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(base)
            host, port = parts.hostname, parts.port
        except ValueError:
            host = port = None
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not host:
            raise PolicyError(
                f"{base[:200]!r} is not an API base: write an http:// or https:// address, such as "
                "http://localhost:8000/v1"
            )
        if not self.public_net_only:
            return
        if not public_addresses(host, port or (443 if parts.scheme == "https" else 80)):
            raise PolicyError(REFUSED_BASE)

    # -- spending ----------------------------------------------------------------------------

    def check_model(self, spec: Spec, *, typed_base: bool) -> None:
        """What a request to the app may call. An API base it typed takes only providers whose
        sole credential is the key it gives; in public mode the server's keys serve only the
        models the owner listed for visitors."""
        if self.mode is Mode.CLI or spec.is_local:
            return
        if typed_base and credential(spec, spec.api_base).kind == "ambient":
            raise PolicyError(
                f"{spec.name}: {spec.provider}/ models take their credentials from the server's "
                "environment, so they cannot be sent to an API base typed here; for an "
                "OpenAI-compatible server use openai/MODEL"
            )
        if self.mode is Mode.PUBLIC and spec.alias and not spec.visitors:
            raise PolicyError(
                f"{spec.name}: this public instance does not offer that model to visitors (the Settings "
                "tab lists the ones it does); give a provider model string with your own key instead"
            )
        if self.mode is Mode.PUBLIC and uses_server_key(spec) and not spec.visitors:
            raise PolicyError(
                f"{spec.name}: this public instance does not spend its owner's keys on that model; "
                "give your own API key (kept in memory for this request only), or choose a model the "
                "owner lists for visitors (Settings tab)"
            )

    @property
    def meters_visitors(self) -> bool:
        return self.limits.visitor_calls is not None or self.limits.visitor_tokens is not None


REFUSED_BASE = (
    "this public instance calls only public internet addresses: that API base is not one it may "
    "call (loopback, private, link-local and unresolvable addresses are refused before any "
    "connection; the owner can allow them with AUDITOR_ALLOW_PRIVATE_BASES=1)"
)


def is_public_ip(address: str) -> bool:
    """An address on the public internet (not loopback, private, link-local, shared, reserved,
    multicast or unspecified; an IPv4 address inside IPv6 is judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            ip = inner
    return ip.is_global and not ip.is_multicast


def public_addresses(host: str, port: int) -> bool:
    """Whether ``host`` resolves, and only to public internet addresses."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(is_public_ip(info[4][0]) for info in infos)


# ---------------------------------------------------------------------------------------------
# Credentials


class Spec(Protocol):
    """What the credential rules read of a model specification (``gateway.ModelSpec``)."""

    name: str
    model: str
    api_base: str | None
    api_key_env: str | None
    key_bases: tuple[str | None, ...]
    owner_terminal: bool
    visitors: bool
    alias: bool
    extra: dict

    @property
    def provider(self) -> str: ...

    def route(self, base: str | None) -> tuple[str | None, bool]: ...

    @property
    def is_local(self) -> bool: ...

    @property
    def user_key(self) -> str | None: ...


class Credential(NamedTuple):
    """What a call carries. ``kind``: ``local`` (an in-process model: nothing), ``caller`` (the key
    the caller gave), ``server`` (a key the server holds: a model-list variable, or the
    provider's own reading its environment), ``ambient`` (a provider that authenticates from the
    environment whatever key it is given), ``placeholder`` (no key, toward an address someone
    typed). ``key`` is what to hand LiteLLM (None: let it read the provider's environment)."""

    kind: str
    key: str | None
    identity: str | None  # for the cache and run ids: never the key itself

    @property
    def server_held(self) -> bool:
        return self.kind in ("server", "ambient")


def credential(spec: Spec, base: str | None) -> Credential:
    """The one decision of what a call of ``spec`` to ``base`` carries. A key the server holds
    goes only to the addresses it was configured for (``spec.key_bases``: a model-list entry's
    ``api_base`` and replicas, or the provider's own endpoint); toward an address someone typed the
    call carries the caller's key or a placeholder, never a fallback to the environment. The one
    exception is an ``--api-base`` given on the command line (``spec.owner_terminal``)."""
    if spec.is_local:
        return Credential("local", None, None)
    configured = spec.owner_terminal or base in spec.key_bases
    provider, env_key = spec.route(base)
    if (
        env_key  # LiteLLM swaps in a key from the environment at this address
        or (provider is not None and provider not in KEY_PROVIDERS)  # ambient credentials
        or set(spec.extra) - PLAIN_PARAMS  # an owner's entry with its own routing or credentials
    ):
        caller = f"+key:{fingerprint(spec.user_key)}" if spec.user_key is not None else ""
        key = spec.user_key
        if key is None and spec.api_key_env and configured:
            key = _env_key(spec)
        return Credential("ambient", key, f"env:{spec.api_key_env or provider}{caller}")
    if spec.user_key is not None:
        return Credential("caller", spec.user_key, "key:" + fingerprint(spec.user_key))
    if spec.api_key_env and configured:
        return Credential("server", _env_key(spec), f"env:{spec.api_key_env}")
    if spec.api_key_env is None and (base is None or spec.owner_terminal):
        if base is not None and spec.provider == "openai" and not os.environ.get("OPENAI_API_KEY"):
            return Credential("placeholder", PLACEHOLDER_KEY, None)  # LiteLLM's OpenAI client needs some key
        return Credential("server", None, "env:provider")  # LiteLLM reads the provider's own variable
    return Credential("placeholder", PLACEHOLDER_KEY, None)


def _env_key(spec: Spec) -> str:
    value = os.environ.get(spec.api_key_env or "")
    if value is None:
        from .models import ModelError

        raise ModelError(
            f"model {spec.name!r} takes its API key from the environment variable "
            f"{spec.api_key_env}, which is not set; export it and run again"
        )
    return value


def key_for(spec: Spec, base: str | None) -> str | None:
    """The key to hand LiteLLM for a call of ``spec`` to ``base`` (see :func:`credential`)."""
    return credential(spec, base).key


def uses_server_key(spec: Spec) -> bool:
    """Whether a call of ``spec`` at its own address spends a credential the server holds."""
    return credential(spec, spec.api_base).server_held


def credential_id(spec: Spec) -> str | None:
    """Who pays for a call of ``spec`` at its own address, for the cache and run ids: None for the
    in-process models and for no key, ``key:<fingerprint>`` for a key the caller gave,
    ``env:<NAME>`` for a credential the server holds."""
    return credential(spec, spec.api_base).identity


def fingerprint(secret: str) -> str:
    """A short, one-way fingerprint of a key (never the key): what the cache and run ids use to
    tell answers bought with different keys apart."""
    return hashlib.sha256(b"em-auditor credential v1\0" + secret.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Visitor budgets (calls and tokens on the server's keys)


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Meter:
    """One person's daily budget of calls and tokens on the server's keys. ``take`` reserves a
    call and the tokens it may use (its prompt and its ``max_tokens``) before it is sent,
    refusing when they do not fit; ``settle`` corrects the reservation with what the reply
    reported. Counts live in the store, so a restart does not refill the budget, and a
    reservation is one transaction, so concurrent calls cannot overdraw it."""

    def __init__(self, store: Store, who: str, limits: Limits):
        self.store = store
        self.who = who
        self.calls = limits.visitor_calls
        self.tokens = limits.visitor_tokens

    def used(self) -> tuple[int, int]:
        return self.store.spending(self.who, today())

    def remaining_calls(self) -> int | None:
        if self.calls is None and self.tokens is None:
            return None
        calls, tokens = self.used()
        if self.tokens is not None and tokens >= self.tokens:
            return 0
        return None if self.calls is None else max(0, self.calls - calls)

    def _refusal(self, calls: int, used: int, tokens: int) -> str | None:
        own = "give your own API key to go on"
        if self.calls is not None and calls >= self.calls:
            return f"your daily budget of {self.calls:,} calls on this instance's keys is spent; {own}"
        if self.tokens is not None and used + tokens > self.tokens:
            if used >= self.tokens:
                return f"your daily budget of {self.tokens:,} tokens on this instance's keys is spent; {own}"
            return (
                f"this call may use about {tokens:,} tokens and your daily budget on this instance's keys "
                f"has {self.tokens - used:,} left; ask for less, or {own}"
            )
        return None

    def spent(self) -> str | None:
        """Why the budget is spent, or None while some is left."""
        return self._refusal(*self.used(), 0)

    def take(self, tokens: int = 0) -> str | None:
        """Reserve one call and ``tokens``; returns the reason when they do not fit."""
        return self.store.reserve_spending(
            self.who, today(), calls=1, tokens=tokens, check=lambda c, t: self._refusal(c, t, tokens)
        )

    def settle(self, reserved: int, used: int) -> None:
        """Replace a call's reservation with the tokens it used."""
        if used != reserved:
            self.store.add_spending(self.who, today(), tokens=used - reserved)

    def check_estimate(self, calls: int) -> None:
        left = self.remaining_calls()
        if left is not None and calls > left:
            raise PolicyError(
                f"this needs about {calls:,} calls on this instance's keys and your daily budget has "
                f"{left:,} left; give your own API key, or ask for less"
            )


def reserved_tokens(messages: list[dict], max_tokens: int | None) -> int:
    """What one call may use, reserved before it is sent: its prompt (about four characters a
    token) and its reply's ``max_tokens`` (4,096 when unset)."""
    prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 4 * len(messages)
    return prompt + (max_tokens if max_tokens is not None else 4096)


# ---------------------------------------------------------------------------------------------
# Names of registered (fine-tuned) models


def name_conflict(
    name: str, *, job_id: str, owner: str | None, aliases: dict | None, registered: list[dict]
) -> str | None:
    """Why a provider-reported model name may not be registered, or None when it may. A name never
    shadows a built-in, a model-list alias, a model string LiteLLM routes by itself (``gpt-4o``,
    ``openai/...``; OpenAI's own ``ft:`` names excepted), or another job's or user's model."""
    from .models import provider_prefixes, route

    if not name or len(name) > 256 or any(c.isspace() or ord(c) < 32 for c in name):
        return f"{name[:80]!r} is not a usable model name (empty, too long, or with spaces or control characters)"
    if name.startswith(BUILTIN_PREFIXES):
        return f"{name!r} is a built-in name (organism/*, offline/*); a fine-tune cannot take it"
    prefix = name.split("/", 1)[0] if "/" in name else None
    if prefix is not None and prefix in provider_prefixes():
        return f"{name!r} looks like a provider's own model string ({prefix}/...); a fine-tune cannot take it"
    routed = route(name)[0]
    if routed is not None and not name.startswith("ft:"):
        return f"{name!r} is a model string LiteLLM already sends to {routed}; a fine-tune cannot take it"
    if aliases and name in aliases:
        return f"{name!r} is a model-list alias of this instance; a fine-tune cannot take it"
    for row in registered:
        if row["name"] == name and (row.get("job_id") != job_id or row.get("owner") != owner):
            return f"{name!r} is already registered by another fine-tuning job"
    return None


# ---------------------------------------------------------------------------------------------
# Logins


class LoginThrottle:
    """Failed logins counted per user name and per address over a sliding window: once either has
    ``failures`` of them, further attempts (right or wrong) wait until the oldest leaves the
    window. Refused attempts are not counted, so waiting out the window always works."""

    def __init__(self, failures: int, window: float, clock=None):
        import threading
        import time

        self.failures, self.window = failures, window
        self._clock = clock or time.monotonic
        self._seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._seen.get(key, []) if now - t < self.window]
        if times:
            self._seen[key] = times
        else:
            self._seen.pop(key, None)
        return times

    def wait(self, user: str, address: str) -> float:
        """Seconds until an attempt for ``user`` from ``address`` is heard (0: now)."""
        with self._lock:
            return self._wait(user, address, self._clock())

    def _wait(self, user: str, address: str, now: float) -> float:
        waits = [
            times[-self.failures] + self.window - now
            for key in (f"user:{user}", f"address:{address}")
            if len(times := self._recent(key, now)) >= self.failures
        ]
        return max(waits, default=0.0)

    def attempt(self, user: str, address: str) -> tuple[float, float | None]:
        """Check and count one attempt at once (so attempts sent together cannot all pass the
        check before any is counted): returns (seconds to wait, 0 when heard) and the attempt's
        mark, to give back with :meth:`succeeded` when it was not a failure after all."""
        now = self._clock()
        with self._lock:
            wait = self._wait(user, address, now)
            if wait > 0:
                return wait, None
            if len(self._seen) > 100_000:  # bounded memory under a flood of names
                for key in list(self._seen):
                    self._recent(key, now)
            for key in (f"user:{user}", f"address:{address}"):
                self._seen.setdefault(key, []).append(now)
            return 0.0, now

    def failed(self, user: str, address: str) -> None:
        """Count a failure (for callers that did not count it with :meth:`attempt`)."""
        now = self._clock()
        with self._lock:
            for key in (f"user:{user}", f"address:{address}"):
                self._seen.setdefault(key, []).append(now)

    def succeeded(self, user: str, address: str, mark: float | None = None) -> None:
        """The login worked: the user's failures are forgotten, and the attempt's own count too."""
        with self._lock:
            self._seen.pop(f"user:{user}", None)
            self._take_back(user, address, mark)

    def forgive(self, user: str, address: str, mark: float | None) -> None:
        """Take back an attempt counted by :meth:`attempt` that was not a wrong password (the app
        failed to answer)."""
        with self._lock:
            self._take_back(user, address, mark)

    def _take_back(self, user: str, address: str, mark: float | None) -> None:
        for key in (f"user:{user}", f"address:{address}"):
            times = self._seen.get(key)
            if mark is not None and times and mark in times:
                times.remove(mark)
