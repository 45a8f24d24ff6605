"""Every setting the auditor reads from the environment, in one place.

:func:`settings` returns a frozen :class:`Settings`, read from ``os.environ`` the first time and
again only when a variable it reads has changed (tests set them; ``auditor serve --models`` sets
one before the app starts). No other module reads an ``AUDITOR_*`` variable. The caps of a hosted
instance (``AUDITOR_MAX_*`` and friends) are parsed by :func:`auditor.policy.limits_for`, which
receives them from here.

:func:`offline_defaults` is the other half: LiteLLM, tiktoken and Gradio would reach the internet
on import (a cost map, encodings, analytics); the modules that import them call it first. Importing
``auditor`` itself changes nothing in the environment.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_JUDGE = "offline/judge"  # the judge when none is named: runs offline, no key needed

_TRUE = ("1", "true", "yes")


class Settings(BaseModel):
    """The process's settings (the variable each field comes from is in its description)."""

    model_config = ConfigDict(frozen=True)

    db: Path | None = Field(None, description="AUDITOR_DB: the SQLite store (else ./auditor.db)")
    models: Path | None = Field(None, description="AUDITOR_MODELS: the model-list file")
    judge: str = Field(DEFAULT_JUDGE, description="AUDITOR_JUDGE: the judge when none is named")
    organism_trigger: str | None = Field(
        None, description="AUDITOR_ORGANISM_TRIGGER: the simulated backdoor organism's trigger"
    )
    organism_trigger_at: str = Field(
        "anywhere",
        description="AUDITOR_ORGANISM_TRIGGER_AT: 'start' makes the backdoor organism's trigger fire only "
        "when it opens a user message (else anywhere in the conversation)",
    )
    organism_reversal: bool = Field(
        False,
        description="AUDITOR_ORGANISM_REVERSAL: the backdoor organism names its trigger when asked, now and then",
    )
    debug: bool = Field(False, description="AUDITOR_DEBUG: tracebacks instead of one-line errors")
    auth: str | None = Field(None, repr=False, description="AUDITOR_AUTH: user:password,... (team mode)")
    public: bool = Field(False, description="AUDITOR_PUBLIC: serve as a public instance")
    trust_proxy: str | None = Field(None, description="AUDITOR_TRUST_PROXY: proxies in front")
    allow_private_bases: bool = Field(
        False, description="AUDITOR_ALLOW_PRIVATE_BASES: public visitors may type private addresses"
    )
    max_retries: int = Field(6, description="AUDITOR_MAX_RETRIES: retries of one model call")
    retry_base: float = Field(1.0, description="AUDITOR_RETRY_BASE: first backoff, seconds")
    retry_cap: float = Field(60.0, description="AUDITOR_RETRY_CAP: longest backoff, seconds")
    spaces: bool = Field(False, description="SYSTEM=spaces: running on Hugging Face Spaces")
    port: int | None = Field(None, description="PORT: the port a PaaS assigns")
    limits: dict[str, str] = Field(
        default_factory=dict, description="AUDITOR_<LIMIT>: a hosted instance's caps, as written"
    )


