"""How EndoLink drives Debian's Chromium, shared by the browser tests and the browser benchmarks.

No browser is ever downloaded: Playwright gets ``executable_path`` to the Debian package's binary.
Fake camera and microphone, permission prompts accepted, loopback ICE allowed, no background
networking (the machine has no Internet), and two pages in one browser both render at full rate.
"""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("ENDOLINK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # Two pages share one browser: keep the one not in front rendering at full rate.
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
]
