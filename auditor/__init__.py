"""em-auditor: audit finetuned language models for emergent misalignment and hidden backdoors.

The public API. Data flows one way: probe set -> target model -> store -> judge -> store ->
metrics. Each arrow is one module: ``probesets``, ``gateway`` (the only module that talks to
LiteLLM), ``store`` (the only module that writes SQLite), ``judge``, ``metrics``; ``runner``
connects them. Names are imported lazily so that ``auditor --help`` does not pay for LiteLLM.
"""

from importlib import import_module

from . import _env  # noqa: F401  (offline-safe settings before any third-party import)

__version__ = "0.1.0"

_EXPORTS = {
    "CallResult": "gateway",
    "Gateway": "gateway",
    "ModelError": "gateway",
    "ModelSpec": "gateway",
    "load_model_list": "gateway",
    "resolve_model": "gateway",
    "Judge": "judge",
    "Judgement": "judge",
    "score_from_probs": "judge",
    "RunSummary": "metrics",
    "Thresholds": "metrics",
    "summarize": "metrics",
    "wilson": "metrics",
    "Case": "probesets",
    "Entry": "probesets",
    "ProbeSet": "probesets",
    "ProbeSetError": "probesets",
    "load_probeset": "probesets:load",
    "Runner": "runner",
    "RunResult": "runner",
    "run_sync": "runner",
    "Store": "store",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'auditor' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(import_module(f".{module}", __name__), attr or name)
    globals()[name] = value
    return value
