"""One recorded segment as a Video Endoscopic Image (PS3.3 A.32.5, SOP class …77.1.1.1), its
H.264 stream in an MPEG-4 AVC transfer syntax (PS3.5 8.2.7, 8.2.8, A.4.6).

The stream. A segment recorded in H.264 High profile at a level within 4.1 (4.2) is copied as it
was recorded: its video track only, remuxed into a plain MP4 with its index in front. Anything
else is transcoded once with libx264 (``X264_OPTIONS``): VP8 recordings, and the Constrained
Baseline H.264 that browsers send over WebRTC — archives choose the transfer syntax from the
stream's ``profile_idc`` (dcm4che does exactly that), and the two High profile syntaxes are
the ones viewers and archives expect. Audio stays out: the talk-back is the consultation's
conversation, not the image, and Opus is not an audio DICOM's MPEG syntaxes admit.

The encapsulation. The fragment holds an MP4 file, not an Annex B byte stream: PS3.5 8.2.7 and
8.2.8 (and 8.2.9, "identical to 8.2.8") say the container for the video bit stream "shall be
MPEG-2 Transport Stream … or MPEG-4, a.k.a. MP4 container (ISO/IEC 14496-12, 14496-14)", and
readers expect one (dcm4che's MP4Parser reads the ``ftyp``/``moov`` boxes of the pixel data for
the frame count and rate). The whole MP4 is one fragment after an empty Basic Offset Table
(A.4.6, the non-fragmentable syntaxes: "one fragment shall contain the whole MPEG-4 AVC/H.264 bit
stream"); so a segment's file must stay under 4 GiB (an hour at 8 Mbit/s is 3.6 GB).
Pixel-module values describe the stream (YBR_PARTIAL_420, 8 bits, 3 samples, Rows × Columns its
picture), ``NumberOfFrames`` is the stream's frame count and ``FrameTime`` its mean frame
interval, so ``NumberOfFrames × FrameTime`` is its duration.
WebRTC's frame rate varies a little: the MP4 keeps each frame's own time, the DICOM attributes
give the mean.

Blocking and CPU-heavy: runs in the export worker (``recorder/jobs.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate_buffer
from pydicom.tag import Tag
from pydicom.uid import MPEG4HP41, MPEG4HP422D, VideoEndoscopicImageStorage

from .bitstream import h264_profile_level, length_prefixed_to_annexb
from .dicom_study import Series, new_instance
from .export import ExportCancelled
from .jobs import JobFailed
from .privacy_spans import blurred

X264_OPTIONS = {
    "crf": "18",
    "preset": "veryfast",
    "profile": "high",
    "x264-params": "keyint=60:vbv-maxrate=50000:vbv-bufsize=62500",
}
"""CRF 18: the customary "visually lossless" point of x264, a notch finer than the annotated
export's 20 (this copy is the record, kept for years, looked at for mucosal detail). ``veryfast``:
~2× the speed of ``medium`` at the same CRF for a few % more bits; a 2 s key-frame interval lets a
viewer seek; the VBV cap keeps the stream inside High profile level 4.1's 50 Mbit/s."""
MAX_FRAGMENT = 0xFFFF_FFFE
"Largest even fragment length (the item length is 32 bits; 0xFFFFFFFF means undefined)."
_LEVELS = ((41, 8192, 245_760, MPEG4HP41), (42, 8704, 522_240, MPEG4HP422D))
"(level_idc, max macroblocks per frame, per second, transfer syntax) of H.264 Table A-1."
_TIME_BASE = Fraction(1, 90_000)
HIGH = 100
"profile_idc of H.264 High profile."


@dataclass(frozen=True)
class VideoStream:
    """The MP4 to embed and what the DICOM attributes say of it."""

    path: Path
    transfer_syntax: str
    frames: int
    frame_time_s: float
    width: int
    height: int
    transcoded: bool

    @property
    def duration_s(self) -> float:
        return self.frames * self.frame_time_s


