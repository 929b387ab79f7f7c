"""The test helpers of tests/_parallel_runs.py: which thread runs what, results and errors where asked for."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests._parallel_runs import Prefetched, run_together


def _thread() -> str:
    return threading.current_thread().name


def test_run_together_returns_in_order_and_raises_after_all_ended():
    ended = []
    assert run_together(lambda: 1, lambda: 2) == [1, 2]

    def fails():
        raise ValueError("boom")

    def slow():
        threading.Event().wait(0.2)
        ended.append("slow")
        return "slow"

    with pytest.raises(ValueError, match="boom"):
        run_together(fails, slow)
    assert ended == ["slow"]


def test_prefetched_first_key_here_others_in_the_background():
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bg") as pool:
        runs = Prefetched(pool, {"a": _thread, "b": _thread})
        assert runs("b") == threading.current_thread().name
        assert runs("a").startswith("bg")
        assert runs("a").startswith("bg") and runs("b") == threading.current_thread().name  # kept, not rerun


def test_prefetched_runs_a_queued_key_here_when_the_background_is_busy_and_reraises_errors():
    release = threading.Event()
    calls = []

    def fails():
        calls.append("fails")
        raise RuntimeError("run failed")

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bg") as pool:
        busy = pool.submit(release.wait)  # the background thread is busy with an earlier test's run
        timer = threading.Timer(10, release.set)  # a helper that waits behind it fails below instead of hanging
        timer.start()
        runs = Prefetched(pool, {"first": _thread, "queued": _thread, "fails": fails})
        assert runs("first") == threading.current_thread().name
        assert runs("queued") == threading.current_thread().name  # not waited for behind ``busy``
        for _ in range(2):
            with pytest.raises(RuntimeError, match="run failed"):
                runs("fails")
        assert calls == ["fails"] and not busy.done()
        release.set()
        timer.cancel()


def test_prefetched_waiting_for_a_running_key_runs_the_next_queued_ones_here():
    started, release = threading.Event(), threading.Event()
    timer = threading.Timer(10, release.set)  # a helper that only waits fails below instead of hanging
    timer.start()

    def slow() -> str:
        started.set()
        release.wait()
        return _thread()

    def after() -> str:
        release.set()  # only once this ran can ``slow`` end
        return _thread()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bg") as pool:
        runs = Prefetched(pool, {"first": _thread, "slow": slow, "after": after})
        assert runs("first") == threading.current_thread().name
        assert started.wait(10)
        assert runs("slow").startswith("bg")
        assert runs("after") == threading.current_thread().name
    timer.cancel()
