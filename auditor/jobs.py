"""Long jobs (probe runs, sweeps, audits) in background threads, so a web app stays responsive:
each job has its own event loop and gateway, a progress log, a cancel switch and its result.

The pool is shared fairly: at most ``total`` jobs run at once and each person runs at most
``per_owner`` of them; a job over either limit waits in line (a person may have as many waiting
as running), and a freed slot goes to the waiting job whose owner runs the fewest jobs, the
earliest first. One person's slow or hanging jobs therefore never keep another's from starting."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .gateway import Gateway
from .policy import PolicyError


@dataclass
class Job:
    id: str
    kind: str
    owner: str | None
    gateway: Gateway
    cancel: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    result: object = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    work: Callable[[Job], object] | None = field(default=None, repr=False)
    finished: threading.Event = field(default_factory=threading.Event)
    _wakers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    @property
    def waiting(self) -> bool:
        return self.thread is None and not self.done

    def log(self, line: str) -> None:
        self.lines.append(line)
        del self.lines[:-200]

    def finish(self) -> None:
        self.finished.set()
        for wake in list(self._wakers):
            wake()


JOBS: dict[str, Job] = {}
_LOCK = threading.Lock()


def start(
    kind: str,
    owner: str | None,
    gateway: Gateway,
    work: Callable[[Job], object],
    *,
    per_owner: int | None = None,
    total: int | None = None,
) -> Job:
    """Run ``work(job)`` in a thread, now or when the fair queue gives it a slot (``job.waiting``
    until then); ``job.gateway.cancel_event`` is the job's cancel switch. Refused (PolicyError)
    when ``owner`` already has ``per_owner`` jobs running and as many waiting."""
    job = Job(id=f"{kind}-{uuid.uuid4().hex[:8]}", kind=kind, owner=owner, gateway=gateway, work=work)
    gateway.cancel_event = job.cancel
    with _LOCK:
        for old in [j for j in JOBS.values() if j.done and time.monotonic() - j.started > 3600]:
            JOBS.pop(old.id, None)
            _LIMITS.pop(old.id, None)
        mine = [j for j in JOBS.values() if j.owner == owner and not j.done]
        if per_owner is not None and len(mine) >= 2 * per_owner:
            raise PolicyError(
                f"you have {len(mine)} long jobs running or waiting (the limit is {per_owner} running "
                f"and {per_owner} waiting); wait for one to finish or cancel it"
            )
        JOBS[job.id] = job
        _LIMITS[job.id] = (per_owner, total)
        _schedule()
    return job


# job id -> (per-owner, total) limits it was started under
_LIMITS: dict[str, tuple[int | None, int | None]] = {}


def _schedule() -> None:
    """Start waiting jobs while slots are free (call with ``_LOCK`` held). Cancelled waiting jobs
    end without running."""
    while True:
        running = [j for j in JOBS.values() if j.thread is not None and not j.done]
        waiting = [j for j in JOBS.values() if j.waiting]
        for j in [j for j in waiting if j.cancel.is_set()]:
            j.finish()
            waiting.remove(j)
        counts: dict[str | None, int] = {}
        for j in running:
            counts[j.owner] = counts.get(j.owner, 0) + 1
        ready = []
        for j in waiting:
            per_owner, total = _LIMITS.get(j.id, (None, None))
            if total is not None and len(running) >= total:
                continue
            if per_owner is not None and counts.get(j.owner, 0) >= per_owner:
                continue
            ready.append(j)
        if not ready:
            return
        nxt = min(ready, key=lambda j: (counts.get(j.owner, 0), j.started))
        _launch(nxt)


def _launch(job: Job) -> None:
    def target():
        try:
            job.result = job.work(job)
        except Exception as e:  # noqa: BLE001  (reported to the user, not raised in a thread)
            job.error = f"{type(e).__name__}: {e}"
            job.log(traceback.format_exc(limit=3))
        finally:
            job.finish()
            with _LOCK:
                _schedule()

    job.thread = threading.Thread(target=target, name=job.id, daemon=True)
    job.thread.start()


def cancel(job: Job) -> None:
    """Stop a job: a running one stops at its next call (resumable); a waiting one never starts."""
    job.cancel.set()
    with _LOCK:
        _schedule()


async def wait(job: Job, seconds: float) -> bool:
    """Wait until ``job`` ends or ``seconds`` pass; True when it has ended. A handler following a
    job waits on this between progress updates, so the result is shown the moment the job ends,
    not at the next update."""
    if job.done:
        return True
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(ended.set)

    job._wakers.append(wake)
    try:
        if not job.done:  # it may have ended before the waker was added
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), seconds)
    finally:
        job._wakers.remove(wake)
    return job.done


@contextmanager
def following(job: Job) -> Iterator[Job]:
    """While a handler follows a job's progress: if the handler goes away before the job ends
    (its client disconnected and the generator was closed), the job is cancelled, resumable."""
    try:
        yield job
    finally:
        if not job.done:
            cancel(job)


def get(job_id: str | None, owner: str | None) -> Job | None:
    job = JOBS.get(job_id or "")
    return job if job is not None and job.owner == owner else None
