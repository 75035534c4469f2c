"""common.retry: the one back-off law and retry loop."""

from __future__ import annotations

import threading

import pytest

from common.retry import Backoff, Stopped, backoff_delay, call_with_retry


def test_backoff_delay_doubles_and_caps() -> None:
    assert [backoff_delay(n, 0.5, 4.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0
    assert Backoff(0.25, 5.0).delay(3) == 1.0


def test_retries_until_success_and_reports_each_wait() -> None:
    seen: list[tuple[str, float]] = []
    drained: list[int] = []
    results = iter([OSError("a"), OSError("b"), "done"])

    def attempt() -> str:
        r = next(results)
        if isinstance(r, Exception):
            raise r
        return r

    out = call_with_retry(attempt, retry_on=(OSError,), backoff=Backoff(0.001, 0.002), stop=threading.Event(),
                          on_failure=lambda exc, d: seen.append((str(exc), d)),
                          before_retry=lambda: drained.append(1))
    assert out == "done"
    assert seen == [("a", 0.001), ("b", 0.002)]
    assert drained == [1, 1]


def test_attempts_limit_reraises_the_last_error_without_reporting_it() -> None:
    seen: list[BaseException] = []

    def attempt() -> None:
        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        call_with_retry(attempt, retry_on=(OSError,), backoff=Backoff(0.001, 0.001), stop=threading.Event(),
                        attempts=1, on_failure=lambda exc, d: seen.append(exc))
    assert seen == []


def test_other_errors_propagate_at_once() -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        call_with_retry(attempt, retry_on=(OSError,), backoff=Backoff(0.001, 0.001), stop=threading.Event())
    assert calls == [1]


def test_stop_during_a_wait_raises_stopped() -> None:
    stop = threading.Event()

    def attempt() -> None:
        stop.set()
        raise OSError("down")

    with pytest.raises(Stopped):
        call_with_retry(attempt, retry_on=(OSError,), backoff=Backoff(10.0, 10.0), stop=stop)
