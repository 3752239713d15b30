"""``bregnet export``: a checkpoint to ONNX (dynamic batch, metadata inside), checked for parity."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  bregnet export runs/affectnet/best.safetensors --onnx model.onnx
  bregnet predict model.onnx photos/ -o faces.csv          # runs with ONNX Runtime
  bregnet export best.safetensors --onnx model.int8.onnx --int8 [--calibrate photos/]

The graph takes 'input' (N, 3, S, S) float32, normalised as the checkpoint says (stored with the
labels and crop policy in the model's metadata_props under 'bregnet'), and returns 'logits' and/or
'va'. After writing, the ONNX Runtime outputs are compared with PyTorch on random inputs.

--int8 quantizes the model (ONNX Runtime static quantization: uint8 activations calibrated on face
crops, int8 weights per channel) and compares it with the fp32 model on held-out crops; the int8
model is written only if the top-1 labels agree on at least --min-agreement of them (else the fp32
model is written, and the command says why). The parity report goes beside the file
(<name>.parity.json). Calibration crops: synthetic faces, scikit-image's astronaut and LFW faces,
or --calibrate DATA (a folder of photos, whose faces are detected and cropped, or a prepared cache).
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
    g = p.add_argument_group("int8")
    g.add_argument("--int8", action="store_true",
                   help="write an int8 model (static quantization, gated on parity with fp32)")
    g.add_argument("--calibrate", metavar="DATA",
                   help="calibration crops from DATA: a folder of photos or a prepared cache "
                        "(default: synthetic faces + scikit-image's astronaut and LFW faces)")
    g.add_argument("--min-agreement", type=float_range(0.0, 1.0), default=0.99,
                   help="top-1 label agreement with fp32 the int8 model must reach on the "
                        "held-out crops (default 0.99)")
    g.add_argument("--calibration-size", type=int_range(16, 100_000), default=600,
                   help="crops to use, 40%% to calibrate and 60%% to check (default 600)")
    g.add_argument("--no-overwrite", action="store_true",
                   help="refuse to replace an existing file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..engine.checkpoint import load_checkpoint
    from ..errors import BregnetError, UsageError
    from ..export.onnx import check_export, export_onnx, max_abs_diff
    from ..fileio import check_output_file

    if args.calibrate is not None and not args.int8:
        raise UsageError("--calibrate needs --int8")
    if args.int8 and args.static_batch:
        raise UsageError("--int8 models keep a dynamic batch axis: leave out --static-batch")
    path, _ = check_export(args.onnx, args.opset, args.exporter, inputs=[args.checkpoint])
    check_output_file(path, overwrite=not args.no_overwrite, what="ONNX file")  # before any work
    if args.int8:
        from ..export.quantize import export_int8, parity_report_path

        check_output_file(parity_report_path(path), inputs=[args.checkpoint],
                          overwrite=not args.no_overwrite, what="parity report")
        model, meta = load_checkpoint(args.checkpoint)
        result = export_int8(model, path, meta=meta, calibrate=args.calibrate,
                             min_agreement=args.min_agreement, count=args.calibration_size,
                             opset=args.opset, exporter=args.exporter,
                             overwrite=not args.no_overwrite)
        par = result.report["parity"]
        agree = (f"label agreement {100 * par['label_agreement']:.1f}%, largest probability "
                 f"difference {par['max_prob_diff']:.3g}" if "label_agreement" in par else
                 f"largest valence/arousal difference {par.get('max_va_diff', 0):.3g}")
        if result.int8:
            print(f"bregnet export: wrote int8 {path} ({meta.model_name}; vs fp32 on "
                  f"{par['crops']} held-out crops: {agree}); report {result.report_path}")
        else:
            print(f"bregnet export: warning: int8 calibration failed the gate ({result.reason}); wrote the "
                  f"fp32 model to {path} instead; report {result.report_path}", file=sys.stderr)
        return 0
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
