"""The one place for writes that lose nothing, output and input checks, strict text and JSON, and
the resource limits (bregnet.fileio, bregnet.limits)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from bregnet.errors import DataError, LimitError, OutputError
from bregnet.fileio import (atomic_output, atomic_write, atomic_write_text, check_input_file,
                            check_output_dir, check_output_file, decode_text, read_text,
                            remove_stale_temps, write_json)
from bregnet.limits import LIMITS, MAX_CLASSES, Limit


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "out.txt", "old")

    def half_written(tmp: str) -> None:
        Path(tmp).write_text("ne")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_written)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_streamed_output_replaces_the_target_only_on_success(tmp_path):
    target = tmp_path / "rows.csv"
    target.write_text("previous run\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as f:
            f.write("a,b\n")
            raise KeyboardInterrupt
    assert target.read_text() == "previous run\n"
    with atomic_output(target) as f:
        f.write("a,b\n")
    assert target.read_text() == "a,b\n" and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(target, overwrite=False):
            pass


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".a.json.x1.tmp").write_text("")
    (tmp_path / ".b.json.x2.tmp").write_text("")
    (tmp_path / "keep.tmp").write_text("")
    assert [p.name for p in remove_stale_temps(tmp_path, ["a.json"])] == [".a.json.x1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.json.x2.tmp", "keep.tmp"]


def test_output_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    assert check_output_file(tmp_path / "new" / "deeper" / "out.csv") == tmp_path / "new" / "deeper" / "out.csv"
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_file(tmp_path / "file" / "out.csv")
    with pytest.raises(OutputError, match="it is a folder"):
        check_output_file(tmp_path / "dir")
    with pytest.raises(OutputError, match="one of the inputs"):
        check_output_file(tmp_path / "file", inputs=[tmp_path / "file"])
    with pytest.raises(OutputError, match="already exists"):
        check_output_file(tmp_path / "file", overwrite=False)
    assert check_output_dir(tmp_path / "dir") == tmp_path / "dir"
    with pytest.raises(OutputError, match="it is a file"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(OutputError, match=r"file/sub: .*file is a file"):
        check_output_dir(tmp_path / "file" / "sub")
    if os.path.exists("/dev/null"):
        assert check_output_file("/dev/null") == Path("/dev/null")  # written to, never replaced


def test_input_checks(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"12345")
    assert check_input_file(tmp_path / "f.bin", max_bytes=5) == tmp_path / "f.bin"
    with pytest.raises(LimitError, match="5 bytes, over the limit of 4"):
        check_input_file(tmp_path / "f.bin", max_bytes=4)
    with pytest.raises(DataError, match="not found"):
        check_input_file(tmp_path / "missing")
    with pytest.raises(DataError, match="is a directory"):
        check_input_file(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match="not a regular file"):
        check_input_file(tmp_path / "fifo", "image")


def test_text_is_strict_utf8():
    assert decode_text("é\n".encode("utf-8-sig")) == "é\n"
    with pytest.raises(DataError, match="x.txt: the file is UTF-16"):
        decode_text("name,label\n".encode("utf-16"), "x.txt")
    with pytest.raises(DataError, match=r"x.txt:2: not UTF-8 text: byte 0xe9"):
        decode_text("a\ncaf\xe9\n".encode("latin-1"), "x.txt")


def test_read_text_refuses_large_files(tmp_path, monkeypatch):
    (tmp_path / "r.yaml").write_text("a: 1\n" * 100)
    assert read_text(tmp_path / "r.yaml").startswith("a: 1")
    monkeypatch.setenv("BREGNET_MAX_METADATA_BYTES", "10")
    with pytest.raises(LimitError, match="BREGNET_MAX_METADATA_BYTES"):
        read_text(tmp_path / "r.yaml")


def test_json_is_strict(tmp_path):
    path = write_json({"nan": float("nan"), "inf": float("-inf"), "x": 1.5}, tmp_path / "m.json")
    text = Path(path).read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"nan": None, "inf": None, "x": 1.5}


def test_limits_come_from_the_environment(monkeypatch):
    assert {limit.env for limit in LIMITS} >= {"BREGNET_MAX_IMAGE_PIXELS", "BREGNET_MAX_CLASSES",
                                               "BREGNET_MAX_MODEL_PARAMS"}
    assert MAX_CLASSES.value == 10_000
    monkeypatch.setenv("BREGNET_MAX_CLASSES", "20_000")
    assert MAX_CLASSES.value == 20_000
    MAX_CLASSES.check(20_000, "x")
    with pytest.raises(LimitError, match="x: 20,001 classes, over the limit of 20,000 \\(set BREGNET_MAX_CLASSES"):
        MAX_CLASSES.check(20_001, "x")
    monkeypatch.setenv("BREGNET_MAX_CLASSES", "lots")
    with pytest.raises(LimitError, match="not a whole number"):
        MAX_CLASSES.check(1, "x")
    assert Limit("BREGNET_TEST_UNSET", 7, "things").value == 7


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp makes private 0o600 files; an output must be as readable as one open() writes,
    and a replaced file keeps its own permissions."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = stat.S_IMODE(plain.stat().st_mode)
    fresh = atomic_write_text(tmp_path / "fresh.txt", "y")
    assert stat.S_IMODE(fresh.stat().st_mode) == expected
    with atomic_output(tmp_path / "streamed.csv") as fh:
        fh.write("a,b\n")
    assert stat.S_IMODE((tmp_path / "streamed.csv").stat().st_mode) == expected
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    kept.chmod(0o640)
    atomic_write_text(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"
