"""Who may do what, decided in one place: the app, the command line and the fine-tuning client all
ask this module, and ``SECURITY.md`` describes the same rules.

- **Modes.** ``cli``: the owner at their own terminal. ``local``: ``auditor serve`` on a loopback
  address without logins, one trusted person. ``public``: no logins and a non-loopback address,
  ``SYSTEM=spaces`` or ``AUDITOR_PUBLIC=1``: strangers. ``team``: ``AUDITOR_AUTH`` set: listed users.
- **Work is bounded before it starts**: samples, estimated calls, sweep budgets, chat lengths,
  dataset sizes and running jobs have caps (:class:`Limits`, stricter in public mode), checked
  before anything runs.
- **What a request may call** (:meth:`Policy.check_base`, :meth:`Policy.check_model`): an API base
  it typed must be http(s), and on a public instance a public internet address
  (:mod:`auditor.netguard` judges addresses); it takes only providers whose sole credential is the
  key it gives (:mod:`auditor.credentials` decides what a call carries); in public mode the
  server's keys serve only model-list entries marked ``model_info: {public: true}``, each visitor
  under a daily call and token budget (counted by :mod:`auditor.quota`).
- **Names cannot be taken over**: a fine-tuned model's reported name never shadows a built-in
  name, a model string LiteLLM routes by itself, a model-list alias or another job's model.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from . import config
from .credentials import Spec, credential, uses_server_key
from .errors import AuditorError
from .netguard import REFUSED_BASE, public_addresses

BUILTIN_PREFIXES = ("organism/", "offline/")


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
