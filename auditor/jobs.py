"""Long jobs (probe runs, sweeps, audits) in background threads, so a web app stays responsive:
each job has its own event loop and gateway, a progress log, a cancel switch and its result."""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .gateway import Gateway


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


def start(kind: str, owner: str | None, gateway: Gateway, work: Callable[[Job], object]) -> Job:
    """Run ``work(job)`` in a thread; ``job.gateway.cancel_event`` is the job's cancel switch."""
    job = Job(id=f"{kind}-{uuid.uuid4().hex[:8]}", kind=kind, owner=owner, gateway=gateway)
    gateway.cancel_event = job.cancel

    def target():
        try:
            job.result = work(job)
        except Exception as e:  # noqa: BLE001  (reported to the user, not raised in a thread)
            job.error = f"{type(e).__name__}: {e}"
            job.log(traceback.format_exc(limit=3))

    job.thread = threading.Thread(target=target, name=job.id, daemon=True)
    with _LOCK:
        JOBS[job.id] = job
        for old in [j for j in JOBS.values() if j.done and time.monotonic() - j.started > 3600]:
            JOBS.pop(old.id, None)
    job.thread.start()
    return job


def get(job_id: str | None, owner: str | None) -> Job | None:
    job = JOBS.get(job_id or "")
    return job if job is not None and job.owner == owner else None
