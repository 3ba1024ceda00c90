"""Running a coroutine to its end on the caller's stack, the way Python 3.12's eager tasks do
(3.11 has none): aiortc's per-packet handlers are coroutines that almost never suspend, and the
relay runs them where the datagram arrives (``relay.inbound``, ``relay.tapped``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)

_resuming: set[asyncio.Task[None]] = set()
"""Handlers that did suspend, until they finish. None does with aiortc 1.16.0 and aioice 0.13.0
(their sends return at once, a TURN send starts its own task): a guard, not a path in use."""


def run_eagerly(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` now, on the caller's stack. If it suspends (awaits a future that is not
    done), a task finishes it — what Python 3.12's eager task factory does; 3.11 has none."""
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return
    task = asyncio.get_running_loop().create_task(_finish(coroutine, awaited))
    _resuming.add(task)
    task.add_done_callback(_resuming.discard)


async def _finish(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive a suspended ``coroutine`` as an ``asyncio.Task`` would: wait for the future it
    yielded and resume it, until it returns; cancelling this task cancels that future and
    throws the cancellation into the coroutine."""
    try:
        while True:
            future = awaited if getattr(awaited, "_asyncio_future_blocking", False) else None
            try:
                if future is not None:
                    future._asyncio_future_blocking = False
                    await asyncio.wait((future,))
                else:  # a bare yield (``asyncio.sleep(0)``): give the loop one turn
                    await asyncio.sleep(0)
            except asyncio.CancelledError as cancelled:
                if future is not None:
                    future.cancel()
                awaited = coroutine.throw(cancelled)
                continue
            awaited = coroutine.send(None)
    except StopIteration:
        pass
    except ConnectionError:
        pass
    except Exception as exc:
        packet_failed(exc)
    finally:
        coroutine.close()


def packet_failed(exc: Exception) -> None:
    """A handler failed on a packet from outside (at once, in ``relay.inbound``, or after it
    suspended, here): dropped, named, no traceback."""
    logger.warning("a packet could not be handled (%s: %s)", type(exc).__name__, exc)
