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

LK_WINDOW = (15, 15)
LK_LEVELS = 3
LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
FB_LIMIT_PX = 1.0
"""Forward–backward disagreement above which a flow vector is dropped."""
MIN_INLIERS = 8
LOSE_BELOW = 0.35
"""Confidence below which a mark is lost (greyed); it comes back only through re-detection."""
NCC_LOST = 0.35
NCC_FOUND = 0.75
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
    # glare (near-white: it follows the light, not the tissue) and the dark outside of the
    # round picture are left out, with a margin
    lit = cv2.inRange(gray, 16, 224)
    side = max(3, gray.shape[1] // 37) | 1
    valid = np.asarray(cv2.erode(lit, np.ones((side, side), np.uint8)), np.uint8)
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


def orb_features(frame: Frame) -> tuple[Points, Gray | None]:
    """Re-detection features of a whole picture: ORB (rotation- and scale-invariant, cheap to
    match); positions and descriptors. A fresh detector per call: frames of different
    consultations are analysed on different threads."""
    detector = cv2.ORB.create(500, fastThreshold=5, edgeThreshold=15)
    keypoints, descriptors = detector.detectAndCompute(frame.gray, frame.valid)
    positions = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return positions, None if descriptors is None else np.asarray(descriptors, np.uint8)


def _corners(gray: Gray, mask: Gray, count: int) -> Points:
    found = cv2.goodFeaturesToTrack(gray, count, 0.002, 4, mask=mask, blockSize=5)
    if found is None:
        return np.empty((0, 2), np.float32)
    return np.asarray(found, np.float32).reshape(-1, 2)


def lk(
    before: Gray, after: Gray, p0: Points, levels: int, fb_limit: float = FB_LIMIT_PX
) -> tuple[Points, npt.NDArray[np.bool_]]:
    """Forward–backward Lucas–Kanade: the moved points and which of them to trust."""
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(
        before, after, p0, None, winSize=LK_WINDOW, maxLevel=levels, criteria=LK_CRITERIA
    )
    p0b, st2, _ = cv2.calcOpticalFlowPyrLK(
        after, before, p1, None, winSize=LK_WINDOW, maxLevel=levels, criteria=LK_CRITERIA
    )
    fb = np.linalg.norm(p0b - p0, axis=1)
    good = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < fb_limit)
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


def _detail(image: Gray) -> npt.NDArray[np.float32]:
    """The fine texture only: lighting changes as the scope moves, the texture does not."""
    image32 = image.astype(np.float32)
    fine = cv2.GaussianBlur(image32, (0, 0), 1.5)  # below this: noise, resampling, blur
    return np.asarray(fine - cv2.GaussianBlur(image32, (0, 0), 6.0), np.float32)


