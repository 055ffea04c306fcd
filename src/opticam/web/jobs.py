"""A bounded job queue with ONE worker thread: concurrent requests wait their turn instead of competing.

Opti-CAM runs the whole model 50-100 times per image; two at once would only halve each one's speed and
double the memory. So every request becomes a :class:`Job`, a single worker thread runs them in order,
and the page polls :meth:`JobQueue.status` for the job's place in the queue and its progress. A full queue
refuses new jobs (:class:`QueueFull`) rather than growing without bound; finished jobs are forgotten
after ``keep`` newer ones have finished.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# A job's work: called with a progress function ``progress(fraction, message)``; returns the result dict.
Work = Callable[[Callable[[float, str], None]], dict[str, Any]]


class QueueFull(Exception):
    """More jobs are waiting than the queue holds."""


@dataclass
class Job:
    id: str
    work: Work
    seq: int
    state: str = "queued"  # queued -> running -> done | error
    fraction: float = 0.0
    message: str = "waiting in the queue"
    result: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None


class JobQueue:
    """Jobs run one at a time, in submission order, on a daemon worker thread.

    Args:
        max_waiting: jobs that may wait at once (running one excluded); more raise :class:`QueueFull`.
        keep: finished jobs remembered for polling.
        user_errors: exception types whose message is shown to the user as is; any other exception
            becomes "internal error" (logged with its traceback).
    """

    def __init__(self, max_waiting: int = 8, keep: int = 64, user_errors: tuple[type[BaseException], ...] = ()):
        self.max_waiting = max_waiting
        self.keep = keep
        self.user_errors = user_errors
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._worker = threading.Thread(target=self._run, name="opticam-worker", daemon=True)
        self._worker.start()

    # -- submitting and polling ------------------------------------------------------------------
    def submit(self, work: Work) -> Job:
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            if waiting >= self.max_waiting:
                raise QueueFull(f"{waiting} jobs are already waiting; try again in a minute.")
            job = Job(id=uuid.uuid4().hex, work=work, seq=next(self._seq))
            self._jobs[job.id] = job
        self._queue.put(job)
        return job

    def status(self, job_id: str) -> dict[str, Any] | None:
        """What the page shows for a job: state, place in the queue, progress, result or error."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            ahead = sum(1 for j in self._jobs.values() if j.state in ("queued", "running") and j.seq < job.seq)
            out: dict[str, Any] = {
                "id": job.id,
                "state": job.state,
                "fraction": round(job.fraction, 4),
                "message": job.message,
                "ahead": ahead if job.state == "queued" else 0,
            }
            if job.state == "queued":
                out["message"] = f"waiting: {ahead} job{'s' if ahead != 1 else ''} ahead in the queue"
            if job.state == "done":
                out["result"] = job.result
            if job.state == "error":
                out["error"] = job.error
            if job.started is not None:
                out["seconds"] = round((job.finished or time.time()) - job.started, 2)
                out["started_at"] = job.started
            if job.finished is not None:
                out["finished_at"] = job.finished
            return out

    def counts(self) -> dict[str, int]:
        with self._lock:
            states = [j.state for j in self._jobs.values()]
        return {s: states.count(s) for s in ("queued", "running", "done", "error")}

    def close(self) -> None:
        """Stop the worker after the job it is running (waiting jobs are dropped)."""
        self._queue.put(None)

    # -- the worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                job.state, job.started, job.message = "running", time.time(), "starting"

            def progress(fraction: float, message: str, job: Job = job) -> None:
                with self._lock:
                    job.fraction = min(max(float(fraction), 0.0), 1.0)
                    job.message = message

            try:
                result = job.work(progress)
            except self.user_errors as exc:
                self._finish(job, error=str(exc))
            except Exception as exc:  # the worker must survive whatever one job does
                log.exception("job %s failed", job.id)
                self._finish(job, error=f"internal error: {type(exc).__name__}: {exc}")
            else:
                self._finish(job, result=result)

    def _finish(self, job: Job, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        with self._lock:
            job.finished = time.time()
            job.work = _done  # drop the closure (and the image it holds)
            if error is None:
                job.state, job.result, job.fraction, job.message = "done", result, 1.0, "done"
            else:
                job.state, job.error, job.message = "error", error, "failed"
            finished = [j for j in self._jobs.values() if j.state in ("done", "error")]
            for old in finished[: max(0, len(finished) - self.keep)]:
                del self._jobs[old.id]


def _done(_progress: Callable[[float, str], None]) -> dict[str, Any]:
    return {}
