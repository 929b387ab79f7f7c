"""Independent subprocess runs (bundle runs, command lines) of the tests, at the same time instead of one after the
other: a bundle run is single-threaded (``OMP_NUM_THREADS=1``) and spends most of its time importing MONAI, so while
the test process waits for it the machine's second core is idle. Each run stays a real run of its own; only the
waiting overlaps.

- :func:`run_together`: a few runs of one test or fixture, all started at once, all waited for;
- :class:`Prefetched`: runs of several tests of a module (or of the session) by key; the first one asked for runs
  at once, the others on a background thread while the test process goes on with other tests (or helps with them
  while it waits for one);
- :func:`session_run`: registers a module's run with the session's :class:`Prefetched` (``session_runs`` in
  tests/bundles/conftest.py), so that it runs in the background during the tests of the modules before it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SESSION_RUNS", "OnDemandThread", "Prefetched", "run_together", "session_run"]

T = TypeVar("T")
Builder = Callable[[Path], Callable[[], Any]]

#: the runs registered with :func:`session_run`, by key: the module that registered it and its builder
SESSION_RUNS: dict[str, tuple[str, Builder]] = {}


def run_together(*calls: Callable[[], T]) -> list[T]:
    """Call independent ``calls`` (each running its own subprocess) at the same time, one thread each; their
    results in order, once all have ended (the first error is raised after that)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


class OnDemandThread:
    """An executor of one worker thread that exists only while it has work: started by :meth:`submit`, ended when
    its queue is empty. An idle pool thread would outlive the bundle runs and make every later test process a
    multi-threaded one, where the evaluator does not fork its writer process (``can_fork``).
    """

    def __init__(self, name: str = "prefetch") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._lock:
            self._queue.append((future, fn, args, kwargs))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                future, fn, args, kwargs = self._queue.popleft()
            if not future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:  # noqa: BLE001  raised where the result is asked for
                future.set_exception(err)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Cancel the queued work (``cancel_futures``) and wait for the running one (``wait``)."""
        with self._lock:
            if cancel_futures:
                for future, *_ in self._queue:
                    future.cancel()
            thread = self._thread
        if wait and thread is not None:
            thread.join()


class Prefetched:
    """Independent runs (each a subprocess) by key, for tests that only read their results. The first key asked for
    runs at once in the caller's thread, and the others are then queued on ``background`` (one thread for the
    session, so one run beside the test process), which runs them in order while the test process goes on with
    other tests. Asking for a key that is still queued (the background thread is busy with earlier runs) runs it at
    once in the caller's thread; asking for one that is running waits for it, and meanwhile runs the next queued
    ones in the caller's thread: the test process never waits behind the queue or idles while runs are left. A run's
    errors are raised where it is asked for.

    The runs may run on another thread: whatever must not race with the tests in the main thread (torch's global
    generator, the working directory, the environment) is prepared before, when the calls are built.
    """

    def __init__(self, background: ThreadPoolExecutor, calls: dict[str, Callable[[], T]]):
        self._background = background
        self._calls = calls
        self._futures: dict[str, Future] = {}

    def _run_here(self, key: str) -> Future:
        future = self._futures[key] = Future()
        try:
            future.set_result(self._calls[key]())
        except BaseException as err:
            future.set_exception(err)  # raised where the key is asked for
            if not isinstance(err, Exception):  # an interrupt stops the session here
                raise
        return future

    def __call__(self, key: str) -> T:
        if not self._futures:  # the first key asked for: queue the others
            self._futures = {k: self._background.submit(call) for k, call in self._calls.items() if k != key}
        future = self._futures.get(key)
        if future is None or future.cancel():  # the first key, or one still queued: run it here
            future = self._run_here(key)
        while not future.done():  # running in the background: meanwhile run the next queued one here
            queued = next((k for k, f in self._futures.items() if f.cancel()), None)
            if queued is None:
                break
            self._run_here(queued)
        return future.result()


def session_run(key: str, module: str | None = None) -> Callable[[Builder], Builder]:
    """Register ``builder(folder) -> run`` as the session run ``key`` of the test module ``module`` (default: the
    builder's): when the session's runs are set up (at the first test that asks for one), the builder prepares the
    run's inputs below the empty ``folder`` in the test process's main thread and returns the run, which is called
    later on the background thread or in the test that asks for it. Only the runs of the modules that have selected
    tests are set up; the first registration of a key counts (a test module imported again under another name
    registers nothing new)."""

    def register(builder: Builder) -> Builder:
        SESSION_RUNS.setdefault(key, (module or builder.__module__, builder))
        return builder

    return register
