"""The server-side request budget: one sliding window shared by every front end (REST and OpenD)."""

from __future__ import annotations

import contextlib
import threading
from collections import deque


class Budget:
    """``calls`` requests per ``period`` seconds, whichever door they come through; thread-safe.

    Limits are passed on every call, so a live ``configure`` (or a time-scaled benchmark) applies at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window: deque[float] = deque()

    def take(self, now: float, calls: int, period: float) -> float | None:
        """Take a slot at monotonic time ``now``: None when admitted, else seconds until a slot frees.

        ``calls`` <= 0 disables the limit (nothing is recorded).
        """
        if calls <= 0:
            return None
        with self._lock:
            window = self._window
            while window and window[0] <= now - period:
                window.popleft()
            if len(window) >= calls:
                return max(window[len(window) - calls] + period - now, 0.001)
            window.append(now)
            return None

    def give_back(self, taken_at: float) -> None:
        """Return the slot taken at ``taken_at`` (an injected 429 does not use up the budget)."""
        with self._lock, contextlib.suppress(ValueError):  # already slid out of the window
            self._window.remove(taken_at)

    def clear(self) -> None:
        """Forget every slot taken."""
        with self._lock:
            self._window.clear()
