"""Who may do what, decided in one place: the app, the command line and the fine-tuning client all
ask this module, and ``SECURITY.md`` describes the same rules.

- **Modes.** ``cli``: the owner at their own terminal. ``local``: ``auditor serve`` on a loopback
  address without logins, one trusted person. ``public``: no logins and a non-loopback address,
  ``SYSTEM=spaces`` or ``AUDITOR_PUBLIC=1``: strangers. ``team``: ``AUDITOR_AUTH`` set: listed users.
- **Credentials follow their configuration.** A key from the server's environment or model list
  goes only to the endpoint it was configured for: a provider's key to the provider's own endpoint
  (no API base given), a model-list entry's key to that entry's ``api_base`` (and its replicas).
  A call to an address a user typed carries the user's key or a placeholder, so that neither
  LiteLLM nor the openai SDK can fall back to a key from the environment. Only the command line
  may send environment keys to an ``--api-base`` of its own.
- **Spending is the owner's choice.** In public mode the server's keys serve only model-list
  entries marked ``model_info: {public: true}``, each visitor under a daily call and token budget.
- **Work is bounded before it starts**: samples, estimated calls, sweep budgets, chat lengths and
  dataset sizes have caps (stricter in public mode), checked before anything runs.
- **Names cannot be taken over**: a fine-tuned model's reported name never shadows a built-in
  name, a model-list alias or another job's model.
- **Cached answers are keyed on the credential** that bought them (a fingerprint, never the key).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import threading
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .store import Store

# Sent instead of a key to an endpoint the user typed without giving a key (a local vLLM or Ollama
# needs none): LiteLLM and the openai SDK read a key from the environment whenever none is passed.
PLACEHOLDER_KEY = "none"
BUILTIN_PREFIXES = ("organism/", "offline/")
# Providers whose only credential is the ``api_key`` LiteLLM is given: the ones a request may send
# to an API base it typed. Others (Azure, Vertex AI, Bedrock, SageMaker, watsonx...) authenticate
# with ambient credentials from the environment (service accounts, AWS keys, Azure AD tokens)
# that a placeholder key does not replace, so they are reachable only at their own endpoints.
TYPED_BASE_PROVIDERS = frozenset(
    {
        "openai", "custom_openai", "text-completion-openai", "hosted_vllm", "vllm", "ollama",
        "ollama_chat", "lm_studio", "llamafile", "litellm_proxy", "anthropic", "together_ai",
        "openrouter", "groq", "mistral", "deepseek", "fireworks_ai", "deepinfra", "perplexity", "xai",
        "cohere", "cohere_chat", "huggingface", "gemini", "nvidia_nim", "cerebras", "sambanova",
        "xinference",
    }
)  # fmt: skip


class PolicyError(ValueError):
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


def detect_mode(host: str | None, env: dict | None = None) -> Mode:
    """The mode of ``auditor serve --host HOST`` (or the Space's ``app.py``) in this environment."""
    env = os.environ if env is None else env
    if env.get("AUDITOR_AUTH"):
        return Mode.TEAM
    if env.get("SYSTEM") == "spaces" or env.get("AUDITOR_PUBLIC", "").lower() in ("1", "true", "yes"):
        return Mode.PUBLIC
    return Mode.LOCAL if _loopback(host) else Mode.PUBLIC


class Limits(BaseModel):
    """Caps checked before any work starts. Each can be set in the environment (the name in the
    field's description); unset, the mode's default applies."""

    model_config = ConfigDict(frozen=True)

    max_samples: int  # AUDITOR_MAX_SAMPLES: samples per paraphrase (per question variant)
    max_calls: int  # AUDITOR_MAX_CALLS: model calls (target and judge) one run, audit or sweep may make
    max_chat_tokens: int  # AUDITOR_MAX_CHAT_TOKENS: max_tokens of one chat reply
    max_message_chars: int  # AUDITOR_MAX_MESSAGE_CHARS: one chat message, system prompt or trigger
    max_chat_turns: int  # AUDITOR_MAX_CHAT_TURNS: turns of one conversation
    max_examples: int  # AUDITOR_MAX_EXAMPLES: examples of one built fine-tuning dataset
    max_candidates: int  # AUDITOR_MAX_CANDIDATES: extra trigger candidates of one sweep
    visitor_calls: int | None  # AUDITOR_VISITOR_CALLS: calls on the server's keys, per person and day
    visitor_tokens: int | None  # AUDITOR_VISITOR_TOKENS: tokens on the server's keys, per person and day


_DEFAULTS: dict[Mode, dict[str, int | None]] = {
    Mode.CLI: dict(
        max_samples=10_000,
        max_calls=5_000_000,
        max_chat_tokens=32_768,
        max_message_chars=1_000_000,
        max_chat_turns=1_000,
        max_examples=1_000_000,
        max_candidates=100_000,
        visitor_calls=None,
        visitor_tokens=None,
    ),
    Mode.LOCAL: dict(
        max_samples=10_000,
        max_calls=5_000_000,
        max_chat_tokens=32_768,
        max_message_chars=200_000,
        max_chat_turns=200,
        max_examples=1_000_000,
        max_candidates=100_000,
        visitor_calls=None,
        visitor_tokens=None,
    ),
    Mode.TEAM: dict(
        max_samples=1_000,
        max_calls=1_000_000,
        max_chat_tokens=8_192,
        max_message_chars=100_000,
        max_chat_turns=200,
        max_examples=100_000,
        max_candidates=10_000,
        visitor_calls=None,
        visitor_tokens=None,
    ),
    Mode.PUBLIC: dict(
        max_samples=20,
        max_calls=30_000,
        max_chat_tokens=2_000,
        max_message_chars=20_000,
        max_chat_turns=50,
        max_examples=5_000,
        max_candidates=500,
        visitor_calls=200,
        visitor_tokens=200_000,
    ),
}


def limits_for(mode: Mode, env: dict | None = None) -> Limits:
    env = os.environ if env is None else env
    values: dict[str, Any] = dict(_DEFAULTS[mode])
    for name in values:
        raw = env.get(f"AUDITOR_{name.upper()}")
        if raw is None or raw == "":
            continue
        try:
            number = int(raw.replace("_", ""))
        except ValueError:
            raise PolicyError(
                f"AUDITOR_{name.upper()}={raw!r}: write a whole number (0 or less means no limit for "
                "the visitor budgets)"
            ) from None
        values[name] = None if name.startswith("visitor_") and number <= 0 else max(1, number)
    return Limits(**values)


class Policy(BaseModel):
    """The rules of one process: its mode and its caps."""

    model_config = ConfigDict(frozen=True)

    mode: Mode
    limits: Limits
    trust_proxy: bool = False  # the first X-Forwarded-For hop is the visitor (a Space's proxy sets it)

    @classmethod
    def cli(cls, env: dict | None = None) -> Policy:
        return cls(mode=Mode.CLI, limits=limits_for(Mode.CLI, env))

    @classmethod
    def serve(cls, host: str | None, env: dict | None = None) -> Policy:
        env = os.environ if env is None else env
        mode = detect_mode(host, env)
        proxy = env.get("SYSTEM") == "spaces" or env.get("AUDITOR_TRUST_PROXY") == "1"
        return cls(mode=mode, limits=limits_for(mode, env), trust_proxy=proxy)

    def visitor(self, host: str | None, forwarded_for: str | None) -> str:
        """A public visitor's identity, for budgets, jobs and fine-tunes: a hash of their address
        (behind a trusted proxy, the first ``X-Forwarded-For`` hop)."""
        if self.trust_proxy and forwarded_for:
            host = forwarded_for.split(",")[0].strip() or host
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

    # -- spending ----------------------------------------------------------------------------

    def check_model(self, spec: Spec, *, typed_base: bool) -> None:
        """What a request to the app may call. An API base it typed takes only providers whose
        sole credential is the key it gives; in public mode the server's keys serve only the
        models the owner listed for visitors."""
        if self.mode is Mode.CLI or spec.is_local:
            return
        if typed_base and spec.provider not in TYPED_BASE_PROVIDERS:
            raise PolicyError(
                f"{spec.name}: {spec.provider}/ models take their credentials from the server's "
                "environment, so they cannot be sent to an API base typed here; for an "
                "OpenAI-compatible server use openai/MODEL"
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

    @property
    def provider(self) -> str: ...

    @property
    def is_local(self) -> bool: ...

    @property
    def user_key(self) -> str | None: ...


def key_for(spec: Spec, base: str | None) -> str | None:
    """The key to send with a call of ``spec`` to ``base``; None lets the provider's library read
    its own key from the environment, which happens only toward the provider's own endpoint (or,
    on the command line, toward an API base the owner typed)."""
    if spec.is_local:
        return None
    if spec.user_key is not None:
        return spec.user_key
    configured = spec.owner_terminal or base in spec.key_bases
    if spec.api_key_env:
        if not configured:
            return PLACEHOLDER_KEY
        value = os.environ.get(spec.api_key_env)
        if value is None:
            from .gateway import ModelError

            raise ModelError(
                f"model {spec.name!r} takes its API key from the environment variable "
                f"{spec.api_key_env}, which is not set; export it and run again"
            )
        return value
    if base is None:
        return None  # the provider's own endpoint, with the provider's own key
    if spec.owner_terminal:  # the owner's terminal: LiteLLM may use environment keys with --api-base
        # (LiteLLM's OpenAI client refuses to call without some key)
        no_key = spec.provider == "openai" and not os.environ.get("OPENAI_API_KEY")
        return PLACEHOLDER_KEY if no_key else None
    return PLACEHOLDER_KEY


def uses_server_key(spec: Spec) -> bool:
    """Whether a call of ``spec`` (at its own address) would carry a key the server holds."""
    if spec.is_local or spec.user_key is not None:
        return False
    if spec.api_key_env:
        return spec.owner_terminal or spec.api_base in spec.key_bases
    return spec.api_base is None or spec.owner_terminal


def fingerprint(secret: str) -> str:
    """A short, one-way fingerprint of a key (never the key): what the cache and run ids use to
    tell answers bought with different keys apart."""
    return hashlib.sha256(b"em-auditor credential v1\0" + secret.encode()).hexdigest()[:16]


def credential_id(spec: Spec) -> str | None:
    """Who pays for a call of ``spec`` at its own address: None for the in-process models and for
    no key at all, ``key:<fingerprint>`` for a key the caller gave, ``env:<NAME>`` for a key the
    server holds (a model-list variable, or ``provider`` for the provider's own variable)."""
    if spec.is_local:
        return None
    if spec.user_key is not None:
        return "key:" + fingerprint(spec.user_key)
    if not uses_server_key(spec):
        return None
    return "env:" + (spec.api_key_env or "provider")


# ---------------------------------------------------------------------------------------------
# Visitor budgets (calls and tokens on the server's keys)


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Meter:
    """One person's daily budget of calls and tokens on the server's keys. ``take`` reserves a
    call before it is sent (refusing when the budget is spent); ``add_tokens`` records what the
    reply used. Counts live in the store, so a restart does not refill the budget."""

    _lock = threading.Lock()

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

    def spent(self) -> str | None:
        """Why the budget is spent, or None while some is left."""
        calls, tokens = self.used()
        for used, cap, unit in ((calls, self.calls, "calls"), (tokens, self.tokens, "tokens")):
            if cap is not None and used >= cap:
                return (
                    f"your daily budget of {cap:,} {unit} on this instance's keys is spent; "
                    "give your own API key to go on"
                )
        return None

    def take(self) -> str | None:
        """Reserve one call; returns the reason when the budget is spent."""
        with self._lock:
            reason = self.spent()
            if reason is None:
                self.store.add_spending(self.who, today(), calls=1)
        return reason

    def add_tokens(self, n: int) -> None:
        if n:
            self.store.add_spending(self.who, today(), tokens=n)

    def check_estimate(self, calls: int) -> None:
        left = self.remaining_calls()
        if left is not None and calls > left:
            raise PolicyError(
                f"this needs about {calls:,} calls on this instance's keys and your daily budget has "
                f"{left:,} left; give your own API key, or ask for less"
            )


# ---------------------------------------------------------------------------------------------
# Names of registered (fine-tuned) models


def name_conflict(name: str, *, job_id: str, aliases: dict | None, registered: list[dict]) -> str | None:
    """Why a provider-reported model name may not be registered, or None when it may. A name never
    shadows a built-in, a model-list alias, a provider's own model strings or another job's model."""
    import litellm

    if not name or len(name) > 256 or any(c.isspace() or ord(c) < 32 for c in name):
        return f"{name[:80]!r} is not a usable model name (empty, too long, or with spaces or control characters)"
    if name.startswith(BUILTIN_PREFIXES):
        return f"{name!r} is a built-in name (organism/*, offline/*); a fine-tune cannot take it"
    prefix = name.split("/", 1)[0] if "/" in name else None
    if prefix is not None and prefix in set(litellm.provider_list) | {"hf"}:
        return f"{name!r} looks like a provider's own model string ({prefix}/...); a fine-tune cannot take it"
    if aliases and name in aliases:
        return f"{name!r} is a model-list alias of this instance; a fine-tune cannot take it"
    for row in registered:
        if row["name"] == name and row.get("job_id") != job_id:
            return f"{name!r} is already registered by another fine-tuning job"
    return None
