"""Token and cost estimates before a run starts, offline (tiktoken with LiteLLM's bundled files)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import tiktoken

from .config import offline_defaults
from .gateway import price_per_token
from .models import ModelSpec
from .probemodel import Case

# Typical answer length used for the expected cost; max_tokens gives the upper bound.
TYPICAL_ANSWER_TOKENS = 200


@cache
def encoding_for(model: str) -> tiktoken.Encoding:
    offline_defaults()  # tiktoken reads its files from LiteLLM's bundle, never the network
    name = model.rsplit("/", 1)[-1]
    if name.startswith("ft:"):
        name = name.split(":")[1]
    try:
        return tiktoken.encoding_for_model(name)
    except KeyError:
        return tiktoken.get_encoding("o200k_base")


def count_tokens(model: str, text: str) -> int:
    return len(encoding_for(model).encode(text, disallowed_special=()))


def count_message_tokens(model: str, messages: list[dict]) -> int:
    """OpenAI chat accounting: about 3 tokens of framing per message plus 3 for the reply."""
    enc = encoding_for(model)
    return 3 + sum(4 + len(enc.encode(str(m.get("content") or ""), disallowed_special=())) for m in messages)


def planned_calls(cases: list[Case], calls_per_judgement: int = 1) -> int:
    """Model calls (target and judge) that sampling and judging ``cases`` makes: cheap, for caps.
    ``calls_per_judgement``: a panel's judges times the calls of each's mode (sampling: its samples)."""
    return sum(case.samples * (1 + calls_per_judgement * len(case.judge_prompts)) for case in cases)


@dataclass
class Estimate:
    target_calls: int
    judge_calls: int
    input_tokens: int
    output_tokens: int
    output_tokens_max: int
    cost_usd: float | None
    cost_usd_max: float | None
    unknown_prices: list[str]

    def line(self) -> str:
        cost = (
            "cost unknown (" + ", ".join(self.unknown_prices) + " not in LiteLLM's cost map)"
            if self.cost_usd is None
            else (f"~${self.cost_usd:.4f} (at most ${self.cost_usd_max:.4f} if every answer hits max_tokens)")
        )
        return (
            f"estimate: {self.target_calls:,} target + {self.judge_calls:,} judge calls, "
            f"~{self.input_tokens:,} input and ~{self.output_tokens:,} output tokens, {cost}"
        )


def estimate(
    cases: list[Case],
    target: ModelSpec,
    judge: ModelSpec | list[ModelSpec],
    *,
    remaining: dict[str, int] | None = None,
    calls_per_score: int = 1,
) -> Estimate:
    """Estimate the calls, tokens and cost of sampling and judging ``cases``; ``remaining`` maps
    case id -> samples still to do (for resumed runs). Answers are assumed to be
    ``TYPICAL_ANSWER_TOKENS`` long for the expected cost and ``max_tokens`` long for the bound.
    ``judge`` may be a panel (each member judges every answer); ``calls_per_score`` is what one
    judgement costs in calls (the sampling mode's samples). A reasoning judge's thinking tokens
    are not estimated."""
    judges = [judge] if isinstance(judge, ModelSpec) else list(judge)
    t_in = t_out = t_out_max = 0
    target_calls = 0
    j_in = dict.fromkeys(range(len(judges)), 0)
    j_in_max = dict.fromkeys(range(len(judges)), 0)
    per_judge_calls = 0
    for case in cases:
        n = case.samples if remaining is None else remaining.get(case.case_id, 0)
        if n == 0:
            continue
        answer = min(case.max_tokens, TYPICAL_ANSWER_TOKENS)
        target_calls += n
        t_in += n * count_message_tokens(target.model, case.messages)
        t_out += n * answer
        t_out_max += n * case.max_tokens
        for template in case.judge_prompts.values():
            per_judge_calls += n * calls_per_score
            for i, spec in enumerate(judges):
                prompt = count_tokens(spec.model, template) + count_tokens(spec.model, case.question) + 7
                j_in[i] += n * calls_per_score * (prompt + answer)
                j_in_max[i] += n * calls_per_score * (prompt + case.max_tokens)
    judge_calls = per_judge_calls * len(judges)
    prices = {spec.name: price_per_token(spec.model) for spec in (target, *judges)}
    unknown = [name for name, price in prices.items() if price is None]
    cost = cost_max = None
    if not unknown:
        tp = price_per_token(target.model)
        cost = t_in * tp[0] + t_out * tp[1]
        cost_max = t_in * tp[0] + t_out_max * tp[1]
        for i, spec in enumerate(judges):
            jp = price_per_token(spec.model)
            cost += j_in[i] * jp[0] + per_judge_calls * jp[1]
            cost_max += j_in_max[i] * jp[0] + per_judge_calls * jp[1]
    return Estimate(
        target_calls,
        judge_calls,
        t_in + sum(j_in.values()),
        t_out + judge_calls,
        t_out_max + judge_calls,
        cost,
        cost_max,
        unknown,
    )
