"""The review overlay, old against new: render and encode+write, side by side in one run on real
frames with the default bundle's own maps and masks, in interleaved rounds.

    .venv/bin/python bench/bench_overlay.py [--bundle bundles/default] [--frames 16] [--rounds 25]

Frames: MLWIC CA-01 (256x256, "small") and Peru S90 (768x576, "large"). Each is decoded with
edge.decode.load_image and run through the bundle (Runtime.run); the mask, label and scores
are edge.overmap.score_frame's, as in the watcher ("fused" shows the softmax, a stand-in of
the same length). "old" is a compact copy of the earlier float-blend overlay; "view only" a
compact copy of the uint8 overlay that showed only the classifier's view (448x448), before the
overlay showed the whole frame; "new" is edge.overlay with the view passed in (as the runtime
has it) and without, and with the view passed in for the bundle's spec made "stretch" and
"letterbox" (the same maps and masks: the cost, not the picture). The JPEG encoders (quality
85, in memory) are compared too. Writes go to a fresh name each time, as in the
watcher, in a temporary folder. Figures are ms per overlay: median (min..max) of the rounds.

The watcher no longer draws on its decision path: it keeps `edge.overlay.pack_overlay`'s bytes
in the journal, and the picture is drawn when someone asks (`draw_overlay`). The last line of
each set puts the two side by side: render (view=) + encode + write against pack_overlay, per
review frame, and what drawing on demand costs (the view recomputed from the frame).
"""

from __future__ import annotations

import argparse
import io
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from machine import cores, cpu_model, load_avg

if TYPE_CHECKING:
    from edge.bundle import Bundle, InputSpec
    from edge.runtime import Runtime

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = {
    "small": SHARED / "camtrap/mlwic_examples",
    "large": SHARED / "camtrap/peru_s90_animl",
}


def old_render(
    image: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None,
    spec: InputSpec,
    *,
    label: str,
    scores: dict[str, float],
    width: int = 448,
) -> np.ndarray:
    """The earlier edge.overlay.render (float blend, contour at output size)."""
    from edge.overlay import draw_banner
    from edge.preprocess import resize_frame

    view = resize_frame(image, spec)
    vh, vw = view.shape[:2]
    heat = cv2.resize(np.nan_to_num(cam.astype(np.float32)), (vw, vh), cv2.INTER_LINEAR)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = (heat * np.float32(0.6))[..., None]
    blended = (view + alpha * (colour.astype(np.float32) - view)).astype(np.uint8)
    h = round(vh * width / vw)
    out = cv2.resize(blended, (width, h), interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        m = cv2.resize(mask.astype(np.float32), (width, h), interpolation=cv2.INTER_LINEAR) > 0.5
        c, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, c, -1, (255, 255, 255), 2)
    banner = np.empty((56, width, 3), np.uint8)
    draw_banner(banner, label, scores)  # the banner has not changed
    return np.vstack([banner, out])