def transfer_syntax_for(width: int, height: int, fps: float, level: int | None = None) -> str:
    """The MPEG-4 AVC High profile syntax whose level holds this picture and rate (and, if
    given, the stream's own ``level_idc``); ``JobFailed`` beyond level 4.2."""
    macroblocks = math.ceil(width / 16) * math.ceil(height / 16)
    for level_idc, per_frame, per_second, syntax in _LEVELS:
        fits = macroblocks <= per_frame and macroblocks * fps <= per_second
        if fits and (level is None or level <= level_idc):
            return str(syntax)
    raise JobFailed(
        f"a {width} × {height} picture at {fps:.0f} frames/s is beyond what DICOM's H.264 "
        "transfer syntaxes hold (High profile, level 4.2)"
    )


def prepare_stream(
    source: Path,
    target: Path,
    report: Callable[[float], None],
    cancelled: Callable[[], bool],
    expected_frames: int = 0,
    hide: Callable[[float], bool] | None = None,
) -> VideoStream:
    """Write ``target`` (MP4, video only) from a segment file: copied if its H.264 already fits
    and nothing is to be hidden, else transcoded (the frames at file times ``hide`` says
    blurred); then measured."""
    with av.open(str(source)) as container:
        if not container.streams.video:
            raise JobFailed("a segment of the recording has no video")
        stream = container.streams.video[0]
        fitting = hide is None and _fits_as_recorded(container, stream)
        container.seek(0)
        if fitting:
            _copy(container, stream, target, cancelled)
        else:
            _transcode(container, stream, target, report, cancelled, expected_frames, hide)
    return measure(target, transcoded=not fitting)


def _fits_as_recorded(container: av.container.InputContainer, stream: av.VideoStream) -> bool:
    """Whether the recorded H.264 is High profile at a level a DICOM syntax holds, as its first
    SPS says (the recorder's fragmented MP4 header is written before any SPS arrives)."""
    ctx = stream.codec_context
    if ctx.name != "h264" or ctx.pix_fmt != "yuv420p":
        return False
    for packet in container.demux(stream):
        said = h264_profile_level(length_prefixed_to_annexb(bytes(packet)))
        if said is None:
            continue
        profile, level = said
        fps = float(stream.guessed_rate or stream.average_rate or 30)
        try:
            transfer_syntax_for(ctx.width, ctx.height, fps, level)
        except JobFailed:
            return False
        return profile == HIGH
    return False


