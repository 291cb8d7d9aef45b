"""One backbone pass against two: the bundle's joint classifier graph (logits, cam, foreground)
beside the same classifier cut to logits + cam plus the standalone segmenter.onnx, on the same
real frames, in interleaved rounds.

    .venv/bin/python bench/bench_joint.py [--bundle bundles/default] [--frames 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cores, cpu_model, load_avg

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    from edge.bundle import load_bundle
    from edge.decode import load_image
    from edge.preprocess import prepare

    bundle = load_bundle(args.bundle)
    m = bundle.manifest
    if not m.segmenter.in_classifier:
        raise SystemExit(f"{args.bundle}: its classifier returns no foreground; nothing to compare")
    files = sorted((SHARED / "camtrap/mlwic_examples/CA-01").glob("*.jpg"))[: args.frames]
    x = prepare([load_image(p) for p in files], m.classifier.input)
    batches = [x[i : i + args.batch] for i in range(0, len(x), args.batch)]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    cpu = ["CPUExecutionProvider"]
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "classifier_only.onnx"  # the segmenter's head pruned away
        onnx.utils.extract_model(
            str(bundle.classifier_path), str(cut), ["image"], ["logits", "cam"]
        )
        joint = ort.InferenceSession(str(bundle.classifier_path), opts, providers=cpu)
        alone = ort.InferenceSession(str(cut), opts, providers=cpu)
        seg = ort.InferenceSession(str(bundle.segmenter_path), opts, providers=cpu)

        def one_pass() -> None:
            for b in batches:
                joint.run(["logits", "cam", "foreground"], {"image": b})

        def two_passes() -> None:
            for b in batches:
                alone.run(["logits", "cam"], {"image": b})
                seg.run(["foreground"], {"image": b})

        runs = {
            "one pass (joint graph)": one_pass,
            "two passes (classifier + segmenter)": two_passes,
        }
        for fn in runs.values():
            fn()  # warm-up
        rates: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            for name in list(runs)[r % 2 :] + list(runs)[: r % 2]:
                t = time.perf_counter()
                runs[name]()
                rates[name].append(len(x) / (time.perf_counter() - t))

    print(f"machine: {cpu_model()}, {cores()} cores, load avg {load_avg()}")
    print(
        f"onnxruntime {ort.__version__}, threads {args.threads}, bundle {args.bundle} "
        f"({m.classifier.precision}), {len(x)} MLWIC frames, batch {args.batch}, "
        f"median of {args.rounds} interleaved rounds"
    )
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name, v in rates.items():
        print(f"  {name:38s} {med[name]:7.1f} frames/s  ({min(v):.0f}..{max(v):.0f})")
    one, two = med.values()
    print(f"one pass / two passes: {one / two:.2f}x")
    # frames agree: the joint foreground is the segmenter's, up to quantization
    fa = joint.run(["foreground"], {"image": batches[0]})[0]
    fb = seg.run(["foreground"], {"image": batches[0]})[0]
    print(f"mean |foreground joint - standalone| on batch 0: {np.abs(fa - fb).mean():.4f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
