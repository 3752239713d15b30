"""The whole ``bregnet predict`` job as a library call: inputs -> predictor -> writers/annotations.

:func:`run_predictions` streams every input through a :class:`~bregnet.infer.predictor.Predictor`,
writes the records (CSV/JSONL), optional annotated images/videos and a timeline plot per video, and
returns a :class:`RunSummary`. The CLI only parses arguments and calls it.

Files: nothing is written into or over an input. Annotation targets are planned before any work
(:func:`annotation_targets`): they keep the inputs' relative folders, and a name that an input or
another output of the run already has gets a derived one (``x_annotated.jpg``; ``clip_mp4_...``
for ``clip.mp4`` beside ``clip.mov``). Every output file is written under a temporary name and moved
into place only when the run succeeds, so a failed run leaves earlier outputs as they were;
``overwrite=False`` refuses to replace any existing output. A webcam stopped with Ctrl-C is a
successful run.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

from ..errors import DataError, OutputError, UsageError
from ..fileio import check_output_dir, check_output_file
from .annotate import (AnnotatedVideoWriter, StagedFiles, Timeline, annotated_image_suffix,
                       draw_faces, save_image)
from .predictor import Predictor, expand_inputs
from .results import FrameResult
from .video import is_video_path
from .writers import MultiWriter, open_writer, output_format

__all__ = ["VIDEO_SPEED", "RunSummary", "annotation_targets", "check_outputs", "default_workers",
           "prepare_process", "process_age", "run_predictions"]

#: The speed settings of ``bregnet predict --fast`` for video: whole-frame detection every
#: ``det_every``-th frame on a copy whose longest side is ``det_side``, the faces refined in small
#: windows in between (:mod:`bregnet.infer.schedule`). Not the default: measured with
#: ``benchmarks/bench_infer.py`` on a video whose expressions vary, a trained ``bregnext50``'s
#: labels agreed with every-frame detection's on 91% of the faces (the boxes differ by a few
#: pixels), far from the 99% a default must reach; every-frame detection with its int8 model
#: agreed on 99.5%, at 59-67 frames/s whole process (BENCHMARKS.md, *Inference pipeline*).
VIDEO_SPEED: dict[str, int] = {"det_every": 5, "det_side": 320}


def default_workers() -> int:
    """Model threads for the pipeline: one per CPU core available to this process, at most 2
    (with one more thread decoding and detecting, that keeps two cores busy)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(2, n))


def prepare_process(passive_wait: bool = True, opencv_threads: int | None = 1) -> None:
    """Settings for a prediction process, to call before torch (or anything using OpenMP) is
    imported: ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it), because OpenMP workers that
    spin after each call steal several ms per frame from the detector and the decoder on a small
    machine; and OpenCV's own thread pool set to ``opencv_threads`` (the pipeline gives each stage
    its threads on purpose). What the user set in the environment wins."""
    if passive_wait:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if opencv_threads is not None and "OPENCV_FOR_THREADS_NUM" not in os.environ:
        import cv2

        cv2.setNumThreads(int(opencv_threads))


def check_outputs(outputs: Sequence[str | os.PathLike | TextIO] = ("-",),
                  annotate_dir: str | os.PathLike | None = None,
                  inputs: Sequence[str | os.PathLike] = (), overwrite: bool = True) -> None:
    """Check, before any work, every output of a prediction run: each ``-o`` file has a known
    format, can be created (its folder exists or can be made and is writable; it is not a folder)
    and is not one of the inputs (``overwrite=False``: does not exist yet); the annotation folder
    can be created and written. UsageError / OutputError (one line) otherwise."""
    input_paths = [p for p in inputs if isinstance(p, (str, os.PathLike)) and Path(p).is_file()]
    seen: set[str] = set()
    for out in outputs:
        if isinstance(out, (str, os.PathLike)) and str(out) != "-":
            check_output_file(out, inputs=input_paths, what="output", overwrite=overwrite)
            key = _key(Path(out))
            if key in seen:
                raise UsageError(f"output {out} is given twice")
            seen.add(key)
        output_format(out)
    if annotate_dir is not None:
        check_output_dir(annotate_dir, "annotation folder")


def _key(path: Path) -> str:
    """A path as compared for clashes: absolute, normalised, case folded (case-insensitive file
    systems would make ``X.jpg`` and ``x.jpg`` one file)."""
    return os.path.normcase(os.path.abspath(path)).casefold()


def _video_names(path: Path) -> list[tuple[str, str]]:
    """Candidate (annotated video, timeline) names for a video, in order of preference."""
    stem, ext = path.stem, path.suffix.lstrip(".")
    out = [(f"{stem}_annotated.mp4", f"{stem}_timeline.png")]
    if ext:
        out.append((f"{stem}_{ext}_annotated.mp4", f"{stem}_{ext}_timeline.png"))
    return out


