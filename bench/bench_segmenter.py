"""What the segmenter costs beside the classifier, side by side in one run on real images.

    .venv/bin/python bench/bench_segmenter.py [--rounds 7] [--batch 8] [--threads 1 2]

Both are exported to ONNX FP32 at 224x224 and run with ONNX Runtime on CPU: the classifier is
the ImageNet EfficientNet-Lite0 with its map output (export/onnx_io.py), the segmenter the
default "lite0_seg" (frozen Lite0 backbone + small decoder). Each round runs both once over the
same batches of camera-trap frames, in turn, so a noisy shared machine slows them alike; we
report medians in ms per image and the segmenter/classifier ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FRAMES = DATA / "camtrap" / "peru_s90_animl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from edge.decode import load_image
    from edge.preprocess import prepare
    from export.cam import CamClassifier
    from export.lite0 import load_imagenet_lite0
    from export.onnx_io import export_classifier_onnx
    from export.segmenter import build_segmenter, export_segmenter_onnx

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_seg_"))
    net = load_imagenet_lite0()
    clf = export_classifier_onnx(
        CamClassifier(net.features, net.classifier, "features"), tmp / "clf.onnx", (224, 224)
    )
    src = build_segmenter()
    seg = export_segmenter_onnx(src, tmp / "seg.onnx", (224, 224))

    files = sorted(FRAMES.rglob("*.JPG"))[: args.batch * args.batches]
    x = prepare([load_image(f) for f in files], src.input)  # same 0..255 (x-127)/128 for both
    batches = [x[i : i + args.batch] for i in range(0, len(x), args.batch)]

    for threads in args.threads:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sessions = {
            name: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for name, p in (("classifier", clf), ("segmenter", seg))
        }
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for r in range(args.rounds + 1):
            for name, sess in sessions.items():
                t0 = time.perf_counter()
                for b in batches:
                    sess.run(None, {"image": b})
                if r:  # the first round warms up
                    times[name].append((time.perf_counter() - t0) * 1000 / len(x))
        med = {name: statistics.median(v) for name, v in times.items()}
        print(
            f"threads={threads} batch={args.batch} 224px, ms/image (median of {args.rounds}): "
            f"classifier {med['classifier']:.2f}, segmenter {med['segmenter']:.2f}, "
            f"segmenter/classifier {med['segmenter'] / med['classifier']:.2f}x"
        )
    params = sum(p.numel() for p in src.model.head.parameters())
    mib = [p.stat().st_size / 2**20 for p in (clf, seg)]
    print(
        f"lite0_seg head: {params / 1e3:.0f} k parameters; ONNX files: classifier "
        f"{mib[0]:.1f} MiB, segmenter {mib[1]:.1f} MiB"
    )


if __name__ == "__main__":
    main()
