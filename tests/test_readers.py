"""Readers for the standard data sets, on small files written here in the exact published formats."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregnet.crop import clamp_box, crop_face, expand_box
from bregnet.data.image_io import read_image, resize_image, to_rgb_uint8
from bregnet.preprocess import CropPolicy
from bregnet.data.readers import (
    AffectNetReader,
    AffWild2Reader,
    CSVListReader,
    FER2013Reader,
    FERPlusReader,
    FolderReader,
    RAFDBReader,
)
from bregnet.data.readers.fer2013 import parse_fer2013_csv
from bregnet.data.registry import READERS, canonical_class, list_datasets, open_reader
from bregnet.errors import DataError, UsageError

RED = (220, 30, 30)  # RGB
GRAY = (128, 128, 128)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rgb[:, :, ::-1] if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        arr = rgb[:, :, [2, 1, 0, 3]]
    ext = path.suffix.lower() if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp") else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, arr, params)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def face_image(w: int, h: int, box: tuple[int, int, int, int], bg=GRAY, fg=RED) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    x, y, bw, bh = box
    img[max(0, y): y + bh, max(0, x): x + bw] = fg
    return img


def close(pixels: np.ndarray, color, tol: int = 8) -> bool:
    """Every pixel within ``tol`` of ``color`` (JPEG is lossy)."""
    return bool((np.abs(np.asarray(pixels, int).reshape(-1, 3) - np.asarray(color)).max(initial=0) <= tol))


def fer_pixels(value: int | np.ndarray) -> str:
    arr = np.full(2304, value) if np.isscalar(value) else np.asarray(value).reshape(-1)
    return " ".join(str(int(v)) for v in arr)


def write_fer2013(path: Path, rows: list[tuple], header: str = "emotion,pixels,Usage", newline: str = "\n",
                  bom: bool = False, quote: bool = False) -> Path:
    lines = [header]
    for row in rows:
        fields = [str(f) for f in row]
        if quote:
            fields = [f'"{f}"' for f in fields]
        lines.append(",".join(fields))
    text = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


USAGES = ["Training"] * 6 + ["PublicTest"] * 3 + ["PrivateTest"] * 2


def fer_rows(n: int = 11) -> list[tuple]:
    return [(i % 7, fer_pixels(10 * i), USAGES[i % len(USAGES)]) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# image_io
# ----------------------------------------------------------------------------------------------
def test_read_image_formats(tmp_path):
    gray = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    img = read_image(tmp_path / "gray.png")
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    assert (img[:, :, 0] == gray).all() and (img[:, :, 1] == gray).all()

    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 7
    write_rgb(tmp_path / "rgba.png", rgba)
    img = read_image(tmp_path / "rgba.png")
    assert img.shape == (8, 9, 3) and tuple(img[0, 0]) == (200, 100, 50)

    deep = np.full((5, 6, 3), 65535, np.uint16)
    deep[0, 0] = (0, 32896, 65535)  # BGR order on disk
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    img = read_image(tmp_path / "deep.png")
    assert img.dtype == np.uint8 and tuple(img[0, 0]) == (255, 128, 0) and img[1, 1, 0] == 255

    gray_jpg = tmp_path / "g.jpg"
    cv2.imwrite(str(gray_jpg), np.full((16, 16), 90, np.uint8))
    img = read_image(gray_jpg)
    assert img.shape == (16, 16, 3) and abs(int(img[8, 8, 0]) - 90) <= 2

    # a PNG named .jpg (AffectNet has those): the content decides
    write_rgb(tmp_path / "png.png", face_image(10, 10, (0, 0, 5, 5)))
    (tmp_path / "png_named.jpg").write_bytes((tmp_path / "png.png").read_bytes())
    assert tuple(read_image(tmp_path / "png_named.jpg")[0, 0]) == RED


def test_read_image_bad_files(tmp_path):
    with pytest.raises(DataError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    write_rgb(tmp_path / "full.jpg", face_image(64, 64, (10, 10, 20, 20)))
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg.*truncated"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match="directory"):
        read_image(tmp_path)


def test_to_rgb_uint8_variants():
    assert to_rgb_uint8(np.ones((2, 2), bool)).max() == 255
    assert to_rgb_uint8(np.full((2, 2), 0.5, np.float32))[0, 0, 0] == 128
    assert to_rgb_uint8(np.zeros((2, 2, 2), np.uint8)).shape == (2, 2, 3)
    bgr = np.zeros((1, 1, 3), np.uint8)
    bgr[0, 0] = (1, 2, 3)
    assert tuple(to_rgb_uint8(bgr, "BGR")[0, 0]) == (3, 2, 1)
    with pytest.raises(UsageError):
        to_rgb_uint8(np.zeros((2, 2, 5), np.uint8))


def _policy(margin: float = 0.0, square: bool = False, border: str = "clamp") -> CropPolicy:
    """The readers' crop policy (no alignment)."""
    return CropPolicy(margin=margin, square=square, align=False, border=border)


