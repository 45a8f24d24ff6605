"""Bench-only shims so one set of bench scripts measures both the current layout and older ones
(e.g. 5fb50c3, before the redesign moved modules). Each shim names its homes explicitly, newest
first; nothing here is imported by the auditor itself.

    from _compat import imp, make_runner, server_module
    resolve_model = imp("auditor.models:resolve_model", "auditor.gateway:resolve_model")
"""

from __future__ import annotations

import importlib
from pathlib import Path

# the local OpenAI-compatible test server, by layout (newest first)
SERVER_MODULES = ("auditor.sim.server", "auditor.openai_server")


def imp(*homes: str):
    """The first of ``"module:name"`` (or ``"module"``) that imports; ImportError naming all if none."""
    errors = []
    for home in homes:
        mod_name, _, attr = home.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:  # ModuleNotFoundError, or a name the module no longer exports
            errors.append(f"{home}: {e}")
            continue
        if not attr:
            return mod
        if hasattr(mod, attr):
            return getattr(mod, attr)
        errors.append(f"{home}: no attribute {attr!r}")
    raise ImportError("none of these imports: " + "; ".join(errors))


def server_module(root: Path) -> str:
    """The module to run as ``python -m`` for the test server in the checkout at ``root``."""
    for name in SERVER_MODULES:
        rel = Path(*name.split("."))
        if (root / rel / "__main__.py").exists() or (root / rel).with_suffix(".py").exists():
            return name
    raise FileNotFoundError(f"no test server module ({', '.join(SERVER_MODULES)}) under {root}")


def make_runner(store, probeset, target, judge, *, gateway=None, **options):
    """``Runner(store, probeset, target, judge, ...)`` in either layout: the current one takes its
    sampling options as a ``RunOptions``, older ones as keyword arguments."""
    runner = importlib.import_module("auditor.runner")
    run_options = getattr(runner, "RunOptions", None)
    if run_options is None:
        return runner.Runner(store, probeset, target, judge, gateway=gateway, **options)
    return runner.Runner(store, probeset, target, judge, run_options(**options), gateway=gateway)
