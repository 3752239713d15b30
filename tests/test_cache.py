"""The prepared cache and ``bregnet prepare`` (issue: data, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bregnet.cli import main as cli_main
from bregnet.data.base import Sample
from bregnet.data.cache import cache_splits, open_cache, prepare_cache
from bregnet.data.readers.base import FaceReader
from bregnet.data.synthetic import SyntheticReader, make_synthetic
from bregnet.errors import DataError


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (no final checkpoint), unlike Ctrl-C."""


class TinyReader(FaceReader):
    """A test reader: item i is an image filled with i; some items are unusable in various ways."""

    name = "tiny"
    splits = ("train", "test")
    default_classes = ["a", "b", "c"]

    def __init__(self, root, split, n=40, bad=(3, 17), oserror=(11,), gray=(5,), interrupt_at=None,
                 interrupt_with=KeyboardInterrupt, log=None, **options):
        super().__init__(root, split, **options)
        self.n, self.bad, self.oserror, self.gray = n, set(bad), set(oserror), set(gray)
        self.interrupt_at, self.interrupt_with, self.log = interrupt_at, interrupt_with, log

    def __len__(self):
        return self.n

    def labels(self):
        return np.array([i % 3 if i % 7 else -1 for i in range(self.n)], np.int64)

    def va(self):
        return np.stack([np.linspace(-1, 1, self.n), np.full(self.n, 0.5)], 1).astype(np.float32)

    def soft_labels(self):
        s = np.zeros((self.n, 3), np.float32)
        s[np.arange(self.n), np.arange(self.n) % 3] = 1.0
        return s

    def source(self, index):
        return f"{self.root}/img_{index:03d}.jpg"

    def load(self, index):
        if self.log is not None:
            self.log.append(index)
        if index == self.interrupt_at:
            raise self.interrupt_with()
        if index in self.bad:
            raise DataError(f"{self.source(index)}: cannot decode image")
        if index in self.oserror:
            raise OSError(f"[Errno 2] No such file: {self.source(index)}")
        lab, va = int(self.labels()[index]), self.va()[index]
        if index in self.gray:
            return Sample(np.full((48, 48), index, np.uint8), lab, float(va[0]), float(va[1]))
        return Sample(np.full((64, 64, 3), index, np.uint8), lab, float(va[0]), float(va[1]))


def _arrays(directory: Path, split: str = "train") -> dict:
    ds = open_cache(directory, split)
    out = {"images": np.array(ds.images), "labels": ds.labels, "va": ds.va, "soft": ds.soft_labels,
           "skipped": (directory / split / "skipped.txt").read_text()}
    meta = dict(ds.meta)
    meta.pop("created")
    out["meta"] = meta
    return out


def _same(a: dict, b: dict) -> None:
    for key in ("images", "labels", "va", "soft"):
        assert np.array_equal(a[key], b[key], equal_nan=key == "va"), key
    assert a["skipped"] == b["skipped"]
    assert a["meta"] == b["meta"]


def test_synthetic_round_trip_memory_mapped(tmp_path):
    rep = prepare_cache("synthetic", None, tmp_path, splits="val", progress=False, n=40, seed=3)
    assert rep.written == 40 and rep.skipped == 0 and rep.splits[0].status == "prepared"
    ds = open_cache(tmp_path, "val")
    ref = make_synthetic(40, seed=3, split="val")
    assert isinstance(ds.images, np.memmap) and not ds.images.flags.writeable
    assert np.array_equal(ds.images, ref.images)
    assert np.array_equal(ds.labels, ref.labels) and np.allclose(ds.va, ref.va)
    assert ds.classes == ref.classes and ds.name == "synthetic" and ds.split == "val"
    assert ds.meta["synthetic"] is True and ds.meta["counts"]["Happy"] == int((ref.labels == 1).sum())
    assert ds.meta["source"]["options"]["n"] == 40
    imgs, labels, va = ds.batch(np.array([5, 0, 39, 5]))
    assert imgs.shape == (4, 3, 64, 64) and np.array_equal(imgs[0].permute(1, 2, 0).numpy(), ref.images[5])
    assert cache_splits(tmp_path) == ["val"]
    assert open_cache(tmp_path / "val").split == "val"  # a split directory opens directly


