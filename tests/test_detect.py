"""Face detection, alignment crops and tracking (issue: inference)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from bregnet.errors import BregnetError, DataError, UsageError
from bregnet.crop import crop_face, eye_angle
from bregnet.infer.detect import Detection, HaarDetector, NoDetector, YuNetDetector, make_detector
from bregnet.infer.tracking import IoUTracker, Smoother, iou_matrix
from bregnet.preprocess import CropPolicy
from infer_helpers import astronaut, multi_face_image, no_face_image

# The astronaut's face (x, y, w, h) as YuNet reports it on the 512x512 image.
FACE = (178, 63, 89, 112)


@pytest.fixture(scope="module")
def yunet():
    return make_detector("yunet")


def _iou(a, b):
    return float(iou_matrix([a], [b])[0, 0])


def test_yunet_finds_the_one_face_with_landmarks(yunet):
    dets = yunet.detect(astronaut())
    assert len(dets) == 1
    d = dets[0]
    assert _iou(d.box, FACE) > 0.8
    assert 0.5 < d.score <= 1.0
    lm = d.landmarks
    assert lm.shape == (5, 2)
    x, y, w, h = d.box
    assert np.all((lm[:, 0] > x) & (lm[:, 0] < x + w) & (lm[:, 1] > y) & (lm[:, 1] < y + h))
    assert lm[0, 0] < lm[1, 0]                         # eyes: image-left first
    assert lm[2, 1] > lm[:2, 1].max()                  # nose below the eyes
    assert lm[3:, 1].min() > lm[2, 1]                  # mouth below the nose
    assert abs(eye_angle(lm)) < 5


def test_haar_fallback_and_none(yunet):
    dets = HaarDetector().detect(astronaut())
    assert len(dets) == 1 and dets[0].landmarks is None
    assert _iou(dets[0].box, FACE) > 0.5
    whole = NoDetector().detect(astronaut())
    assert len(whole) == 1 and whole[0].box == (0.0, 0.0, 512.0, 512.0)


def test_several_faces_in_a_large_image_are_mapped_back(yunet):
    img = multi_face_image(2, 3)  # 1024 x 1536: downscaled to 640 for detection
    dets = yunet.detect(img)
    assert len(dets) == 6
    found = set()
    for d in dets:
        col, row = int(d.box[0] // 512), int(d.box[1] // 512)
        local = (d.box[0] - 512 * col, d.box[1] - 512 * row, d.box[2], d.box[3])
        assert _iou(local, FACE) > 0.6, local
        assert d.landmarks[:, 0].min() > 512 * col and d.landmarks[:, 1].min() > 512 * row
        found.add((row, col))
    assert found == {(r, c) for r in range(2) for c in range(3)}
    # sorted left to right
    assert [d.box[0] for d in dets] == sorted(d.box[0] for d in dets)


def test_upscaled_photo_box_scales(yunet):
    big = cv2.resize(astronaut(), (1536, 1536), interpolation=cv2.INTER_LINEAR)
    dets = yunet.detect(big)
    assert len(dets) == 1
    assert _iou(dets[0].box, tuple(3 * v for v in FACE)) > 0.7


def test_no_face_gives_empty_list(yunet):
    assert yunet.detect(no_face_image()) == []
    assert yunet.detect(np.zeros((120, 160, 3), np.uint8)) == []
    assert HaarDetector().detect(np.zeros((120, 160, 3), np.uint8)) == []


def test_detector_errors():
    with pytest.raises(BregnetError, match="unknown detector"):
        make_detector("mtcnn")
    with pytest.raises(BregnetError, match="RGB image"):
        make_detector("yunet").detect(np.zeros((10, 10), np.uint8))
    det = YuNetDetector()
    assert make_detector(det) is det
    assert isinstance(make_detector("none", max_side=None), NoDetector)


def test_crop_identity_and_padding():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = crop_face(img, (0, 0, 64, 64), CropPolicy(margin=0.0, square=True, align=False), 64)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out, img)
    # a box half outside the image: the outside is black, no error
    out = crop_face(np.full((100, 100, 3), 255, np.uint8), (-50, 0, 100, 100),
                    CropPolicy(margin=0.0, square=True, align=False), 64)
    assert out[:, :28].max() == 0 and out[:, 36:].min() == 255
    # far outside: an error the caller reports (the predictor then uses a black crop)
    with pytest.raises(DataError, match="outside"):
        crop_face(img, (500, 500, 10, 10), CropPolicy(0.1, True, False), 32)


def test_crop_margin_square_and_large_face_area_averaging():
    img = np.zeros((400, 400, 3), np.uint8)
    img[100:300, 150:250] = 255  # a 100x200 white box
    out = crop_face(img, (150, 100, 100, 200), CropPolicy(margin=0.0, square=True, align=False), 64)
    # square around the centre: the 100-wide box fills the middle half of a 200-wide crop
    assert out[:, :14].max() == 0 and out[:, 18:46].min() == 255 and out[:, 50:].max() == 0
    # with a 25% margin the white box shrinks to 200/300 of the height
    out = crop_face(img, (150, 100, 100, 200), CropPolicy(margin=0.25, square=True, align=False), 60)
    rows = np.where(out[:, 30, 0] > 127)[0]
    assert abs(len(rows) - 40) <= 1


def test_alignment_levels_the_eyes():
    img = np.zeros((300, 300, 3), np.uint8)
    c, r, a = np.array([150.0, 150.0]), 40.0, math.radians(30)
    eyes = np.array([c - r * np.array([math.cos(a), math.sin(a)]),
                     c + r * np.array([math.cos(a), math.sin(a)])])
    for e in eyes:
        cv2.circle(img, tuple(int(round(v)) for v in e), 6, (255, 255, 255), -1)
    lm = np.vstack([eyes, [[150, 170], [130, 190], [170, 190]]])
    assert abs(eye_angle(lm) - 30) < 1e-6
    box = (90, 90, 120, 120)
    aligned = crop_face(img, box, CropPolicy(0.0, True, True), 64, lm)
    plain = crop_face(img, box, CropPolicy(0.0, True, False), 64, lm)

    def blobs(im):
        n, _, stats, cents = cv2.connectedComponentsWithStats((im[:, :, 0] > 127).astype(np.uint8))
        return cents[1:][np.argsort(cents[1:, 0])]

    ca, cp = blobs(aligned), blobs(plain)
    assert len(ca) == 2 and len(cp) == 2
    assert abs(ca[0, 1] - ca[1, 1]) < 1.0          # level after alignment
    assert abs(cp[1, 1] - cp[0, 1]) > 10            # tilted without
    # rotation about the box centre keeps the eye midpoint at the crop centre
    assert np.allclose(ca.mean(axis=0), [31.5, 31.5], atol=1.0)


def test_tracker_keeps_ids_and_expires():
    t = IoUTracker(iou_threshold=0.3, max_age=2)
    assert t.update([(10, 10, 50, 50), (200, 10, 50, 50)]) == [0, 1]
    assert t.update([(205, 12, 50, 50), (14, 10, 50, 50)]) == [1, 0]       # order-independent
    assert t.update([(30, 10, 50, 50)]) == [0]                            # fast move: distance
    assert t.update([]) == []
    assert t.update([(48, 10, 52, 52)]) == [0]                            # predicted by velocity
    assert t.update([]) == [] and t.update([]) == [] and t.update([]) == []
    assert t.update([(60, 10, 50, 50)]) == [2]                            # expired -> new ID
    assert t.update([(10, 300, 50, 50), (400, 300, 50, 50)]) == [3, 4]


def test_smoother_is_an_ema_per_track():
    s = Smoother(0.5)
    p0, p1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.allclose(s(0, probs=p0, va=None)["probs"], p0)
    out = s(0, probs=p1, va=np.array([0.2, 0.4]))
    assert np.allclose(out["probs"], [0.5, 0.5]) and np.allclose(out["va"], [0.2, 0.4])
    assert np.allclose(s(1, probs=p1)["probs"], p1)  # another track starts fresh
    assert Smoother(0.0)(0, probs=p0)["probs"] is p0
    with pytest.raises(UsageError):
        Smoother(1.0)


def test_detection_scaled():
    d = Detection((10, 20, 30, 40), 0.9, np.ones((5, 2)))
    s = d.scaled(2.0)
    assert s.box == (20, 40, 60, 80) and np.all(s.landmarks == 2)
