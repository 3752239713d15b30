"""CSV formula injection: user-controlled text never lands in a cell a spreadsheet would run
(issue 11, part C). Numbers stay numbers."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from bregnet.csvsafe import spreadsheet_safe, spreadsheet_safe_row
from bregnet.data.base import Sample
from bregnet.data.cache import prepare_cache
from bregnet.data.readers.base import FaceReader
from bregnet.errors import DataError
from bregnet.infer.results import FaceResult, FrameResult
from bregnet.infer.writers import open_writer

HOSTILE = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A9)", "\tTab", "\rCR"]


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_text_gets_a_quote(text):
    assert spreadsheet_safe(text) == "'" + text


@pytest.mark.parametrize("value", ["Happy", "a=b", "", "p_=x", -0.5, -3, 0, 1.25, None])
def test_other_values_pass_unchanged(value):
    assert spreadsheet_safe(value) is value or spreadsheet_safe(value) == value
    assert type(spreadsheet_safe(value)) is type(value)


def test_row_helper():
    assert spreadsheet_safe_row(["=1", -1, "ok"]) == ["'=1", -1, "ok"]


def _result(label: str, source: str) -> FrameResult:
    face = FaceResult(source=source, frame=0, time_s=0.0, face_id=0, box=(1.0, 2.0, 30.0, 40.0),
                      det_score=0.9, label=label, probs=np.array([0.7, 0.2, 0.1]),
                      va=np.array([-0.5, 0.25]))
    return FrameResult(source=source, frame=0, time_s=0.0, faces=[face])


def test_csv_writer_neutralises_labels_sources_and_header():
    labels = ["=HYPERLINK(\"http://x\")", "-neg", "Happy"]
    buf = io.StringIO()
    with open_writer(buf, labels, True, fmt="csv") as w:
        w.write(_result(labels[0], "@evil.jpg"))
        w.write(_result("-neg", "photos/a.jpg"))
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    header, first, second = rows[0], rows[1], rows[2]
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row
               if not _is_number(cell))
    rec = dict(zip(header, first))
    assert rec["label"] == "'=HYPERLINK(\"http://x\")" and rec["source"] == "'@evil.jpg"
    assert dict(zip(header, second))["label"] == "'-neg"
    assert dict(zip(header, second))["source"] == "photos/a.jpg"  # ordinary text untouched
    # numbers are numbers: a negative valence is not quoted
    assert rec["valence"] == "-0.5" and float(rec["valence"]) == -0.5 and rec["arousal"] == "0.25"
    assert rec["x"] == "1" and rec["det_score"] == "0.9"


def test_jsonl_keeps_the_text_as_is(tmp_path):
    out = tmp_path / "faces.jsonl"
    with open_writer(out, ["=a", "b", "c"], True) as w:
        w.write(_result("=a", "=src.jpg"))
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["label"] == "=a" and rec["source"] == "=src.jpg"  # JSON is not a spreadsheet


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


class HostileReader(FaceReader):
    """Items whose sources look like formulas; two of them cannot be decoded."""

    name = "hostile"
    splits = ("train",)
    default_classes = ["a", "b"]

    def __len__(self) -> int:
        return 4

    def labels(self) -> np.ndarray:
        return np.array([0, 1, 0, 1])

    def source(self, index: int) -> str:
        return f"=HYPERLINK(\"http://evil/{index}\")"

    def load(self, index: int) -> Sample:
        if index in (1, 2):
            raise DataError(f"-{index} cannot decode {self.source(index)}")
        return Sample(np.zeros((64, 64, 3), np.uint8), int(self.labels()[index]))


def test_prepare_skipped_list_is_spreadsheet_safe(tmp_path):
    rep = prepare_cache(HostileReader, tmp_path / "src", tmp_path / "c", splits=["train"], progress=False)
    assert rep.skipped == 2
    lines = [ln for ln in (tmp_path / "c" / "train" / "skipped.txt").read_text().splitlines()
             if not ln.startswith("#")]
    assert len(lines) == 2
    for line in lines:
        index, source, reason = line.split("\t")
        assert index.isdigit()
        assert source.startswith("'=HYPERLINK") and reason.startswith("'-")