def test_crop_geometry():
    img = face_image(200, 100, (60, 20, 40, 50))
    crop = crop_face(img, (60, 20, 40, 50), _policy(), size=64)
    assert crop.shape == (64, 64, 3)
    assert (crop.reshape(-1, 3) == RED).all()
    # with a margin the face sits in the middle, surrounded by background
    crop = crop_face(img, (60, 20, 40, 50), _policy(margin=0.25), size=None)
    assert crop.shape == (75, 60, 3)  # 50 * 1.5 by 40 * 1.5, inside the image
    assert tuple(crop[37, 30]) == RED and tuple(crop[0, 0]) == GRAY and tuple(crop[-1, -1]) == GRAY
    assert tuple(crop[12, 10]) == RED and tuple(crop[11, 10]) == GRAY and tuple(crop[12, 9]) == GRAY
    # square: longest side, around the centre
    assert expand_box((60, 20, 40, 50), 0.0, True) == (55.0, 20.0, 105.0, 70.0)
    crop = crop_face(img, (60, 20, 40, 50), _policy(square=True), size=None)
    assert crop.shape == (50, 50, 3) and tuple(crop[:, 5:45].reshape(-1, 3).min(0)) == RED
    # clamped at the border; padding keeps the box's shape
    assert clamp_box((-10, -10, 30, 30), 200, 100) == (0, 0, 30, 30)
    assert clamp_box((300, 10, 400, 20), 200, 100) is None
    crop = crop_face(img, (180, 80, 40, 40), _policy(), size=None)
    assert crop.shape == (20, 20, 3)
    pad = crop_face(img, (180, 80, 40, 40), _policy(border="constant"), size=None)
    assert pad.shape == (40, 40, 3) and (pad[25:, 25:] == 0).all() and tuple(pad[5, 5]) == GRAY
    rep = crop_face(img, (180, 80, 40, 40), _policy(border="replicate"), size=None)
    assert rep.shape == (40, 40, 3) and tuple(rep[39, 39]) == GRAY
    with pytest.raises(DataError, match="outside"):
        crop_face(img, (500, 500, 10, 10), _policy())
    with pytest.raises(DataError, match="no area"):
        crop_face(img, (10, 10, 0, 10), _policy())
    with pytest.raises(DataError, match="not finite"):
        crop_face(img, (10, float("nan"), 5, 10), _policy())


def test_resize_interpolation():
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    assert (resize_image(big, 64) == cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA)).all()
    small = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    assert (resize_image(small, 64) == cv2.resize(small, (64, 64), interpolation=cv2.INTER_LINEAR)).all()
    assert resize_image(small, 48) is not None and (resize_image(small, 48) == small).all()


# ----------------------------------------------------------------------------------------------
# FER2013
# ----------------------------------------------------------------------------------------------
def test_fer2013_splits_labels_images(tmp_path):
    rows = fer_rows(11)
    write_fer2013(tmp_path / "fer2013.csv", rows)
    tr = FER2013Reader(tmp_path, "train")
    va = open_reader("fer2013", tmp_path, "PublicTest")
    te = open_reader("fer2013", tmp_path / "fer2013.csv", "test")
    assert (len(tr), len(va), len(te)) == (6, 3, 2)
    assert tr.classes == ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    expected = [r[0] for r in rows if r[2] == "Training"]
    assert tr.labels().tolist() == expected
    assert tr.class_counts.tolist() == np.bincount(expected, minlength=7).tolist()
    s = tr.load(1)
    assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
    assert (s.image == 10).all() and s.label == 1 and math.isnan(s.valence)
    assert tr.source(0).endswith("fer2013.csv:2") and va.source(0).endswith("fer2013.csv:8")
    assert len(open_reader("fer2013", tmp_path, "all")) == 11
    ds, skipped = te.to_arrays()
    assert len(ds) == 2 and not skipped and ds.classes == tr.classes


def test_fer2013_orientation_and_upsampling(tmp_path):
    grad = np.tile(np.arange(48) * 5, (48, 1))  # dark left, bright right
    grad[:24] //= 2  # darker top half
    write_fer2013(tmp_path / "fer2013.csv", [(3, fer_pixels(grad), "Training")])
    img = FER2013Reader(tmp_path, "train").load(0).image
    ref = cv2.resize(grad.astype(np.uint8), (64, 64), interpolation=cv2.INTER_LINEAR)
    assert (img[:, :, 0] == ref).all() and (img[:, :, 2] == ref).all()
    assert img[5, 60, 0] > img[5, 3, 0] and img[60, 60, 0] > img[5, 60, 0]


@pytest.mark.parametrize("quirk", ["quoted", "crlf", "bom", "extra_columns", "icml_header", "whitespace"])
def test_fer2013_real_world_quirks(tmp_path, quirk):
    rows = fer_rows(11)
    plain = write_fer2013(tmp_path / "plain.csv", rows)
    path = tmp_path / f"{quirk}.csv"
    if quirk == "quoted":
        write_fer2013(path, rows, quote=True)
    elif quirk == "crlf":
        write_fer2013(path, rows, newline="\r\n")
    elif quirk == "bom":
        write_fer2013(path, rows, bom=True, newline="\r\n")
    elif quirk == "extra_columns":
        write_fer2013(path, [(r[0], r[1], r[2], "x", '"a, b"') for r in rows],
                      header="emotion,pixels,Usage,note,comment")
    elif quirk == "icml_header":  # icml_face_data.csv: "emotion, Usage, pixels"
        write_fer2013(path, [(r[0], r[2], r[1]) for r in rows], header="emotion, Usage, pixels")
    elif quirk == "whitespace":  # tabs and double spaces between values, leading/trailing blanks
        write_fer2013(path, [(r[0], "  " + r[1].replace(" ", "\t", 5).replace(" ", "  ", 3) + " ", r[2])
                             for r in rows] + [(" ", "", " ")])
    a, b = parse_fer2013_csv(plain), parse_fer2013_csv(path)
    assert (a.images == b.images).all() and (a.labels == b.labels).all() and (a.usage == b.usage).all()
    assert (a.lines == b.lines).all()
    assert len(FER2013Reader(path, "val")) == 3


