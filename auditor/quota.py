"""Per-person counters: a visitor's daily budget of calls and tokens on the server's keys
(:class:`Meter`, kept in the store so a restart does not refill it, and :func:`reserved_tokens`,
what one call reserves before it is sent), and the throttle on failed logins (:class:`LoginThrottle`,
kept in memory). :mod:`auditor.policy` sets the numbers (``Limits``); this module counts against them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .policy import PolicyError

if TYPE_CHECKING:
    from .policy import Limits
    from .store import Store


# ---------------------------------------------------------------------------------------------
# Visitor budgets (calls and tokens on the server's keys)


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Meter:
    """One person's daily budget of calls and tokens on the server's keys. ``take`` reserves a
    call and the tokens it may use (its prompt and its ``max_tokens``) before it is sent,
    refusing when they do not fit; ``settle`` corrects the reservation with what the reply
    reported. Counts live in the store, so a restart does not refill the budget, and a
    reservation is one transaction, so concurrent calls cannot overdraw it."""

    def __init__(self, store: Store, who: str, limits: Limits):
        self.store = store
        self.who = who
        self.calls = limits.visitor_calls
        self.tokens = limits.visitor_tokens

    def used(self) -> tuple[int, int]:
        return self.store.spending(self.who, today())

    def remaining_calls(self) -> int | None:
        if self.calls is None and self.tokens is None:
            return None
        calls, tokens = self.used()
        if self.tokens is not None and tokens >= self.tokens:
            return 0
        return None if self.calls is None else max(0, self.calls - calls)

    def _refusal(self, calls: int, used: int, tokens: int) -> str | None:
        own = "give your own API key to go on"
        if self.calls is not None and calls >= self.calls:
            return f"your daily budget of {self.calls:,} calls on this instance's keys is spent; {own}"
        if self.tokens is not None and used + tokens > self.tokens:
            if used >= self.tokens:
                return f"your daily budget of {self.tokens:,} tokens on this instance's keys is spent; {own}"
            return (
                f"this call may use about {tokens:,} tokens and your daily budget on this instance's keys "
                f"has {self.tokens - used:,} left; ask for less, or {own}"
            )
        return None

    def spent(self) -> str | None:
        """Why the budget is spent, or None while some is left."""
        return self._refusal(*self.used(), 0)

    def take(self, tokens: int = 0) -> str | None:
        """Reserve one call and ``tokens``; returns the reason when they do not fit."""
        return self.store.reserve_spending(
            self.who, today(), calls=1, tokens=tokens, check=lambda c, t: self._refusal(c, t, tokens)
        )

    def settle(self, reserved: int, used: int) -> None:
        """Replace a call's reservation with the tokens it used."""
        if used != reserved:
            self.store.add_spending(self.who, today(), tokens=used - reserved)

    def check_estimate(self, calls: int) -> None:
        left = self.remaining_calls()
        if left is not None and calls > left:
            raise PolicyError(
                f"this needs about {calls:,} calls on this instance's keys and your daily budget has "
                f"{left:,} left; give your own API key, or ask for less"
            )


def reserved_tokens(messages: list[dict], max_tokens: int | None) -> int:
    """What one call may use, reserved before it is sent: its prompt (about four characters a
    token) and its reply's ``max_tokens`` (4,096 when unset)."""
    prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 4 * len(messages)
    return prompt + (max_tokens if max_tokens is not None else 4096)


# ---------------------------------------------------------------------------------------------
# Logins


class LoginThrottle:
    """Failed logins counted per user name and per address over a sliding window: once either has
    ``failures`` of them, further attempts (right or wrong) wait until the oldest leaves the
    window. Refused attempts are not counted, so waiting out the window always works."""

    def __init__(self, failures: int, window: float, clock=None):
        import threading
        import time

        self.failures, self.window = failures, window
        self._clock = clock or time.monotonic
        self._seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._seen.get(key, []) if now - t < self.window]
        if times:
            self._seen[key] = times
        else:
            self._seen.pop(key, None)
        return times

    def wait(self, user: str, address: str) -> float:
        """Seconds until an attempt for ``user`` from ``address`` is heard (0: now)."""
        with self._lock:
            return self._wait(user, address, self._clock())

    def _wait(self, user: str, address: str, now: float) -> float:
        waits = [
            times[-self.failures] + self.window - now
            for key in (f"user:{user}", f"address:{address}")
            if len(times := self._recent(key, now)) >= self.failures
        ]
        return max(waits, default=0.0)

    def attempt(self, user: str, address: str) -> tuple[float, float | None]:
        """Check and count one attempt at once (so attempts sent together cannot all pass the
        check before any is counted): returns (seconds to wait, 0 when heard) and the attempt's
        mark, to give back with :meth:`succeeded` when it was not a failure after all."""
        now = self._clock()
        with self._lock:
            wait = self._wait(user, address, now)
            if wait > 0:
                return wait, None
            if len(self._seen) > 100_000:  # bounded memory under a flood of names
                for key in list(self._seen):
                    self._recent(key, now)
            for key in (f"user:{user}", f"address:{address}"):
                self._seen.setdefault(key, []).append(now)
            return 0.0, now

    def failed(self, user: str, address: str) -> None:
        """Count a failure (for callers that did not count it with :meth:`attempt`)."""
        now = self._clock()
        with self._lock:
            for key in (f"user:{user}", f"address:{address}"):
                self._seen.setdefault(key, []).append(now)

    def succeeded(self, user: str, address: str, mark: float | None = None) -> None:
        """The login worked: the user's failures are forgotten, and the attempt's own count too."""
        with self._lock:
            self._seen.pop(f"user:{user}", None)
            self._take_back(user, address, mark)

    def forgive(self, user: str, address: str, mark: float | None) -> None:
        """Take back an attempt counted by :meth:`attempt` that was not a wrong password (the app
        failed to answer)."""
        with self._lock:
            self._take_back(user, address, mark)

    def _take_back(self, user: str, address: str, mark: float | None) -> None:
        for key in (f"user:{user}", f"address:{address}"):
            times = self._seen.get(key)
            if mark is not None and times and mark in times:
                times.remove(mark)
