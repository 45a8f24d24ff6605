"""Bench-only shims so one set of bench scripts measures both the current layout and older ones
(e.g. 5fb50c3, before the redesign moved modules). Each shim names its homes explicitly, newest
first; nothing here is imported by the auditor itself.

    from _compat import imp, make_runner, server_module
    resolve_model = imp("auditor.models:resolve_model", "auditor.gateway:resolve_model")
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
import typing
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


def _options_class(runner_cls) -> type | None:
    """The class of ``Runner``'s ``options`` parameter (RunOptions in the current layout), if any."""
    mod = sys.modules.get(runner_cls.__module__)
    if mod is not None and isinstance(getattr(mod, "RunOptions", None), type):
        return mod.RunOptions
    param = inspect.signature(runner_cls).parameters.get("options")
    if param is None:
        return None
    ann = param.annotation
    if isinstance(ann, type):
        return ann
    for arg in typing.get_args(ann):
        if isinstance(arg, type) and arg is not type(None):
            return arg
    if isinstance(ann, str) and mod is not None:  # "RunOptions | None" under postponed annotations
        for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", ann):
            if isinstance(getattr(mod, name, None), type) and name != "None":
                return getattr(mod, name)
    return None


def make_runner(store, probeset, target, judge, **kwargs):
    """``Runner(store, probeset, target, judge, ...)`` for either signature: keyword arguments the
    constructor takes are passed as they are (old layout: all of them); the rest (``samples``,
    ``concurrency``, ``trigger``...) go into its options object (``RunOptions``) when it has one."""
    runner_cls = imp("auditor.runner:Runner")
    params = inspect.signature(runner_cls).parameters
    direct = {k: v for k, v in kwargs.items() if k in params and k != "options"}
    rest = {k: v for k, v in kwargs.items() if k not in direct}
    if not rest:
        return runner_cls(store, probeset, target, judge, **direct)
    options_cls = _options_class(runner_cls)
    if options_cls is None:
        raise TypeError(f"Runner takes none of {sorted(rest)} and has no options object")
    if dataclasses.is_dataclass(options_cls):
        fields = {f.name for f in dataclasses.fields(options_cls)}
    else:  # a pydantic model or a plain class
        fields = set(getattr(options_cls, "model_fields", None) or inspect.signature(options_cls).parameters)
    unknown = sorted(set(rest) - fields)
    if unknown:
        raise TypeError(f"neither Runner nor {options_cls.__name__} takes {unknown}")
    options = options_cls(**rest)
    if "options" in params:
        return runner_cls(store, probeset, target, judge, options=options, **direct)
    return runner_cls(store, probeset, target, judge, options, **direct)
