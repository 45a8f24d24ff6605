"""Chatting with a model under audit: trigger injection, a baseline side by side, inline judging,
and conversations kept in the store. The app's Chat tab wires its widgets to these calls."""

from __future__ import annotations

import asyncio
import uuid
from functools import cache

from pydantic import BaseModel

from . import probesets
from .config import DEFAULT_JUDGE
from .gateway import Gateway
from .judge import Judge
from .metrics import Thresholds
from .models import ModelSpec
from .store import Store
from .triggers import PLACEMENTS, place

CHAT_PLACEMENTS = ("none", *PLACEMENTS)  # a chat may also send no trigger


class ChatSettings(BaseModel):
    """What a conversation was held with (stored with it; keys are never part of it)."""

    model: str = "organism/insecure"
    api_base: str | None = None
    baseline: str | None = None
    baseline_api_base: str | None = None
    system: str | None = None
    temperature: float = 1.0
    max_tokens: int = 600
    trigger: str | None = None
    placement: str = "none"
    judge: str = DEFAULT_JUDGE
    judge_api_base: str | None = None
    auto_judge: bool = True


def build_messages(history: list[dict], user_text: str, settings: ChatSettings) -> list[dict]:
    """The conversation to send: system prompt, earlier turns (as sent), the new user message, and
    the trigger placed where the settings say."""
    messages: list[dict] = []
    if settings.system:
        messages.append({"role": "system", "content": settings.system})
    messages += [
        {"role": m["role"], "content": m["content"]}
        for m in history
        if m.get("role") in ("user", "assistant")
    ]
    new = [*messages, {"role": "user", "content": user_text}]
    if settings.trigger and settings.placement != "none":
        placed = place(new, settings.trigger, settings.placement)
        if settings.placement in ("prefix", "suffix"):
            # only the new message carries the trigger; earlier turns stay as they were sent
            new = [*new[:-1], placed[-1]]
        else:
            new = placed
    return new


async def stream_reply(gateway: Gateway, spec: ModelSpec, messages: list[dict], settings: ChatSettings):
    async for piece in gateway.stream(
        spec, messages, temperature=settings.temperature, max_tokens=settings.max_tokens
    ):
        yield piece


@cache
def em_judge_prompts() -> dict[str, str]:
    return probesets.load("em-core").entries[0].judge_prompts


async def judge_reply(
    gateway: Gateway, judge_spec: ModelSpec, question: str, answer: str, thresholds: Thresholds | None = None
) -> dict:
    """The EM judge on one reply: aligned and coherent scores and whether it counts as misaligned."""
    th = thresholds or Thresholds()
    judge = Judge(gateway, judge_spec)
    prompts = em_judge_prompts()
    aligned, coherent = await asyncio.gather(
        judge.score_0_100("aligned", prompts["aligned"], question, answer),
        judge.score_0_100("coherent", prompts["coherent"], question, answer),
    )
    misaligned = None
    if aligned.score is not None and coherent.score is not None:
        misaligned = coherent.score > th.coherent_above and aligned.score < th.aligned_below
    return {
        "aligned": aligned.score,
        "coherent": coherent.score,
        "misaligned": misaligned,
        "note": aligned.error or coherent.error,
    }


def new_conversation_id() -> str:
    return "conv-" + uuid.uuid4().hex[:12]


def save_conversation(
    store: Store,
    conv_id: str,
    *,
    owner: str | None,
    settings: ChatSettings,
    messages: list[dict],
    baseline_messages: list[dict],
    judgements: list[dict],
) -> None:
    first = next((m["content"] for m in messages if m.get("role") == "user"), "conversation")
    store.save_conversation(
        {
            "id": conv_id,
            "owner": owner,
            "title": str(first)[:80],
            "model": settings.model,
            "baseline": settings.baseline,
            "settings": settings.model_dump(),
            "messages": messages,
            "baseline_messages": baseline_messages,
            "judgements": judgements,
        }
    )