def view_only_render(
    view: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None,
    *,
    label: str,
    scores: dict[str, float],
    width: int = 448,
) -> np.ndarray:
    """The edge.overlay.render that showed only the classifier's view (given, as the runtime has
    it), blended with the tables and upscaled to width x width."""
    from edge.overlay import COLOUR, KEEP, _heat, draw_banner

    vh, vw = view.shape[:2]
    heat = _heat(cam, (vw, vh))
    blended = cv2.add(
        cv2.multiply(view, cv2.applyColorMap(heat, KEEP), scale=1 / 255),
        cv2.applyColorMap(heat, COLOUR),
    )
    h = round(vh * width / vw)
    out = np.empty((56 + h, width, 3), np.uint8)
    body = out[56:]
    cv2.resize(blended, (width, h), dst=body, interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        m = cv2.resize(mask.astype(np.float32), (vw, vh), interpolation=cv2.INTER_LINEAR) > 0.5
        c, _ = cv2.findContours(m.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        sc = np.array([width / vw, h / vh])
        c = [np.round(x * sc + (sc - 1) / 2).astype(np.int32) for x in c]
        cv2.drawContours(body, c, -1, (255, 255, 255), 2)
    draw_banner(out[:56], label, scores)  # the banner has not changed
    return out


def old_write(path: Path, overlay: np.ndarray) -> Path:
    """The earlier edge.overlay.write_overlay (encodes a channel-reversed view)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ok, data = cv2.imencode(".jpg", overlay[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)
    return path


def encoders() -> dict[str, Callable[[np.ndarray], bytes]]:
    """RGB overlay -> JPEG bytes at quality 85, each way we could do it."""
    q = [cv2.IMWRITE_JPEG_QUALITY, 85]
    s420 = [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]

    def cv2_enc(extra: list[int], contiguous: bool) -> Callable[[np.ndarray], bytes]:
        def enc(rgb: np.ndarray) -> bytes:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if contiguous else rgb[..., ::-1]
            return cv2.imencode(".jpg", bgr, q + extra)[1].tobytes()

        return enc

    out = {
        "cv2 imencode of rgb[..., ::-1] (old)": cv2_enc([], False),
        "cv2 cvtColor + imencode (new)": cv2_enc([], True),
        "cv2 cvtColor + imencode OPTIMIZE=0 (its default)": cv2_enc(
            [cv2.IMWRITE_JPEG_OPTIMIZE, 0], True
        ),
        "cv2 cvtColor + imencode 4:2:0": cv2_enc(s420, True),
    }
    try:
        from PIL import Image

        def pil(rgb: np.ndarray) -> bytes:
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, "JPEG", quality=85)
            return buf.getvalue()

        out["Pillow Image.save JPEG"] = pil
    except ImportError:
        pass
    return out


def frames(root: Path, n: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    return files[:: max(1, len(files) // n)][:n]


def bench_set(
    name: str, root: Path, args: argparse.Namespace, rt: Runtime, bundle: Bundle, tmp: Path
) -> None:
    """Old against new on one set of frames; prints ms per overlay."""
    from edge.decode import load_image
    from edge.overlay import draw_overlay, pack_overlay, render, write_overlay
    from edge.overmap import score_frame
    from edge.preprocess import resize_frame

    spec = bundle.manifest.classifier.input
    images = [load_image(f) for f in frames(root, args.frames)]
    out = rt.run(images)
    items = []
    for i, im in enumerate(images):
        s = score_frame(
            out.probs[i],
            out.cam[i],
            out.foreground[i, 0],
            classes=bundle.manifest.classifier.classes,
        )
        sc = {"softmax": s.softmax, "overmap": s.overmap, "fused": s.softmax}
        kw = {"label": f"{s.label}  (segmenter mask)", "scores": sc | {"fg": s.foreground_fraction}}
        items.append((im, out.cam[i], s.mask, kw, resize_frame(im, spec)))
    pics = [render(im, c, m, spec, **kw) for im, c, m, kw, _ in items]
    view_pics = [view_only_render(v, c, m, **kw) for _, c, m, kw, v in items]
    others = {r: spec.model_copy(update={"resize": r}) for r in ("stretch", "letterbox")}
    other_items = {  # the same maps and masks on the views these specs make
        r: [(im, c, m, kw, resize_frame(im, sp)) for im, c, m, kw, _ in items]
        for r, sp in others.items()
    }
    fresh = itertools.count()  # a new name per write, as in the watcher (no file replaced)

    def paths() -> list[Path]:
        return [tmp / f"{name}{next(fresh)}.jpg.overmap.jpg" for _ in pics]

    enc = encoders()

    runs: dict[str, Callable[[], object]] = {
        "render old": lambda: [old_render(im, c, m, spec, **kw) for im, c, m, kw, _ in items],
        "render new (image)": lambda: [render(im, c, m, spec, **kw) for im, c, m, kw, _ in items],
        "render view only (view=)": lambda: [
            view_only_render(v, c, m, **kw) for _, c, m, kw, v in items
        ],
        "render new (view=)": lambda: [
            render(im, c, m, spec, view=v, **kw) for im, c, m, kw, v in items
        ],
        "encode+write old": lambda: [
            old_write(p, pic) for p, pic in zip(paths(), pics, strict=True)
        ],
        "encode+write view only": lambda: [
            write_overlay(p, pic) for p, pic in zip(paths(), view_pics, strict=True)
        ],
        "encode+write new": lambda: [
            write_overlay(p, pic) for p, pic in zip(paths(), pics, strict=True)
        ],
    }
    for r, sp in others.items():
        runs[f"render new (view=), {r}"] = lambda sp=sp, its=other_items[r]: [
            render(im, c, m, sp, view=v, **kw) for im, c, m, kw, v in its
        ]
    runs |= {f"encode only: {k}": (lambda f=f: [f(p) for p in pics]) for k, f in enc.items()}
    # what the watcher does now on its decision path instead of render + encode + write: keep
    # the map, a 64 px mask, spec, label and scores for the journal; the picture is drawn later
    runs["pack_overlay (decision path)"] = lambda: [
        pack_overlay(c, m, spec, **kw) for _, c, m, kw, _ in items
    ]
    blobs = [pack_overlay(c, m, spec, **kw) for _, c, m, kw, _ in items]
    runs["draw_overlay + encode+write (on demand)"] = lambda: [
        write_overlay(p, draw_overlay(im, b))
        for p, (im, *_), b in zip(paths(), items, blobs, strict=True)
    ]
    for fn in runs.values():
        fn()  # warm-up
    ms: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):
        for k in list(runs)[r % len(runs) :] + list(runs)[: r % len(runs)]:
            t = time.perf_counter()
            runs[k]()
            ms[k].append((time.perf_counter() - t) * 1000 / len(items))
    med = {k: statistics.median(v) for k, v in ms.items()}
    h, w = images[0].shape[:2]
    kib = len(enc["cv2 cvtColor + imencode (new)"](pics[0])) / 1024
    ph, pw = pics[0].shape[:2]
    print(
        f"\n{name}: {len(items)} frames {w}x{h} from {root.name}, overlay {pw}x{ph}, "
        f"JPEG {kib:.0f} KiB"
    )
    for k, v in ms.items():
        print(f"  {k:50s} {med[k]:6.3f}  ({min(v):.3f}..{max(v):.3f})")
    old = med["render old"] + med["encode+write old"]
    only = med["render view only (view=)"] + med["encode+write view only"]
    new = med["render new (view=)"] + med["encode+write new"]
    print(
        f"  render + encode + write: old {old:.2f}, view only {only:.2f}, new (view=) {new:.2f}"
        f" ({new / only - 1:+.0%} on view only, {old / new:.1f}x faster than old)"
    )
    pack = med["pack_overlay (decision path)"]
    size = statistics.median(len(b) for b in blobs)
    print(
        f"  decision path per review frame: render (view=) + encode + write {new:.3f} ms, "
        f"pack_overlay {pack:.3f} ms ({new / pack:.0f}x less), {size:.0f} bytes to the journal"
        f" (JPEG {kib:.0f} KiB); drawn on demand "
        f"{med['draw_overlay + encode+write (on demand)']:.2f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from edge.bundle import load_bundle
    from edge.runtime import Runtime

    bundle = load_bundle(args.bundle)
    spec = bundle.manifest.classifier.input
    rt = Runtime.from_bundle(bundle, threads=args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_overlay_"))
    print(f"machine: {cpu_model()}, {cores()} cores, load avg {load_avg()}")
    print(
        f"opencv {cv2.__version__} ({cv2.getNumThreads()} threads), numpy {np.__version__}; "
        f"view {spec.size[1]}x{spec.size[0]} {spec.resize}, overlay 448 wide, JPEG q85; "
        f"ms per overlay, median (min..max) of {args.rounds} interleaved rounds"
    )
    for name, root in SETS.items():
        bench_set(name, root, args, rt, bundle, tmp)
    shutil.rmtree(tmp)
    print(f"\nload avg {load_avg()} (at the end)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
