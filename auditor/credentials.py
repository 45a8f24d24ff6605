"""What a model call carries, decided in one place (:func:`credential`); the gateway, the batch
client, the fine-tuning client and the deployment policy all ask it.

- **Credentials follow their configuration.** A key from the server's environment or model list
  goes only to the endpoint it was configured for: a provider's key to the provider's own endpoint
  (no API base given), a model-list entry's key to that entry's ``api_base`` (and its replicas).
  A call to an address a user typed carries the user's key or a placeholder, so that neither
  LiteLLM nor the openai SDK can fall back to a key from the environment; providers whose
  credentials are ambient (cloud accounts) never go there. Only the command line may send
  environment keys to an ``--api-base`` typed at it.
- **Cached answers are keyed on the credential** that bought them (a fingerprint, never the key).
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple, Protocol

# Sent instead of a key to an endpoint the user typed without giving a key (a local vLLM or Ollama
# needs none): LiteLLM and the openai SDK read a key from the environment whenever none is passed.
PLACEHOLDER_KEY = "none"
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
