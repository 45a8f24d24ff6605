"""Keeping API keys out of everything the auditor writes: stores, logs, reports, exports."""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(
    r"(API_?KEY|_KEY$|^KEY$|TOKEN$|SECRET|PASSWORD|PASSWD|CREDENTIAL|^AUDITOR_AUTH$)", re.I
)


def redact(text: str, *secrets: str | None) -> str:
    """Remove key values from text that will be stored or shown: the given secrets and the value
    of every environment variable whose name says it holds one."""
    values = {s for s in secrets if s and len(s) >= 6}
    values |= {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and v and len(v) >= 8}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "***")
    return text
