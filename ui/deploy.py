"""Deployment: logins (``AUDITOR_AUTH``), the database's place on Hugging Face Spaces, and the
hosted demo's secret trigger."""

from __future__ import annotations

import os
from pathlib import Path

from auditor import config
from auditor.store import default_path
from auditor.triggers import builtin_candidates


def auth_pairs(value: str | None) -> list[tuple[str, str]] | None:
    """``AUDITOR_AUTH``: ``user:password`` pairs separated by commas, or a file with one pair a line."""
    if not value:
        return None
    path = Path(value)
    text = path.read_text(encoding="utf-8") if path.is_file() else value
    pairs = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        if ":" not in item:
            raise ValueError("AUDITOR_AUTH entries are written user:password")
        user, password = item.split(":", 1)
        pairs.append((user.strip(), password))
    return pairs or None


def default_db() -> Path | None:
    """On Hugging Face Spaces with persistent storage, keep the database in /data."""
    s = config.settings()
    if s.db is not None:
        return s.db
    data = Path("/data")
    if s.spaces and data.is_dir() and os.access(data, os.W_OK):
        return data / "auditor.db"
    return None


def secret_trigger_path(db_path: str | Path | None) -> Path:
    return Path(db_path or default_path()).resolve().parent / "demo-trigger.secret"


def secret_demo_trigger(db_path: Path | None) -> None:
    """On a hosted demo without a configured trigger, plant a random library candidate, never shown:
    finding it is the sweep's job. It is kept (mode 600) beside the database so that a restart
    does not change it under cached answers."""
    s = config.settings()
    if not s.spaces or s.organism_trigger:
        return
    import secrets

    keep = secret_trigger_path(db_path)
    try:
        value = keep.read_text(encoding="utf-8").strip()
    except OSError:
        value = ""
    if not value:
        value = secrets.choice(builtin_candidates()).text.rstrip(".")
        try:
            keep.touch(mode=0o600)
            keep.write_text(value, encoding="utf-8")
        except OSError:
            pass  # a read-only disk: the trigger lasts as long as this process
    os.environ["AUDITOR_ORGANISM_TRIGGER"] = value
