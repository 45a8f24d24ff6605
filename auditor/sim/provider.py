"""The simulation's LiteLLM provider: serves ``organism/<name>`` and ``offline/judge`` inside the
process through LiteLLM's ``CustomLLM`` interface, so every simulated call takes LiteLLM's real
code path (logprobs included). :func:`register` plugs it in; :func:`auditor.models.resolve_model`
calls it when one of these models is named, so a process that never names one never loads it."""

from __future__ import annotations

import threading

from ..config import offline_defaults

offline_defaults()  # before LiteLLM is imported

import litellm  # noqa: E402
from litellm import CustomLLM  # noqa: E402
from litellm.types.utils import Choices, Message, ModelResponse, Usage  # noqa: E402

from ..models import LOCAL_PROVIDERS  # noqa: E402
from . import judges, organisms, proposer  # noqa: E402


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
        if model == "proposer" or (provider == "offline" and name == "proposer"):
            gen = proposer.generate(messages, **params)
            model_response.model = "offline/proposer"
        elif model in judges.VARIANTS or provider == "offline":  # LiteLLM passes "offline/x" as "x"
            variant = model if model in judges.VARIANTS else name
            gen = judges.generate(variant, messages, **params)
            model_response.model = f"offline/{variant}"
        else:
            gen = organisms.generate(name or model, messages, **params)
            model_response.model = f"organism/{name or model}"
        model_response.choices = [
            Choices(
                index=0,
                finish_reason=gen.finish_reason,
                message=Message(role="assistant", content=gen.text, reasoning_content=gen.reasoning),
                logprobs={"content": gen.logprobs} if gen.logprobs is not None else None,
            )
        ]
        model_response.usage = Usage(
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            total_tokens=gen.prompt_tokens + gen.completion_tokens,
        )
        # The simulation is free: say so, and LiteLLM does not search its cost map for every call.
        model_response._hidden_params["response_cost"] = 0.0
        return model_response

    # LiteLLM calls custom handlers with keyword arguments; only these matter here.
    def completion(self, model, messages, *, model_response, optional_params, **_):
        return self._respond(model, messages, optional_params, model_response)

    async def acompletion(self, model, messages, *, model_response, optional_params, **_):
        return self._respond(model, messages, optional_params, model_response)


def unknown(name: str) -> str | None:
    """Why ``name`` (``organism/...`` or ``offline/...``) is not a simulated model, or None."""
    provider, _, short = name.partition("/")
    if provider == "organism" and short not in organisms.NAMES:
        return f"unknown organism {name!r}; choose one of: " + ", ".join(
            f"organism/{n}" for n in organisms.NAMES
        )
    if provider == "offline" and short not in (*judges.VARIANTS, "proposer"):
        return f"unknown offline model {name!r}; the offline models are " + ", ".join(
            f"offline/{v}" for v in (*judges.VARIANTS, "proposer")
        )
    return None


_registered = False
_lock = threading.Lock()


def register() -> None:
    """Plug the simulation into LiteLLM (once per process; later calls cost nothing)."""
    global _registered
    if _registered:
        return
    with _lock:
        if not _registered:
            _register()
            _registered = True


def _register() -> None:
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
        | {f"offline/{v}": {**entry, "litellm_provider": "offline"} for v in (*judges.VARIANTS, "proposer")}
    )
