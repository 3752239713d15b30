"""Reader faults named with file and line (issue 11, part A): numbers too large for any count, an
unclosed quote, a file in UTF-16, bytes that are not UTF-8. Each was an OverflowError, a wrong
line, a misleading "no column" or silently garbled text before."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bregnet.data.registry import open_reader
from bregnet.data.readers._util import csv_rows, parse_int
from bregnet.data.readers.fer2013 import parse_fer2013_csv
from bregnet.errors import DataError

PIXELS = " ".join(["128"] * 48 * 48)
FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def fer2013(path: Path, rows: int = 6, quoted: bool = False) -> list[str]:
    q = '"' if quoted else ""
    lines = ["emotion,pixels,Usage"] + [f"{i % 7},{q}{PIXELS}{q},Training" for i in range(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_ferplus_vote_too_large_names_file_and_line(tmp_path):
    fer2013(tmp_path / "fer2013.csv", rows=5)
    rows = [FERPLUS_HEADER] + [f"Training,fer{i}.png,10,0,0,0,0,0,0,0,0,0" for i in range(5)]
    rows[3] = "Training,fer2.png,1e30,0,0,0,0,0,0,0,0,0"
    (tmp_path / "fer2013new.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"fer2013new.csv:4: neutral votes 1e30 is out of range"):
        open_reader("ferplus", tmp_path, "train")
    rows[3] = "Training,fer2.png," + "9" * 400 + ",0,0,0,0,0,0,0,0,0"
    (tmp_path / "fer2013new.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"fer2013new.csv:4: neutral votes 9+\.\.\. is out of range"):
        open_reader("ferplus", tmp_path, "train")


def test_integer_fields_are_bounded():
    assert parse_int("3.0", "x", "f:1") == 3 and parse_int(" -7 ", "x", "f:1") == -7
    for text in ("1e30", "9" * 5000, "-1e19"):
        with pytest.raises(DataError, match="f:1: x .* out of range"):
            parse_int(text, "x", "f:1")
    with pytest.raises(DataError, match=r"out of range \(0\.\.10\)"):
        parse_int("11", "x", "f:1", lo=0, hi=10)
    with pytest.raises(DataError, match="not an integer"):
        parse_int("inf", "x", "f:1")


@pytest.mark.parametrize("bad_row, line", [(3, 4), (6, 7)])
def test_unclosed_quote_blames_the_line_where_it_opens(tmp_path, bad_row, line):
    path = tmp_path / "fer2013.csv"
    lines = fer2013(path, rows=6, quoted=True)
    lines[bad_row] = lines[bad_row].replace(f'"{PIXELS}"', f'"{PIXELS}')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"fer2013.csv:{line}: unclosed quote"):
        parse_fer2013_csv(path)


def test_csv_rows_report_the_start_line_of_each_record(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,b\n\n1,2\r\n3,4\n')
    assert list(csv_rows(path)) == [(1, ["a", "b"]), (3, ["1", "2"]), (4, ["3", "4"])]


def _image(path: Path) -> Path:
    assert cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    return path


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_files_are_named_as_such(tmp_path, encoding):
    text = "emotion,pixels,Usage\n" + "\n".join(f"{i},{PIXELS},Training" for i in range(3)) + "\n"
    (tmp_path / "fer2013.csv").write_text(text, encoding=encoding)
    name = "UTF-32" if "32" in encoding else "UTF-16"
    with pytest.raises(DataError, match=rf"fer2013.csv: the file is {name}, expected UTF-8"):
        open_reader("fer2013", tmp_path, "train")
    _image(tmp_path / "a.png")
    (tmp_path / "list.csv").write_text("path,label\na.png,Happy\n", encoding=encoding)
    with pytest.raises(DataError, match=rf"list.csv: the file is {name}"):
        open_reader("csv", tmp_path / "list.csv", "all")


def test_utf16_raf_db_label_file(tmp_path):
    (tmp_path / "basic" / "EmoLabel").mkdir(parents=True)
    (tmp_path / "basic" / "EmoLabel" / "list_patition_label.txt").write_text(
        "train_00001.jpg 5\n", encoding="utf-16")
    with pytest.raises(DataError, match="list_patition_label.txt: the file is UTF-16"):
        open_reader("rafdb", tmp_path, "train")


def test_latin1_label_is_an_error_not_garbled(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "list.csv").write_bytes("path,label\na.png,Joie\na.png,Colère\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"list.csv:3: not UTF-8 text: byte 0xe8 .*'è'.*UTF-8"):
        open_reader("csv", tmp_path / "list.csv", "all")
    # the same file in UTF-8 reads the label exactly
    (tmp_path / "list.csv").write_text("path,label\na.png,Joie\na.png,Colère\n", encoding="utf-8")
    assert open_reader("csv", tmp_path / "list.csv", "all").classes == ["Colère", "Joie"]


def test_latin1_in_the_fer2013_byte_path(tmp_path):
    path = tmp_path / "fer2013.csv"
    lines = fer2013(path, rows=4)
    lines[2] = lines[2].replace("Training", "Trainïng")
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"fer2013.csv:3: not UTF-8 text"):
        parse_fer2013_csv(path)


def test_utf8_bom_is_still_fine(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "list.csv").write_text("path,label\na.png,Happy\n", encoding="utf-8-sig")
    assert open_reader("csv", tmp_path / "list.csv", "all").classes == ["Happy"]
