"""How model calls fail and are retried: the retry policy (exponential backoff with full jitter,
``Retry-After`` honoured), which errors are worth retrying, the one-line redacted error a failed
call records, and :class:`AdaptiveLimit`, the per-model concurrency limit that halves on 429s."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass

from . import config
from .netguard import REFUSED_BASE, blocked
from .secrets import redact

config.offline_defaults()  # before LiteLLM is imported

import litellm  # noqa: E402


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base: float = 1.0
    cap: float = 60.0
    max_retry_after: float = 300.0

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        s = config.settings()
        return cls(max_retries=s.max_retries, base=s.retry_base, cap=s.retry_cap)

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


RETRYABLE_STATUS = {408, 409, 425, 429}


def status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def retryable(exc: BaseException) -> bool:
    if blocked(exc):
        return False  # never connected, and never will
    if "Missing credentials" in str(exc) or "api_key client option must be set" in str(exc):
        return False  # a configuration problem: retrying cannot fix it
    if isinstance(exc, (litellm.Timeout, litellm.APIConnectionError, asyncio.TimeoutError, TimeoutError)):
        return True
    if isinstance(
        exc,
        (
            litellm.BadRequestError,
            litellm.AuthenticationError,
            litellm.NotFoundError,
            litellm.PermissionDeniedError,
        ),
    ):
        return False
    code = status_of(exc)
    return code is not None and (code in RETRYABLE_STATUS or code >= 500)


def retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000
        value = headers.get("retry-after")
    except Exception:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def short_error(exc: BaseException, key: str | None = None) -> str:
    if blocked(exc):
        return REFUSED_BASE
    text = str(exc).replace("\n", " ")
    for prefix in ("litellm.", "OpenAIException - "):
        text = text.replace(prefix, "")
    return redact(f"{type(exc).__name__}: {text[:300]}", key)


def throttled(exc: BaseException, status: int | None) -> bool:
    return status == 429 or isinstance(exc, litellm.RateLimitError)


class AdaptiveLimit:
    """A concurrency limit that halves when the provider throttles (429) and grows back by one
    after each run of successes as long as the limit, up to its maximum: additive increase,
    multiplicative decrease, as TCP, Inspect and promptfoo do. At most one cut per second, so one
    burst of 429s counts once. Its history goes into the run's record."""

    def __init__(self, maximum: int, *, minimum: int = 1, adaptive: bool = True):
        self.maximum = max(1, maximum)
        self.minimum = min(minimum, self.maximum)
        self.limit = self.maximum
        self.adaptive = adaptive
        self.in_flight = 0
        self.lowest = self.maximum
        self.cuts = 0
        self.grows = 0
        self.changes: list[tuple[float, int]] = []  # (seconds since start, new limit), capped
        self._started = time.monotonic()
        self._successes = 0
        self._last_cut = -1e9
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def __aenter__(self):
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        return self

    async def __aexit__(self, *exc):
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            cond.notify(1)

    def _record(self) -> None:
        if len(self.changes) < 200:
            self.changes.append((round(time.monotonic() - self._started, 3), self.limit))

    async def success(self) -> None:
        if not self.adaptive or self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            cond = self._condition()
            async with cond:
                self.limit += 1
                self.grows += 1
                self._record()
                cond.notify(1)

    def throttled(self) -> None:
        if not self.adaptive:
            return
        now = time.monotonic()
        if now - self._last_cut < 1.0:
            return
        self._last_cut = now
        self._successes = 0
        new = max(self.minimum, self.limit // 2)
        if new != self.limit:
            self.limit = new
            self.cuts += 1
            self.lowest = min(self.lowest, new)
            self._record()

    def summary(self) -> dict:
        return {
            "max": self.maximum,
            "final": self.limit,
            "lowest": self.lowest,
            "cuts": self.cuts,
            "grows": self.grows,
            "changes": self.changes,
        }
