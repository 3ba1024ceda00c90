"""An aiortc WHEP viewer in a process of its own, for tests that SIGKILL it:

    python -m tests.view_process URL TOKEN

Prints ``connected`` once its peer connection is up, then ``frame N`` for each decoded stamped
frame whose counter is a multiple of 30. Ends by itself after ``LIFETIME_S``."""

from __future__ import annotations

import asyncio
import sys

from tests.peers import viewer, wait_until

LIFETIME_S = 120.0


async def main(url: str, token: str) -> None:
    async with viewer(url, token, kinds=("video",)) as (pc, _, received):
        if await wait_until(lambda: pc.connectionState == "connected", 20):
            print("connected", flush=True)
        shown = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIFETIME_S
        while loop.time() < deadline and pc.connectionState == "connected":
            for counter in received.counters[shown:]:
                if counter % 30 == 0:
                    print(f"frame {counter}", flush=True)
            shown = len(received.counters)
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