def _image_names(path: Path) -> list[str]:
    """Candidate names for an annotated copy of an image, in order of preference."""
    suffix = annotated_image_suffix(path)
    stem, ext = path.stem, path.suffix.lstrip(".")
    names = [path.stem + suffix, f"{stem}_annotated{suffix}"]
    if ext:
        names.append(f"{stem}_{ext}_annotated{suffix}")
    return names


def annotation_targets(files: Sequence[tuple[Path, Path | None]], annotate_dir: str | os.PathLike,
                       webcam: int | None = None, reserved: Iterable[str | os.PathLike] = ()
                       ) -> dict[str, list[Path]]:
    """Where each input's annotations go: ``{source: [annotated image]}`` for an image,
    ``{source: [annotated video, timeline plot]}`` for a video or the webcam (``"webcam:N"``).

    Paths keep the inputs' folders relative to the closest folder holding all inputs (a folder
    input counts as its own base: one folder's files keep their paths inside it). No target is an
    input (``files``), one of ``reserved`` (the ``-o`` outputs, the checkpoint) or another
    target: a name already taken gets the next candidate (``x.jpg`` -> ``x_annotated.jpg`` ->
    ``x_jpg_annotated.jpg`` -> numbered), and names that two inputs would share (``clip.mp4``
    and ``clip.mov`` -> ``clip_annotated.mp4``) take their extension in for both.
    """
    out_dir = Path(annotate_dir)
    taken = {_key(p) for p, _ in files} | {_key(Path(r)) for r in reserved}
    bases = [os.path.abspath(root if root is not None else path.parent) for path, root in files]
    common = Path(os.path.commonpath(bases)) if bases else Path(".")
    plans: list[tuple[str, list[list[Path]]]] = []   # source -> candidate target lists
    seen: set[str] = set()
    for path, _root in files:
        if str(path) in seen:
            continue
        seen.add(str(path))
        rel = Path(os.path.abspath(path)).relative_to(common)
        folder = out_dir / rel.parent
        if is_video_path(path):
            cands = [[folder / a, folder / b] for a, b in _video_names(path)]
        else:
            cands = [[folder / name] for name in _image_names(path)]
        plans.append((str(path), cands))
    if webcam is not None:
        name = f"webcam{int(webcam)}"
        plans.append((f"webcam:{int(webcam)}", [[out_dir / f"{name}_annotated.mp4",
                                                  out_dir / f"{name}_timeline.png"]]))
    # first choices that two inputs share are skipped by both
    firsts = Counter(_key(t) for _, cands in plans for t in cands[0])
    result: dict[str, list[Path]] = {}
    for source, cands in plans:
        pick = None
        options = cands if all(firsts[_key(t)] == 1 for t in cands[0]) else cands[1:] or cands
        for option in options:
            if not any(_key(t) in taken for t in option):
                pick = option
                break
        k = 2
        while pick is None:
            last = options[-1]
            pick = [t.with_name(f"{t.stem}_{k}{t.suffix}") for t in last]
            if any(_key(t) in taken for t in pick):
                pick, k = None, k + 1
        taken.update(_key(t) for t in pick)
        result[source] = pick
    return result


@dataclass
class RunSummary:
    frames: int = 0                 # images and video frames processed
    faces: int = 0
    rows: int = 0
    skipped: list[str] = field(default_factory=list)    # unreadable inputs (one line each)
    problems: list[str] = field(default_factory=list)   # videos ending early, bad frames
    annotated: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    write_seconds: float = 0.0
    first_result_s: float | None = None   # from the start of the run to the first record
    timings: dict[str, float] = field(default_factory=dict)       # seconds per stage (wall)
    cpu_timings: dict[str, float] = field(default_factory=dict)   # CPU seconds per stage

    def stage_line(self) -> str:
        """Milliseconds per image/frame by stage, wall and CPU (``--timings``)."""
        n = max(1, self.frames)
        stages = ("decode", "detect", "crop", "model", "post")
        wall = ", ".join(f"{k} {1000 * self.timings.get(k, 0.0) / n:.2f}" for k in stages)
        cpu = ", ".join(f"{k} {1000 * self.cpu_timings.get(k, 0.0) / n:.2f}" for k in stages)
        return (f"ms per image/frame (wall): {wall}, write {1000 * self.write_seconds / n:.2f}; "
                f"(CPU): {cpu}")


