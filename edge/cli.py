"""The `edge` command: one entry point for the device and the workstation."""

from __future__ import annotations

import importlib.util
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
)
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


def main() -> None:  # pragma: no cover
    app()
