"""How many of something each user holds at once (open sessions, unsettled operations), against a limit."""

from __future__ import annotations

from typing import Callable

from sparkfleet.errors import QuotaExceeded


class PerUserLimit:
    """Counts per user; :meth:`check` raises the error ``refusal(user_id, limit)`` makes once a
    user holds ``limit``. Users holding none take no memory."""

    def __init__(self, limit: int, refusal: Callable[[str, int], QuotaExceeded]) -> None:
        self.limit = limit
        self._refusal = refusal
        self._held: dict[str, int] = {}

    def check(self, user_id: str) -> None:
        if self._held.get(user_id, 0) >= self.limit:
            raise self._refusal(user_id, self.limit)

    def add(self, user_id: str) -> None:
        self._held[user_id] = self._held.get(user_id, 0) + 1

    def remove(self, user_id: str) -> None:
        left = self._held.get(user_id, 1) - 1
        if left > 0:
            self._held[user_id] = left
        else:
            self._held.pop(user_id, None)