@pytest.mark.parametrize("quote", [False, True])
@pytest.mark.parametrize("bad,match", [
    ((1, fer_pixels(np.zeros(2303)), "Training"), "2303 values, expected 2304"),
    ((1, fer_pixels(np.zeros(2304)) + " 5", "Training"), "2305 values"),
    ((1, fer_pixels(np.zeros(2303)) + " 12.5", "Training"), "'12.5' is not an integer"),
    ((1, fer_pixels(np.zeros(2303)) + " 256", "Training"), "256 out of range"),
    ((1, fer_pixels(np.zeros(2303)) + " -1", "Training"), "'-1'"),
    ((7, fer_pixels(0), "Training"), "emotion 7 out of range"),
    (("happy", fer_pixels(0), "Training"), "emotion 'happy' is not an integer"),
    ((1, fer_pixels(0), "Validation"), "unknown Usage 'Validation'"),
    ((1, fer_pixels(0)), "2 fields"),
])
def test_fer2013_bad_rows_name_the_line(tmp_path, bad, match, quote):
    rows = fer_rows(5)
    rows.insert(3, bad)  # data row 4 -> line 5
    path = write_fer2013(tmp_path / f"fer2013_{quote}.csv", rows, quote=quote)
    with pytest.raises(DataError, match=match) as info:
        FER2013Reader(path, "train")
    assert f"fer2013_{quote}.csv:5:" in str(info.value)
    assert "\n" not in str(info.value)


def test_fer2013_first_error_in_file_order(tmp_path):
    rows = fer_rows(5)
    rows[1] = (1, fer_pixels(np.zeros(10)), "Training")  # line 3: pixel count
    rows[3] = (9, fer_pixels(0), "Training")  # line 5: label
    with pytest.raises(DataError, match=r"fer2013.csv:3: pixels has 10 values"):
        FER2013Reader(write_fer2013(tmp_path / "fer2013.csv", rows), "train")


def test_fer2013_missing_and_headerless(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        FER2013Reader(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="fer2013.csv"):
        FER2013Reader(tmp_path, "train")
    with pytest.raises(DataError, match="no split 'dev'"):
        FER2013Reader(tmp_path, "dev")
    with pytest.raises(DataError, match="unknown option 'sise'"):
        FER2013Reader(write_fer2013(tmp_path / "x.csv", fer_rows(2)), "train", sise=3)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: empty file"):
        FER2013Reader(tmp_path / "empty.csv", "train")
    # Kaggle's test.csv: pixels only -> split 'all', labels -1
    path = write_fer2013(tmp_path / "test.csv", [(fer_pixels(3),), (fer_pixels(4),)], header="pixels")
    r = FER2013Reader(path, "all")
    assert len(r) == 2 and (r.labels() == -1).all() and r.class_counts.sum() == 0
    with pytest.raises(DataError, match="no Usage column"):
        FER2013Reader(path, "train")


def test_fer2013_vectorised_parse_of_many_rows(tmp_path):
    """1,000 random rows (two chunks of the vectorised parser) read back exactly; the parse speed
    is measured by benchmarks/bench_readers.py, not asserted here."""
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (1000, 2304))
    path = write_fer2013(tmp_path / "fer2013.csv",
                         [(i % 7, " ".join(map(str, px[i])), "Training") for i in range(1000)])
    table = parse_fer2013_csv(path)
    assert (table.images.reshape(1000, -1) == px).all()
    assert table.labels.tolist() == [i % 7 for i in range(1000)]