def test_unreadable_items_are_skipped_counted_and_listed(tmp_path):
    rep = prepare_cache(TinyReader, tmp_path / "src", tmp_path / "c", splits=["train"], progress=False)
    assert rep.splits[0].total == 40 and rep.skipped == 3 and rep.written == 37
    ds = open_cache(tmp_path / "c", "train")
    kept = [i for i in range(40) if i not in (3, 11, 17)]
    assert [int(im[0, 0, 0]) for im in ds.images] == kept  # compacted, in order
    assert ds.labels.tolist() == TinyReader(".", "train").labels()[kept].tolist()
    assert np.allclose(ds.va, TinyReader(".", "train").va()[kept])
    assert np.array_equal(ds.soft_labels, TinyReader(".", "train").soft_labels()[kept])
    assert ds.images[kept.index(5)].shape == (64, 64, 3)  # a 48x48 gray image is coerced
    lines = [ln for ln in (tmp_path / "c" / "train" / "skipped.txt").read_text().splitlines()
             if not ln.startswith("#")]
    assert [ln.split("\t")[0] for ln in lines] == ["3", "11", "17"]
    assert lines[0].split("\t")[1].endswith("img_003.jpg") and "cannot decode" in lines[0]
    assert "OSError" in lines[1]
    meta = json.loads((tmp_path / "c" / "train" / "meta.json").read_text())
    assert meta["num_items"] == 37 and meta["num_skipped"] == 3 and meta["num_source_items"] == 40
    assert meta["has_soft_labels"] and meta["classes"] == ["a", "b", "c"]
    assert sum(meta["counts"].values()) == int((ds.labels >= 0).sum())


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Killed])
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, interrupt):
    root = tmp_path / "src"
    prepare_cache(TinyReader, root, tmp_path / "ref", splits="train", progress=False)
    ref = _arrays(tmp_path / "ref")

    out = tmp_path / "c"
    with pytest.raises(interrupt):
        prepare_cache(TinyReader, root, out, splits="train", progress=False, checkpoint_every=7,
                      interrupt_at=26, interrupt_with=interrupt)
    progress = json.loads((out / "train" / "progress.json").read_text())
    # Ctrl-C saves exactly where it stopped; a kill leaves the last periodic checkpoint
    assert progress["done"] == (26 if interrupt is KeyboardInterrupt else 21)
    with pytest.raises(DataError, match="incomplete"):
        open_cache(out, "train")

    log: list[int] = []
    rep = prepare_cache(TinyReader, root, out, splits="train", progress=False, checkpoint_every=7, log=log)
    assert rep.splits[0].status == "resumed" and rep.splits[0].resumed_from == progress["done"]
    assert log[0] == progress["done"] and log[-1] == 39
    _same(_arrays(out), ref)
    assert not (out / "train" / "progress.json").exists()
    assert sorted(p.name for p in (out / "train").iterdir()) == \
        ["images.u8", "labels.npy", "meta.json", "skipped.txt", "soft_labels.npy", "va.npy"]


def test_repeated_interruptions_of_synthetic(tmp_path):
    ref_dir = tmp_path / "ref"
    prepare_cache("synthetic", None, ref_dir, splits="test", progress=False, n=30)
    out = tmp_path / "c"

    class Flaky(SyntheticReader):
        stop_at = None

        def load(self, index):
            if index == Flaky.stop_at:
                raise KeyboardInterrupt
            return super().load(index)

    for stop in (4, 4, 13, 29):
        Flaky.stop_at = stop
        with pytest.raises(KeyboardInterrupt):
            prepare_cache(Flaky, None, out, splits="test", progress=False, checkpoint_every=5, n=30)
    Flaky.stop_at = None
    prepare_cache(Flaky, None, out, splits="test", progress=False, checkpoint_every=5, n=30)
    a, b = _arrays(ref_dir, "test"), _arrays(out, "test")
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])
    assert np.allclose(a["va"], b["va"])


