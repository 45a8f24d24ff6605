"""Long jobs (probe runs, sweeps, audits) in background threads, so a web app stays responsive:
each job has its own event loop and gateway, a progress log, a cancel switch and its result."""

from __future__ import annotations

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

    @property
    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def log(self, line: str) -> None:
        self.lines.append(line)
        del self.lines[:-200]


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
    """Run ``work(job)`` in a thread; ``job.gateway.cancel_event`` is the job's cancel switch.
    Refused (PolicyError) when ``owner`` already runs ``per_owner`` jobs or the process ``total``."""
    job = Job(id=f"{kind}-{uuid.uuid4().hex[:8]}", kind=kind, owner=owner, gateway=gateway)
    gateway.cancel_event = job.cancel
    with _LOCK:
        running = [j for j in JOBS.values() if not j.done]
        mine = sum(1 for j in running if j.owner == owner)
        if per_owner is not None and mine >= per_owner:
            raise PolicyError(
                f"you have {mine} long jobs running (the limit is {per_owner}); wait for one to finish or cancel it"
            )
        if total is not None and len(running) >= total:
            raise PolicyError(
                f"this instance is running {len(running)} long jobs, its limit; try again shortly"
            )
        JOBS[job.id] = job

    def target():
        try:
            job.result = work(job)
        except Exception as e:  # noqa: BLE001  (reported to the user, not raised in a thread)
            job.error = f"{type(e).__name__}: {e}"
            job.log(traceback.format_exc(limit=3))

    job.thread = threading.Thread(target=target, name=job.id, daemon=True)
    with _LOCK:
        for old in [j for j in JOBS.values() if j.done and time.monotonic() - j.started > 3600]:
            JOBS.pop(old.id, None)
    job.thread.start()
    return job


@contextmanager
def following(job: Job) -> Iterator[Job]:
    """While a handler follows a job's progress: if the handler goes away before the job ends
    (its client disconnected and the generator was closed), the job is cancelled, resumable."""
    try:
        yield job
    finally:
        if not job.done:
            job.cancel.set()


def get(job_id: str | None, owner: str | None) -> Job | None:
    job = JOBS.get(job_id or "")
    return job if job is not None and job.owner == owner else None
