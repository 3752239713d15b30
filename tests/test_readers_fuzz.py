"""Property-based tests: malformed rows fed to the CSV readers give only DataError naming the line."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bregnet.crop import crop_face
from bregnet.preprocess import CropPolicy
from bregnet.data.readers import AffectNetReader, CSVListReader, FER2013Reader
from bregnet.data.readers.fer2013 import _parse_pixel_block, parse_fer2013_csv
from bregnet.errors import DataError

SETTINGS = settings(max_examples=int(__import__("os").environ.get("FUZZ_N", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_counter = itertools.count()

# one physical line: no line breaks and no quotes (a quote may legally open a multi-line field)
LINE_CHARS = st.characters(blacklist_characters='\r\n"', blacklist_categories=("Cs",))
ANY_CHARS = st.characters(blacklist_categories=("Cs",))
short_text = st.text(LINE_CHARS, max_size=12)
number_text = st.one_of(
    st.integers(-20, 400).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda f: f"{f:g}"),
    st.sampled_from(["", " ", "-2", "-5", "1e3", "0x10", "nan", "inf", "1,5", "३"]),
    short_text,
)


def unique(tmp_path, name):
    return tmp_path / f"{next(_counter)}_{name}"


def assert_names_line(exc: DataError, path, line: int) -> None:
    msg = str(exc)
    assert f"{path.name}:{line}:" in msg, msg
    assert "\n" not in msg


# ----------------------------------------------------------------------------------------------
# FER2013
# ----------------------------------------------------------------------------------------------
VALID_PIXELS = " ".join(["7"] * 2304)


@st.composite
def pixel_fields(draw):
    kind = draw(st.sampled_from(["count", "range", "token", "sep", "text"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = 2304
    lo, hi = 0, 255
    if kind == "count":
        n = draw(st.one_of(st.integers(0, 2310), st.sampled_from([2303, 2305, 2304 * 2])))
    if kind == "range":
        lo, hi = draw(st.sampled_from([(-3, 255), (0, 256), (250, 1000), (0, 10**12)]))
    values = [str(v) for v in rng.integers(lo, hi + 1, n)]
    if kind == "token":
        values[draw(st.integers(0, n - 1))] = draw(st.one_of(short_text, number_text))
    sep = draw(st.sampled_from([" ", "  ", "\t", " \t", ";"])) if kind == "sep" else " "
    if kind == "text":
        return draw(short_text)
    return sep.join(values)


@st.composite
def fer_bad_rows(draw):
    """A row with one part broken (or several, or none), so every check gets exercised."""
    broken = draw(st.sampled_from(["emotion", "pixels", "pixels", "usage", "fields", "all", "none"]))
    emotion = str(draw(st.integers(0, 6)))
    pixels = VALID_PIXELS
    usage = draw(st.sampled_from(["Training", "PublicTest", "PrivateTest"]))
    if broken in ("emotion", "all"):
        emotion = draw(st.one_of(st.integers(-2, 9).map(str), number_text))
    if broken in ("pixels", "all"):
        pixels = draw(pixel_fields())
    if broken in ("usage", "all"):
        usage = draw(st.one_of(st.sampled_from(["training", " PublicTest ", "Test", ""]), short_text))
    fields = [emotion, pixels, usage]
    if broken in ("fields", "all"):
        extra = draw(st.integers(-3, 2))
        fields = fields[:3 + extra] if extra < 0 else fields + [draw(short_text) for _ in range(extra)]
    return ",".join(fields)


def write_fer(path, bad_row: str, position: int, crlf: bool) -> int:
    rows = [f"{i},{VALID_PIXELS},Training" for i in range(3)]
    rows.insert(position, bad_row)
    nl = "\r\n" if crlf else "\n"
    path.write_bytes((nl.join(["emotion,pixels,Usage", *rows]) + nl).encode("utf-8", "surrogatepass"))
    return position + 2  # the header is line 1


@SETTINGS
@given(row=fer_bad_rows(), position=st.integers(0, 3), crlf=st.booleans())
def test_fer2013_malformed_row_names_its_line(tmp_path, row, position, crlf):
    path = unique(tmp_path, "fer2013.csv")
    line = write_fer(path, row, position, crlf)
    try:
        reader = FER2013Reader(path, "all")
    except DataError as exc:
        assert_names_line(exc, path, line)
        return
    assert len(reader) in (3, 4)  # a row of empty fields is skipped as blank
    assert reader.load(len(reader) - 1).image.shape == (64, 64, 3)


@SETTINGS
@given(text=st.text(ANY_CHARS, max_size=60), position=st.integers(0, 3))
def test_fer2013_arbitrary_text_only_dataerror(tmp_path, text, position):
    """Quotes and line breaks included: the line may move, but only DataError comes out."""
    path = unique(tmp_path, "fer2013.csv")
    write_fer(path, text, position, crlf=False)
    try:
        FER2013Reader(path, "all")
    except DataError as exc:
        assert f"{path.name}:" in str(exc) and "\n" not in str(exc)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 4), seps=st.lists(st.sampled_from([" ", "  ", "\t", " \t "]), min_size=1, max_size=3))
def test_pixel_parser_round_trip(seed, n, seps):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 256, (n, 2304))
    sep = seps[seed % len(seps)]
    rows = [sep.join(str(v) if k % 97 else f"00{v}"[-3:] for k, v in enumerate(r)).encode() for r in values]
    parsed, problem = _parse_pixel_block(rows)
    assert problem is None
    assert (parsed.reshape(n, -1) == values).all()


# ----------------------------------------------------------------------------------------------
# AffectNet
# ----------------------------------------------------------------------------------------------
AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                    "expression,valence,arousal")
GOOD = "1/a.png,10,10,30,30,1.0;2.0;3.0,1,0.5,-0.5"


@st.composite
def affectnet_bad_rows(draw):
    """A valid row with some fields replaced (boxes anywhere, bad numbers, short or long rows)."""
    fields = GOOD.split(",")
    fields[1:5] = [str(draw(st.integers(-100, 200))) for _ in range(4)]  # boxes in or out of the image
    broken = draw(st.sets(st.integers(0, 9), max_size=3))
    for k in sorted(broken):  # the cut (largest k) comes last
        if k == 0:
            fields[0] = draw(st.one_of(st.just("1/none.jpg"), st.just("1\\a.png"), short_text))
        elif k in (1, 2, 3, 4, 7, 8):
            fields[k] = draw(number_text)
        elif k == 5:
            fields[5] = draw(short_text)
        elif k == 6:
            fields[6] = draw(st.one_of(st.integers(-2, 12).map(str), number_text))
        else:
            cut = draw(st.integers(0, 11))
            fields = fields[:cut] if cut < 9 else fields + [draw(short_text)] * (cut - 9)
    return ",".join(fields)


@pytest.fixture(scope="module")
def affectnet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("affectnet")
    (root / "1").mkdir()
    img = np.zeros((60, 80, 3), np.uint8)
    img[10:40, 10:40] = 200
    cv2.imwrite(str(root / "1" / "a.png"), img)
    return root


@SETTINGS
@given(row=affectnet_bad_rows(), position=st.integers(0, 2), margin=st.sampled_from([0.0, 0.2, -0.3]),
       square=st.booleans())
def test_affectnet_malformed_row_names_its_line(affectnet_root, row, position, margin, square):
    rows = [GOOD, GOOD]
    rows.insert(position, row)
    name = f"{next(_counter)}_training.csv"
    path = affectnet_root / name
    path.write_text("\r\n".join([AFFECTNET_HEADER, *rows]) + "\r\n", encoding="utf-8", errors="surrogatepass")
    try:
        reader = AffectNetReader(affectnet_root, "train", csv=name, margin=margin, square=square)
    except DataError as exc:
        assert_names_line(exc, path, position + 2)
        return
    for i in range(len(reader)):
        try:
            s = reader.load(i)
        except DataError as exc:
            assert f"{name}:" in str(exc) and "\n" not in str(exc)
            continue
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert -1 <= s.label < 8
        assert math.isnan(s.valence) or -1 <= s.valence <= 1


# ----------------------------------------------------------------------------------------------
# generic CSV list
# ----------------------------------------------------------------------------------------------
@st.composite
def csv_bad_rows(draw):
    fields = ["a.png", draw(st.sampled_from(["happy", "sad", "0", "1", "-1", ""])), "0.5", "-0.5"]
    fields += [str(draw(st.integers(-50, 120))) for _ in range(4)] if draw(st.booleans()) else [""] * 4
    for k in sorted(draw(st.sets(st.integers(0, 8), max_size=3))):
        if k == 0:
            fields[0] = draw(st.one_of(st.just("none.png"), st.just(""), short_text))
        elif k == 1:
            fields[1] = draw(st.one_of(st.sampled_from(["2", "neutral", "+1", "01", " sad "]), short_text))
        elif k < 8:
            fields[k] = draw(st.one_of(st.just(""), number_text))
        else:
            fields = fields[: draw(st.integers(1, 8))]
    return ",".join(fields)


@pytest.fixture(scope="module")
def csv_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("csvlist")
    cv2.imwrite(str(root / "a.png"), np.full((40, 50, 3), 90, np.uint8))
    return root


@SETTINGS
@given(row=csv_bad_rows(), position=st.integers(0, 2), border=st.sampled_from(["clamp", "constant", "replicate"]))
def test_csv_list_malformed_row_names_its_line(csv_root, row, position, border):
    rows = ["a.png,happy,0.1,0.2,1,1,20,20", "a.png,sad,,,,,,"]
    rows.insert(position, row)
    path = csv_root / f"{next(_counter)}_list.csv"
    path.write_text("\n".join(["path,label,valence,arousal,x,y,w,h", *rows]) + "\n",
                    encoding="utf-8", errors="surrogatepass")
    try:
        reader = CSVListReader(path, "all", classes=["happy", "sad"], border=border)
    except DataError as exc:
        assert_names_line(exc, path, position + 2)
        return
    for i in range(len(reader)):
        try:
            s = reader.load(i)
        except DataError as exc:
            assert f"{path.name}:" in str(exc)
            continue
        assert s.image.shape == (64, 64, 3) and s.label in (-1, 0, 1)


# ----------------------------------------------------------------------------------------------
# crop geometry
# ----------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(w=st.integers(1, 90), h=st.integers(1, 90),
       box=st.tuples(*[st.floats(-200, 200, allow_nan=False)] * 2, *[st.floats(0.1, 300)] * 2),
       margin=st.floats(-0.4, 1.0), square=st.booleans(), border=st.sampled_from(["clamp", "constant", "replicate"]))
def test_crop_face_total(w, h, box, margin, square, border):
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    try:
        out = crop_face(img, box, CropPolicy(margin, square, False, border), size=64)
    except DataError as exc:
        assert "face box" in str(exc)
        return
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_fer2013_bom_and_quotes_through_csv_module(tmp_path):
    """A file with quotes takes the csv-module path; a parse error there still names the line."""
    path = tmp_path / "q.csv"
    path.write_bytes(b'\xef\xbb\xbfemotion,pixels,Usage\r\n0,"' + VALID_PIXELS.encode() + b'",Training\r\n'
                     b'1,"' + VALID_PIXELS.encode() + b' 5",Training\r\n')
    with pytest.raises(DataError, match=r"q.csv:3: pixels has 2305 values"):
        parse_fer2013_csv(path)
