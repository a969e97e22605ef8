"""The caller's running asyncio loop, kept from the items that run in its thread.

Items that run in the caller (a probe, a serial run) see no running loop, as on
any pool's thread. In a notebook, whose cells run in the kernel's loop, a named
``threads`` map of a function that wraps an async client in ``asyncio.run``
raised "asyncio.run() cannot be called from a running event loop" out of its
first items, where ``ThreadPoolExecutor.map`` ran every one (hunt 71). In a
worker nothing runs a loop, and nothing is done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from payoff._imported import imported

Hidden = tuple[Any, Any, Any]
"""What :func:`hide_running_loop` set aside: asyncio, the running loop, the thread's current loop."""


def hide_running_loop() -> Hidden | None:
    """The caller's running loop, set aside while items run in its thread; None where none runs.

    An item's own ``asyncio.run`` also sets the thread's current loop and clears it as it ends: the caller's is
    noted to be given back too."""
    aio = imported("asyncio")
    if aio is None:
        return None
    loop = aio.events._get_running_loop()
    if loop is None:
        return None
    local = getattr(aio.events._event_loop_policy, "_local", None)
    aio.events._set_running_loop(None)
    return aio, loop, getattr(local, "_loop", None)


def restore_running_loop(hidden: Hidden | None) -> None:
    """The loop :func:`hide_running_loop` set aside runs in the caller's thread again, its current loop too."""
    if hidden is None:
        return
    aio, loop, current = hidden
    aio.events._set_running_loop(loop)
    policy = aio.events._event_loop_policy
    if policy is not None and getattr(getattr(policy, "_local", None), "_loop", None) is not current:
        policy.set_event_loop(current)


def loop_runs_here() -> bool:
    """Whether this thread runs an asyncio loop now."""
    aio = imported("asyncio")
    return aio is not None and aio.events._get_running_loop() is not None


def without_the_loop(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, each call of it with the caller's loop set aside: for items a streamed run hands out one at a
    time, between which the consumer's own code runs in the loop. asyncio's hooks are looked up once, not for
    each item (a serial imap in a coroutine paid 3 us an item, review 77)."""
    events = cast(Any, imported("asyncio")).events
    running, set_running = events._get_running_loop, events._set_running_loop

    def run(*args: Any) -> Any:
        loop = running()
        if loop is None:
            return fn(*args)
        policy = events._event_loop_policy
        local = getattr(policy, "_local", None)
        current = getattr(local, "_loop", None)
        set_running(None)
        try:
            return fn(*args)
        finally:
            set_running(loop)
            if local is not None and local._loop is not current:
                policy.set_event_loop(current)

    return run
