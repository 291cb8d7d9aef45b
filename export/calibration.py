"""Real frames for INT8 calibration, fed to ONNX Runtime exactly as the device will see them.

Calibration ranges decide INT8 accuracy, so the frames must go through the same decoding
(`edge.decode.load_image`) and preprocessing (`edge.preprocess.prepare`) as on the device; a
different resize or normalisation would calibrate the wrong ranges. The frames must also not be
the images the quantized model is validated on, or the validation figures flatter it.

A small built-in set ships in `export/assets/calib/` (mixed day/night camera-trap frames and
pet photos, see its README), so `edge export` can quantize without any user data.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edge.bundle import InputSpec
from edge.decode import load_image
from edge.preprocess import prepare

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def builtin_calibration_dir() -> Path:
    """The folder of calibration frames shipped with the package."""
    return Path(__file__).parent / "assets" / "calib"


def list_images(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files of a folder (recursive, sorted) or an explicit list, as Paths."""
    if isinstance(source, str | Path):
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(f"calibration folder {root} does not exist")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise ValueError(f"no images found in {source!r}: calibration needs real frames")
    return paths


class CalibrationFrames(CalibrationDataReader):
    """ONNX Runtime calibration reader over real frames, preprocessed like on the device.

    Args:
        source: a folder of images (searched recursively) or a list of image paths.
        spec: the classifier's input spec (size, normalisation, resize mode).
        batch: frames per calibration batch; the calibrator runs the model once per batch.
        input_name: the model's input name.
        limit: use at most this many frames (the first ones, sorted), None for all.
        progress: show a progress bar (rich) while the calibrator reads the frames.

    Example:
        >>> reader = CalibrationFrames(builtin_calibration_dir(), spec)
        >>> quantize_int8(fp32_path, int8_path, reader)
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        spec: InputSpec,
        *,
        batch: int = 16,
        input_name: str = "image",
        limit: int | None = None,
        progress: bool = True,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.paths = list_images(source)[:limit]
        self.spec = spec
        self.batch = batch
        self.input_name = input_name
        self.progress = progress
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self) -> Iterator[np.ndarray]:
        """Model-ready float32 batches [n,3,H,W] over all frames, in order."""
        for i in range(0, len(self.paths), self.batch):
            chunk = self.paths[i : i + self.batch]
            yield prepare([load_image(p) for p in chunk], self.spec)

    def arrays(self) -> np.ndarray:
        """All frames as one float32 array; handy for sensitivity analysis and tests."""
        return np.concatenate(list(self.batches()))

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        if not self.progress:
            for x in self.batches():
                yield {self.input_name: x}
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("calibrating", total=len(self.paths))
            for x in self.batches():
                yield {self.input_name: x}
                bar.advance(task, len(x))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._feeds()
        return next(self._iter, None)

    def rewind(self) -> None:
        """Start again from the first frame (calibrators that need two passes call this)."""
        self._iter = None


class ArrayFrames(CalibrationDataReader):
    """Calibration reader over an already-preprocessed float32 array [N,3,H,W]."""

    def __init__(self, x: np.ndarray, *, batch: int = 16, input_name: str = "image") -> None:
        self.x = np.asarray(x, np.float32)
        self.batch = batch
        self.input_name = input_name
        self._i = 0

    def __len__(self) -> int:
        return len(self.x)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.x):
            return None
        out = {self.input_name: self.x[self._i : self._i + self.batch]}
        self._i += self.batch
        return out

    def rewind(self) -> None:
        self._i = 0


def build_calibration_set(
    groups: dict[str, Sequence[Path]],
    out: Path,
    *,
    short_side: int = 256,
    quality: int = 85,
    seed: int = 0,
    per_group: dict[str, int] | None = None,
) -> list[Path]:
    """Copy a small mixed sample of frames into `out`, shrunk to `short_side`, JPEG `quality`.

    `groups` maps a name (the file prefix, e.g. "camtrap-night") to candidate images; we draw
    `per_group[name]` of each at random (seeded, so the set can be rebuilt identically).
    `sources.csv` in `out` records where each frame came from. Used once to make
    `export/assets/calib/`; kept so anyone can rebuild or extend it.
    """
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sources: list[tuple[str, str]] = []
    for name, candidates in groups.items():
        n = (per_group or {}).get(name, len(candidates))
        for src in sorted(rng.sample(list(candidates), min(n, len(candidates)))):
            image = load_image(src)
            h, w = image.shape[:2]
            scale = short_side / min(h, w)
            if scale < 1:
                size = (round(w * scale), round(h * scale))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            dst = out / f"{name}_{len(written):03d}.jpg"
            ok, data = cv2.imencode(
                ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
            )
            if not ok:
                raise OSError(f"cannot encode {src}")
            dst.write_bytes(data.tobytes())
            written.append(dst)
            sources.append((dst.name, str(src)))
    with open(out / "sources.csv", "w", encoding="utf-8") as f:
        f.write("file,source\n" + "".join(f"{a},{b}\n" for a, b in sources))
    return written
