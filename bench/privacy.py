"""``python -m bench.privacy``: the privacy guard's detection rates and CPU (docs/benchmarks.md,
"Privacy guard").

Frame by frame, the classifier (``relay/out_of_body.py``) on (1) the synthetic endoscopy sequence
(``client/endoscopy.py``) with room frames inserted, every third frame of several seeds, at the
guard's analysis size, and (2) the varied synthetic scenes of the tests (rooms of eight wall
colours with furniture and a face, close-up faces, mucosa views: ``tests/privacy_scenes.py``).
Then the spans the hysteresis finds at 2 Hz against the truth, and the CPU of one sample (a 720p
frame downscaled and classified) and of decoding the 720p30 original it needs (VP8, H.264).
No real room footage is available offline: these are synthetic numbers.
"""

from __future__ import annotations

import argparse
import fractions
import time

import av
import cv2
import numpy as np

from client.endoscopy import SyntheticEndoscopy
from relay.out_of_body import ANALYSIS_HEIGHT, ANALYSIS_WIDTH, Hysteresis, classify
from tests.privacy_scenes import close_face, mucosa, room

ROOM_SPANS = ((3.0, 5.0), (12.0, 14.5))


def sequence_rates(seeds: int) -> None:
    counts = {kind: [0, 0, 0] for kind in ("room", "mucosa", "dark")}  # frames, flagged, undecided
    worst_start = worst_end = 0.0
    for seed in range(1, seeds + 1):
        sequence = SyntheticEndoscopy(640, 360, seconds=18.0, seed=seed, room_spans=ROOM_SPANS)
        hysteresis, spans = Hysteresis(), []
        for index in range(0, sequence.count, 3):
            frame = sequence.frame(index)
            small = cv2.resize(frame.bgr, (ANALYSIS_WIDTH, ANALYSIS_HEIGHT), cv2.INTER_AREA)
            verdict = classify(small)
            kind = "room" if frame.out_of_body else "mucosa" if frame.in_view else "dark"
            counts[kind][0] += 1
            counts[kind][1] += verdict is not None and verdict.out_of_body
            counts[kind][2] += verdict is None
            if index % (sequence.fps // 2):
                continue
            said = None if verdict is None else verdict.out_of_body
            changed = hysteresis.update(said, index / sequence.fps)
            if changed is not None and hysteresis.out_of_body:
                spans.append([changed, sequence.seconds])
            elif changed is not None:
                spans[-1][1] = changed
        for (start, end), (true_start, true_end) in zip(spans, ROOM_SPANS, strict=True):
            worst_start = max(worst_start, abs(start - true_start))
            worst_end = max(worst_end, abs(end - true_end))
    print(f"synthetic endoscopy sequence, {seeds} seeds, every 3rd frame:")
    for kind, (frames, flagged, undecided) in counts.items():
        print(f"  {kind:7s} {frames:5d} frames: {flagged:4d} outside, {undecided:4d} undecided")
    print(f"  spans at 2 Hz: start within {worst_start:.2f} s, end within {worst_end:.2f} s")


def scene_rates(count: int) -> None:
    print(f"varied scenes, {count} each:")
    for name, make, outside in (("rooms", room, True), ("faces", close_face, True)) + (
        ("mucosa", mucosa, False),
    ):
        verdicts = [classify(make(seed)) for seed in range(count)]
        wrong = sum(1 for v in verdicts if v is None or v.out_of_body != outside)
        print(f"  {name:7s} {100 * wrong / count:5.1f} % wrong")


def cpu(seconds: float) -> None:
    sequence = SyntheticEndoscopy(1280, 720, seconds=seconds, seed=1, room_spans=((1.0, 2.0),))
    pictures = [sequence.frame(i).bgr for i in range(sequence.count)]
    for encoder_name, decoder_name, options in (
        ("libvpx", "vp8", {"deadline": "realtime", "cpu-used": "8"}),
        ("libx264", "h264", {"preset": "ultrafast", "tune": "zerolatency"}),
    ):
        encoder = av.CodecContext.create(encoder_name, "w")
        assert isinstance(encoder, av.VideoCodecContext)
        encoder.width, encoder.height, encoder.pix_fmt = 1280, 720, "yuv420p"
        encoder.time_base, encoder.bit_rate, encoder.options = (
            fractions.Fraction(1, 30),
            1_500_000,
            options,
        )
        packets = []
        for n, bgr in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
            frame.pts = n
            packets += encoder.encode(frame)
        packets += encoder.encode(None)
        decoder = av.CodecContext.create(decoder_name, "r")
        decoder.thread_count = 1
        started, decoded = time.thread_time(), []
        for packet in packets:
            decoded += decoder.decode(packet)
        decode_s = (time.thread_time() - started) / len(decoded)
        samples = decoded[::15]
        started = time.thread_time()
        for frame in samples:
            assert isinstance(frame, av.VideoFrame)
            classify(
                frame.reformat(
                    width=ANALYSIS_WIDTH, height=ANALYSIS_HEIGHT, format="bgr24"
                ).to_ndarray()
            )
        sample_s = (time.thread_time() - started) / len(samples)
        print(
            f"720p30 {decoder_name}: decode {1000 * decode_s:.1f} ms/frame "
            f"({100 * 30 * decode_s:.1f} % of a core), sample {1000 * sample_s:.1f} ms "
            f"({100 * 2 * sample_s:.2f} % of a core at 2 Hz)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--cpu-seconds", type=float, default=6.0)
    args = parser.parse_args()
    np.seterr(all="ignore")
    sequence_rates(args.seeds)
    scene_rates(args.scenes)
    cpu(args.cpu_seconds)


if __name__ == "__main__":
    main()
