"""One anchored mark's region, followed from frame to frame (the tracker's inner loop).

Why each step is there:

* frame to frame, pyramidal Lucas–Kanade on corners inside and around the region, kept only when
  the backward flow lands within a pixel of where it started, and a RANSAC similarity of the
  survivors: fast, follows large motion, but its small errors add up;
* then a correction against the region as it was drawn (the reference, warped into the current
  frame by the estimate): the error no longer adds up, and the normalised cross-correlation of
  the two says whether the estimate really shows the same tissue — that check is what keeps a
  mark from being shown confidently in the wrong place;
* when the region is lost (blur, occlusion, the scope pulled out), ORB descriptors of the
  reference are matched against the whole frame; a match counts only with enough RANSAC inliers,
  a plausible scale and the same cross-correlation check.

All coordinates here are pixels of the analysis frame; ``Tracker`` converts to normalised ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

Gray = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float32]
Matrix = npt.NDArray[np.float64]

LK_WINDOW = (21, 21)
LK_LEVELS = 3
LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
FB_LIMIT_PX = 1.0
"""Forward–backward disagreement above which a flow vector is dropped."""
MIN_INLIERS = 8
LOSE_BELOW = 0.35
"""Confidence below which a mark is lost (greyed); it comes back only through re-detection."""
NCC_LOST = 0.35
NCC_FOUND = 0.6
"""Cross-correlation with the reference: below ``NCC_LOST`` the place is wrong or unseen;
re-detection must reach ``NCC_FOUND``."""


@dataclass(frozen=True)
class Frame:
    """One analysis frame, prepared once for every mark."""

    pts: int
    gray: Gray
    valid: Gray
    """255 where the picture shows tissue: inside the round picture, not clipped by a glare."""


def prepare(gray: Gray, pts: int) -> Frame:
    lit = cv2.inRange(gray, 16, 235)
    valid = np.asarray(cv2.erode(lit, np.ones((7, 7), np.uint8)), np.uint8)
    return Frame(pts, gray, valid)


def region(points: Points, width: int, height: int) -> tuple[int, int, int, int]:
    """The box tracked for a mark: its points' box, widened by a margin and to at least a
    fifth of the width (a small mark still gets enough texture), inside the frame."""
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    margin = 0.05 * width
    half = 0.1 * width
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw = max((x1 - x0) / 2 + margin, half)
    hh = max((y1 - y0) / 2 + margin, half)
    box = (
        int(max(0, cx - hw)),
        int(max(0, cy - hh)),
        int(min(width, cx + hw)),
        int(min(height, cy + hh)),
    )
    return box


def _corners(gray: Gray, mask: Gray, count: int) -> Points:
    found = cv2.goodFeaturesToTrack(gray, count, 0.002, 4, mask=mask, blockSize=5)
    if found is None:
        return np.empty((0, 2), np.float32)
    return np.asarray(found, np.float32).reshape(-1, 2)


def _lk(before: Gray, after: Gray, p0: Points, levels: int) -> tuple[Points, npt.NDArray[np.bool_]]:
    """Forward–backward Lucas–Kanade: the moved points and which of them to trust."""
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(
        before, after, p0, None, winSize=LK_WINDOW, maxLevel=levels, criteria=LK_CRITERIA
    )
    p0b, st2, _ = cv2.calcOpticalFlowPyrLK(
        after, before, p1, None, winSize=LK_WINDOW, maxLevel=levels, criteria=LK_CRITERIA
    )
    fb = np.linalg.norm(p0b - p0, axis=1)
    good = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < FB_LIMIT_PX)
    return np.asarray(p1, np.float32), good


def _similarity(p0: Points, p1: Points, threshold: float) -> tuple[Matrix | None, int]:
    """RANSAC similarity p0 → p1 as 3×3, and its inlier count."""
    if len(p0) < MIN_INLIERS:
        return None, 0
    m, inliers = cv2.estimateAffinePartial2D(
        p0, p1, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=200
    )
    if m is None or inliers is None:
        return None, 0
    return np.vstack([m, [0.0, 0.0, 1.0]]), int(inliers.sum())


def _shift(dx: float, dy: float) -> Matrix:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _ncc(a: Gray, b: Gray, mask: npt.NDArray[np.bool_]) -> float:
    if mask.sum() < 64:
        return 0.0
    x = a[mask].astype(np.float32)
    y = b[mask].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    norm = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum()) / norm if norm > 1e-3 else 0.0


class MarkTrack:
    """A mark's region: its reference (the frame it was drawn on) and where it is now."""

    def __init__(self, frame: Frame, points: Points) -> None:
        height, width = frame.gray.shape
        self.box = region(points, width, height)
        x0, y0, x1, y1 = self.box
        self.reference = frame.gray
        self.reference_mask = np.zeros_like(frame.valid)
        self.reference_mask[y0:y1, x0:x1] = frame.valid[y0:y1, x0:x1]
        self.matrix: Matrix = np.eye(3)
        """Reference pixels → current pixels."""
        self.shown: Matrix = np.eye(3)
        """The last confident ``matrix``: where a lost mark stays, greyed."""
        self.points = _corners(frame.gray, self._mask_around(frame), 40)
        self.confidence = 1.0 if len(self.points) >= MIN_INLIERS else 0.0
        self.lost = self.confidence < LOSE_BELOW
        orb = cv2.ORB.create(300, fastThreshold=5, edgeThreshold=15)
        keypoints, self.descriptors = orb.detectAndCompute(frame.gray, self.reference_mask)
        self.keypoints = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)

    def _mask_around(self, frame: Frame) -> Gray:
        """Where to look for corners now: the region's current box, where tissue is seen."""
        height, width = frame.gray.shape
        x0, y0, x1, y1 = self._current_rect(width, height, 0)
        mask = np.zeros_like(frame.valid)
        mask[y0:y1, x0:x1] = frame.valid[y0:y1, x0:x1]
        return mask

    def _current_rect(self, width: int, height: int, pad: int) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.box
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64)
        moved = (self.matrix @ corners.T)[:2]
        lo = np.floor(moved.min(1)) - pad
        hi = np.ceil(moved.max(1)) + pad
        return (
            int(np.clip(lo[0], 0, width)),
            int(np.clip(lo[1], 0, height)),
            int(np.clip(hi[0], 0, width)),
            int(np.clip(hi[1], 0, height)),
        )

    def step(self, before: Frame, now: Frame, orb_now: tuple[Points, Gray | None] | None) -> None:
        """Follow the region from ``before`` to ``now``; when lost, try to find it again in
        ``orb_now`` (keypoint positions and descriptors of ``now``, None: not this frame)."""
        if self.lost:
            if orb_now is not None:
                self._redetect(now, orb_now)
            return
        motion, inliers, ratio = self._flow(before, now)
        if motion is None:
            self._lose()
            return
        self.matrix = motion @ self.matrix
        ncc, checked = self._correct(now)
        score = min(1.0, (inliers - 4) / 12) * min(1.0, ratio / 0.6)
        score *= float(np.clip((ncc - NCC_LOST) / (0.75 - NCC_LOST), 0.0, 1.0))
        self.confidence = 0.5 * self.confidence + 0.5 * score
        if ncc < NCC_LOST or checked < MIN_INLIERS or self.confidence < LOSE_BELOW:
            self._lose()
            return
        self.shown = self.matrix.copy()
        if len(self.points) < 25:
            self.points = _corners(now.gray, self._mask_around(now), 40)

    def _flow(self, before: Frame, now: Frame) -> tuple[Matrix | None, int, float]:
        """Frame-to-frame similarity of the region's corners, its inliers and their share."""
        if len(self.points) < MIN_INLIERS:
            self.points = _corners(before.gray, self._mask_around(before), 40)
            if len(self.points) < MIN_INLIERS:
                return None, 0, 0.0
        moved, good = _lk(before.gray, now.gray, self.points, LK_LEVELS)
        xs = np.clip(moved[:, 0].astype(np.int32), 0, now.valid.shape[1] - 1)
        ys = np.clip(moved[:, 1].astype(np.int32), 0, now.valid.shape[0] - 1)
        good &= now.valid[ys, xs] > 0
        motion, inliers = _similarity(self.points[good], moved[good], 1.0)
        self.points = moved[good]
        return motion, inliers, inliers / max(1, len(good))

    def _correct(self, now: Frame) -> tuple[float, int]:
        """Register the reference, warped by the estimate, onto ``now``: fixes the estimate's
        accumulated error; returns the cross-correlation after it and the inliers used."""
        height, width = now.gray.shape
        x0, y0, x1, y1 = self._current_rect(width, height, 6)
        if x1 - x0 < 24 or y1 - y0 < 24:
            return 0.0, 0
        into = _shift(-x0, -y0) @ self.matrix
        warped, mask = self._warp(into, (x1 - x0, y1 - y0))
        crop = now.gray[y0:y1, x0:x1]
        both = np.asarray(cv2.bitwise_and(mask, now.valid[y0:y1, x0:x1]), np.uint8)
        p0 = _corners(warped, both, 40)
        if len(p0) < MIN_INLIERS:
            return 0.0, 0
        p1, good = _lk(warped, crop, p0, 2)
        fix, inliers = _similarity(p0[good], p1[good], 1.0)
        if fix is not None and _plausible(fix, 0.15, 1.15):
            self.matrix = _shift(x0, y0) @ fix @ into
            warped, mask = self._warp(_shift(-x0, -y0) @ self.matrix, (x1 - x0, y1 - y0))
            both = np.asarray(cv2.bitwise_and(mask, now.valid[y0:y1, x0:x1]), np.uint8)
        return _ncc(warped, crop, both > 0), inliers

    def _warp(self, matrix: Matrix, size: tuple[int, int]) -> tuple[Gray, Gray]:
        image = cv2.warpAffine(self.reference, matrix[:2], size, flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(self.reference_mask, matrix[:2], size, flags=cv2.INTER_NEAREST)
        return np.asarray(image, np.uint8), np.asarray(mask, np.uint8)

    def _lose(self) -> None:
        self.lost = True
        self.confidence = min(self.confidence, LOSE_BELOW * 0.5)
        self.points = np.empty((0, 2), np.float32)

    def _redetect(self, now: Frame, orb_now: tuple[Points, Gray | None]) -> None:
        """ORB matches of the reference in the whole frame; accepted only when the RANSAC
        similarity has enough inliers, a plausible scale and the correction agrees."""
        positions, descriptors = orb_now
        if self.descriptors is None or descriptors is None or len(positions) < MIN_INLIERS:
            return
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        pairs = matcher.knnMatch(self.descriptors, descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
        if len(good) < 12:
            return
        src = self.keypoints[[m.queryIdx for m in good]]
        dst = positions[[m.trainIdx for m in good]]
        found, inliers = _similarity(src, dst, 3.0)
        if found is None or inliers < 12 or not _plausible(found, 1.2, 2.5):
            return
        previous = self.matrix
        self.matrix = found
        ncc, checked = self._correct(now)
        if ncc < NCC_FOUND or checked < MIN_INLIERS:
            self.matrix = previous
            return
        self.lost = False
        self.confidence = LOSE_BELOW + 0.1
        self.shown = self.matrix.copy()
        self.points = _corners(now.gray, self._mask_around(now), 40)


def _plausible(matrix: Matrix, max_angle: float, max_scale: float) -> bool:
    """Whether a similarity turns by at most ``max_angle`` radians and scales by at most
    ``max_scale`` (either way)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    angle = abs(float(np.arctan2(matrix[1, 0], matrix[0, 0])))
    return 1 / max_scale <= scale <= max_scale and angle <= max_angle
