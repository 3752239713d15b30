"""The whole ``bregnet predict`` job as a library call: inputs -> predictor -> writers/annotations.

:func:`run_predictions` streams every input through a :class:`~bregnet.infer.predictor.Predictor`,
writes the records (CSV/JSONL), optional annotated images/videos and a timeline plot per video, and
returns a :class:`RunSummary`. The CLI only parses arguments and calls it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from ..errors import DataError, UsageError
from ..fileio import check_output_dir, check_output_file
from .annotate import AnnotatedVideoWriter, Timeline, draw_faces, save_image
from .predictor import Predictor, expand_inputs
from .results import FrameResult
from .video import is_video_path
from .writers import MultiWriter, open_writer, output_format

__all__ = ["RunSummary", "check_outputs", "run_predictions"]


def check_outputs(outputs: Sequence[str | os.PathLike | TextIO] = ("-",),
                  annotate_dir: str | os.PathLike | None = None,
                  inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Check, before any work, every output of a prediction run: each ``-o`` file has a known
    format, can be created (its folder exists or can be made and is writable; it is not a folder)
    and is not one of the inputs; the annotation folder can be created and written.
    UsageError / OutputError (one line) otherwise."""
    input_paths = [p for p in inputs if isinstance(p, (str, os.PathLike)) and Path(p).is_file()]
    for out in outputs:
        if isinstance(out, (str, os.PathLike)) and str(out) != "-":
            check_output_file(out, inputs=input_paths, what="output")
        output_format(out)
    if annotate_dir is not None:
        check_output_dir(annotate_dir, "annotation folder")


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
    **video_options: Any,
) -> RunSummary:
    """Run ``predictor`` over images, folders, videos (and a webcam) and write everything.

    ``video_options`` (``every``, ``fps``, ``max_frames``, ``track``, ``smooth``) go to
    :meth:`Predictor.predict_video`. ``warn`` receives one line per skipped input or problem as it
    happens (default: print to stderr). Outputs are checked first (:func:`check_outputs`).
    Raises DataError when nothing could be read at all.
    """
    if not inputs and webcam is None:
        raise UsageError("give at least one input (image, folder, video) or a webcam")
    check_outputs(outputs, annotate_dir, inputs)
    warn = warn or (lambda msg: print(f"bregnet predict: warning: {msg}", file=sys.stderr))
    files = expand_inputs(inputs, recursive=recursive)
    if inputs and not files:
        raise DataError("no images or videos found in the inputs given")
    roots = {str(path): root for path, root in files}
    annotate = Path(annotate_dir) if annotate_dir else None
    keep = annotate is not None
    summary = RunSummary()
    start = time.perf_counter()
    writer = MultiWriter([open_writer(o, predictor.labels, predictor.has_va, keep_empty)
                          for o in outputs])
    video_out: dict[str, tuple[AnnotatedVideoWriter, Timeline]] = {}

    def video_stem(source: str) -> str:
        return source.replace(":", "") if source.startswith("webcam:") else Path(source).stem

    def handle(res: FrameResult, video: bool) -> None:
        if res.error is not None:
            summary.skipped.append(res.error)
            warn(f"skipped: {res.error}")
            return
        summary.frames += 1
        summary.faces += len(res.faces)
        writer.write(res)
        if annotate is None or res.image is None:
            return
        if not video:
            root = roots.get(res.source)
            rel = Path(res.source).relative_to(root) if root is not None else Path(res.source).name
            summary.annotated.append(save_image(annotate / rel, draw_faces(res.image, res.faces)))
            return
        if res.source not in video_out:
            reader = getattr(predictor, "last_reader", None)
            fps = reader.output_fps if reader is not None else 25.0
            video_out[res.source] = (
                AnnotatedVideoWriter(annotate / f"{video_stem(res.source)}_annotated.mp4", fps),
                Timeline(predictor.labels, predictor.has_va))
        vw, timeline = video_out[res.source]
        vw.write(res)
        timeline.add(res)

    def finish_videos() -> None:
        for source in list(video_out):
            vw, timeline = video_out.pop(source)
            vw.close()
            summary.annotated.append(vw.path)
            plot = timeline.save(annotate / f"{video_stem(source)}_timeline.png", title=source)
            if plot is not None:
                summary.annotated.append(plot)

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
    finally:
        writer.close()
        summary.rows = writer.rows
        summary.write_seconds = writer.seconds
        summary.seconds = time.perf_counter() - start
    if summary.frames == 0 and summary.skipped:
        raise DataError(f"none of the {len(summary.skipped)} input(s) could be read; first: "
                        f"{summary.skipped[0]}")
    return summary
