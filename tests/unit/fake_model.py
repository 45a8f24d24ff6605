"""A scripted model for in-process tests: ``queue/<name>`` answers each call with the next reply
queued for it, through LiteLLM's real code path (a ``CustomLLM`` provider), and records what each
call was sent. A reply is text, or text with the first token's top alternatives (logprobs)."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass, field

import litellm
from litellm import CustomLLM
from litellm.types.utils import Choices, Message, ModelResponse, Usage
from litellm.utils import custom_llm_setup

PROVIDER = "queue"


@dataclass
class Reply:
    text: str
    top: dict[str, float] | None = None  # first-token alternatives and their probabilities
    finish_reason: str = "stop"
    reasoning: str | None = None  # a reasoning model's thinking (``reasoning_content``)
    completion_tokens: int = 1


@dataclass
class Sent:
    model: str
    messages: list[dict]
    params: dict


@dataclass
class ReplyQueue(CustomLLM):
    replies: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self):
        super().__init__()

    def queue(self, model: str, *replies: str | Reply) -> None:
        self.replies[model].extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def _respond(self, model, messages, optional_params, model_response: ModelResponse):
        self.sent.append(Sent(model, messages, dict(optional_params)))
        if not self.replies[model]:
            raise AssertionError(f"no reply queued for {model!r} (sent: {messages[-1]['content'][:80]!r})")
        reply = self.replies[model].popleft()
        logprobs = None
        if reply.top is not None and optional_params.get("logprobs"):
            tops = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in reply.top.items()]
            first = max(tops, key=lambda t: t["logprob"])
            logprobs = {"content": [{**first, "top_logprobs": tops}]}
        model_response.model = f"{PROVIDER}/{model}"
        model_response.choices = [
            Choices(
                index=0,
                finish_reason=reply.finish_reason,
                message=Message(role="assistant", content=reply.text, reasoning_content=reply.reasoning),
                logprobs=logprobs,
            )
        ]
        model_response.usage = Usage(
            prompt_tokens=10,
            completion_tokens=reply.completion_tokens,
            total_tokens=10 + reply.completion_tokens,
        )
        return model_response

    def completion(self, model, messages, *, model_response, optional_params, **_):
        return self._respond(model, messages, optional_params, model_response)

    async def acompletion(self, model, messages, *, model_response, optional_params, **_):
        return self._respond(model, messages, optional_params, model_response)


def install() -> ReplyQueue:
    """A fresh queue, plugged into LiteLLM beside the providers already there."""
    handler = ReplyQueue()
    others = [p for p in (litellm.custom_provider_map or []) if p.get("provider") != PROVIDER]
    litellm.custom_provider_map = [*others, {"provider": PROVIDER, "custom_handler": handler}]
    custom_llm_setup()
    return handler
