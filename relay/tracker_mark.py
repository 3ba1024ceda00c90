"""One anchored mark's region, followed from frame to frame (the tracker's inner loop).

Why each step is there:

* frame to frame, pyramidal Lucas–Kanade on corners inside and around the region, kept only when
  the backward flow lands within a pixel of where it started, and a RANSAC similarity of the
  survivors: fast, follows large motion, but its small errors add up;
* then a correction against the region as it was drawn (the reference, warped into the current
  frame by the estimate): the error no longer adds up, and the normalised cross-correlation of
  the two says whether the estimate really shows the same tissue — that check is what keeps a
  mark from being shown confidently in the wrong place;
* compressed video smooths the texture and the view turns and zooms, so the region as drawn looks
  less and less like the current frame: a recent view, kept while confidently tracked, backs up
  that check;
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

LK_WINDOW = (11, 11)
LK_LEVELS = 3
LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)
FB_LIMIT_PX = 1.0
"""Forward–backward disagreement above which a flow vector is dropped."""
MIN_INLIERS = 8
LOSE_BELOW = 0.35
"""Confidence below which a mark is lost (greyed); it comes back only through re-detection."""
NCC_LOST = 0.35
NCC_FOUND = 0.75
"""Cross-correlation with the reference: below ``NCC_LOST`` the place is wrong or unseen;
re-detection must reach ``NCC_FOUND``."""
NCC_REFOUND = 0.6
NCC_REFOUND_MARGIN = 0.1
"""Or, with its registration holding, reach what the mark reached while confidently tracked
(compressed video never gets near a clean one) less the margin, and never below ``NCC_REFOUND``."""
RECENT_ABOVE = 0.8
"""A confident check reaching this cross-correlation keeps the frame as the recent view; below
it, the check also looks at the recent view."""
RECENT_EVERY = 8
"""Frames between two recent views at least."""
SUPPORT = 24
"""Flow and registration inliers for full support."""


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
    return np.asarray(fine - cv2.blur(image32, (13, 13)), np.float32)


def _ncc(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]
) -> float:
    """How well two views of the region agree: the median over a 3×3 grid of cells of the
    normalised cross-correlation of their fine texture (``_detail``; a glare or a fold in one
    cell does not outvote the rest)."""
    h, w = mask.shape[0] // 3, mask.shape[1] // 3
    m = mask[: 3 * h, : 3 * w].astype(np.float32)
    x, y = x[: 3 * h, : 3 * w] * m, y[: 3 * h, : 3 * w] * m

    def cells(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        return np.asarray(a.reshape(3, h, 3, w).sum(axis=(1, 3)), np.float64)

    n, sx, sy = cells(m), cells(x), cells(y)
    used = n >= max(32.0, 0.4 * h * w)
    n = np.maximum(n, 1.0)
    cov = cells(x * y) - sx * sy / n
    spread = (cells(x * x) - sx * sx / n) * (cells(y * y) - sy * sy / n)
    used &= spread > 1e-6
    if used.sum() < 3:
        return 0.0
    return float(np.median(cov[used] / np.sqrt(spread[used])))


@dataclass(frozen=True)
class View:
    """A picture of the region to check the estimate against: the frame it was drawn on, or a
    recent one seen while confidently tracked (compressed video smooths the texture, and the scope
    turns and zooms: a recent view looks far more like the current frame than the first)."""

    gray: Gray
    mask: Gray
    """255 on the region, where the picture shows tissue."""
    corners: Points
    place: Matrix
    """The first view's pixels → this view's pixels."""


def _view(frame: Frame, mask: Gray, place: Matrix) -> View:
    return View(frame.gray, mask, _corners(frame.gray, mask, 40), place)


class MarkTrack:
    """A mark's region: its reference (the frame it was drawn on) and where it is now."""

    def __init__(self, frame: Frame, points: Points) -> None:
        height, width = frame.gray.shape
        self.box = region(points, width, height)
        x0, y0, x1, y1 = self.box
        mask = np.zeros_like(frame.valid)
        mask[y0:y1, x0:x1] = frame.valid[y0:y1, x0:x1]
        self.reference = _view(frame, mask, np.eye(3))
        self.recent: View | None = None
        """A recent view, taken while confidently tracked with a high cross-correlation."""
        self.matrix: Matrix = np.eye(3)
        """Reference pixels → current pixels."""
        self.shown: Matrix = np.eye(3)
        """The last confident ``matrix``: where a lost mark stays, greyed."""
        self.points = self._corners_around(frame)
        self.confidence = 1.0 if len(self.points) >= MIN_INLIERS else 0.0
        self.lost = self.confidence < LOSE_BELOW
        self.streak = 0
        """Good checks in a row while lost."""
        self.misses = 0
        """Failed checks in a row while lost."""
        self.checks = 0
        self.clock = 0
        self.shown_at = 0
        """``clock`` when ``shown`` was last set."""
        self.refound: tuple[Matrix, int] | None = None
        """Just found again: where it was last shown before, and when."""
        self.ncc = 1.0
        """The last check's cross-correlation."""
        self.confident_ncc = 1.0
        """The cross-correlation its checks reach while confidently tracked (a running mean):
        what to expect when it is found again on this video."""
        self.inliers = len(self.reference.corners)
        """The last registration's inliers."""
        self.recent_at = 0
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
        found = _corners(frame.gray[y0:y1, x0:x1], frame.valid[y0:y1, x0:x1], 30)
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
        if len(self.points) < 12:
            self.points = self._corners_around(before)
        return self.points

    def follow(
        self, now: Frame, moved: Points, good: npt.NDArray[np.bool_], check: bool, clock: int
    ) -> None:
        """Take this mark's share of the frame's flow (``corners`` moved to ``now``); with
        ``check``, or when the flow alone cannot tell, correct against the reference and check
        the place (the cross-correlation) — the only way confidence is earned. A lost mark is
        followed all the same, out of sight, and found again after two good checks in a row.
        ``clock`` counts the tracker's frames."""
        self.clock = clock
        xs = np.clip(moved[:, 0].astype(np.int32), 0, now.valid.shape[1] - 1)
        ys = np.clip(moved[:, 1].astype(np.int32), 0, now.valid.shape[0] - 1)
        good = good & (now.valid[ys, xs] > 0)
        motion, flow_inliers = _similarity(self.points[good], moved[good], 1.0)
        self.points = moved[good]
        if motion is not None:
            self.matrix = motion @ self.matrix
        elif not self.lost:
            check = True  # without a motion (blur, too few corners) correct from the last place
        if not check:
            if flow_inliers >= 2 * MIN_INLIERS and not self.lost:
                self._show()
            return
        # registration (the costly part) on every other check, or when the place is in doubt
        self.checks += 1
        register = self.lost or motion is None or self.checks % 2 == 0 or self.ncc < 0.85
        ncc, inliers = self._correct(now, register)
        self.ncc = ncc
        if register:
            self.inliers = inliers or 0  # a check without registration keeps the last count
        if self.lost:
            if inliers is None and ncc < NCC_FOUND:
                return  # too little in sight to register: neither for nor against
            held = max(self.inliers, flow_inliers // 2) >= MIN_INLIERS
            expected = max(NCC_REFOUND, self.confident_ncc - NCC_REFOUND_MARGIN)
            good_check = (ncc >= NCC_FOUND and held) or (
                ncc >= expected and self.inliers >= MIN_INLIERS
            )
            self.streak = self.streak + 1 if good_check else 0
            self.misses = 0 if good_check else self.misses + 1
            if self.streak >= 2:
                self._find()
            return
        support = min(1.0, (flow_inliers + self.inliers) / SUPPORT)
        score = support * float(np.clip((ncc - NCC_LOST) / (0.8 - NCC_LOST), 0.0, 1.0))
        self.confidence = 0.5 * self.confidence + 0.5 * score
        if ncc < NCC_LOST or self.confidence < LOSE_BELOW:
            self._lose()
            return
        self.confident_ncc = 0.9 * self.confident_ncc + 0.1 * ncc
        if ncc >= RECENT_ABOVE and register and self.clock - self.recent_at >= RECENT_EVERY:
            self._remember(now)
        self._show()

    def _show(self) -> None:
        self.shown = self.matrix.copy()
        self.shown_at = self.clock

    def _find(self) -> None:
        self.refound = (self.shown, self.shown_at)
        self.lost = False
        self.streak = 0
        self.misses = 0
        self.confidence = LOSE_BELOW + 0.15
        self._show()

    def guess_from(self, other: MarkTrack) -> None:
        """``other`` was just found again: if both were last seen together, this lost region
        moved the same way since (the scope moved, not the tissue) — a guess for its checks."""
        if not self.lost or other.refound is None:
            return
        before, when = other.refound
        if abs(self.shown_at - when) > 3:
            return
        self.matrix = other.shown @ np.linalg.inv(before) @ self.shown
        self.misses = 0
        self.ncc = 0.0
        self.points = np.empty((0, 2), np.float32)

    def _correct(self, now: Frame, register: bool) -> tuple[float, int | None]:
        """Check the estimate against the region as drawn and, when that agrees poorly, against
        the recent view: the better of the two, its registration kept. Returns the
        cross-correlation and the registration's inliers (None: not registered)."""
        ncc, inliers, matrix = self._check(now, self.reference, register)
        if self.recent is not None and ncc < RECENT_ABOVE:
            other = self._check(now, self.recent, register)
            if other[0] > ncc:
                ncc, inliers, matrix = other
        self.matrix = matrix
        return ncc, inliers

    def _check(self, now: Frame, view: View, register: bool) -> tuple[float, int | None, Matrix]:
        """The cross-correlation of ``view``, warped by the estimate, with ``now``; with
        ``register``, first register the two (fixes the estimate's accumulated error). Returns
        it, the registration's inliers (None: not registered, too few corners in sight) and
        the (corrected) estimate."""
        height, width = now.gray.shape
        x0, y0, x1, y1 = self._current_rect(width, height, 6)
        if x1 - x0 < 24 or y1 - y0 < 24:
            return 0.0, None, self.matrix
        size = (x1 - x0, y1 - y0)
        into = _shift(-x0, -y0) @ self.matrix @ np.linalg.inv(view.place)
        warped, mask = _warp(view, into, size)
        crop = now.gray[y0:y1, x0:x1]
        both = np.asarray(cv2.bitwise_and(mask, now.valid[y0:y1, x0:x1]), np.uint8)
        # the view's corners, seen through the estimate, where both frames show tissue
        p0 = np.asarray(cv2.transform(view.corners[:, None], into[:2]), np.float32).reshape(-1, 2)
        xs, ys = p0[:, 0].astype(np.int32), p0[:, 1].astype(np.int32)
        inside = (xs >= 0) & (ys >= 0) & (xs < size[0]) & (ys < size[1])
        p0 = p0[inside]
        p0 = np.asarray(p0[both[ys[inside], xs[inside]] > 0], np.float32)
        if not register or len(p0) < MIN_INLIERS:
            return _ncc(_detail(warped), _detail(crop), both > 0), None, self.matrix
        # the warped view is smoother than the frame (resampled): a looser agreement
        p1, good = lk(warped, crop, p0, 2, 1.5 * FB_LIMIT_PX)
        fix, inliers = _similarity(p0[good], p1[good], 1.5)
        matrix = self.matrix
        if fix is not None and inliers >= MIN_INLIERS and _plausible(fix, 0.15, 1.15):
            matrix = _shift(x0, y0) @ fix @ into @ view.place
            warped, mask = _warp(view, _shift(-x0, -y0) @ matrix @ np.linalg.inv(view.place), size)
            both = np.asarray(cv2.bitwise_and(mask, now.valid[y0:y1, x0:x1]), np.uint8)
        return _ncc(_detail(warped), _detail(crop), both > 0), inliers, matrix

    def _remember(self, now: Frame) -> None:
        """Keep ``now`` as the recent view (confidently tracked, high cross-correlation)."""
        height, width = now.gray.shape
        seen = cv2.warpAffine(
            self.reference.mask, self.matrix[:2], (width, height), flags=cv2.INTER_NEAREST
        )
        mask = np.asarray(cv2.bitwise_and(seen, now.valid), np.uint8)
        self.recent = _view(now, mask, self.matrix.copy())
        self.recent_at = self.clock

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
        self.ncc = 0.0
        self.points = self._corners_around(now)


def _warp(view: View, matrix: Matrix, size: tuple[int, int]) -> tuple[Gray, Gray]:
    image = cv2.warpAffine(view.gray, matrix[:2], size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(view.mask, matrix[:2], size, flags=cv2.INTER_NEAREST)
    return np.asarray(image, np.uint8), np.asarray(mask, np.uint8)


def _plausible(matrix: Matrix, max_angle: float, max_scale: float) -> bool:
    """Whether a similarity turns by at most ``max_angle`` radians and scales by at most
    ``max_scale`` (either way)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    angle = abs(float(np.arctan2(matrix[1, 0], matrix[0, 0])))
    return 1 / max_scale <= scale <= max_scale and angle <= max_angle
