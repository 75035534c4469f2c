"""Capped exponential back-off and the one retry loop the roles share.

Publishing a frame (ingest), publishing a scored batch (detector), storing an alert and
marking its events published (alerting) and re-trying Redis after a failure (the spooling
store) all wait ``initial_s * 2**(failures - 1)`` seconds, at most ``max_s``, between
attempts; camera reconnects use the same law.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):  # noqa: N818 - control flow: the caller was asked to stop while waiting
    """Raised by :func:`call_with_retry` when its stop event is set during a back-off wait."""


def backoff_delay(failures: int, initial_s: float, max_s: float) -> float:
    """Delay before the next attempt after ``failures`` consecutive failures (>= 1).

    >>> [backoff_delay(n, 0.5, 4.0) for n in range(1, 6)]
    [0.5, 1.0, 2.0, 4.0, 4.0]
    """
    return min(max_s, initial_s * 2.0 ** max(0, min(failures - 1, 60)))


@dataclass(frozen=True)
class Backoff:
    """A capped exponential back-off law: :func:`backoff_delay` with fixed bounds."""

    initial_s: float
    max_s: float

    def delay(self, failures: int) -> float:
        return backoff_delay(failures, self.initial_s, self.max_s)


def call_with_retry(
    attempt: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff,
    stop: threading.Event,
    attempts: int | None = None,
    on_failure: Callable[[BaseException, float], None] | None = None,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Call ``attempt`` until it returns, waiting with ``backoff`` after each ``retry_on`` error.

    Args:
        attempt: one try; its return value is returned.
        retry_on: the exceptions that mean "try again"; anything else propagates at once.
        backoff: the waiting law between attempts.
        stop: set it to give up; a wait interrupted by it raises :class:`Stopped`.
        attempts: at most this many tries (``None``: until success or stop); the last
            error is re-raised when they are used up.
        on_failure: called with the error and the coming delay before each wait (count it,
            log it); not called for the error that is re-raised.
        before_retry: called after each wait, before the next try (e.g. drain a spool).

    Returns:
        What ``attempt`` returned.

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise OSError("not yet")
    ...     return "ok"
    >>> call_with_retry(flaky, retry_on=(OSError,), backoff=Backoff(0.001, 0.002), stop=threading.Event())
    'ok'
    """
    failures = 0
    while True:
        try:
            return attempt()
        except retry_on as exc:
            failures += 1
            if attempts is not None and failures >= attempts:
                raise
            delay = backoff.delay(failures)
            if on_failure is not None:
                on_failure(exc, delay)
            if stop.wait(delay):
                raise Stopped from exc
            if before_retry is not None:
                before_retry()
