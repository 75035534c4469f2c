"""The background thread a role runs on: :class:`RoleThread`.

A role (the alert worker, the score recorder, the review page's feed) implements ``run()``,
which returns when its ``stop`` event is set. :meth:`RoleThread.start` runs it on a daemon
thread; an exception that ends it -- a failure of no single record, such as the bus -- is
kept in ``error`` and logged with its traceback, so the role's health shows it.
"""

from __future__ import annotations

import logging
import threading
from typing import TypeVar

__all__ = ["RoleThread"]

log = logging.getLogger(__name__)

_R = TypeVar("_R", bound="RoleThread")


class RoleThread:
    """Base of a role that runs on its own thread: ``thread_name`` names the thread,
    ``role_name`` the role in the log line of a failure."""

    thread_name = "role"
    role_name = "role"
    error: BaseException | None = None  # what ended the role, if not a stop
    _thread: threading.Thread | None = None

    def run(self) -> None:  # pragma: no cover - every role implements it
        raise NotImplementedError

    def start(self: _R) -> _R:
        self._thread = threading.Thread(target=self._thread_main, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def _thread_main(self) -> None:
        try:
            self.run()
        except Exception as exc:  # a failure of no single record: the role stops, visibly
            self.error = exc
            log.exception("%s failed", self.role_name)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
