"""Face detection, alignment, the predictor, video/webcam streaming, tracking, writers.

The main entry point is :class:`Predictor` (also ``bregnet.Predictor``); :func:`run_predictions`
is the whole ``bregnet predict`` job as one call. OpenCV, ONNX Runtime and the detectors are
imported only when used.
"""

from .detect import Detection, FaceDetector, HaarDetector, NoDetector, YuNetDetector, make_detector
from .pipeline import RunSummary, run_predictions
from .predictor import Predictor, expand_inputs
from .results import FaceResult, FrameResult, record_columns
from .tracking import IoUTracker, Smoother
from .video import VideoReader
from .writers import CsvWriter, JsonlWriter, open_writer

__all__ = [
    "CsvWriter",
    "Detection",
    "FaceDetector",
    "FaceResult",
    "FrameResult",
    "HaarDetector",
    "IoUTracker",
    "JsonlWriter",
    "NoDetector",
    "Predictor",
    "RunSummary",
    "Smoother",
    "VideoReader",
    "YuNetDetector",
    "expand_inputs",
    "make_detector",
    "open_writer",
    "record_columns",
    "run_predictions",
]
