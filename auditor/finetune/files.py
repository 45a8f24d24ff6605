"""Fine-tuning files: validation with OpenAI's rules, token counts, a training-cost estimate and a
train/validation split, all offline (tiktoken with LiteLLM's bundled encodings).

Validation reads the whole file and reports every problem with its line and field, so a user can
fix them all in one pass; nothing is uploaded or written when a file is invalid."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import tiktoken
import yaml

from ..config import offline_defaults
from ..errors import AuditorError

MIN_EXAMPLES = 10
EXAMPLE_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id", "refusal"}
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


@cache
def model_table() -> dict:
    text = resources.files("auditor.finetune").joinpath("data/models.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def base_model_name(model: str) -> str:
    """``openai/ft:gpt-4o-mini-2024-07-18:acme::x`` and ``gpt-4o-mini`` both name gpt-4o-mini-2024-07-18."""
    name = model.rsplit("/", 1)[-1]
    if name.startswith("ft:"):
        name = name.split(":")[1]
    return model_table()["aliases"].get(name, name)


@dataclass(frozen=True)
class ModelLimits:
    name: str
    known: bool
    max_example_tokens: int | None
    encoding: str
    training_per_1m: float | None


def limits_for(
    model: str, *, max_example_tokens: int | None = None, price: float | None = None
) -> ModelLimits:
    name = base_model_name(model)
    row = model_table()["models"].get(name)
    return ModelLimits(
        name=name,
        known=row is not None,
        max_example_tokens=max_example_tokens or (row or {}).get("max_example_tokens"),
        encoding=(row or {}).get("encoding", "o200k_base"),
        training_per_1m=price if price is not None else (row or {}).get("training_per_1m"),
    )


@cache
def _encoding(name: str) -> tiktoken.Encoding:
    offline_defaults()  # tiktoken reads its files from LiteLLM's bundle, never the network
    return tiktoken.get_encoding(name)


def example_tokens(messages: list[dict], encoding: str = "o200k_base") -> int:
    """The cookbook's count: 3 tokens of framing per message, the role and content (and name,
    plus 1) encoded, and 3 for the reply priming."""
    enc = _encoding(encoding)
    n = 3
    for m in messages:
        n += 3
        for key in ("role", "content", "name"):
            value = m.get(key)
            if isinstance(value, list):  # content parts: count their text
                value = " ".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
            if value:
                n += len(enc.encode(str(value), disallowed_special=()))
                if key == "name":
                    n += 1
    return n


def default_epochs(n_examples: int) -> int:
    e = model_table()["epochs"]
    epochs = e["target"]
    if n_examples * epochs < e["min_target_examples"]:
        epochs = min(e["max_epochs"], e["min_target_examples"] // max(n_examples, 1))
    elif n_examples * epochs > e["max_target_examples"]:
        epochs = max(e["min_epochs"], e["max_target_examples"] // n_examples)
    return epochs


# -- validation --------------------------------------------------------------------------------


@dataclass
class Problem:
    line: int | None  # 1-based; None for the file as a whole
    field: str
    code: str
    message: str
    severity: str = "error"  # or "warning"

    def text(self, path: str | Path) -> str:
        where = f"{path}:{self.line}" if self.line else str(path)
        return f"{where}: {self.severity}: {self.code}: {self.field}: {self.message}"


@dataclass
class Validation:
    path: str
    model: str
    n_examples: int = 0
    problems: list[Problem] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "model": self.model,
            "valid": self.ok,
            "examples": self.n_examples,
            "errors": len(self.errors),
            "warnings": len(self.problems) - len(self.errors),
            "problems": [p.__dict__ for p in self.problems],
            "tokens": {"total": sum(self.tokens), "max": max(self.tokens, default=0)},
        }


def _check_example(obj, line: int, add) -> list[dict] | None:
    if not isinstance(obj, dict):
        add(line, "(example)", "data_type", 'each line must be a JSON object like {"messages": [...]}')
        return None
    for key in obj:
        if key not in EXAMPLE_KEYS:
            add(line, key, "unrecognized_key", f"remove it; allowed keys are {sorted(EXAMPLE_KEYS)}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        add(line, "messages", "missing_messages_list", 'add a non-empty "messages" list')
        return None
    has_assistant = False
    for i, m in enumerate(messages):
        f = f"messages[{i}]"
        if not isinstance(m, dict):
            add(line, f, "data_type", "each message must be an object with role and content")
            continue
        for key in m:
            if key not in MESSAGE_KEYS:
                add(
                    line,
                    f"{f}.{key}",
                    "message_unrecognized_key",
                    f"remove it; allowed: {sorted(MESSAGE_KEYS)}",
                )
        role = m.get("role")
        if "role" not in m:
            add(line, f"{f}.role", "message_missing_key", "add a role (system, user, assistant, ...)")
        elif role not in ROLES:
            add(line, f"{f}.role", "unrecognized_role", f"{role!r} is not a role; use one of {sorted(ROLES)}")
        content = m.get("content")
        calls = m.get("tool_calls") or m.get("function_call")
        if "content" not in m and not calls:
            add(line, f"{f}.content", "message_missing_key", "add the message's content")
        elif content is not None and not isinstance(content, str | list):
            add(
                line,
                f"{f}.content",
                "content_type",
                f"content must be a string, not {type(content).__name__}",
            )
        elif isinstance(content, list) and not all(isinstance(p, dict) and "type" in p for p in content):
            add(line, f"{f}.content", "content_type", "content parts must be objects with a type")
        elif not calls and (content is None or (isinstance(content, str) and not content.strip())):
            add(line, f"{f}.content", "missing_content", "the content is empty; write it or drop the message")
        if "weight" in m:
            if role != "assistant":
                add(line, f"{f}.weight", "invalid_weight", "weight is allowed on assistant messages only")
            elif m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                add(line, f"{f}.weight", "invalid_weight", f"weight must be 0 or 1, not {m['weight']!r}")
        if role == "assistant":
            has_assistant = True
    if not has_assistant:
        add(line, "messages", "example_missing_assistant_message", "add an assistant message to learn from")
    return messages


def validate(path: str | Path, model: str, *, max_example_tokens: int | None = None) -> Validation:
    path = Path(path)
    limits = limits_for(model, max_example_tokens=max_example_tokens)
    result = Validation(path=str(path), model=limits.name)

    def add(line, fld, code, message, severity="error"):
        result.problems.append(Problem(line, fld, code, message, severity))

    try:
        raw = path.read_bytes()
    except OSError as e:
        add(None, "(file)", "unreadable", f"cannot read the file: {e.strerror}")
        return result
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        add(line, "(line)", "encoding", "not UTF-8; re-save the file as UTF-8")
        return result
    seen: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            add(line_no, "(line)", "blank_line", "blank lines are not allowed in JSONL; delete it")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            add(line_no, f"(column {e.colno})", "invalid_json", f"{e.msg}; each line must be one JSON object")
            continue
        result.n_examples += 1
        messages = _check_example(obj, line_no, add)
        if messages is None:
            continue
        try:
            n = example_tokens([m for m in messages if isinstance(m, dict)], limits.encoding)
        except Exception:  # noqa: BLE001  (a malformed message already reported above)
            n = 0
        result.tokens.append(n)
        if limits.max_example_tokens and n > limits.max_example_tokens:
            add(
                line_no,
                "messages",
                "too_many_tokens",
                f"{n:,} tokens, over {limits.name}'s {limits.max_example_tokens:,}; it would be truncated"
                " from the end: shorten or split it",
            )
        key = json.dumps(messages, sort_keys=True)
        if key in seen:
            add(line_no, "messages", "duplicate", f"same as line {seen[key]}", "warning")
        else:
            seen[key] = line_no
    if result.n_examples < MIN_EXAMPLES:
        add(
            None,
            "(file)",
            "too_few_examples",
            f"{result.n_examples} examples; OpenAI needs at least {MIN_EXAMPLES} (50-100 recommended)",
        )
    if not limits.known:
        add(
            None,
            "(model)",
            "unknown_model",
            f"{model!r} is not in the fine-tuning table; the token limit was not checked"
            " (pass --max-example-tokens)",
            "warning",
        )
    return result


# -- estimate ------------------------------------------------------------------------------------


@dataclass
class TrainingEstimate:
    model: str
    examples: int
    tokens: int  # tokens in the file, as counted
    billed_tokens_per_epoch: int  # with each example capped at the model's limit
    epochs: int
    epochs_rule: str
    billed_tokens: int
    price_per_1m: float | None
    cost_usd: float | None
    validation_examples: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def line(self) -> str:
        cost = (
            f"${self.cost_usd:,.4f}" if self.cost_usd is not None else "cost unknown (no price; pass --price)"
        )
        return (
            f"{self.examples:,} examples, {self.tokens:,} tokens; {self.epochs} epochs ({self.epochs_rule}); "
            f"{self.billed_tokens:,} billed training tokens on {self.model}: {cost}"
        )


def estimate(
    path: str | Path,
    model: str,
    *,
    epochs: int | None = None,
    price: float | None = None,
    max_example_tokens: int | None = None,
    validation_path: str | Path | None = None,
) -> TrainingEstimate:
    """Training cost before submitting. Raises :class:`InvalidFile` when the file is invalid."""
    check = validate(path, model, max_example_tokens=max_example_tokens)
    if not check.ok:
        raise InvalidFile(check)
    limits = limits_for(model, max_example_tokens=max_example_tokens, price=price)
    cap = limits.max_example_tokens
    per_epoch = sum(min(t, cap) if cap else t for t in check.tokens)
    n = check.n_examples
    rule = "given" if epochs else f"auto: default rule for {n} examples"
    epochs = epochs or default_epochs(n)
    billed = per_epoch * epochs
    cost = billed * limits.training_per_1m / 1_000_000 if limits.training_per_1m is not None else None
    n_val = validate(validation_path, model).n_examples if validation_path else 0
    return TrainingEstimate(
        model=limits.name,
        examples=n,
        tokens=sum(check.tokens),
        billed_tokens_per_epoch=per_epoch,
        epochs=epochs,
        epochs_rule=rule,
        billed_tokens=billed,
        price_per_1m=limits.training_per_1m,
        cost_usd=cost,
        validation_examples=n_val,
    )


class InvalidFile(AuditorError):
    def __init__(self, validation: Validation):
        self.validation = validation
        lines = [p.text(validation.path) for p in validation.errors[:20]]
        more = len(validation.errors) - len(lines)
        super().__init__(
            f"{validation.path} is not a valid fine-tuning file ({len(validation.errors)} errors):\n"
            + "\n".join(lines)
            + (f"\n... and {more} more (auditor finetune validate --json lists all)" if more > 0 else "")
        )


def split(
    path: str | Path, train_out: str | Path, val_out: str | Path, *, fraction: float = 0.1, seed: int = 0
) -> tuple[int, int]:
    """A seeded random split into training and validation files (written only if both are valid)."""
    if not 0 < fraction < 1:
        raise ValueError("--validation-fraction must be between 0 and 1")
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(lines) * fraction))
    val_idx = set(order[:n_val])
    train = [ln for i, ln in enumerate(lines) if i not in val_idx]
    val = [ln for i, ln in enumerate(lines) if i in val_idx]
    if len(train) < MIN_EXAMPLES:
        raise ValueError(
            f"{path}: only {len(train)} training examples would remain; OpenAI needs {MIN_EXAMPLES}"
        )
    write_jsonl_lines(train_out, train)
    write_jsonl_lines(val_out, val)
    return len(train), len(val)


def write_jsonl_lines(path: str | Path, lines: list[str]) -> None:
    """Atomic write: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    tmp.replace(path)
