"""The worker thread's loop: take jobs off the backend's queue in arrival order, admit them to the
batching engine's slots (or run an exclusive one alone), step the engine, and end cleanly on close, on a
drain or on a cut."""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from appliance.engine.batching import BatchingEngine, failure
from appliance.engine.jobs import DONE, ExclusiveJob, Job
from appliance.errors import ModelLoadFailed, ModelLoading, ShuttingDown

DRAIN = object()  # put on the queue by close() with drain: stop once the submitted requests are done
CUT = object()  # put by cut(): end the running generations now and refuse the waiting requests
STOP = None  # put by close() without drain: stop now


class JobLoop:
    """Runs on the backend's worker thread, which alone touches the model and the engine."""

    def __init__(
        self,
        jobs: queue.Queue[Any],
        model_id: str,
        *,
        left_queue: Callable[[], None],
        job_took: Callable[[float], None],
    ) -> None:
        self.jobs = jobs  # jobs, DRAIN, CUT or STOP
        self.model_id = model_id
        self._left_queue = left_queue  # a job left the queue (admitted, cancelled or refused)
        self._job_took = job_took  # an exclusive job ran this many seconds (generations report their own)

    def run(self, model: Any, engine: BatchingEngine | None, load_error: str | None) -> None:
        """Serve until told to stop. Without an engine (the load failed), every job gets the load's
        error."""
        pending: deque[Job] = deque()  # arrived, not yet admitted, in arrival order
        draining = cut = False
        while True:
            idle = engine is None or (engine.active == 0 and not pending)
            if draining and idle:
                self._shutdown(engine, pending)
                return
            try:
                job = self.jobs.get() if idle else self.jobs.get_nowait()
                while True:
                    if job is STOP:
                        self._shutdown(engine, pending)
                        return
                    if job is DRAIN:
                        draining = True
                    elif job is CUT:
                        cut = True
                    else:
                        pending.append(job)
                    job = self.jobs.get_nowait()
            except queue.Empty:
                pass
            if cut:
                cut = False
                self._cut_short(engine, pending)
            if engine is None:  # the model failed to load: nothing will run
                for job in pending:
                    job.stream.emit(ModelLoadFailed(f"model {self.model_id} failed to load: {load_error}"))
                    job.stream.emit(DONE)
                pending.clear()
                continue
            try:
                self._admit(model, engine, pending)
                if engine.active:
                    engine.step()
            except Exception as exc:  # a bug no one request is to blame for: fail those running, go on
                engine.fail_all(failure("an engine step", exc))

    def _admit(self, model: Any, engine: BatchingEngine, pending: deque[Job]) -> None:
        """Start waiting jobs in arrival order while slots are free. An exclusive job (embeddings)
        waits for the running generations to end, and later jobs wait behind it."""
        while pending:
            job = pending[0]
            if job.stream.cancelled.is_set():
                pending.popleft()
                self._left_queue()
                job.stream.emit(DONE)
                continue
            if isinstance(job, ExclusiveJob):
                if engine.active:
                    return
                pending.popleft()
                self._left_queue()
                self._run_exclusive(model, job)
                continue
            if not engine.has_free_slot():
                return
            pending.popleft()
            self._left_queue()
            engine.start(job)

    def _run_exclusive(self, model: Any, job: ExclusiveJob) -> None:
        started = time.monotonic()
        try:
            job.run(model, job.stream)
        except Exception as exc:  # a bad input, a bug or a llama.cpp failure: report it, keep serving
            job.stream.emit(failure("the request", exc))
        finally:
            job.stream.emit(DONE)
            self._job_took(time.monotonic() - started)

    def _cut_short(self, engine: BatchingEngine | None, pending: deque[Job]) -> None:
        for job in pending:
            self._left_queue()
            job.stream.emit(ShuttingDown("the server is shutting down; retry once it is back"))
            job.stream.emit(DONE)
        pending.clear()
        if engine is not None:
            engine.finish_all()

    def _shutdown(self, engine: BatchingEngine | None, pending: deque[Job]) -> None:
        for job in pending:
            job.stream.emit(ModelLoading(f"model {self.model_id} is shutting down"))
            job.stream.emit(DONE)
        if engine is not None:
            for slot in engine.slots:
                if slot.job is not None:
                    slot.release(engine.model)
