"""The synthetic endoscopy sequence: deterministic, and its ground truth is where the tissue is."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from client.endoscopy import BLUR_S, OUT_OF_VIEW_S, SyntheticEndoscopy

SIZE = (640, 360)


def test_frames_are_deterministic_and_random_access() -> None:
    a = SyntheticEndoscopy(*SIZE, seconds=2)
    b = SyntheticEndoscopy(*SIZE, seconds=2)
    first = [f.bgr for f in a.frames()]
    assert len(first) == 60
    for index in (0, 17, 59):
        assert np.array_equal(first[index], b.frame(index).bgr)
        assert np.array_equal(a.frame(index).warp, b.frame(index).warp)
    other = SyntheticEndoscopy(*SIZE, seconds=2, seed=2)
    assert not np.array_equal(first[17], other.frame(17).bgr)
    with pytest.raises(IndexError):
        a.frame(60)


def test_frame_zero_is_the_reference_and_the_corners_are_black() -> None:
    seq = SyntheticEndoscopy(*SIZE, seconds=1)
    frame = seq.frame(0)
    assert frame.bgr.shape == (360, 640, 3) and frame.bgr.dtype == np.uint8
    assert np.allclose(frame.warp, np.eye(3))
    assert seq.true_point(0, 100.5, 200.25) == pytest.approx((100.5, 200.25))
    assert frame.bgr[:10, :10].max() == 0 and frame.bgr[-10:, -10:].max() == 0
    b, g, r = frame.bgr[150:210, 290:350].reshape(-1, 3).mean(0)
    assert r > g and r > b  # pink/red mucosa


def _patch(image: np.ndarray, affine: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """A 41×41 patch of ``image`` seen through ``affine`` (patch coords → image coords)."""
    to_patch = np.array([[1.0, 0, centre[0] - 20], [0, 1, centre[1] - 20]])
    full = np.vstack([affine, [0, 0, 1]]) @ np.vstack([to_patch, [0, 0, 1]])
    return cv2.warpAffine(image, full[:2], (41, 41), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)


@pytest.mark.parametrize("index", [12, 45, 150, 330])
def test_truth_is_where_template_matching_finds_the_tissue(index: int) -> None:
    """A textured bit of frame 0, unwarped from frame ``index`` with the truth's local affine,
    matches at the predicted place (±1 px) — and clearly not 6 px off."""
    seq = SyntheticEndoscopy(*SIZE, seconds=12)
    gray0 = cv2.cvtColor(seq.frame(0).bgr, cv2.COLOR_BGR2GRAY)
    gray = cv2.cvtColor(seq.frame(index).bgr, cv2.COLOR_BGR2GRAY)
    checked = 0
    for q in [(200.0, 120.0), (440.0, 250.0), (220.0, 250.0), (450.0, 110.0)]:
        p = seq.true_point(index, *q)
        px = seq.true_point(index, q[0] + 1, q[1])
        py = seq.true_point(index, q[0], q[1] + 1)
        if p is None or px is None or py is None:
            continue
        jacobian = np.array([[px[0] - p[0], py[0] - p[0]], [px[1] - p[1], py[1] - p[1]]])
        local = np.hstack([jacobian, (np.array(p) - jacobian @ np.array(q))[:, None]])
        search = _patch(gray, local, q).astype(np.float32)  # frame index seen in frame 0 coords
        template = gray0[int(q[1]) - 8 : int(q[1]) + 9, int(q[0]) - 8 : int(q[0]) + 9]
        scores = cv2.matchTemplate(search, template.astype(np.float32), cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        # the template's top-left sits at (q - 8) - (q - 20) = 12 in the search patch, give or
        # take the fraction of q
        assert abs(bx - 12) <= 1 and abs(by - 12) <= 1, (q, bx, by, best)
        assert best > 0.8
        assert scores[12, 12 + 6] < best - 0.1
        checked += 1
    assert checked >= 2


def test_spans_out_of_view_room_and_blur() -> None:
    seq = SyntheticEndoscopy(*SIZE, seconds=12, room_spans=[(3.0, 4.0)])
    fps = seq.fps
    out = int(OUT_OF_VIEW_S[0][0] * fps) + 5
    room = 3 * fps + 5
    blur = int(BLUR_S[0][0] * fps) + 3
    assert not seq.frame(out).in_view and not seq.frame(out).out_of_body
    assert seq.true_point(out, 320, 180) is None
    assert seq.frame(out).bgr.mean() < 0.5 * seq.frame(0).bgr.mean()  # dark: the scope is out
    assert not seq.frame(room).in_view and seq.frame(room).out_of_body
    assert seq.frame(blur).blurred and seq.frame(blur).in_view
    sharp = cv2.Laplacian(cv2.cvtColor(seq.frame(blur - 5).bgr, cv2.COLOR_BGR2GRAY), cv2.CV_64F)
    soft = cv2.Laplacian(cv2.cvtColor(seq.frame(blur).bgr, cv2.COLOR_BGR2GRAY), cv2.CV_64F)
    assert soft.var() < 0.5 * sharp.var()
    assert seq.frame(int(9.5 * fps)).in_view  # back in


def test_write_y4m(tmp_path: Path) -> None:
    path = tmp_path / "scope.y4m"
    SyntheticEndoscopy(*SIZE, seconds=0.2).write_y4m(path, 320, 180)
    data = path.read_bytes()
    header = b"YUV4MPEG2 W320 H180 F30:1 Ip A1:1 C420jpeg\n"
    assert data.startswith(header)
    frame = 320 * 180 * 3 // 2
    assert len(data) == len(header) + 6 * (len(b"FRAME\n") + frame)
