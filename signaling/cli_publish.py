"""``endolink publish SOURCE``: a file, a capture card or an RTSP camera sent to a WHIP endpoint
as the clinic's endoscope feed (client/), with the options a tower needs. The media stack is
imported only when the command runs: other commands do not pay for it."""

from __future__ import annotations

import argparse
import asyncio
import os

from aiohttp import ClientError

from client.options import INPUT_FORMATS, RTSP_TRANSPORTS
from signaling.cli_consult import CliError

TOKEN_VARIABLE = "ENDOLINK_TOKEN"
"Where the clinic token comes from by default: out of `ps` and the shell history."


def add_command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    publish = commands.add_parser(
        "publish",
        parents=[common],
        help="publish a video file, capture card or RTSP camera over WHIP",
        description="Publish SOURCE as the clinic's endoscope feed until Ctrl-C (a file: until\n"
        "its end, or forever with --loop). A lost connection is retried at once, a server\n"
        "that cannot be reached after 1, 2, 4 ... up to 30 s. A re-encoded picture follows the\n"
        "uplink (smaller at a lower rate, same frame rate); a camera sent as it is (in the\n"
        "consultation's codec) cannot adapt: keep its own bitrate below the uplink.",
        epilog="examples:\n"
        "  endolink publish --url URL --loop scope.mp4\n"
        "  endolink publish --url URL /dev/video0 --video-size 1920x1080 --framerate 30"
        " --input-format mjpeg\n"
        "  endolink publish --url URL rtsp://192.168.1.20:554/stream1 --rtsp-transport udp\n"
        f"the clinic token comes from ${TOKEN_VARIABLE} (or --token)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("--url", required=True, help="WHIP endpoint, e.g. .../whip/CID")
    publish.add_argument(
        "--token",
        help=f"clinic token (default ${TOKEN_VARIABLE}: keeps it out of `ps` and shell history)",
    )
    publish.add_argument(
        "--loop", action="store_true", help="file: start again at its end, forever"
    )
    publish.add_argument(
        "--relay-only",
        action="store_true",
        help="send through the server's TURN relay only (checks the path through a firewall)",
    )
    card = publish.add_argument_group("capture card (/dev/videoN; default: the card's own)")
    card.add_argument(
        "--video-size", metavar="WxH", type=_video_size, help="WIDTHxHEIGHT, e.g. 1920x1080"
    )
    card.add_argument(
        "--framerate", metavar="FPS", type=_framerate, help="frames per second, e.g. 30"
    )
    card.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        help="what the card sends: mjpeg, yuyv422 (raw) or h264",
    )
    publish.add_argument(
        "--rtsp-transport",
        choices=RTSP_TRANSPORTS,
        default="tcp",
        help="RTSP camera: tcp (default: through firewalls, no loss) or udp (lower latency)",
    )
    publish.add_argument(
        "source",
        metavar="SOURCE",
        help="a video file, a capture card (/dev/video0), rtsp://... or testpattern",
    )
    publish.set_defaults(handler=_publish)


def _publish(args: argparse.Namespace) -> int:
    # Imported here: the media stack is slow to import and other commands do not need it.
    from client.options import SourceOptions
    from client.source import SourceError
    from client.whip import WhipError, publish_source

    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise CliError(f"publish needs --token or ${TOKEN_VARIABLE} (a clinic token)")
    options = SourceOptions.of(args)
    try:
        asyncio.run(
            publish_source(args.url, token, args.source, options, relay_only=args.relay_only)
        )
    except SourceError as exc:
        raise CliError(str(exc)) from exc
    except (WhipError, ClientError) as exc:
        raise CliError(f"publishing failed: {exc}") from exc
    except KeyboardInterrupt:
        return 130
    return 0


def _video_size(text: str) -> str:
    width, x, height = text.lower().partition("x")
    if not (x and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"not WIDTHxHEIGHT: {text!r}")
    return f"{int(width)}x{int(height)}"


def _framerate(text: str) -> str:
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not 0 < rate <= 240:
        raise argparse.ArgumentTypeError(f"not a frame rate: {text!r}")
    return text
