"""em-auditor: audit finetuned language models for emergent misalignment and hidden backdoors.

The public API. Data flows one way: probe set -> target model -> store -> judge -> store ->
metrics -> report. Each arrow is one module: ``probesets`` (finds the files; ``probeformats`` reads
them into the ``probemodel`` cases), ``gateway`` (every model call; with ``models`` and ``limits``
the model layer, the only code that imports LiteLLM),
``store`` (the only package that touches SQLite), ``judge`` and ``scoring``, ``metrics``,
``report``; ``runner`` connects them. ``tests/test_layout.py`` keeps these promises true.
Names are imported lazily so that ``auditor --help`` does not pay for LiteLLM, and importing
``auditor`` changes nothing in the environment.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "AuditorError": "errors",
    "Settings": "config",
    "settings": "config",
    "CallResult": "gateway",
    "Gateway": "gateway",
    "ModelError": "models",
    "ModelSpec": "models",
    "load_model_list": "models",
    "resolve_model": "models",
    "Judge": "judge",
    "Judgement": "judge",
    "score_from_probs": "judge",
    "RunSummary": "metrics",
    "Thresholds": "metrics",
    "summarize": "metrics",
    "wilson": "stats",
    "Case": "probemodel",
    "Entry": "probemodel",
    "ProbeSet": "probemodel",
    "ProbeSetError": "probemodel",
    "load_probeset": "probesets:load",
    "Runner": "runner",
    "RunResult": "runner",
    "RunOptions": "runner",
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
