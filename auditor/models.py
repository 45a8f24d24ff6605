"""Models as the auditor knows them: :class:`ModelSpec` (one callable model, its address and where
its key may go), the model-list file (LiteLLM's proxy format), :func:`resolve_model` (what a user
typed, made callable) and :func:`route` (which provider LiteLLM will call)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from . import config, credentials, policy
from .errors import AuditorError

config.offline_defaults()  # before LiteLLM is imported

import litellm  # noqa: E402

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


def provider_prefixes() -> set[str]:
    """The ``provider/`` prefixes LiteLLM routes by itself (and ``hf``, Hugging Face's)."""
    return set(litellm.provider_list) | {"hf"}


class ModelError(AuditorError):
    """A model name or model-list file that cannot be used; the message says how to fix it."""


class ModelSpec(BaseModel):
    """One callable model. ``api_key`` (the caller's own key) never leaves memory; ``api_key_env``
    names the variable of a key the server holds, which goes only to ``key_bases``, the addresses
    it was configured for (see :mod:`auditor.credentials`)."""

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
        credential = credentials.credential_id(self)
        if credential is not None:
            out["credential"] = credential
        return out

    def key(self, base: str | None) -> str | None:
        """The key to send with a call to ``base``; None lets LiteLLM read the provider's key from
        the environment (toward the provider's own endpoint only, except on the command line)."""
        return credentials.key_for(self, base)


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
    return config.settings().models


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
        from .sim import provider  # the simulation loads only when one of its models is named

        problem = provider.unknown(name)
        if problem is not None:
            raise ModelError(problem)
        provider.register()
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
