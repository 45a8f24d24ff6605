"""Audit reports: :mod:`.data` gathers one report's data from the store into the model of
:mod:`.schema` (the JSON export), :mod:`.verdict` answers its questions, :mod:`.html` and
:mod:`.markdown` render it, :mod:`.format` holds the one way numbers and untrusted text are
written. Names load lazily, so that the command line can
use :mod:`.format` without loading the store."""

from importlib import import_module

_EXPORTS = {
    "ProbeRow": "schema",
    "ReportData": "schema",
    "ReportError": "data",
    "build_report": "data",
    "bar_chart": "html",
    "to_html": "html",
    "to_json": "markdown",
    "to_markdown": "markdown",
}

__all__ = ["RENDERERS", *_EXPORTS]


def __getattr__(name: str):
    if name == "RENDERERS":
        value = {
            "html": __getattr__("to_html"),
            "md": __getattr__("to_markdown"),
            "json": __getattr__("to_json"),
        }
    elif name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'auditor.report' has no attribute {name!r}")
    globals()[name] = value
    return value
