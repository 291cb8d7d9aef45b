"""The bundle: the contract between the workstation (`export/`) and the device (`edge/`).

A bundle is a folder with `manifest.json`, `classifier.onnx` and `segmenter.onnx`. The
manifest says how to feed the models, what their outputs mean, which files belong to it (with
sha256), and how the export was validated. Everything on the device reads a bundle through
:func:`load_bundle`, which refuses a bundle whose format version, files or checksums are wrong,
naming what is wrong, before any frame is touched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.hashing import file_sha256

FORMAT = "overmap-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

Target = Literal["cpu", "cuda", "jetson"]
Precision = Literal["fp32", "fp16", "int8"]
MapSource = Literal["cam", "attention"]


class BundleError(Exception):
    """A bundle that cannot be used; the message says which file and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """How a model wants its image: pixels 0..255 in `color_order`, brought to `size` (H, W),
    then `(x - mean) / std` per channel, laid out NCHW float32.

    `resize`: "stretch" (whole frame, aspect ignored: what camera-trap heads train on),
    "center_crop" (short side to size/0.875, centre crop: the ImageNet habit), or "letterbox"
    (whole frame, aspect kept, padded with the mean)."""

    size: tuple[int, int]
    color_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: Literal["stretch", "center_crop", "letterbox"] = "stretch"


class FileEntry(_Strict):
    path: str
    sha256: str
    bytes: int


class ClassifierSpec(_Strict):
    """`classifier.onnx`: input `image` [N,3,H,W] -> `logits` [N,C], `cam` [N,h,w].

    `cam` is the Grad-CAM map of the top class at `cam_layer`, before upsampling; >= 0.
    `maps`: the map sources the graph returns, each an output [N, *cam_size]: "cam" always,
    "attention" for an attention-pooling head (`head_kind` "attention", export.attention):
    where the head looks, whatever the class, its peak at 1. Over-MAP may score either.
    """

    file: FileEntry
    name: str
    input: InputSpec
    classes: list[str]
    empty_classes: list[str] = Field(default_factory=list)
    human_classes: list[str] = Field(default_factory=list)
    cam_layer: str
    cam_size: tuple[int, int]
    precision: Precision
    # a second head on the same features: output `guess` [N, len(guess_classes)], logits of a
    # finer vocabulary (the ImageNet names) shown as a species *guess* beside the category
    guess_classes: list[str] = Field(default_factory=list)
    head_kind: Literal["linear", "attention"] = "linear"
    maps: list[MapSource] = Field(default_factory=lambda: ["cam"])
    # a learned linear head (`head.npz`: weight [C,K], bias [C]) on the graph's `features`
    # [N,K] and `fmap` [N,K,h,w] outputs; when set, `classes` are the head's and the device
    # computes logits and cam from it in numpy (edge.linear_head), the graph's own ignored
    head: FileEntry | None = None
    # the first labels: the training set's pooled features (`features` [M,K], `labels` [M]
    # class names, optional `files` [M]), which `edge learn` trains on beside the answers
    train_features: FileEntry | None = None

    @field_validator("empty_classes", "human_classes")
    @classmethod
    def _known(cls, names: list[str], info: Any) -> list[str]:
        classes = info.data.get("classes") or []
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise ValueError(f"names {unknown} are not among the classes")
        return names


class SegmenterSpec(_Strict):
    """`segmenter.onnx`: input `image` [N,3,H,W] -> `foreground` [N,1,h,w], probability 0..1.

    `in_classifier`: the segmenter shares the classifier's backbone (same weights, same input)
    and `classifier.onnx` also returns `foreground`, so one backbone pass serves both; the
    device then runs the classifier alone. `segmenter.onnx` is still there, standalone.
    """

    file: FileEntry
    name: str
    input: InputSpec
    output_size: tuple[int, int]
    precision: Precision
    in_classifier: bool = False


class Manifest(_Strict):
    format: Literal["overmap-bundle"] = FORMAT
    format_version: int
    created: str
    target: Target
    providers: list[str]
    classifier: ClassifierSpec
    segmenter: SegmenterSpec
    thresholds: dict[str, float] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    calibration: dict[str, Any] = Field(default_factory=dict)
    fusion: dict[str, Any] | None = None

    @field_validator("thresholds")
    @classmethod
    def _in_range(cls, thresholds: dict[str, float]) -> dict[str, float]:
        # checked as edge.thresholds layers them, so a bundle whose `tag` is 1.5 is refused
        # when it loads, naming the key, not taken as "never tag" at the first frame
        from edge.thresholds import check_layer

        return check_layer(thresholds, keep_unknown=True)

    @field_validator("fusion")
    @classmethod
    def _usable(cls, params: dict[str, Any] | None) -> dict[str, Any] | None:
        from edge.fusion import check_fusion

        return None if params is None else check_fusion(params)

    versions: dict[str, str] = Field(default_factory=dict)


class Bundle:
    """A verified bundle on disk: its folder and its manifest."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @property
    def classifier_path(self) -> Path:
        return self.root / self.manifest.classifier.file.path

    @property
    def segmenter_path(self) -> Path:
        return self.root / self.manifest.segmenter.file.path

    @property
    def head_path(self) -> Path | None:
        """The learned head's file, None when the graph's own head is used."""
        head = self.manifest.classifier.head
        return None if head is None else self.root / head.path

    def __repr__(self) -> str:
        m = self.manifest
        return f"Bundle({str(self.root)!r}, target={m.target}, classifier={m.classifier.name})"


def file_entry(root: Path, name: str) -> FileEntry:
    """Describe `root/name` for the manifest (used by the exporter)."""
    p = root / name
    return FileEntry(path=name, sha256=file_sha256(p), bytes=p.stat().st_size)


def read_manifest(root: Path) -> Manifest:
    """Parse and validate `root/manifest.json` without touching the model files."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    if not path.is_file():
        raise BundleError(f"{path}: missing; is {root} a bundle written by `edge export`?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{path}: not an overmap bundle manifest")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r}, this edge reads version {FORMAT_VERSION};"
            " re-export the bundle with a matching `edge export`"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        raise BundleError(f"{path}: invalid manifest:\n{e}") from e


def verify_files(root: Path, manifest: Manifest) -> None:
    """Check every model file's size and sha256 against the manifest; raise naming the file."""
    c = manifest.classifier
    extras = [e for e in (c.head, c.train_features) if e is not None]
    for entry in (c.file, manifest.segmenter.file, *extras):
        p = Path(root) / entry.path
        if not p.is_file():
            raise BundleError(f"{p}: missing from the bundle")
        size = p.stat().st_size
        if size != entry.bytes:
            raise BundleError(
                f"{p}: {size} bytes, the manifest says {entry.bytes} (truncated or replaced)"
            )
        digest = file_sha256(p)
        if digest != entry.sha256:
            raise BundleError(
                f"{p}: sha256 {digest[:12]}... does not match the manifest (tampered?)"
            )


def default_bundle() -> Path:
    """$OVERMAP_BUNDLE, else the bundle shipped inside the package (`edge/default_bundle`:
    empty / animal / person / vehicle on Lite0, INT8, with an ImageNet species guess), which
    needs no building and no torch."""
    env = os.environ.get("OVERMAP_BUNDLE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "default_bundle"


def load_bundle(root: str | Path, *, verify: bool = True) -> Bundle:
    """Read and (by default) verify a bundle; raise :class:`BundleError` with a clear message."""
    root = Path(root)
    manifest = read_manifest(root)
    if verify:
        verify_files(root, manifest)
    return Bundle(root, manifest)


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write the manifest atomically (used by the exporter)."""
    path = Path(root) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
