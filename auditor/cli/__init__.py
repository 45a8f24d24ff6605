"""The ``auditor`` command line: :func:`main` takes ``argv`` (so tests call it in-process)."""

from .commands import main

__all__ = ["main"]
