"""``bregnet export``: a checkpoint to ONNX (dynamic batch, metadata inside), checked for parity."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  bregnet export runs/affectnet/best.safetensors --onnx model.onnx
  bregnet predict model.onnx photos/ -o faces.csv          # runs with ONNX Runtime

The graph takes 'input' (N, 3, S, S) float32, normalised as the checkpoint says (stored with the
labels and crop policy in the model's metadata_props under 'bregnet'), and returns 'logits' and/or
'va'. After writing, the ONNX Runtime outputs are compared with PyTorch on random inputs.
"""


from ._common import float_range, int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX",
                       description="Export a checkpoint to ONNX with its metadata and check that "
                                   "ONNX Runtime reproduces the PyTorch outputs.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors checkpoint, a run folder or a downloaded "
                                      "weights name (bregnet weights list)")
    p.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    p.add_argument("--opset", type=int_range(1), default=18,
                   help="ONNX opset (default 18; one the installed exporter supports: torch.export "
                        "from 18, TorchScript up to 20)")
    p.add_argument("--static-batch", action="store_true",
                   help="fix the batch axis (default: dynamic)")
    p.add_argument("--exporter", choices=("auto", "dynamo", "legacy"), default="auto",
                   help="torch.export-based (dynamo, needs onnxscript), TorchScript-based (legacy) "
                        "or auto: dynamo, falling back to legacy (default)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--tolerance", type=float_range(0.0), default=1e-4,
                   help="maximum absolute difference accepted by the parity check (default 1e-4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..engine.checkpoint import load_checkpoint
    from ..errors import BregnetError
    from ..export.onnx import check_export, export_onnx, max_abs_diff

    check_export(args.onnx, args.opset, args.exporter, inputs=[args.checkpoint])  # before any work
    model, meta = load_checkpoint(args.checkpoint)
    path = export_onnx(model, args.onnx, opset=args.opset, dynamic_batch=not args.static_batch,
                       meta=meta, exporter=args.exporter)
    msg = f"bregnet export: wrote {path} ({meta.model_name}, labels: {len(meta.labels)}, " \
          f"va: {'yes' if meta.va else 'no'})"
    if not args.no_verify:
        size = int(meta.preprocess.input_size)
        x = np.random.default_rng(0).normal(0.0, 0.5, (2 if args.static_batch else 5, 3, size, size))
        diff = max_abs_diff(model, path, x.astype(np.float32))
        if not diff <= args.tolerance:
            raise BregnetError(f"ONNX Runtime differs from PyTorch by {diff:.3g} "
                               f"(> {args.tolerance:g}); the file was written to {path}")
        msg += f"; parity with PyTorch: max |diff| = {diff:.2g}"
    print(msg)
    return 0
