"""Speed and memory of the exported classifier, side by side in one run on the same real images.

    .venv/bin/python bench/bench_export.py [--images 128] [--rounds 7] [--threads 2]

Rows: PyTorch eager FP32, ONNX FP32 (as exported), ONNX FP32 with the graph cleaned the way
the INT8 export cleans it (pads folded), ONNX INT8 (the shipping recipe), and the FP32 export
with logits only, to show what the map output costs. Each round runs every model once over the
same batches, in turn, so a noisy shared machine slows them alike; we report medians.
Peak memory (RSS) is measured in a fresh process per model, after loading and running it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from machine import cores, cpu_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

DATA = SHARED / "imagenet-sample"


def _spec():  # noqa: ANN202 - InputSpec, imported lazily with the project
    from edge.bundle import InputSpec
    from export.lite0 import MEAN, STD

    return InputSpec(size=(224, 224), mean=MEAN, std=STD, resize="center_crop")


def load_batches(n: int, batch: int) -> list[np.ndarray]:
    from edge.decode import load_image
    from edge.preprocess import prepare
    from export.validate import read_labelled_folder

    paths = read_labelled_folder(DATA)[0][:n]
    spec = _spec()
    return [
        prepare([load_image(p) for p in paths[i : i + batch]], spec)
        for i in range(0, len(paths), batch)
    ]


def ort_runner(path: Path, threads: int) -> Callable[[np.ndarray], object]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"image": x})


def torch_runner(threads: int) -> Callable[[np.ndarray], object]:
    import torch

    from export.cam import CamClassifier
    from export.lite0 import load_imagenet_lite0

    torch.set_num_threads(threads)
    m = load_imagenet_lite0()
    model = CamClassifier(m.features, m.classifier, "features").eval()

    def run(x: np.ndarray) -> object:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    return run


def build_models(work: Path, calib_limit: int | None) -> dict[str, Path]:
    """Export FP32 (with and without the map), clean it, quantize it; returns name -> file."""
    import torch

    from export.calibration import CalibrationFrames, builtin_calibration_dir
    from export.cam import CamClassifier
    from export.lite0 import load_imagenet_lite0
    from export.onnx_io import export_classifier_onnx
    from export.quantize import prepare_for_quantization, quantize_int8

    m = load_imagenet_lite0()
    cam = CamClassifier(m.features, m.classifier, "features").eval()
    fp32 = export_classifier_onnx(cam, work / "fp32.onnx", (224, 224))
    logits_only = work / "fp32_logits.onnx"
    warnings.simplefilter("ignore")  # the tracer's notes on the SAME-padding arithmetic
    torch.onnx.export(
        m,
        (torch.zeros(2, 3, 224, 224),),
        str(logits_only),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    clean = prepare_for_quantization(fp32, work / "fp32_clean.onnx")
    reader = CalibrationFrames(builtin_calibration_dir(), _spec(), limit=calib_limit)
    quantize_int8(fp32, work / "int8.onnx", reader)
    return {
        "onnx fp32": fp32,
        "onnx fp32 clean": clean,
        "onnx int8": work / "int8.onnx",
        "onnx fp32 logits only": logits_only,
    }


def peak_rss_mb(kind: str, path: str, threads: int, batch: int) -> float:
    """Peak RSS (MB) of a fresh process that loads one model and runs one batch three times.

    Read from VmHWM: getrusage's ru_maxrss survives exec and would report the parent's peak.
    """
    code = (
        "import sys,numpy as np;sys.path.insert(0,'bench');import bench_export as b;"
        f"x=np.random.default_rng(0).standard_normal(({batch},3,224,224)).astype(np.float32);"
        f"r=b.torch_runner({threads}) if {kind!r}=='torch' else b.ort_runner({path!r},{threads});"
        "[r(x) for _ in range(3)];"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-limit", type=int, default=None)
    args = ap.parse_args()

    import onnxruntime
    import torch

    batches = load_batches(args.images, args.batch)
    n = sum(len(b) for b in batches)
    with tempfile.TemporaryDirectory() as tmp:
        files = build_models(Path(tmp), args.calib_limit)
        runners = {"torch eager fp32": torch_runner(args.threads)}
        runners |= {name: ort_runner(path, args.threads) for name, path in files.items()}
        for run in runners.values():  # warm-up: allocations, kernel selection
            run(batches[0])
        speeds: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                t0 = time.perf_counter()
                for x in batches:
                    run(x)
                speeds[name].append(n / (time.perf_counter() - t0))
        rss = {"torch eager fp32": peak_rss_mb("torch", "", args.threads, args.batch)}
        rss |= {k: peak_rss_mb("ort", str(p), args.threads, args.batch) for k, p in files.items()}
        load = Path("/proc/loadavg").read_text().split()[:3]

    med = {k: statistics.median(v) for k, v in speeds.items()}
    eager = med["torch eager fp32"]
    print(f"machine: {cpu_model()}, {cores()} cores, load avg {' '.join(load)}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, threads {args.threads}"
    )
    print(
        f"{n} imagenet-sample images, batch {args.batch}, 224 px, "
        f"median of {args.rounds} interleaved rounds\n"
    )
    print(
        f"{'model':<24}{'img/s':>9}{'x eager':>9}{'x onnx fp32':>13}{'min..max':>16}"
        f"{'peak RSS MB':>13}"
    )
    for name, v in med.items():
        spread = f"{min(speeds[name]):.0f}..{max(speeds[name]):.0f}"
        print(
            f"{name:<24}{v:>9.1f}{v / eager:>9.2f}{v / med['onnx fp32']:>13.2f}"
            f"{spread:>16}{rss[name]:>13.0f}"
        )
    cost = med["onnx fp32 logits only"] / med["onnx fp32"]
    print(
        f"\ncam output cost: logits-only / logits+cam speed = {cost:.3f}; "
        f"RSS {rss['onnx fp32']:.0f} vs {rss['onnx fp32 logits only']:.0f} MB"
    )
    print(
        f"int8 vs onnx fp32 as exported: {med['onnx int8'] / med['onnx fp32']:.2f}x; "
        f"vs fp32 clean graph: {med['onnx int8'] / med['onnx fp32 clean']:.2f}x"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