def process_age() -> float | None:
    """Seconds since this process started (Linux: from /proc), or None where unknown."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            start_ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return None


def run_predictions(
    predictor: Predictor,
    inputs: Sequence[str | os.PathLike] = (),
    outputs: Sequence[str | os.PathLike | TextIO] = ("-",),
    webcam: int | None = None,
    keep_empty: bool = False,
    annotate_dir: str | os.PathLike | None = None,
    recursive: bool = True,
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
    overwrite: bool = True,
    reserved: Sequence[str | os.PathLike] = (),
    **video_options: Any,
) -> RunSummary:
    """Run ``predictor`` over images, folders, videos (and a webcam) and write everything.

    ``video_options`` (``every``, ``fps``, ``max_frames``, ``track``, ``smooth``, ``det_every``,
    ``det_side``) go to :meth:`Predictor.predict_video`. ``warn`` receives one line per skipped
    input or problem as it happens (default: print to stderr). Outputs are checked first
    (:func:`check_outputs`) and annotation targets planned (:func:`annotation_targets`; files in
    ``reserved``, e.g. the checkpoint, are never written). All files are written under temporary
    names and moved into place at the end of a successful run; ``overwrite=False`` refuses
    (OutputError) to replace an existing one. Raises DataError when nothing could be read at all.
    """
    if not inputs and webcam is None:
        raise UsageError("give at least one input (image, folder, video) or a webcam")
    check_outputs(outputs, annotate_dir, inputs, overwrite=overwrite)
    warn = warn or (lambda msg: print(f"bregnet predict: warning: {msg}", file=sys.stderr))
    files = expand_inputs(inputs, recursive=recursive)
    if inputs and not files:
        raise DataError("no images or videos found in the inputs given")
    annotate = Path(annotate_dir) if annotate_dir else None
    targets: dict[str, list[Path]] = {}
    if annotate is not None:
        record_files = [o for o in outputs if isinstance(o, (str, os.PathLike)) and str(o) != "-"]
        targets = annotation_targets(files, annotate, webcam, reserved=[*record_files, *reserved])
        if not overwrite:
            for paths in targets.values():
                for t in paths:
                    if t.exists():
                        raise OutputError(f"{t} already exists; remove it or run without "
                                          "--no-overwrite")
        for paths in targets.values():   # the same checks as for -o, before any work
            for t in paths:
                check_output_file(t, what="annotation")
    keep = annotate is not None
    summary = RunSummary()
    start = time.perf_counter()
    staged = StagedFiles()
    writer = MultiWriter([open_writer(o, predictor.labels, predictor.has_va, keep_empty,
                                      overwrite=overwrite) for o in outputs])
    video_out: dict[str, tuple[AnnotatedVideoWriter, Timeline]] = {}

    def handle(res: FrameResult, video: bool) -> None:
        if res.error is not None:
            summary.skipped.append(res.error)
            warn(f"skipped: {res.error}")
            return
        summary.frames += 1
        summary.faces += len(res.faces)
        if summary.first_result_s is None:
            summary.first_result_s = time.perf_counter() - start
        writer.write(res)
        if annotate is None or res.image is None:
            return
        target = targets[res.source]
        if not video:
            save_image(staged.stage(target[0]), draw_faces(res.image, res.faces))
            return
        if res.source not in video_out:
            reader = getattr(predictor, "last_reader", None)
            fps = reader.output_fps if reader is not None else 25.0
            video_out[res.source] = (AnnotatedVideoWriter(staged.stage(target[0]), fps),
                                     Timeline(predictor.labels, predictor.has_va))
        vw, timeline = video_out[res.source]
        vw.write(res)
        timeline.add(res)

    def finish_videos() -> None:
        for source in list(video_out):
            vw, timeline = video_out.pop(source)
            vw.close()
            timeline.save(staged.stage(targets[source][1]), title=source)

    def run_video(source: Any) -> None:
        n_problems = len(predictor.problems)
        try:
            for res in predictor.predict_video(source, keep_frames=keep, progress=progress,
                                               skip_unreadable=not isinstance(source, int),
                                               **video_options):
                handle(res, video=True)
        except KeyboardInterrupt:
            if not isinstance(source, int):
                raise
        finally:
            finish_videos()
        for problem in predictor.problems[n_problems:]:
            if problem.startswith("skipped: "):  # already reported through the result
                continue
            summary.problems.append(problem)
            warn(problem)

    images: list[Path] = []

    def run_images() -> None:
        for res in predictor.predict_paths(images, keep_images=keep, progress=progress):
            handle(res, video=False)
        images.clear()

    try:
        for path, _root in files:
            if is_video_path(path):
                if images:
                    run_images()
                run_video(path)
            else:
                images.append(path)
        if images:
            run_images()
        if webcam is not None:
            run_video(int(webcam))
        if summary.frames == 0 and summary.skipped:
            raise DataError(f"none of the {len(summary.skipped)} input(s) could be read; first: "
                            f"{summary.skipped[0]}")
    except BaseException:
        # a failed run (or Ctrl-C on a file): nothing replaces what was there before
        writer.abort()
        staged.abort()
        raise
    finally:
        summary.rows = writer.rows
        summary.write_seconds = writer.seconds
        summary.timings = dict(predictor.timings)
        summary.cpu_timings = dict(getattr(predictor, "cpu_timings", {}))
    writer.close()
    summary.annotated = staged.commit()
    summary.seconds = time.perf_counter() - start
    return summary
