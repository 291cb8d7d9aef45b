"""The `edge` command: one entry point for the device and the workstation."""

from __future__ import annotations

import importlib.util
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edge.bundle import BundleError

app = typer.Typer(
    name="edge",
    help="Camera-trap triage on the edge: classify frames and score each label with Over-MAP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


class Target(StrEnum):
    cpu = "cpu"
    cuda = "cuda"
    jetson = "jetson"

console = Console()
err = Console(stderr=True)


def _need_export_extra(command: str) -> None:
    """`edge export` and friends need torch; say how to get it instead of a traceback."""
    missing = [m for m in ("torch", "torchvision", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        err.print(
            f"[red]`edge {command}` needs the export extra"
            f" ({', '.join(missing)} not installed).[/]\n"
            "Install it on a workstation with:  [bold]pip install 'overmap-edge[export]'[/]"
            "  (or ./install.sh --export)"
        )
        raise typer.Exit(2)


@app.command("bundle")
def bundle_cmd(
    path: Annotated[Path, typer.Argument(help="Bundle folder written by `edge export`.")],
) -> None:
    """Show a bundle and verify its files (checksums, format version)."""
    from edge.bundle import load_bundle
    from edge.show import show_bundle

    try:
        b = load_bundle(path)
    except BundleError as e:
        err.print(f"[red]bundle refused:[/] {e}")
        raise typer.Exit(1) from None
    show_bundle(b, console)
    console.print("[green]verified:[/] format version and sha256 of every file match")


@app.command("export")
def export_cmd(
    target: Annotated[
        Target, typer.Option(help="Where the bundle runs: cpu (INT8), cuda or jetson (FP16).")
    ] = Target.cpu,
    out: Annotated[Path, typer.Option(help="Bundle folder to write (replaced atomically).")] = Path(
        "bundles/default"
    ),
    classifier: Annotated[
        str,
        typer.Option(
            help="efficientnet_lite0 (real ImageNet weights, the default), a torchvision model"
            " name with --weights, or a checkpoint written by `edge train`."
        ),
    ] = "efficientnet_lite0",
    weights: Annotated[
        Path | None, typer.Option(help="State dict for a torchvision --classifier.")
    ] = None,
    classes: Annotated[
        Path | None, typer.Option(help="Class names, one per line, in the model's order.")
    ] = None,
    segmenter: Annotated[
        str,
        typer.Option(
            help="lite0_seg (built in, trained on Oxford-IIIT Pet masks) or a torchvision"
            " segmentation model (lraspp_mobilenet_v3_large, deeplabv3_*, fcn_*) with"
            " --segmenter-weights."
        ),
    ] = "lite0_seg",
    segmenter_weights: Annotated[Path | None, typer.Option(help="State dict for it.")] = None,
    calib: Annotated[
        Path | None,
        typer.Option(help="Folder of real frames to calibrate INT8 on (default: built-in set)."),
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option(
            help="Folder of images to validate against FP32 PyTorch (labels.csv optional;"
            " default: ../shared/data/imagenet-sample)."
        ),
    ] = None,
    val_limit: Annotated[
        int | None, typer.Option(help="Validate on at most this many images.")
    ] = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="cuda/jetson: INT8 QDQ for TensorRT instead of FP16.")
    ] = False,
    min_agreement: Annotated[
        float, typer.Option(help="Refuse the bundle under this top-1 agreement with FP32.")
    ] = 0.97,
    force: Annotated[
        bool, typer.Option("--force", help="Write the bundle even when validation fails.")
    ] = False,
) -> None:
    """Turn a PyTorch classifier and segmenter into a quantized bundle for the device.

    The classifier's graph also returns its Grad-CAM map (`cam`), so the device scores
    Over-MAP without a backward pass. Every export is validated against the FP32 PyTorch
    original on real images; the figures go into the bundle's manifest.

    Example: `edge export --target jetson --out bundles/jetson`
    """
    _need_export_extra("export")
    from export.pipeline import ExportOptions, ExportRefused, run_export

    opts = ExportOptions(
        target=target.value, out=out, classifier=classifier, weights=weights, classes=classes,
        segmenter=segmenter, segmenter_weights=segmenter_weights, calib=calib, val=val,
        val_limit=val_limit, int8=int8, min_agreement=min_agreement, force=force,
    )  # fmt: skip
    try:
        path = run_export(opts, err)
    except ExportRefused as e:
        err.print(f"[red]export refused:[/] {e}")
        raise typer.Exit(1) from None
    except (FileNotFoundError, ValueError, BundleError) as e:
        err.print(f"[red]export failed:[/] {e}")
        raise typer.Exit(2) from None
    from edge.bundle import load_bundle
    from edge.show import show_bundle

    show_bundle(load_bundle(path), console)
    console.print(f"[green]bundle written:[/] {path}")


def main() -> None:  # pragma: no cover
    app()
