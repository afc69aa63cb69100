"""One way to wait for something: poll a condition until it holds or time runs out, with the clock
and the sleep injectable (tests give a fake clock; the load driver gives gevent's sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], object],
    seconds: float,
    *,
    every: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> bool:
    """Whether ``condition()`` became true within ``seconds`` (checked at once, then every
    ``every`` seconds, and once more at the deadline)."""
    deadline = clock() + seconds
    while True:
        if condition():
            return True
        left = deadline - clock()
        if left <= 0:
            return False
        sleep(min(every, left))
