"""A delay line for messages on a simulated clock (ROS-free).

Each message is posted with the time it arrives and handed over (a callable, called with that
time) once the clock gets there: in posting order, so a message posted later never overtakes an
earlier one even when its delay is shorter. A message whose time has come when nothing is waiting
is handed over at once. Used for the stack's compute latency in the in-process closed loop
(what perception and the policy hand the controller) and for the sim cell's command-stream
delay (`HandoverCell.set_actuation_delay`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class DelayLine:
    def __init__(self) -> None:
        self._items: deque[tuple[float, Callable[[float], None]]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def post(self, at: float, now: float, deliver: Callable[[float], None]) -> None:
        """Hand `deliver` over at `at` (the clock's time now is `now`): called as deliver(arrival)."""
        if at <= now and not self._items:
            deliver(now)
            return
        self._items.append((max(at, self._items[-1][0]) if self._items else at, deliver))

    def deliver(self, now: float) -> None:
        """Hand over everything that has arrived by `now`."""
        while self._items and self._items[0][0] <= now + 1e-9:
            at, deliver = self._items.popleft()
            deliver(at)

    def clear(self) -> None:
        """Drop what is still on its way."""
        self._items.clear()