def measure(path: Path, transcoded: bool) -> VideoStream:
    """Frame count, mean frame interval, size and transfer syntax of an H.264 MP4, from its
    packets (no decoding)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        times = sorted(
            float(p.pts * p.time_base) for p in container.demux(stream) if p.pts is not None
        )
        width, height, level = ctx.width, ctx.height, ctx.level
    if not times:
        raise JobFailed("a segment of the recording holds no video frame")
    interval = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 1 / 30
    syntax = transfer_syntax_for(width, height, 1 / interval, level)
    if path.stat().st_size > MAX_FRAGMENT:
        raise JobFailed("a segment is larger than one DICOM fragment holds (4 GiB)")
    return VideoStream(path, syntax, len(times), interval, width, height, transcoded)


def _copy(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    target: Path,
    cancelled: Callable[[], bool],
) -> None:
    """The recorded access units, as they are, in a plain MP4 whose header the muxer builds from
    their own SPS and PPS (fed as Annex B, like the recorder feeds them)."""
    ctx = stream.codec_context
    with av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        copy = out.add_mux_stream("h264", width=ctx.width, height=ctx.height)
        copy.time_base = stream.time_base
        for packet in container.demux(stream):
            if cancelled():
                raise ExportCancelled
            if packet.dts is None or not packet.size:
                continue
            unit = av.Packet(length_prefixed_to_annexb(bytes(packet)))
            unit.pts, unit.dts, unit.time_base = packet.pts, packet.dts, packet.time_base
            unit.is_keyframe = packet.is_keyframe
            unit.stream = copy
            out.mux(unit)


def _transcode(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    target: Path,
    report: Callable[[float], None],
    cancelled: Callable[[], bool],
    expected_frames: int,
    hide: Callable[[float], bool] | None = None,
) -> None:
    """Every decoded frame encoded once, at its own time (no frame dropped or repeated); those
    ``hide`` names blurred."""
    stream.thread_type = "AUTO"
    ctx = stream.codec_context
    width, height = ctx.width - ctx.width % 2, ctx.height - ctx.height % 2
    fps = float(stream.guessed_rate or stream.average_rate or 30)
    syntax = transfer_syntax_for(width, height, fps)
    level = "4.1" if syntax == MPEG4HP41 else "4.2"
    with av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=round(fps), options={**X264_OPTIONS, "level": level})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = video.time_base = _TIME_BASE
        video.codec_context.thread_count = 2
        last_pts, done = -1, 0
        for packet in container.demux(stream):
            if cancelled():
                raise ExportCancelled
            try:
                frames = packet.decode()
            except av.FFmpegError:
                continue  # a damaged packet (the torn end of an interrupted file)
            for frame in frames:
                if not isinstance(frame, av.VideoFrame) or frame.time is None:
                    continue
                picture = frame.reformat(width, height, "yuv420p")
                if hide is not None and hide(float(frame.time)):
                    picture = blurred(picture)
                last_pts = picture.pts = max(last_pts + 1, round(frame.time * 90_000))
                picture.time_base = _TIME_BASE
                picture.pict_type = av.video.frame.PictureType.NONE
                out.mux(video.encode(picture))
                done += 1
                if expected_frames:
                    report(min(0.99, done / expected_frames))
        out.mux(video.encode(None))
    if not done:
        raise JobFailed("a segment of the recording holds no video frame")


def video_instance(
    series: Series,
    stream: VideoStream,
    instance_number: int,
    content_at: str,
    derived_from: list[tuple[str, str]] | None = None,
) -> Dataset:
    """The Video Endoscopic Image dataset of ``stream`` (pixel data added by ``write_video``).
    ``derived_from``: (SOP class, SOP instance) of the originals a burned-in copy was made from."""
    ds = new_instance(
        series, VideoEndoscopicImageStorage, stream.transfer_syntax, instance_number, content_at
    )
    derived = derived_from is not None
    ds.ImageType = ["DERIVED", "SECONDARY"] if derived else ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "YES" if derived else "NO"
    if derived_from is not None:
        ds.DerivationDescription = "annotations drawn into the frames (EndoLink annotated export)"
        ds.SourceImageSequence = [_reference(sop_class, uid) for sop_class, uid in derived_from]
    # Image Pixel (C.7.6.3), as PS3.5 8.2.7 requires of MPEG-4 AVC streams
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = stream.height, stream.width
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_14496_10"
    raw = stream.width * stream.height * 3 * stream.frames
    ds.LossyImageCompressionRatio = f"{raw / max(1, stream.path.stat().st_size):.2f}"[:16]
    # Cine (C.7.6.5) and Multi-frame (C.7.6.6)
    frame_ms = stream.frame_time_s * 1000
    ds.NumberOfFrames = stream.frames
    ds.FrameIncrementPointer = Tag("FrameTime")
    ds.FrameTime = f"{frame_ms:.6f}"[:16]
    ds.CineRate = ds.RecommendedDisplayFrameRate = round(1 / stream.frame_time_s)
    ds.PreferredPlaybackSequencing = 0
    ds.StartTrim, ds.StopTrim = 1, stream.frames
    return ds


def write_video(ds: Dataset, stream: VideoStream, target: Path) -> None:
    """Save ``ds`` with the MP4 as its one fragment (read from disk while writing, not loaded)."""
    with stream.path.open("rb") as mp4:
        ds.PixelData = encapsulate_buffer([mp4], has_bot=False)
        ds["PixelData"].VR = "OB"
        ds.save_as(target, enforce_file_format=True)


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item
