"""YuNet through libfacedetection's own entry point: the same rows as ``yuface.c_detect``,
without its per-call leak of the result buffer."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from infer_helpers import astronaut, multi_face_image, no_face_image

from bregnet.infer.detect import YuNetDetector, _FaceDetectCNN

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the direct call is wired for the Linux wheel of yuface")


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_direct_call_is_used_and_matches_yuface():
    import yuface

    native = _FaceDetectCNN.get()
    assert native is not None
    assert YuNetDetector()._detect_raw is native
    for img in (astronaut(), no_face_image(), multi_face_image(1, 2), astronaut()[:, ::-1]):
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        want = np.asarray(yuface.c_detect(bgr)).reshape(-1, 16)
        got = native(bgr)
        assert got.dtype == np.int16 and got.shape == want.shape
        # the 16th value is unused (uninitialised in yuface's buffer)
        assert np.array_equal(got[:, :15], want[:, :15])


def test_no_memory_growth_per_call():
    det = YuNetDetector()
    img = astronaut()
    for _ in range(20):
        det.detect(img)
    before = _rss_kb()
    for _ in range(300):
        assert len(det.detect(img)) == 1
    grown = _rss_kb() - before
    # yuface.c_detect keeps 36 KB per call: 300 calls would add about 10,800 KB
    assert grown < 2000, f"resident memory grew by {grown} KB over 300 detections"