# ----------------------------------------------------------------------------------------------
# FERPlus
# ----------------------------------------------------------------------------------------------
FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
# votes: neutral happiness surprise sadness anger disgust fear contempt unknown NF
FERPLUS_VOTES = [
    ("Training", "fer0000000.png", [4, 0, 0, 1, 3, 0, 0, 0, 2, 0]),  # neutral (plurality, no majority)
    ("Training", "fer0000001.png", [0, 6, 4, 0, 0, 0, 0, 0, 0, 0]),  # happiness, majority
    ("Training", "fer0000002.png", [0, 0, 5, 0, 0, 0, 5, 0, 0, 0]),  # tie surprise/fear -> surprise
    ("Training", "fer0000003.png", [1, 0, 0, 0, 0, 0, 0, 0, 6, 3]),  # unknown most voted -> dropped
    ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # removed image (no name, NF)
    ("Training", "fer0000005.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # no votes -> dropped
    ("Training", "fer0000006.png", [0, 0, 0, 0, 4, 0, 0, 0, 4, 2]),  # tie anger/unknown -> dropped
    ("PublicTest", "fer0000007.png", [0, 0, 0, 0, 0, 0, 0, 9, 1, 0]),  # contempt
    ("PrivateTest", "fer0000008.png", [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),  # all single votes
]


def write_ferplus(root: Path, votes=FERPLUS_VOTES, newline="\r\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [(i % 7, fer_pixels(20 * i), u) for i, (u, _, _) in enumerate(votes)]
    write_fer2013(root / "fer2013.csv", rows)
    lines = [FERPLUS_HEADER] + [",".join([u, n] + [str(x) for x in v]) for u, n, v in votes]
    (root / "fer2013new.csv").write_bytes((newline.join(lines) + newline).encode())
    return root


def test_ferplus_plurality_protocol(tmp_path):
    root = write_ferplus(tmp_path)
    r = open_reader("ferplus", root, "train")
    assert r.classes == ["Neutral", "Happiness", "Surprise", "Sadness", "Anger", "Disgust", "Fear", "Contempt"]
    assert r.labels().tolist() == [0, 1, 2]
    assert r.dropped == {"no image name": 1, "no votes": 1, "unknown/NF most voted": 2}
    soft = r.soft_labels()
    assert soft.shape == (3, 8) and np.allclose(soft.sum(1), 1.0)
    assert np.allclose(soft[0], [0.5, 0, 0, 0.125, 0.375, 0, 0, 0])
    assert np.allclose(soft[2], [0, 0, 0.5, 0, 0, 0, 0.5, 0])  # the tie is kept in the soft labels
    s = r.load(1)
    assert s.image.shape == (64, 64, 3) and (s.image == 20).all() and s.label == 1
    assert r.source(0).endswith("fer2013new.csv:2")
    assert FERPlusReader(root, "val").labels().tolist() == [7]
    assert FERPlusReader(root, "test").labels().tolist() == [0]  # a 1-vote tie of all: first class
    ds, skipped = r.to_arrays()
    assert ds.soft_labels is not None and ds.soft_labels.shape == (3, 8) and not skipped


def test_ferplus_majority_protocol(tmp_path):
    root = write_ferplus(tmp_path)
    r = FERPlusReader(root, "train", protocol="majority")
    # single votes removed: row 0 [4,0,0,0,3,0,0,0,2,0] 4 of 9, row 2 5 of 10, row 6 4 of 10: no majority
    assert r.labels().tolist() == [1]
    assert r.dropped == {"no image name": 1, "no votes": 1, "no majority": 3, "unknown/NF majority": 1}
    assert len(FERPlusReader(root, "test", protocol="majority")) == 0  # only single votes: none left
    with pytest.raises(DataError, match="protocol"):
        FERPlusReader(root, "train", protocol="vote")


def test_ferplus_alignment_errors(tmp_path):
    root = write_ferplus(tmp_path / "a")
    write_fer2013(root / "fer2013.csv", fer_rows(5))
    with pytest.raises(DataError, match="row-aligned"):
        FERPlusReader(root, "train")
    root = write_ferplus(tmp_path / "b")
    votes = list(FERPLUS_VOTES)
    votes[2] = ("PublicTest",) + votes[2][1:]
    lines = [FERPLUS_HEADER] + [",".join([u, n] + [str(x) for x in v]) for u, n, v in votes]
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"fer2013new.csv:4: Usage PublicTest differs"):
        FERPlusReader(root, "train")
    (root / "fer2013new.csv").write_text(FERPLUS_HEADER + "\nTraining,fer1.png,1,2,x,0,0,0,0,0,0,0\n")
    with pytest.raises(DataError, match=r"fer2013new.csv:2: surprise votes 'x'"):
        FERPlusReader(root, "train")
    (root / "fer2013new.csv").unlink()
    with pytest.raises(DataError, match="fer2013new.csv"):
        FERPlusReader(root, "train")


# ----------------------------------------------------------------------------------------------
# AffectNet
# ----------------------------------------------------------------------------------------------
AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                    "expression,valence,arousal")
LANDMARKS = ";".join(f"{v:.2f}" for v in np.linspace(10, 60, 136))


def affectnet_row(path, box, expr, v, a, quote_landmarks=False):
    lm = f'"{LANDMARKS}"' if quote_landmarks else LANDMARKS
    return ",".join([path, *(str(b) for b in box), lm, str(expr), str(v), str(a)])


def make_affectnet(root: Path, header: bool = True) -> Path:
    images = root / "Manually_Annotated_Images"
    box = (60, 20, 40, 50)
    write_rgb(images / "1" / "a.jpg", face_image(200, 100, box))
    rgba = np.dstack([face_image(120, 120, (30, 30, 60, 60)), np.full((120, 120), 255, np.uint8)])
    write_rgb(images / "1" / "rgba.png", rgba)
    (images / "1" / "rgba_as.jpg").write_bytes((images / "1" / "rgba.png").read_bytes())
    gray = np.full((90, 90), 60, np.uint8)
    gray[20:70, 20:70] = 200
    (images / "2").mkdir(parents=True)
    cv2.imwrite(str(images / "2" / "gray.jpg"), gray)
    rows = [
        affectnet_row("1/a.jpg", box, 1, 0.785714, -0.055556),
        affectnet_row("1/rgba_as.jpg", (30, 30, 60, 60), 7, -0.5, 0.25, quote_landmarks=True),
        affectnet_row("2/gray.jpg", (20, 20, 50, 50), 0, -2, -2),
        affectnet_row("2/gray.jpg", (20, 20, 50, 50), 8, 0.1, 0.2),  # None
        affectnet_row("2/gray.jpg", (20, 20, 50, 50), 9, -2, -2),  # Uncertain
        affectnet_row("2/gray.jpg", (20, 20, 50, 50), 10, -2, -2),  # No-Face
        affectnet_row("1/a.jpg", (400, 300, 40, 40), 3, 0.5, 0.5),  # box outside the image
        affectnet_row("3\\missing.jpg", box, 4, 0.0, 0.0),  # no such image (Windows separator)
        affectnet_row("1/a.jpg", (190, 90, 40, 40), 6, 1, -1),  # box partly outside: clamped
    ]
    lines = ([AFFECTNET_HEADER] if header else []) + rows
    (root / "training.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (root / "validation.csv").write_text("\n".join(lines[:2] if header else lines[:1]) + "\n")
    return root


def test_affectnet_labels_va_and_drops(tmp_path):
    root = make_affectnet(tmp_path)
    r = open_reader("affectnet", root, "train")
    assert r.classes == ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
    assert len(r) == 6 and r.labels().tolist() == [1, 7, 0, 3, 4, 6]
    va = r.va()
    assert np.allclose(va[0], [0.785714, -0.055556]) and np.isnan(va[2]).all()
    assert r.dropped == {"expression 8 (None)": 1, "expression 9 (Uncertain)": 1, "expression 10 (No-Face)": 1}
    assert r.class_counts.tolist() == [1, 1, 0, 1, 1, 0, 1, 1]
    assert r.source(0).endswith("training.csv:2") and r.source(5).endswith("training.csv:10")
    r7 = AffectNetReader(root, "train", num_classes=7)
    assert r7.classes[-1] == "Anger" and len(r7) == 5 and 7 not in r7.labels()
    other = AffectNetReader(root, "train", include_other=True)
    assert len(other) == 9 and other.labels().tolist().count(-1) == 3
    assert np.allclose(other.va()[3], [0.1, 0.2])
    assert len(AffectNetReader(root, "test")) == 1 and AffectNetReader(root, "validation").split == "val"


def test_affectnet_crops_and_skips(tmp_path):
    root = make_affectnet(tmp_path)
    r = AffectNetReader(root, "train")
    s = r.load(0)
    assert s.image.shape == (64, 64, 3) and close(s.image, RED)
    assert s.label == 1 and abs(s.valence - 0.785714) < 1e-6
    # RGBA PNG named .jpg, cropped exactly on the box
    rgba = r.load(1).image
    assert close(rgba, RED, tol=0)
    # grayscale JPEG: 3 equal channels, bright face inside
    g = r.load(2).image
    assert (g[..., 0] == g[..., 1]).all() and g[32, 32, 0] > 180
    # margin: the red face in the middle of grey background
    m = AffectNetReader(root, "train", margin=0.25).load(0).image
    assert close(m[24:40, 24:40], RED) and close(m[:5, :5], GRAY) and close(m[-5:, -5:], GRAY)
    # box outside the image and missing image: DataError naming the line, skipped by to_arrays
    with pytest.raises(DataError, match=r"training.csv:8: face box \(400, 300, 40, 40\) lies outside the 200x100"):
        r.load(3)
    with pytest.raises(DataError, match=r"training.csv:9: .*missing.jpg: image file not found"):
        r.load(4)
    clamped = r.load(5)
    assert clamped.image.shape == (64, 64, 3)
    ds, skipped = r.to_arrays()
    assert len(ds) == 4 and [i for i, _ in skipped] == [3, 4]
    assert "training.csv:8" in skipped[0][1] and "training.csv:9" in skipped[1][1]
    assert ds.labels.tolist() == [1, 7, 0, 6] and ds.va.shape == (4, 2)


def test_affectnet_headerless_and_layout(tmp_path):
    root = make_affectnet(tmp_path / "a", header=False)
    r = AffectNetReader(root, "val")
    assert len(r) == 1 and r.source(0).endswith("validation.csv:1")
    # real layout: CSVs under Manually_Annotated_file_lists, explicit images_dir
    root = make_affectnet(tmp_path / "b")
    (root / "Manually_Annotated_file_lists").mkdir()
    (root / "training.csv").rename(root / "Manually_Annotated_file_lists" / "training.csv")
    (root / "Manually_Annotated_Images").rename(root / "imgs")
    r = AffectNetReader(root, "train", images_dir="imgs", square=True, margin=0.1)
    assert len(r) == 6 and r.load(0).image.shape == (64, 64, 3)


@pytest.mark.parametrize("row,match", [
    (affectnet_row("1/a.jpg", (1, 2, 3, 4), 11, 0, 0), "expression 11 out of range"),
    (affectnet_row("1/a.jpg", (1, 2, 3, 4), "x", 0, 0), "expression 'x' is not an integer"),
    (affectnet_row("1/a.jpg", (1, "two", 3, 4), 1, 0, 0), "face_y 'two' is not a number"),
    (affectnet_row("1/a.jpg", (1, 2, 3, 4), 1, 1.5, 0), r"valence 1.5 out of range \[-1, 1\]"),
    (affectnet_row("1/a.jpg", (1, 2, 3, 4), 1, 0, "nan"), "arousal 'nan' is not a finite"),
    ("1/a.jpg,1,2,3", "row has 4 fields"),
    (affectnet_row("", (1, 2, 3, 4), 1, 0, 0), "empty subDirectory_filePath"),
])
def test_affectnet_malformed_rows(tmp_path, row, match):
    (tmp_path / "training.csv").write_text(
        "\n".join([AFFECTNET_HEADER, affectnet_row("1/a.jpg", (1, 2, 3, 4), 1, 0, 0), row]) + "\n")
    with pytest.raises(DataError, match=match) as info:
        AffectNetReader(tmp_path, "train")
    assert "training.csv:3:" in str(info.value)


def test_affectnet_missing_paths(tmp_path):
    with pytest.raises(DataError, match="AffectNet root not found"):
        AffectNetReader(tmp_path / "none", "train")
    with pytest.raises(DataError, match="training.csv"):
        AffectNetReader(tmp_path, "train")
    make_affectnet(tmp_path)
    with pytest.raises(DataError, match="images directory not found"):
        AffectNetReader(tmp_path, "train", images_dir="nope")
    with pytest.raises(DataError, match="num_classes"):
        AffectNetReader(tmp_path, "train", num_classes=5)


# ----------------------------------------------------------------------------------------------
# RAF-DB
# ----------------------------------------------------------------------------------------------
def make_rafdb(root: Path) -> Path:
    basic = root / "basic"
    lines = ["train_00001.jpg 5", "train_00002.jpg 1", "test_0001.jpg 7", "train_00003.jpg 4", "", "test_0002.jpg 2"]
    (basic / "EmoLabel").mkdir(parents=True)
    (basic / "EmoLabel" / "list_patition_label.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    aligned = basic / "Image" / "aligned"
    for i, line in enumerate(l for l in lines if l):
        name = line.split()[0].replace(".jpg", "_aligned.jpg")
        if name == "train_00003_aligned.jpg":
            continue  # missing image
        write_rgb(aligned / name, np.full((100, 100, 3), 10 * i + 5, np.uint8))
    return root


def test_rafdb(tmp_path):
    root = make_rafdb(tmp_path)
    tr = open_reader("raf-db", root, "train")
    te = RAFDBReader(root / "basic", "test")
    assert tr.classes == ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"]
    assert tr.labels().tolist() == [4, 0, 3] and te.labels().tolist() == [6, 1]
    assert tr.class_counts.tolist() == [1, 0, 0, 1, 1, 0, 0]
    s = tr.load(1)
    assert s.image.shape == (64, 64, 3) and abs(int(s.image[30, 30, 0]) - 15) <= 2 and s.label == 0
    assert tr.image_path(0).name == "train_00001_aligned.jpg"
    assert te.source(1).endswith("list_patition_label.txt:6")
    ds, skipped = tr.to_arrays()
    assert len(ds) == 2 and skipped[0][0] == 2 and "list_patition_label.txt:4" in skipped[0][1]
    assert "not found" in skipped[0][1]


@pytest.mark.parametrize("line,match", [
    ("train_00009.jpg 8", "label 8 out of range 1..7"),
    ("train_00009.jpg 0", "label 0 out of range"),
    ("train_00009.jpg", "expected 'image_name label'"),
    ("train_00009.jpg x", "label 'x' is not an integer"),
    ("val_00009.jpg 3", "does not start with train_ or test_"),
])
def test_rafdb_malformed(tmp_path, line, match):
    root = make_rafdb(tmp_path)
    f = root / "basic" / "EmoLabel" / "list_patition_label.txt"
    f.write_text(f.read_text() + line + "\n")
    with pytest.raises(DataError, match=match) as info:
        RAFDBReader(root, "train")
    assert "list_patition_label.txt:7:" in str(info.value)
    with pytest.raises(DataError, match="RAF-DB root not found"):
        RAFDBReader(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="RAF-DB label file not found"):
        RAFDBReader(tmp_path, "train", label_file="none.txt")


# ----------------------------------------------------------------------------------------------
# Aff-Wild2
# ----------------------------------------------------------------------------------------------
def make_affwild2(root: Path) -> Path:
    ann = root / "annotations" / "VA_Estimation_Challenge"
    (ann / "Train_Set").mkdir(parents=True)
    (ann / "Validation_Set").mkdir(parents=True)
    (ann / "Train_Set" / "video1.txt").write_bytes(
        b"valence,arousal\r\n0.5,0.25\r\n-5,-5\r\n-0.1,0.9\r\n0.0,-1\r\n1,1\r\n")
    (ann / "Train_Set" / "12-24-1920x1080.txt").write_text("valence,arousal\n0.1,0.1\n0.2,0.2\n")
    (ann / "Validation_Set" / "video3.txt").write_text("valence,arousal\n0.3,-0.3\n")
    frames = root / "cropped_aligned"
    for k in (1, 2, 3, 4):  # frame 5 of video1 has no image; 12-24-1920x1080 has no folder
        write_rgb(frames / "video1" / f"{k:05d}.jpg", np.full((112, 112, 3), 40 * k, np.uint8))
    write_rgb(frames / "video3" / "00001.jpg", np.full((112, 112, 3), 7, np.uint8))
    return root


def test_affwild2(tmp_path):
    root = make_affwild2(tmp_path)
    r = open_reader("aff-wild2", root, "train")
    assert r.classes == [] and len(r) == 3
    assert [r.frame_info(i) for i in range(3)] == [("video1", 1), ("video1", 3), ("video1", 4)]
    assert np.allclose(r.va(), [[0.5, 0.25], [-0.1, 0.9], [0.0, -1.0]])
    assert (r.labels() == -1).all() and r.class_counts.tolist() == []
    assert r.dropped == {"invalid frame (-5)": 1, "frame image missing": 3}
    reasons = dict(r.skipped)
    assert any("video1.txt:6" in k for k in reasons) and any("12-24-1920x1080" in v for v in reasons.values())
    s = r.load(1)
    assert s.image.shape == (64, 64, 3) and abs(int(s.image[10, 10, 0]) - 120) <= 2
    assert s.label == -1 and s.valence == pytest.approx(-0.1) and s.arousal == pytest.approx(0.9)
    assert r.source(1).endswith("video1.txt:4")
    v = AffWild2Reader(root, "val")
    assert len(v) == 1 and np.allclose(v.va(), [[0.3, -0.3]])
    assert len(AffWild2Reader(root, "train", frame_step=2)) == 2  # frames 1 and 3
    unchecked = AffWild2Reader(root, "train", check_frames=False)
    assert len(unchecked) == 6
    ds, skipped = unchecked.to_arrays()
    assert len(ds) == 3 and len(skipped) == 3 and np.isfinite(ds.va).all()


def test_affwild2_options_and_errors(tmp_path):
    root = make_affwild2(tmp_path)
    ann = root / "annotations" / "VA_Estimation_Challenge"
    (ann / "Train_Set" / "video1.txt").write_text("valence,arousal\n0.5,0.25\n0.5;x\n")
    with pytest.raises(DataError, match=r"video1.txt:3: arousal 'x' is not a number"):
        AffWild2Reader(root, "train")
    (ann / "Train_Set" / "video1.txt").write_text("valence,arousal\n0.5,0.25\n2,0\n")
    with pytest.raises(DataError, match=r"video1.txt:3: valence 2 out of range"):
        AffWild2Reader(root, "train")
    (ann / "Train_Set" / "video1.txt").write_text("valence,arousal\n0.5\n")
    with pytest.raises(DataError, match=r"video1.txt:2: expected 'valence,arousal'"):
        AffWild2Reader(root, "train")
    (ann / "Train_Set" / "video1.txt").write_text("arousal,valence\n0.5,0.1\n")
    with pytest.raises(DataError, match=r"video1.txt:1: expected the header"):
        AffWild2Reader(root, "train")
    # headerless file, custom layout and frame pattern
    other = tmp_path / "other"
    (other / "ann" / "tr").mkdir(parents=True)
    (other / "ann" / "tr" / "v.txt").write_text("1e-1,0.2\n0.3,0.4\n")
    write_rgb(other / "img" / "v" / "frame_1.png", np.zeros((10, 10, 3), np.uint8))
    r = AffWild2Reader(other, "train", annotations_dir="ann", frames_dir="img",
                       frame_pattern="frame_{}.png", split_dirs={"train": "tr"})
    assert len(r) == 1 and np.allclose(r.va(), [[0.1, 0.2]]) and r.source(0).endswith("v.txt:1")
    with pytest.raises(DataError, match="Validation_Set"):
        AffWild2Reader(other, "val", annotations_dir="ann")
    with pytest.raises(DataError, match="Aff-Wild2 root not found"):
        AffWild2Reader(tmp_path / "none", "train")


# ----------------------------------------------------------------------------------------------
# folder of class sub-folders
# ----------------------------------------------------------------------------------------------
def make_folder(root: Path, split_dirs: bool) -> Path:
    bases = [root / "train", root / "val"] if split_dirs else [root]
    for b in bases:
        write_rgb(b / "happy" / "1.jpg", np.full((80, 80, 3), 100, np.uint8))
        write_rgb(b / "happy" / "sub" / "2.PNG", np.full((30, 30, 3), 50, np.uint8))
        rgba = np.zeros((40, 40, 4), np.uint8)
        rgba[..., 1], rgba[..., 3] = 255, 128
        write_rgb(b / "angry" / "rgba.png", rgba)
        cv2.imwrite(str(b / "angry" / "gray.jpg"), np.full((50, 40), 77, np.uint8))
        (b / "angry" / "notes.txt").write_text("not an image")
        (b / "angry" / ".hidden.jpg").write_bytes(b"junk")
        (b / "angry" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0junk")
    if split_dirs:
        write_rgb(root / "train" / "surprised" / "s.jpg", np.full((10, 10, 3), 1, np.uint8))
    return root


def test_folder_split_layout(tmp_path):
    root = make_folder(tmp_path, split_dirs=True)
    tr = open_reader("folder", root, "train")
    va = FolderReader(root, "val")
    assert tr.classes == va.classes == ["angry", "happy", "surprised"]  # union over splits
    assert len(tr) == 6 and len(va) == 5 and len(FolderReader(root, "all")) == 11
    assert va.class_counts.tolist() == [3, 2, 0]
    assert tr.source(0).endswith("corrupt.jpg")
    ds, skipped = va.to_arrays()
    assert len(ds) == 4 and len(skipped) == 1 and "corrupt.jpg" in skipped[0][1]
    imgs = {Path(va.source(i)).name: ds for i in range(len(va))}
    assert set(imgs) == {"corrupt.jpg", "gray.jpg", "rgba.png", "1.jpg", "2.PNG"}
    gray = va.load([Path(va.source(i)).name for i in range(len(va))].index("gray.jpg")).image
    assert gray.shape == (64, 64, 3) and abs(int(gray[5, 5, 2]) - 77) <= 2
    with pytest.raises(DataError, match="no 'test' folder"):
        FolderReader(root, "test")
    fixed = FolderReader(root, "train", classes="happy,angry")
    assert fixed.classes == ["happy", "angry"] and fixed.labels().tolist()[:2] == [1, 1]
    assert fixed.dropped == {"folder 'surprised' not in classes": 1}


def test_folder_flat_layout(tmp_path):
    root = make_folder(tmp_path, split_dirs=False)
    r = FolderReader(root, "all", classes=["happy", "angry", "neutral"])
    assert r.class_counts.tolist() == [2, 3, 0]
    with pytest.raises(DataError, match="no train/val/test sub-folders"):
        FolderReader(root, "train")
    assert len(FolderReader(root, "all", recursive=False)) == 4
    with pytest.raises(DataError, match="image folder not found"):
        FolderReader(tmp_path / "nope", "all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        FolderReader(tmp_path / "empty", "all")


# ----------------------------------------------------------------------------------------------
# generic CSV list
# ----------------------------------------------------------------------------------------------
def test_csv_list_names_va_box(tmp_path):
    write_rgb(tmp_path / "img" / "a.jpg", face_image(100, 80, (20, 10, 30, 40)))
    cv2.imwrite(str(tmp_path / "img" / "g.jpg"), np.full((20, 20), 30, np.uint8))
    (tmp_path / "list.csv").write_bytes((
        '\ufeffPath,Label,valence,arousal,x,y,w,h,comment\r\n'
        'img/a.jpg,happy,0.5,-0.5,20,10,30,40,"a, quoted field"\r\n'
        f'{tmp_path / "img" / "g.jpg"},sad,,,,,,,\r\n'
        'img/g.jpg,,0.1,0.2,,,,,\r\n'
        '\r\n'
    ).encode())
    r = open_reader("csv", tmp_path / "list.csv", "all")
    assert r.classes == ["happy", "sad"] and r.labels().tolist() == [0, 1, -1]
    va = r.va()
    assert np.allclose(va[0], [0.5, -0.5]) and np.isnan(va[1]).all() and np.allclose(va[2], [0.1, 0.2])
    assert close(r.load(0).image, RED)
    assert r.load(1).image.shape == (64, 64, 3)
    assert r.source(2).endswith("list.csv:4")
    fixed = CSVListReader(tmp_path / "list.csv", "all", classes=["sad", "happy", "neutral"])
    assert fixed.labels().tolist() == [1, 0, -1] and fixed.class_counts.tolist() == [1, 1, 0]
    with pytest.raises(DataError, match="no split column"):
        CSVListReader(tmp_path / "list.csv", "train")


def test_csv_list_splits_and_indices(tmp_path):
    for i in range(3):
        write_rgb(tmp_path / f"{i}.png", np.full((8, 8, 3), i, np.uint8))
    (tmp_path / "train.csv").write_text("file,class\n0.png,0\n1.png,2\n")
    (tmp_path / "val.csv").write_text("file,class\n2.png,1\nmissing.png,1\n")
    tr, va = CSVListReader(tmp_path, "train"), CSVListReader(tmp_path, "val")
    assert tr.classes == va.classes == ["0", "1", "2"]
    assert tr.labels().tolist() == [0, 2] and va.labels().tolist() == [1, 1]
    ds, skipped = va.to_arrays()
    assert len(ds) == 1 and "val.csv:3" in skipped[0][1] and "missing.png" in skipped[0][1]
    with pytest.raises(DataError, match="test.csv"):
        CSVListReader(tmp_path, "test")
    sub = tmp_path / "combined"
    sub.mkdir()
    (sub / "labels.csv").write_text("path,label,split\na.png,x,Training\nb.png,y,validation\nc.png,x,test\n")
    assert CSVListReader(sub, "val").labels().tolist() == [1]
    assert len(CSVListReader(sub, "all")) == 3


@pytest.mark.parametrize("row,match", [
    ("a.png,neutral", "unknown class 'neutral'"),
    ("a.png,5", "label 5 out of range 0..1"),
    ("a.png,happy,2,0", r"valence 2 out of range"),
    ("a.png,happy,0,zero", "arousal 'zero' is not a number"),
    (",happy", "empty path"),
])
def test_csv_list_malformed(tmp_path, row, match):
    (tmp_path / "l.csv").write_text(f"path,label,valence,arousal\nb.png,happy,0,0\n{row}\n")
    with pytest.raises(DataError, match=match) as info:
        CSVListReader(tmp_path / "l.csv", "all", classes=["happy", "sad"])
    assert "l.csv:3:" in str(info.value)
    (tmp_path / "nopath.csv").write_text("label\nhappy\n")
    with pytest.raises(DataError, match="no 'path' column"):
        CSVListReader(tmp_path / "nopath.csv", "all")
    with pytest.raises(DataError, match="CSV list not found"):
        CSVListReader(tmp_path / "none.csv", "all")


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------
def test_registry(tmp_path):
    names = list_datasets()
    for n in ("fer2013", "ferplus", "affectnet", "rafdb", "affwild2", "folder", "csv"):
        assert n in names and READERS[n].name == n
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        open_reader("mnist", tmp_path, "train")
    with pytest.raises(DataError, match="needs a root"):
        open_reader("fer2013", None, "train")
    with pytest.raises(DataError, match="unknown option 'margn'"):
        open_reader("AffectNet", tmp_path, "train", margn=0.1)
    assert canonical_class("Angry") == canonical_class("anger") == "Anger"
    assert canonical_class("happiness") == "Happy" and canonical_class("Owl") == "Owl"
    import importlib.util

    if importlib.util.find_spec("bregnet.data.synthetic") is not None:
        assert "synthetic" in names


def test_read_image_exif_orientation(tmp_path):
    from PIL import Image

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = RED  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    raw = read_image(tmp_path / "rot.jpg")
    assert raw.shape == (20, 40, 3)  # annotations refer to the stored pixels: not rotated by default
    shown = read_image(tmp_path / "rot.jpg", apply_exif=True)
    assert shown.shape == (40, 20, 3) and close(shown[:15, 5:15], RED, tol=12)  # red on top


def test_default_splits(tmp_path):
    from bregnet.data.registry import default_splits

    (tmp_path / "fer").mkdir()
    write_fer2013(tmp_path / "fer" / "fer2013.csv", fer_rows(3))
    assert default_splits("fer2013", tmp_path / "fer") == ["train", "val", "test"]
    write_fer2013(tmp_path / "kaggle.csv", [(1, fer_pixels(0))], header="emotion,pixels")
    assert default_splits("fer2013", tmp_path / "kaggle.csv") == ["all"]
    assert default_splits("affectnet", make_affectnet(tmp_path / "an")) == ["train", "val"]
    assert default_splits("rafdb", tmp_path) == ["train", "test"]
    assert default_splits("affwild2", make_affwild2(tmp_path / "aw")) == ["train", "val"]
    assert default_splits("folder", make_folder(tmp_path / "split", split_dirs=True)) == ["train", "val"]
    assert default_splits("folder", make_folder(tmp_path / "flat", split_dirs=False)) == ["all"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "labels.csv").write_text("path,label,split\na.png,x,Training\nb.png,y,test\n")
    assert default_splits("csv", tmp_path / "c") == ["train", "test"]
    (tmp_path / "c" / "val.csv").write_text("path,label\na.png,x\n")
    assert default_splits("csv", tmp_path / "c") == ["val"]
    assert default_splits("csv", tmp_path / "c" / "val.csv") == ["all"]