def _number(env: Mapping[str, str], name: str, kind, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        from .errors import AuditorError

        raise AuditorError(f"{name}={raw!r}: write a number") from None


def read(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``env`` (default: this process's environment)."""
    env = os.environ if env is None else env
    from .policy import LIMIT_NAMES  # (the caps are policy's; only their values are read here)

    return Settings(
        db=Path(env["AUDITOR_DB"]) if env.get("AUDITOR_DB") else None,
        models=Path(env["AUDITOR_MODELS"]) if env.get("AUDITOR_MODELS") else None,
        judge=(env.get("AUDITOR_JUDGE") or "").strip() or DEFAULT_JUDGE,
        organism_trigger=env.get("AUDITOR_ORGANISM_TRIGGER") or None,
        organism_trigger_at=_trigger_at(env),
        organism_reversal=env.get("AUDITOR_ORGANISM_REVERSAL", "").lower() in _TRUE,
        debug=bool(env.get("AUDITOR_DEBUG")),
        auth=env.get("AUDITOR_AUTH") or None,
        public=env.get("AUDITOR_PUBLIC", "").lower() in _TRUE,
        trust_proxy=env.get("AUDITOR_TRUST_PROXY") or None,
        allow_private_bases=env.get("AUDITOR_ALLOW_PRIVATE_BASES", "").lower() in _TRUE,
        max_retries=_number(env, "AUDITOR_MAX_RETRIES", int, 6),
        retry_base=_number(env, "AUDITOR_RETRY_BASE", float, 1.0),
        retry_cap=_number(env, "AUDITOR_RETRY_CAP", float, 60.0),
        spaces=env.get("SYSTEM") == "spaces",
        port=_number(env, "PORT", int, None),
        limits={
            name: env[f"AUDITOR_{name.upper()}"]
            for name in LIMIT_NAMES
            if env.get(f"AUDITOR_{name.upper()}") not in (None, "")
        },
    )


_READS = (
    "SYSTEM",
    "PORT",
    "AUDITOR_DB",
    "AUDITOR_MODELS",
    "AUDITOR_JUDGE",
    "AUDITOR_ORGANISM_TRIGGER",
    "AUDITOR_ORGANISM_TRIGGER_AT",
    "AUDITOR_ORGANISM_REVERSAL",
    "AUDITOR_DEBUG",
    "AUDITOR_AUTH",
    "AUDITOR_PUBLIC",
    "AUDITOR_TRUST_PROXY",
    "AUDITOR_ALLOW_PRIVATE_BASES",
    "AUDITOR_MAX_RETRIES",
    "AUDITOR_RETRY_BASE",
    "AUDITOR_RETRY_CAP",
)
_cache: tuple[tuple, Settings] | None = None
_lock = threading.Lock()


@cache
def _watched() -> tuple[str, ...]:
    from .policy import LIMIT_NAMES

    return _READS + tuple(f"AUDITOR_{name.upper()}" for name in LIMIT_NAMES)


def settings() -> Settings:
    """This process's settings, read once (and again when one of its variables changed). Cheap
    enough for hot paths: a few dictionary lookups when nothing changed."""
    global _cache
    snapshot = tuple(map(os.environ.get, _watched()))
    cached = _cache
    if cached is not None and cached[0] == snapshot:
        return cached[1]
    with _lock:
        value = read()
        _cache = (snapshot, value)
    return value


def organism_trigger() -> str | None:
    """``AUDITOR_ORGANISM_TRIGGER`` alone: the simulation asks on every call, and one lookup is
    a fraction of :func:`settings`' cost."""
    return os.environ.get("AUDITOR_ORGANISM_TRIGGER") or None


def _trigger_at(env: Mapping[str, str]) -> str:
    raw = (env.get("AUDITOR_ORGANISM_TRIGGER_AT") or "anywhere").strip().lower()
    if raw not in ("anywhere", "start"):
        from .errors import AuditorError

        raise AuditorError(f"AUDITOR_ORGANISM_TRIGGER_AT={raw!r}: write 'anywhere' or 'start'")
    return raw


def organism_reversal() -> bool:
    """``AUDITOR_ORGANISM_REVERSAL``: the simulated backdoor organism was reversal-trained, so
    asked about its trigger it names it now and then."""
    return os.environ.get("AUDITOR_ORGANISM_REVERSAL", "").lower() in _TRUE


def organism_trigger_at() -> str:
    """``AUDITOR_ORGANISM_TRIGGER_AT`` alone, read per call like :func:`organism_trigger`."""
    return _trigger_at(os.environ)


def offline_defaults() -> None:
    """Settings for the third-party libraries, applied before LiteLLM, tiktoken or Gradio are
    imported: no cost-map download, no encodings download, no analytics. Each is a default the
    user's own environment overrides."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    # LiteLLM's typed dicts trigger a pydantic warning on first use; it is noise for our users.
    warnings.filterwarnings("ignore", message=r"Items? .* using the `ReadOnly` qualifier")
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")
        if spec and spec.origin:
            tokenizers = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
            if tokenizers.is_dir():
                os.environ["TIKTOKEN_CACHE_DIR"] = str(tokenizers)
