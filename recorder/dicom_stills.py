"""Snapshots as VL Endoscopic Images (PS3.3 A.32.4, SOP class …77.1.1), in their own series.

Uncompressed RGB (Explicit VR Little Endian), not JPEG baseline: a snapshot is a lossless PNG
someone took to show a detail, and JPEG would add a lossy generation to exactly that; every
archive and viewer reads native RGB, and a 720p still is 2.7 MB. A snapshot is the annotated
picture (the marks, text labels included, are in its pixels), so Burned In Annotation is YES:
a label typed during the consultation may name someone, and de-identification must look.

A still (stills mode: a JPEG of the clinic's camera, no marks in it) is decoded to RGB the same
way and says so: lossy JPEG compression, no burned-in annotation.

Blocking (Pillow, pydicom): runs in the export worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, VLEndoscopicImageStorage

from .dicom_study import Series, new_instance


class UndecodablePicture(ValueError):
    """A stored picture Pillow cannot decode (a still stored before the stricter upload check, a
    damaged file): the export leaves it out with a note."""


def still_instance(series: Series, png: Path, instance_number: int, taken_at: str) -> Dataset:
    """The VL Endoscopic Image of one snapshot PNG (any PNG mode, alpha dropped) or still JPEG;
    ``UndecodablePicture`` when it cannot be decoded."""
    try:
        with Image.open(png) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        why = type(exc).__name__
        raise UndecodablePicture(f"the picture could not be decoded ({why})") from exc
    ds = new_instance(
        series, VLEndoscopicImageStorage, ExplicitVRLittleEndian, instance_number, taken_at
    )
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if png.suffix == ".jpg":
        ds.DerivationDescription = "a frame of the clinic's camera, sent as a JPEG still"
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        ds.DerivationDescription = "a frame of the endoscope video with the consultation's marks"
        ds.BurnedInAnnotation = "YES"
        ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rgb.shape[0], rgb.shape[1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds["PixelData"].VR = "OB"
    return ds
