"""The built-in entry: the BReG-NeXt authors' BReG-NeXt-50 trained on AffectNet (8 categories).

The files stay in the authors' repository; bregnet ships only their manifest (sizes, the index's
SHA-256, every tensor's byte range and CRC32C), pinned to the commit that added them.
"""

from __future__ import annotations

import os
from typing import Any

from ..preprocess import CropPolicy, Preprocess
from .manifest import load_builtin_manifest, manifest_from_index
from .registry import ReportedFigure, WeightsEntry, WeightsSource

__all__ = ["AFFECTNET_CROP", "OFFICIAL_COMMIT", "OFFICIAL_MANIFEST", "OFFICIAL_NAME",
           "OFFICIAL_PREFIX", "OFFICIAL_REPOSITORY", "builtin_entries", "official_manifest_from_index"]

OFFICIAL_NAME = "bregnext50.affectnet"
OFFICIAL_REPOSITORY = "behzadhsni/BReG-NeXt"
OFFICIAL_COMMIT = "5953bdb15bc0769fcab863adf17e046e335ae9da"  # the commit that added the checkpoint
OFFICIAL_PREFIX = "codes/Snapshots/categorical_attempt_1/checkpoints"
OFFICIAL_MANIFEST = "bregnext50.affectnet.json"
# Plain git blobs (the repository has no .gitattributes: no Git LFS), so the raw host serves the
# content itself, pinned to the commit.
OFFICIAL_BASE_URL = f"https://raw.githubusercontent.com/{OFFICIAL_REPOSITORY}/{OFFICIAL_COMMIT}/"

# AffectNet's crop: the data set's face box as given, no margin, not squared, cut at the image
# edges (clamped; nothing outside the image is filled).
AFFECTNET_CROP = CropPolicy(margin=0.0, square=False, align=False, border="clamp")

LICENSE = (
    "The authors' repository (behzadhsni/BReG-NeXt) carries no licence for its code or for these "
    "weights. bregnet does not redistribute them: `bregnet weights download` fetches them from "
    "the authors' repository when you ask it to, and your use of them is between you and the "
    "authors (cite the BReG-NeXt paper; ask the authors about anything beyond research). The "
    "repository's codes/torch/ folder is a third-party PyTorch port with its own LICENSE, which "
    "does not cover these weights.")

PROVENANCE = (
    "Trained by the BReG-NeXt authors (B. Hasani, P. S. Negi, M. H. Mahoor) with TensorFlow 1.x "
    "and tflearn (codes/BReG-NeXt.py) on AffectNet, 8 categories; published as "
    f"{OFFICIAL_PREFIX}.{{index,data-00000-of-00001}} in {OFFICIAL_REPOSITORY} at commit "
    f"{OFFICIAL_COMMIT[:7]}. Converted on your machine by bregnet's TensorFlow converter "
    "(TF 'SAME' padding of the strided convolutions reproduced; batch-norm statistics and "
    "tflearn's epsilon 1e-5 copied as stored).")

PAPER = ("B. Hasani, P. S. Negi and M. H. Mahoor, \"BReG-NeXt: Facial affect computing using "
         "adaptive residual networks with bounded gradient\", IEEE Transactions on Affective "
         "Computing, 2020 (arXiv:2004.08495)")


def official_manifest_from_index(index_path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the official checkpoint, derived from its ``checkpoints.index`` (what the
    package ships as ``manifests/bregnext50.affectnet.json``; ``tools/make_weights_manifest.py``)."""
    return manifest_from_index(index_path, repository=OFFICIAL_REPOSITORY, commit=OFFICIAL_COMMIT,
                               prefix_path=OFFICIAL_PREFIX)


def official_entry() -> WeightsEntry:
    from ..export.convert_tf import AFFECTNET_LABELS

    manifest = load_builtin_manifest(OFFICIAL_MANIFEST)
    return WeightsEntry(
        name=OFFICIAL_NAME,
        description="BReG-NeXt-50 trained by its authors on AffectNet (8 categories)",
        architecture="bregnext50",
        arch_args={"num_classes": 8, "tf_same_padding": True},
        labels=tuple(AFFECTNET_LABELS),
        preprocess=Preprocess(crop=AFFECTNET_CROP),
        source=WeightsSource.from_manifest(
            manifest, base_url=OFFICIAL_BASE_URL,
            homepage=f"https://github.com/{OFFICIAL_REPOSITORY}/tree/{OFFICIAL_COMMIT}/"
                     f"{OFFICIAL_PREFIX.rsplit('/', 1)[0]}"),
        manifest=manifest,
        provenance=PROVENANCE,
        license=LICENSE,
        reported=(ReportedFigure(metric="accuracy", value=68.50, dataset="AffectNet", classes=8,
                                 source=PAPER),),
        metadata={
            "dataset": "AffectNet (manually annotated images, 8 categories)",
            "paper": PAPER,
            "crop": "AffectNet's face box (face_x, face_y, face_width, face_height) as given: no "
                    "margin, not squared, clamped to the image, resized to 64x64",
        },
    )


def builtin_entries() -> list[WeightsEntry]:
    return [official_entry()]
