"""``endolink publish /dev/videoN`` with a capture card's size, rate and format. This machine has
no capture card (and cannot load v4l2loopback), so the tests show that the options reach FFmpeg's
v4l2 input and that a card that cannot be used ends the command with one plain line, exit 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from client.options import SourceOptions
from client.source import SourceError, open_source
from signaling.cli import _parser
from tests.processes import clean_env

URL = "http://127.0.0.1:9/whip/abcdef1"


def publish(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "signaling", "publish", "--url", URL, "--token", "t", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env())


def test_the_capture_card_options_become_ffmpegs_v4l2_options() -> None:
    args = _parser().parse_args(
        ["publish", "--url", URL, "/dev/video0"]
        + ["--video-size", "1920X1080", "--framerate", "29.97", "--input-format", "mjpeg"]
    )
    assert SourceOptions.of(args).device() == {
        "video_size": "1920x1080",
        "framerate": "29.97",
        "input_format": "mjpeg",
    }
    assert SourceOptions().device() == {}  # the card's own defaults


def test_ffmpegs_v4l2_input_reads_the_size_it_is_given() -> None:
    # /dev/null is a device node but no card: a size FFmpeg's v4l2 input cannot parse fails
    # before the device is asked anything, so the option did reach it.
    with pytest.raises(SourceError, match="does not take this size"):
        open_source("/dev/null", SourceOptions(video_size="huge"))
    with pytest.raises(SourceError, match="not a video capture device"):
        open_source("/dev/null", SourceOptions(video_size="1920x1080", framerate="30"))


@pytest.mark.parametrize(
    ("device", "says"),
    [
        ("/dev/video63", "cannot open /dev/video63: no such device (is the capture card plugged"),
        ("/dev/null", "cannot open /dev/null: not a video capture device"),
    ],
)
def test_a_capture_card_that_cannot_be_used_is_one_plain_line(device: str, says: str) -> None:
    done = publish(device, "--video-size", "1920x1080", "--framerate", "30")
    assert done.returncode == 1
    assert done.stderr.startswith(f"endolink: error: {says}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "option", [["--video-size", "1920"], ["--framerate", "0"], ["--input-format", "rgb"]]
)
def test_a_malformed_capture_option_is_a_usage_error(option: list[str]) -> None:
    done = publish("/dev/video0", *option)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and option[0] in done.stderr


def test_an_rtsp_camera_that_does_not_answer_is_one_plain_line_without_its_password() -> None:
    done = publish("rtsp://tower:secret@127.0.0.1:9/scope", "--rtsp-transport", "tcp")
    assert done.returncode == 1
    assert done.stderr.startswith("endolink: error: cannot open rtsp://127.0.0.1:9/scope: ")
    assert done.stderr.count("\n") == 1 and "secret" not in done.stderr