def test_up_to_date_overwrite_and_conflicts(tmp_path):
    root = tmp_path / "src"
    prepare_cache(TinyReader, root, tmp_path, splits="train", progress=False)
    log: list[int] = []
    rep = prepare_cache(TinyReader, root, tmp_path, splits="train", progress=False, log=log)
    assert rep.splits[0].status == "up to date" and log == []
    with pytest.raises(DataError, match="overwrite"):
        prepare_cache(TinyReader, root, tmp_path, splits="train", progress=False, n=20)
    rep = prepare_cache(TinyReader, root, tmp_path, splits="train", progress=False, n=20, overwrite=True)
    assert rep.splits[0].total == 20 and len(open_cache(tmp_path, "train")) == 17


def test_all_items_unreadable_is_an_error_but_reported(tmp_path):
    with pytest.raises(DataError, match="none of the 4 items"):
        prepare_cache(TinyReader, tmp_path, tmp_path / "c", splits="train", progress=False, n=4,
                      bad=(0, 1, 2, 3))
    assert len(open_cache(tmp_path / "c", "train")) == 0
    assert "cannot decode" in (tmp_path / "c" / "train" / "skipped.txt").read_text()


def test_open_cache_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_cache(tmp_path / "nope", "train")
    prepare_cache("synthetic", None, tmp_path, splits="test", progress=False, n=4)
    with pytest.raises(DataError, match="no prepared split 'train'.*test"):
        open_cache(tmp_path, "train")
    (tmp_path / "test" / "images.u8").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="images.u8"):
        open_cache(tmp_path, "test")


def test_opened_reader_instance_and_wrong_split(tmp_path):
    reader = TinyReader(tmp_path, "test", n=6, bad=(), oserror=(), gray=())
    rep = prepare_cache(reader, out_dir=tmp_path / "c", progress=False)
    assert [s.split for s in rep.splits] == ["test"] and rep.written == 6
    with pytest.raises(DataError, match="holds split"):
        prepare_cache(reader, out_dir=tmp_path / "c", splits="train", progress=False)


def test_cli_prepare_synthetic(tmp_path, capsys):
    out = tmp_path / "cache"
    rc = cli_main(["prepare", "--data", "synthetic", "--out", str(out), "--split", "val,test",
                   "--option", "n=12", "--option", "imbalance=none", "--option", "difficulty=0.2",
                   "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "synthetic/val: 12 images of 12" in text and "synthetic/test" in text
    assert cache_splits(out) == ["test", "val"]
    ds = open_cache(out, "val")
    assert ds.meta["source"]["options"]["difficulty"] == 0.2
    assert np.array_equal(ds.images, make_synthetic(12, imbalance="none", difficulty=0.2, split="val").images)


@pytest.mark.parametrize("argv, message", [
    (["--data", "synthetic", "--option", "n"], "key=value"),
    (["--data", "synthetic", "--option", "wobble=3"], "unknown option"),
    (["--data", "synthetic", "--split", "dev"], "split"),
    (["--data", "nosuchset", "--root", "."], "unknown data set"),
])
def test_cli_prepare_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    rc = cli_main(["prepare", "--out", str(tmp_path / "c"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_default_splits_of_fer2013_skip_the_all_union(tmp_path):
    from bregnet.data.cache import prepare_cache

    pixels = " ".join(["128"] * 48 * 48)
    rows = ["emotion,pixels,Usage"] + [f"{i % 7},{pixels},{u}" for i, u in
                                        enumerate(["Training"] * 3 + ["PublicTest"] * 2 + ["PrivateTest"] * 2)]
    (tmp_path / "fer2013.csv").write_text("\n".join(rows) + "\n")
    report = prepare_cache("fer2013", tmp_path, tmp_path / "cache", progress=False)
    assert sorted(r.split for r in report.splits) == ["test", "train", "val"]
    assert not (tmp_path / "cache" / "all").exists()
    assert [r.written for r in sorted(report.splits, key=lambda r: r.split)] == [2, 3, 2]