def _ncc(a: Gray, b: Gray, mask: npt.NDArray[np.bool_]) -> float:
    """How well two views of the region agree: the median over a 3×3 grid of cells of the
    normalised cross-correlation of their fine texture (a glare or a fold in one cell does not
    outvote the rest)."""
    x, y = _detail(a), _detail(b)
    height, width = mask.shape
    scores = []
    for i in range(3):
        for j in range(3):
            rows = slice(i * height // 3, (i + 1) * height // 3)
            cols = slice(j * width // 3, (j + 1) * width // 3)
            cell = mask[rows, cols]
            if cell.sum() < max(32, 0.4 * cell.size):
                continue
            u, v = x[rows, cols][cell], y[rows, cols][cell]
            u, v = u - u.mean(), v - v.mean()
            norm = float(np.sqrt((u * u).sum() * (v * v).sum()))
            scores.append(float((u * v).sum()) / norm if norm > 1e-3 else 0.0)
    return float(np.median(scores)) if len(scores) >= 3 else 0.0


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
        self.points = self._corners_around(frame)
        self.reference_corners = _corners(frame.gray, self.reference_mask, 60)
        self.confidence = 1.0 if len(self.points) >= MIN_INLIERS else 0.0
        self.lost = self.confidence < LOSE_BELOW
        self.streak = 0
        """Good checks in a row while lost."""
        self.misses = 0
        """Failed checks in a row while lost."""
        # the whole picture it was drawn on, not only the region: far more features to match
        # (a region of smooth mucosa may have a dozen), their similarity a first guess that the
        # region's own checks then confirm or refuse
        self.keypoints, self.descriptors = orb_features(frame)

    def _corners_around(self, frame: Frame) -> Points:
        """Corners of the region's current box, where tissue is seen."""
        height, width = frame.gray.shape
        x0, y0, x1, y1 = self._current_rect(width, height, 0)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return np.empty((0, 2), np.float32)
        found = _corners(frame.gray[y0:y1, x0:x1], frame.valid[y0:y1, x0:x1], 40)
        return found + np.array([x0, y0], np.float32)

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

    def corners(self, before: Frame) -> Points:
        """The corners to follow out of ``before`` (topped up when too few are left)."""
        if len(self.points) < 15:
            self.points = self._corners_around(before)
        return self.points

    def follow(self, now: Frame, moved: Points, good: npt.NDArray[np.bool_], check: bool) -> None:
        """Take this mark's share of the frame's flow (``corners`` moved to ``now``); with
        ``check``, or when the flow alone cannot tell, correct against the reference and check
        the place (the cross-correlation) — the only way confidence is earned. A lost mark is
        followed all the same, out of sight, and found again after two good checks in a row."""
        xs = np.clip(moved[:, 0].astype(np.int32), 0, now.valid.shape[1] - 1)
        ys = np.clip(moved[:, 1].astype(np.int32), 0, now.valid.shape[0] - 1)
        good = good & (now.valid[ys, xs] > 0)
        motion, flow_inliers = _similarity(self.points[good], moved[good], 1.0)
        self.points = moved[good]
        if motion is not None:
            self.matrix = motion @ self.matrix
        else:
            check = True  # without a motion (blur, too few corners) correct from the last place
        if not check:
            if flow_inliers >= 2 * MIN_INLIERS and not self.lost:
                self.shown = self.matrix.copy()
            return
        ncc, inliers = self._correct(now)
        if self.lost:
            held = max(inliers, flow_inliers // 2) >= MIN_INLIERS
            good_check = ncc >= NCC_FOUND and held
            self.streak = self.streak + 1 if good_check else 0
            self.misses = 0 if good_check else self.misses + 1
            if self.streak >= 2:
                self._find()
            return
        support = min(1.0, (flow_inliers + inliers) / 24)
        score = support * float(np.clip((ncc - NCC_LOST) / (0.8 - NCC_LOST), 0.0, 1.0))
        self.confidence = 0.5 * self.confidence + 0.5 * score
        if ncc < NCC_LOST or self.confidence < LOSE_BELOW:
            self._lose()
            return
        self.shown = self.matrix.copy()

    def _find(self) -> None:
        self.lost = False
        self.streak = 0
        self.misses = 0
        self.confidence = LOSE_BELOW + 0.15
        self.shown = self.matrix.copy()

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
        # the reference's corners, seen through the estimate, where both frames show tissue
        p0 = np.asarray(cv2.transform(self.reference_corners[:, None], into[:2]), np.float32)
        p0 = p0.reshape(-1, 2)
        xs, ys = p0[:, 0].astype(np.int32), p0[:, 1].astype(np.int32)
        inside = (xs >= 0) & (ys >= 0) & (xs < x1 - x0) & (ys < y1 - y0)
        p0 = p0[inside]
        p0 = np.asarray(p0[both[ys[inside], xs[inside]] > 0], np.float32)
        if len(p0) < MIN_INLIERS:
            return 0.0, 0
        # the warped reference is smoother than the frame (resampled): a looser agreement
        p1, good = lk(warped, crop, p0, 2, 1.5 * FB_LIMIT_PX)
        ncc = _ncc(warped, crop, both > 0)
        fix, inliers = _similarity(p0[good], p1[good], 1.5)
        if fix is not None and inliers >= MIN_INLIERS and _plausible(fix, 0.15, 1.15):
            corrected = _shift(x0, y0) @ fix @ into
            warped, mask = self._warp(_shift(-x0, -y0) @ corrected, (x1 - x0, y1 - y0))
            both = np.asarray(cv2.bitwise_and(mask, now.valid[y0:y1, x0:x1]), np.uint8)
            after = _ncc(warped, crop, both > 0)
            if after >= ncc:
                self.matrix, ncc = corrected, after
        return ncc, inliers

    def _warp(self, matrix: Matrix, size: tuple[int, int]) -> tuple[Gray, Gray]:
        image = cv2.warpAffine(self.reference, matrix[:2], size, flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(self.reference_mask, matrix[:2], size, flags=cv2.INTER_NEAREST)
        return np.asarray(image, np.uint8), np.asarray(mask, np.uint8)

    def _lose(self) -> None:
        self.lost = True
        self.streak = 0
        self.confidence = min(self.confidence, LOSE_BELOW * 0.5)

    @property
    def adrift(self) -> bool:
        """Lost, and following it out of sight no longer works: look for it everywhere."""
        return self.lost and (len(self.points) < MIN_INLIERS or self.misses >= 3)

    def redetect(self, now: Frame, orb_now: tuple[Points, Gray | None]) -> None:
        """Match the reference picture's ORB features in ``now``: a RANSAC similarity with
        enough inliers and a plausible scale becomes the lost region's next guess; it is found
        again only when its own checks agree (``follow``)."""
        positions, descriptors = orb_now
        if self.descriptors is None or descriptors is None or len(positions) < MIN_INLIERS:
            return
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        pairs = matcher.knnMatch(self.descriptors, descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
        if len(good) < 15:
            return
        src = self.keypoints[[m.queryIdx for m in good]]
        dst = positions[[m.trainIdx for m in good]]
        guess, inliers = _similarity(src, dst, 3.0)
        if guess is None or inliers < 15 or not _plausible(guess, 1.2, 2.5):
            return
        self.matrix = guess
        self.misses = 0
        self.points = self._corners_around(now)


def _plausible(matrix: Matrix, max_angle: float, max_scale: float) -> bool:
    """Whether a similarity turns by at most ``max_angle`` radians and scales by at most
    ``max_scale`` (either way)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    angle = abs(float(np.arctan2(matrix[1, 0], matrix[0, 0])))
    return 1 / max_scale <= scale <= max_scale and angle <= max_angle
