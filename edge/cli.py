"""The `edge` command: one entry point for the device and the workstation."""

from __future__ import annotations

import importlib.util
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from edge.bundle import BundleError, default_bundle

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
err = Console(stderr=True, soft_wrap=True)  # never break a path in an error


def _need_export_extra(command: str) -> None:
    """`edge export` and friends need torch; say how to get it instead of a traceback."""
    missing = [m for m in ("torch", "torchvision", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        err.print(
            f"[red]`edge {command}` needs the export extra"
            f" ({', '.join(missing)} not installed).[/]\n"
            "Install it on a workstation with:  [bold]pip install 'overmap-edge\\[export]'[/]"
            "  (or ./install.sh, which installs it by default)"
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
        err.print(f"[red]bundle refused:[/] {escape(str(e))}")
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
        target=target.value,
        out=out,
        classifier=classifier,
        weights=weights,
        classes=classes,
        segmenter=segmenter,
        segmenter_weights=segmenter_weights,
        calib=calib,
        val=val,
        val_limit=val_limit,
        int8=int8,
        min_agreement=min_agreement,
        force=force,
    )
    try:
        path = run_export(opts, err)
    except ExportRefused as e:
        err.print(f"[red]export refused:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    except (FileNotFoundError, ValueError, BundleError) as e:
        err.print(f"[red]export failed:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    from edge.bundle import load_bundle
    from edge.show import show_bundle

    show_bundle(load_bundle(path), console)
    console.print(f"[green]bundle written:[/] {path}")


def _load_config_or_exit(path: Path | None):
    """The validated config (defaults when no file is given), or a clear message and exit 2."""
    from edge.config import Config, ConfigError, load_config

    try:
        return load_config(path) if path else Config()
    except ConfigError as e:
        err.print(f"[red]config:[/] {escape(str(e))}")
        raise typer.Exit(2) from None


def _load_bundle_or_exit(path: Path):
    from edge.bundle import load_bundle

    try:
        return load_bundle(path)
    except BundleError as e:
        err.print(f"[red]bundle refused:[/] {escape(str(e))}")
        raise typer.Exit(1) from None


MapOpt = Annotated[
    str | None,
    typer.Option(
        "--map",
        help="The map Over-MAP scores: cam (Grad-CAM) or attention (bundles with an attention "
        "head; default: the config's, else cam).",
        show_default=False,
    ),
]


def _map_or_exit(bundle, source: str) -> None:
    """A map source the bundle does not return, named at start, exit 2."""
    from edge.scorer import MapSourceError, check_map_source

    try:
        check_map_source(bundle.manifest, source)
    except MapSourceError as e:
        err.print(f"[red]--map:[/] {escape(str(e))}")
        raise typer.Exit(2) from None


@app.command("watch")
def watch_cmd(
    inbox: Annotated[
        Path | None,
        typer.Argument(
            help="Folder the camera's frames land in (default: the config's).", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where frames are sorted into empty/, tagged/, review/, quarantine/"
            " (default: INBOX/sorted). The journal and results live here too."
        ),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Bundle folder (default: $OVERMAP_BUNDLE or the built-in).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config (see examples/edge.toml).")
    ] = None,
    copy: Annotated[
        bool | None,
        typer.Option(
            "--copy/--no-copy",
            show_default=False,
            help="Copy frames, leave the originals in place (default: the config's, else move).",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Handle what is there now, then exit.")
    ] = False,
    polling: Annotated[
        bool | None,
        typer.Option(
            "--polling/--no-polling",
            help="Force polling (SD cards, FUSE, network mounts) or events.",
        ),
    ] = None,
    tag: Annotated[float | None, typer.Option(help="Fused confidence to tag a frame.")] = None,
    empty: Annotated[
        float | None, typer.Option(help="Empty-class probability to set a frame aside.")
    ] = None,
    empty_foreground: Annotated[
        float | None, typer.Option(help="Largest foreground share an empty frame may have.")
    ] = None,
    batch: Annotated[int | None, typer.Option(min=1, help="Frames per model run.")] = None,
    settle: Annotated[
        float | None, typer.Option(min=0, help="Seconds a file's size must hold still.")
    ] = None,
    providers: Annotated[
        str | None, typer.Option(help="Execution providers in order, e.g. trt,cuda,cpu.")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, help="CPU threads for inference (default: all cores but one, left to decoding)."
        ),
    ] = None,
    tui: Annotated[bool, typer.Option(help="Live dashboard (off: log lines).")] = True,
    delete_empty_after: Annotated[
        float | None,
        typer.Option(help="Delete frames sorted as empty after this many days (off by default)."),
    ] = None,
    learn_every: Annotated[
        int | None,
        typer.Option(
            help="Live: learn from the review page's answers after every N new ones (as `edge "
            "learn`), taking the new bundle only when it does better (0: never; default: "
            "the config's, else 0).",
            min=0,
            show_default=False,
        ),
    ] = None,
    map_source: MapOpt = None,
) -> None:
    """Sort every frame that lands in INBOX: empty, tagged, or kept for review.

    Each frame is classified, its label scored with Over-MAP (does the classifier look where
    the animal is?) and a fused confidence; a journal in OUT makes every frame handled exactly
    once, across crashes and restarts. Ctrl-C stops cleanly.

    Example: `edge watch /mnt/camera --out /data/sorted`
    """
    from edge.config import ConfigError, resolve_thresholds
    from edge.learn import learn_paths
    from edge.sink import unwritable
    from edge.watch import WatchOptions

    if delete_empty_after is not None and not delete_empty_after > 0:
        err.print(
            "[red]--delete-empty-after:[/] a positive number of days, how long empties "
            "are kept before they are deleted"
        )
        raise typer.Exit(2)
    cfg = _load_config_or_exit(config)
    inbox = inbox or cfg.watch.inbox
    if inbox is None:
        err.print("[red]which folder?[/] give INBOX, or \\[watch] inbox in --config")
        raise typer.Exit(2)
    if inbox.exists() and not inbox.is_dir():
        err.print(
            f"[red]{escape(str(inbox))} is a file, not a folder:[/] INBOX is the folder "
            "the camera's frames land in (its parent, "
            f"{escape(str(inbox.parent))}, perhaps?)"
        )
        raise typer.Exit(2)
    if not inbox.is_dir():
        err.print(f"[red]{inbox}: no such folder[/] (is the card mounted?)")
        raise typer.Exit(2)
    # the camera's own bundle, once `edge learn` has installed one in OUT, beats the default
    # the camera's own bundle once `edge learn` installed one in OUT, else the default; the
    # watcher follows where learning installs (OUT/bundle unless a bundle of the user's is named)
    source, follow = learn_paths(
        out or cfg.watch.out or inbox / "sorted", bundle or cfg.runtime.bundle
    )
    b = _load_bundle_or_exit(source)
    provider_list = None
    if providers:
        from edge.providers import ProviderError, parse_providers

        try:
            provider_list = parse_providers(providers)
        except ProviderError as e:
            err.print(f"[red]--providers:[/] {escape(str(e))}")
            raise typer.Exit(2) from None
    try:  # the flags laid over the config file, the one way they override it
        cfg = cfg.with_flags(
            {
                "copy": copy,
                "polling": polling,
                "settle": settle,
                "batch": batch,
                "providers": provider_list,
                "threads": threads,
                "learn_every": learn_every,
                "delete_empty_after": delete_empty_after,
                "tag": tag,
                "empty": empty,
                "empty_foreground": empty_foreground,
                "map": map_source,
            }
        )
        thresholds = resolve_thresholds(b.manifest.thresholds, cfg, {})
        overrides = resolve_thresholds({}, cfg, {})  # what outlasts a bundle swapped in
    except ConfigError as e:
        err.print(f"[red]{escape(str(e))}[/]")
        raise typer.Exit(2) from None
    _map_or_exit(b, cfg.runtime.map)
    opts = WatchOptions(
        inbox.resolve(),
        (out or cfg.watch.out or inbox / "sorted").resolve(),
        thresholds,
        config=cfg,
        threshold_overrides=overrides,
        follow=follow.resolve(),
        learn_from=b.root,
    )
    denied = unwritable(opts.out)
    if denied is not None:
        err.print(
            f"[red]permission denied:[/] cannot write {escape(str(denied))}"
            " (give --out a folder this user may write, or fix its owner or mode)"
        )
        raise typer.Exit(2)
    from edge.watch import watch

    try:
        code = watch(b, opts, once=once, tui=tui, console=console)
    except PermissionError as e:  # what the check above cannot foresee (a mode changed since)
        err.print(f"[red]permission denied:[/] {escape(str(e.filename or e))}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


class HeadKind(StrEnum):
    linear = "linear"
    attention = "attention"


class Links(StrEnum):
    hard = "hard"
    sym = "sym"


@app.command("batch")
def batch_cmd(
    source: Annotated[
        Path,
        typer.Argument(
            help="A folder tree (one subfolder per camera) or a list file of frame paths."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where shards, results (and copies) are written.")],
    address: Annotated[
        str | None,
        typer.Option(help="A Ray cluster's address (default: a Ray started on this machine)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Actors, one model session each.")] = 1,
    bundle: Annotated[
        Path | None, typer.Option(help="Bundle folder (default: $OVERMAP_BUNDLE or the built-in).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config: thresholds and bursts as for `edge watch`.")
    ] = None,
    camtrap_dp: Annotated[
        Path | None,
        typer.Option(
            "--camtrap-dp", help="Also write OUT/camtrap-dp, with this config's [deployment]."
        ),
    ] = None,
    sorted_copy: Annotated[
        bool,
        typer.Option(
            "--sorted-copy", help="Copy frames into OUT/{empty,tagged,review,quarantine}/."
        ),
    ] = False,
    links: Annotated[
        Links | None, typer.Option(help="Hard or symbolic links there instead of copies.")
    ] = None,
    chunk: Annotated[int, typer.Option(min=1, help="Frames per chunk (one shard each).")] = 256,
    gpus: Annotated[
        bool | None,
        typer.Option(
            "--gpus/--no-gpus",
            show_default=False,
            help="One GPU per actor (default: where the cluster has enough).",
        ),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            min=1, help="ONNX Runtime CPU threads per actor (each reserves as many CPUs)."
        ),
    ] = 1,
) -> None:
    """Classify, score and triage a whole archive on a Ray cluster, resumably.

    Frames are decoded in Ray tasks and scored by a pool of actors exactly as `edge watch`
    scores them (each camera in capture order); each chunk's results are a shard in OUT, so a
    rerun skips what is done. The originals are never moved. Needs the batch extra.

    Example: `edge batch /archive --out /data/batch --address ray-head:6379 --workers 8`
    """
    if importlib.util.find_spec("ray") is None:
        err.print(
            "[red]`edge batch` needs the batch extra (ray not installed).[/]\n"
            "Install it with:  [bold]pip install 'overmap-edge\\[batch]'[/]"
        )
        raise typer.Exit(2)
    if sorted_copy and links:
        err.print("[red]--sorted-copy or --links, not both[/]")
        raise typer.Exit(2)
    from edge.config import ConfigError, resolve_thresholds

    cfg = _load_config_or_exit(config)
    if camtrap_dp is not None:
        _load_config_or_exit(camtrap_dp)
    b = _load_bundle_or_exit(bundle or cfg.runtime.bundle or default_bundle())
    try:
        thresholds = resolve_thresholds(b.manifest.thresholds, cfg, {})
    except ConfigError as e:
        err.print(f"[red]{escape(str(e))}[/]")
        raise typer.Exit(2) from None
    from edge.batch.listing import ListingError
    from edge.batch.pipeline import BatchOptions, run_batch
    from edge.camtrapdp import CamtrapDPError

    opts = BatchOptions(
        source=source,
        out=out,
        bundle=b.root,
        thresholds=thresholds,
        address=address,
        workers=workers,
        chunk_frames=chunk,
        burst_gap=cfg.triage.burst_gap_seconds,
        burst_frames=cfg.triage.burst_max_frames,
        gpus=gpus,
        threads=threads,
        place="copy" if sorted_copy else (links.value if links else None),
        camtrap_config=camtrap_dp,
        providers=cfg.runtime.providers,
        log=lambda s: err.print(escape(s)),
    )
    from ray.exceptions import RayError

    try:
        report = run_batch(opts)
    except (ListingError, CamtrapDPError) as e:
        err.print(f"[red]edge batch:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    except OSError as e:  # OUT unwritable, full, or hard links asked across filesystems
        err.print(
            f"[red]edge batch stopped:[/] {escape(str(e))}\nThe chunks finished so far "
            "are kept in OUT; run again once this is fixed."
        )
        raise typer.Exit(1) from None
    except RayError as e:  # a chunk failed past Ray's retries, a node lost, ...
        err.print(
            f"[red]edge batch stopped:[/] {escape(str(e).splitlines()[0])}\nThe "
            "chunks finished so far are kept in OUT; run the same command again."
        )
        raise typer.Exit(1) from None
    console.print(
        f"{report.frames} frames ({report.failures} unreadable) in {report.chunks} "
        f"chunks, {report.chunks_done_before} done before this run, "
        f"{report.seconds:.1f} s"
    )
    console.print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in report.phases.items()))
    for path in report.results:
        console.print(f"results: {path}", soft_wrap=True)
    if report.camtrap is not None:
        console.print(f"package: {report.camtrap.folder}", soft_wrap=True)
    if report.missing:
        err.print(f"[red]{len(report.missing)} frame(s) have no results yet[/]; run again")
        raise typer.Exit(1)


def _reader_journal(out: Path):
    """OUT's journal for a command that only reads it: never created (a mistyped OUT would
    get an empty one); where there is none, a clear message and exit 2."""
    from edge.journal import Journal, JournalMissingError

    try:
        return Journal.open(out, create=False)
    except JournalMissingError as e:
        err.print(f"[red]{escape(str(e))}[/]")
        raise typer.Exit(2) from None


@app.command("summary")
def summary_cmd(
    out: Annotated[Path, typer.Argument(help="The OUT folder of `edge watch`.")],
) -> None:
    """What the camera saw: decisions per camera and per day, and the species."""
    from edge.journal import JournalError
    from edge.reports import print_summary

    try:
        with _reader_journal(out) as j:
            print_summary(j, console)
    except JournalError as e:
        err.print(f"[red]journal:[/] {escape(str(e))}")
        raise typer.Exit(1) from None


def _rows(spec: str | None) -> tuple[int, int | None]:
    """'900:1300' -> (900, 1300); '900:' -> (900, None); None -> (0, None)."""
    if not spec:
        return 0, None
    try:
        a, _, b = spec.partition(":")
        return int(a or 0), int(b) if b else None
    except ValueError:
        err.print(f"[red]--rows must look like START:END (e.g. 900:1300), not {spec!r}[/]")
        raise typer.Exit(2) from None


LabelsArg = Annotated[Path, typer.Argument(help="CSV with at least `file,label` columns.")]
ImagesRoot = Annotated[
    Path | None, typer.Option(help="Folder the `file` paths are relative to (default: CSV's).")
]
SourceOpt = Annotated[str | None, typer.Option(help="Only rows whose `source` column is this.")]


@app.command("train")
def train_cmd(
    labels: LabelsArg,
    out: Annotated[Path, typer.Option(help="Checkpoint to write, for `edge export --classifier`.")],
    images_root: ImagesRoot = None,
    source: SourceOpt = None,
    rows: Annotated[
        str | None, typer.Option(help="Row range START:END after filtering (e.g. 0:900).")
    ] = None,
    min_count: Annotated[int, typer.Option(help="Rarer classes are merged into 'other'.")] = 3,
    head: Annotated[
        HeadKind,
        typer.Option(
            help="linear: logistic regression on the pooled features; attention: an "
            "attention-pooling head whose attention map Over-MAP can score (--map attention)."
        ),
    ] = HeadKind.linear,
    maps: Annotated[int, typer.Option(min=1, help="Attention maps of the attention head.")] = 4,
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs of the attention head (early stopping).")
    ] = 100,
    compare_linear: Annotated[
        bool,
        typer.Option(
            "--compare-linear",
            help="With --head attention: also fit the linear head on the same folds (to compare).",
        ),
    ] = False,
) -> None:
    """Fit a camera-specific species head (with an "empty" class) on the frozen Lite0 backbone.

    Example: `edge train labels.csv --source mlwic_examples --rows 0:600 --out cam.pt`, then
    `edge export --classifier cam.pt --val DIR`.
    """
    _need_export_extra("train")
    _labels_or_exit(labels)
    from export.train_head import train_command

    first, last = _rows(rows)
    try:
        train_command(
            labels,
            out,
            images_root=images_root,
            first=first,
            last=last,
            source=source,
            min_count=min_count,
            head=HeadKind(head).value,
            maps=maps,
            epochs=epochs,
            compare_linear=compare_linear,
        )
    except (FileNotFoundError, ValueError) as e:
        err.print(f"[red]train failed:[/] {escape(str(e))}")
        raise typer.Exit(2) from None


def _labels_or_exit(labels: Path) -> None:
    """A labels CSV that is not there (or is a folder) named plainly, exit 2."""
    if labels.is_dir():
        err.print(
            f"[red]{escape(str(labels))}: a folder, not a CSV file[/] (one with at least "
            "`file,label` columns)"
        )
        raise typer.Exit(2)
    if not labels.exists():
        err.print(
            f"[red]{escape(str(labels))}: no such file[/] (the CSV with at least "
            "`file,label` columns)"
        )
        raise typer.Exit(2)


def _evaluate_frames(
    labels, bundle, images_root, source, rows, masks, boxes, background, map_source=None
):
    from rich.progress import Progress

    from edge.evaluate import read_rows, run_frames

    _labels_or_exit(labels)  # before the bundle: the likelier mistake, and a cheap one to name
    b = _load_bundle_or_exit(bundle or default_bundle())
    try:
        table = read_rows(
            labels, images_root=images_root, source=source, masks_column=masks, boxes_column=boxes
        )
    except OSError as e:  # a bare "[Errno 13]" says nothing of which file
        err.print(f"[red]{escape(str(e.filename or labels))}: {escape(e.strerror or str(e))}[/]")
        raise typer.Exit(2) from None
    except ValueError as e:
        err.print(f"[red]{escape(str(e))}[/]")
        raise typer.Exit(2) from None
    start, end = _rows(rows)
    table = table[:end] if end is not None else table
    with Progress(console=err) as bar:
        task = bar.add_task("scoring", total=len(table) - start)
        report = run_frames(
            table,
            b,
            start=start,
            background=background,
            progress=lambda done, total: bar.update(task, completed=done),
            map_source=map_source,
        )
    if report["labels_not_in_bundle"]:
        unknown = escape(str(report["labels_not_in_bundle"]))
        err.print(f"[yellow]labels the bundle cannot predict:[/] {unknown}")
    return b, report


class MapChoice(StrEnum):
    cam = "cam"
    attention = "attention"
    both = "both"


def _overlap_tables(report: dict) -> None:
    """The overlap-accuracy curves as rich tables: one per map, all frames beside animal
    predictions, a row per Over-MAP decile; the trend under each."""
    from rich.table import Table

    curves, trends = report["overlap_accuracy"], report["overlap_trend"]
    if "all" in curves:  # one map
        name = report.get("map_source") or "cam"
        curves, trends = {name: curves}, {name: trends}

    def cell(b: dict) -> tuple[str, str, str]:
        if not b["count"]:
            return f"{b['lower']:.3f}-{b['upper']:.3f}", "0", "-"
        return (
            f"{b['lower']:.3f}-{b['upper']:.3f}",
            f"{b['correct']}/{b['count']}",
            f"{b['accuracy']:.2f} [{b['low']:.2f}, {b['high']:.2f}]",
        )

    for m, by_subset in curves.items():
        t = Table(title=f"accuracy by Over-MAP decile (map {m})")
        t.add_column("bin", justify="right")
        for subset in by_subset:
            t.add_column(f"{subset}: Over-MAP", justify="right")
            t.add_column("right", justify="right")
            t.add_column("accuracy [95 %]", justify="right")
        for k in range(max(len(v) for v in by_subset.values())):
            row = [str(k + 1)]
            for bins in by_subset.values():
                row += cell(bins[k]) if k < len(bins) else ("", "", "")
            t.add_row(*row)
        console.print(t)
        for subset, tr in trends[m].items():
            console.print(
                f"  {subset}: Spearman (bin centre vs accuracy, {tr['bins']} bins) "
                f"{tr['spearman']:.2f}; top minus bottom bin {tr['top_minus_bottom']:+.3f} "
                f"[{tr['low']:+.3f}, {tr['high']:+.3f}]"
            )


@app.command("evaluate")
def evaluate_cmd(
    labels: LabelsArg,
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder.")] = None,
    images_root: ImagesRoot = None,
    source: SourceOpt = None,
    rows: Annotated[
        str | None,
        typer.Option(help="Score rows START:END (in order); earlier rows warm the background."),
    ] = None,
    masks: Annotated[
        str | None, typer.Option(help="Column with a mask file per frame (1 = animal).")
    ] = None,
    boxes: Annotated[
        str | None, typer.Option(help="Column with boxes x,y,w,h (normalised; ';' between).")
    ] = None,
    background: Annotated[bool, typer.Option(help="Use the per-camera background model.")] = True,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every figure here.")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(help="Folder for risk-coverage, reliability and overlap-accuracy PNGs."),
    ] = None,
    map_source: Annotated[
        MapChoice | None,
        typer.Option(
            "--map",
            help="The map Over-MAP scores: cam, attention (a bundle with an attention head) or "
            "both, side by side (default: cam).",
        ),
    ] = None,
) -> None:
    """How well does each confidence tell right labels from wrong ones, on labelled frames?

    Side by side: max softmax, entropy, MC dropout on the head, Over-MAP and the fused
    confidence: AUROC, AURC, E-AURC, FPR at 95 % TPR, ECE, and the share of the classifier's
    errors caught at review budgets of 10 % and 20 % of frames. Then the overlap-accuracy
    curve: accuracy per Over-MAP decile (all frames, animal predictions), with 95 % intervals.
    """
    from rich.table import Table

    from edge.evaluate import TABLE_COLUMNS, figures, overlap_curves, side_by_side, write_json
    from edge.evaluate import plots as make_plots

    # both: the attention map first, so a bundle without one stops before the long cam run
    if map_source == MapChoice.both:
        maps: list[str | None] = ["attention", "cam"]
    else:
        maps = [None if map_source is None else str(map_source)]
    by_map = {}
    for m in maps:
        try:
            b, r = _evaluate_frames(
                labels, bundle, images_root, source, rows, masks, boxes, background, m
            )
        except ValueError as e:  # a map the bundle does not return (edge.scorer)
            err.print(f"[red]{escape(str(e))}[/]")
            raise typer.Exit(2) from None
        r.update(figures=figures(r["frames"]), **overlap_curves(r["frames"], r["empty_classes"]))
        by_map[m or "cam"] = r
    if len(by_map) > 1:
        by_map = {m: by_map[m] for m in ("cam", "attention")}
        report = side_by_side(by_map)
    else:
        (report,) = by_map.values()
    fig = report["figures"]
    report.update(
        bundle=str(b.root),
        labels=str(labels),
        rows=rows,
        source=source,
        masks=masks or boxes or "model",
    )
    t = Table(title=f"{fig['n']} frames, accuracy {fig['accuracy']:.1%}, {fig['errors']} errors")
    cols = TABLE_COLUMNS
    t.add_column("confidence")
    for c in cols:
        t.add_column(c.replace("review_capture_", "caught@"), justify="right")
    for name, row in fig["confidences"].items():
        t.add_row(name, *(f"{row[c]:.3f}" for c in cols))
    console.print(t)
    cost = report["cost"]
    console.print(
        f"forward pass {cost['forward_ms_per_frame']:.1f} ms/frame; MC dropout adds "
        f"{cost['mc_dropout_extra_ms_per_frame'] or float('nan'):.2f} ms/frame "
        f"({cost['mc_dropout']})"
    )
    _overlap_tables(report)
    if plots and fig["n"]:
        for m, r in by_map.items():
            folder = plots / m if len(by_map) > 1 else plots
            for p in make_plots(r["frames"], folder, empty_classes=r["empty_classes"]):
                console.print(f"plot: {p}")
        if len(by_map) > 1:  # every curve of both maps on one plot
            from edge.metrics import plot_overlap_accuracy

            curves = {
                f"{m}, {k}": c for m, r in by_map.items() for k, c in r["overlap_accuracy"].items()
            }
            console.print(f"plot: {plot_overlap_accuracy(curves, plots / 'overlap_accuracy.png')}")
    if json_out:
        console.print(f"json: {write_json(json_out, report)}")


@app.command("calibrate")
def calibrate_cmd(
    labels: LabelsArg,
    bundle: Annotated[
        Path | None, typer.Option(help="Bundle folder (its manifest is updated).")
    ] = None,
    images_root: ImagesRoot = None,
    source: SourceOpt = None,
    rows: Annotated[str | None, typer.Option(help="Fit on rows START:END.")] = None,
    masks: Annotated[str | None, typer.Option(help="Column with mask files.")] = None,
    method: Annotated[str, typer.Option(help="logistic or isotonic.")] = "logistic",
    background: Annotated[bool, typer.Option(help="Use the per-camera background model.")] = True,
) -> None:
    """Fit the fused confidence (softmax + Over-MAP + foreground) on labelled frames and store
    it in the bundle. Use frames the classifier was not trained on."""
    from edge.evaluate import calibrate

    b, report = _evaluate_frames(labels, bundle, images_root, source, rows, masks, None, background)
    try:
        params = calibrate(report["frames"], b, method=method)
    except ValueError as e:
        err.print(f"[red]calibrate failed:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    cv = params.get("cv") or {}
    console.print(
        f"fusion stored in {b.root / 'manifest.json'}: chosen {params['chosen']}, "
        f"cross-validated AUROC fusion {cv.get('fusion_auroc', float('nan')):.3f} vs "
        f"softmax {cv.get('softmax_auroc', float('nan')):.3f}"
    )


service_app = typer.Typer(
    help="Run the watcher as a systemd service (start at boot, restart).", no_args_is_help=True
)
app.add_typer(service_app, name="service")


@service_app.command("install")
def service_install_cmd(
    config: Annotated[Path, typer.Option(help="The watcher's TOML config (inbox, out, bundle).")],
    user: Annotated[str, typer.Option(help="Run the watcher as this user.")] = "root",
    unit_path: Annotated[Path, typer.Option(help="Where to write the unit.")] = Path(
        "/etc/systemd/system/overmap-edge.service"
    ),
    network: Annotated[bool, typer.Option(help="Wait for the network (inbox on a share).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a different unit.")] = False,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the unit instead of writing it.")
    ] = False,
) -> None:
    """Write a systemd unit that runs `edge watch --config CONFIG --no-tui` at boot."""
    import shutil
    import sys

    from edge.service import ServiceError, install_unit, next_steps, systemd_unit

    cfg = _load_config_or_exit(config)
    if cfg.watch.inbox is None:
        err.print(f"[red]{config}: \\[watch] inbox is needed for a service[/]")
        raise typer.Exit(2)
    exe = shutil.which("edge") or str(Path(sys.argv[0]).resolve())
    cfg_path = config.resolve()
    try:
        text = systemd_unit(
            exe,
            ["watch", "--config", str(cfg_path), "--no-tui"],
            user=user,
            workdir=cfg_path.parent,
            providers=cfg.runtime.providers,
            network=network,
        )
        if print_only:
            typer.echo(text, nl=False)
            return
        path = install_unit(unit_path, text, force=force)
    except ServiceError as e:
        err.print(f"[red]service:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    console.print(f"unit written: {path}\nthen run:")
    for step in next_steps(path):
        console.print(f"  {step}")


@app.command("export-dp")
def export_dp_cmd(
    out: Annotated[Path, typer.Argument(help="The OUT folder of `edge watch`.")],
    config: Annotated[Path, typer.Option(help="TOML config with [deployment] and [project].")],
    bundle: Annotated[
        Path | None, typer.Option(help="The bundle the frames were sorted with.")
    ] = None,
    folder: Annotated[
        Path | None, typer.Option(help="Where to write the package (default: OUT/camtrap-dp).")
    ] = None,
) -> None:
    """Write a Camtrap DP 1.0 data package (deployments, media, observations) from the journal."""
    from edge.camtrapdp import CamtrapDPError, write_camtrap_dp
    from edge.journal import JournalError
    from edge.reports import records
    from edge.results import BundleInfo

    cfg = _load_config_or_exit(config)
    try:
        with _reader_journal(out) as j:
            frames = records(j)
    except JournalError as e:
        err.print(f"[red]journal:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    b = _load_bundle_or_exit(bundle or cfg.runtime.bundle or default_bundle())
    try:
        report = write_camtrap_dp(
            folder or out / "camtrap-dp",
            frames,
            cfg,
            bundle_info=BundleInfo.from_manifest(b.manifest),
            paths="dest",
        )
    except CamtrapDPError as e:
        err.print(f"[red]Camtrap DP:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    console.print(
        f"package: {report.folder} ({report.deployments} deployments, {report.media} "
        f"media, {report.observations} observations; {len(report.skipped)} skipped)"
    )


@app.command("review")
def review_cmd(
    out: Annotated[Path, typer.Argument(help="The OUT folder of `edge watch`.")],
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (default 127.0.0.1: this machine only; any other needs "
            "the token)."
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 8321).")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Access token (default: the config's; made up and printed beyond localhost)."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config ([review], [triage]).")] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="The bundle the frames were sorted with: its labels, and the results file."
        ),
    ] = None,
) -> None:
    """The review queue as a local web page: answer doubtful frames with the keyboard.

    Keys: a accept, l another label, e empty, p person, v vehicle, s or arrows to move;
    Shift + key answers the whole burst. Answers go into the journal and move the frame
    from OUT/review to OUT/tagged or OUT/empty, once.
    """
    from edge.journal import JournalError
    from edge.review.server import address, serve

    if not (out / "journal.sqlite").is_file():
        err.print(f"[red]{out}: no journal.sqlite here[/] (the OUT folder of `edge watch`?)")
        raise typer.Exit(2)
    if token is not None and len(token) < 16:
        err.print("[red]--token:[/] at least 16 characters")
        raise typer.Exit(2)
    cfg = _load_config_or_exit(config)
    try:
        serve(
            out,
            cfg,
            address(cfg, host, port, token),
            bundle or cfg.runtime.bundle or default_bundle(),
            lambda text: console.print(escape(text), soft_wrap=True),
        )  # URL unbroken
    except JournalError as e:
        err.print(f"[red]journal:[/] {escape(str(e))}")
        raise typer.Exit(1) from None


@app.command("overlays")
def overlays_cmd(
    out: Annotated[Path, typer.Argument(help="The OUT folder of `edge watch`.")],
) -> None:
    """Draw the review overlays not drawn yet (the watcher keeps what they need in the
    journal; the page draws each when it is first looked at): every frame waiting for review."""
    from edge.journal import JournalError
    from edge.overlay import ensure_overlay
    from edge.paths import resolve_inside
    from edge.review.queue import OVERLAYS, waiting

    root = out.resolve()
    try:
        with _reader_journal(out) as j:
            todo = [
                f
                for f in waiting(j, root)
                if f.has_overlay_data
                and not (f.overlay and resolve_inside(root, f.overlay, under=(OVERLAYS,)))
            ]
            drawn = sum(ensure_overlay(j, root, f) is not None for f in todo)
    except JournalError as e:
        err.print(f"[red]journal:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    console.print(f"{drawn} overlay(s) drawn in {escape(str(out / OVERLAYS))}", soft_wrap=True)
    if drawn < len(todo):
        err.print(
            f"[red]{len(todo) - drawn} overlay(s) not drawn[/] (frame unreadable, corrupt "
            "data or no space left: see the warnings above)"
        )
        raise typer.Exit(1)


@app.command("learn")
def learn_cmd(
    out: Annotated[Path, typer.Argument(help="The OUT folder of `edge watch` (its answers).")],
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="The bundle to learn from and replace (default: OUT/bundle once learned, else "
            "the default bundle, whose learned copy goes to OUT/bundle)."
        ),
    ] = None,
    every: Annotated[
        int, typer.Option(min=0, help="Learn only once this many answers came since the last step.")
    ] = 0,
    target_error: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Wrong labels allowed among auto-tagged frames.")
    ] = 0.02,
) -> None:
    """Learn a new head from the review page's answers; install it only if it does better.

    The answers' frames are run once through the bundle (features cached in OUT/learn), a
    head is fitted in seconds on the frozen backbone's features, its confidence calibrated
    and its `tag` threshold set for --target-error, and it is compared with the current
    bundle on the latest answers, which neither has seen. A better bundle replaces the old
    one in one step (the old one kept as BUNDLE.prev); every decision goes to
    OUT/learn/log.jsonl. A running `edge watch` on that bundle takes the new one between
    batches; a new one finds OUT/bundle without --bundle.
    """
    from edge.learn import learn_paths, run_learn

    if not (out / "journal.sqlite").is_file():
        err.print(f"[red]{out}: no journal.sqlite here[/] (the OUT folder of `edge watch`?)")
        raise typer.Exit(2)
    source, target = learn_paths(out, bundle)
    _load_bundle_or_exit(source)
    try:
        entry = run_learn(out, source, target=target, target_error=target_error, every=every)
    except (RuntimeError, ValueError) as e:
        err.print(f"[red]learn failed:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    if entry.get("installed"):
        new, old = entry["candidate"], entry["current"]
        kept = f"previous kept at {entry['previous']}" if entry["previous"] else "the first"
        cal = entry["calibration"]
        console.print(
            f"[green]installed[/] {escape(entry['installed'])} ({escape(kept)}): on "
            f"{new['frames']} held-back answers {new['reviewed']} reviews and "
            f"{new['wrong_auto']} wrong, against {old['reviewed']} and "
            f"{old['wrong_auto']}; thresholds tag {cal['tag']:.3f}, empty "
            f"{cal['empty'] if cal['empty'] is None else round(cal['empty'], 3)}"
        )
    else:
        console.print(
            f"not installed: {escape(str(entry.get('reason')))} "
            f"({entry.get('answers_total', entry.get('answers', 0))} answers)"
        )


@app.command("simulate")
def simulate_cmd(
    labels: LabelsArg,
    images_root: Annotated[Path, typer.Option(help="Folder the CSV's `file` paths are in.")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the report here.")],
    target_error: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Wrong labels allowed among auto-tagged frames.")
    ] = 0.02,
    every: Annotated[int, typer.Option(min=0, help="Learn every N answers (0: never).")] = 50,
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder.")] = None,
    source: SourceOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="The first N frames only.")] = None,
    leave_stream_out: Annotated[
        bool,
        typer.Option(
            help="Refit the starting head without the stream's own frames when the bundle's "
            "first labels hold them (a camera it has never seen)."
        ),
    ] = True,
) -> None:
    """Replay a labelled stream in order through the watcher's decisions, a reviewer answering
    every review frame with the CSV's label and the bundle learning every N answers.

    Reports the share of frames reviewed, the wrong labels left among the others, and the
    animals set aside as empty, beside reviewing everything and a fixed softmax threshold.
    Example: `edge simulate labels.csv --images-root DIR --source mlwic_examples --json s.json`
    """
    from rich.progress import Progress
    from rich.table import Table

    from edge.simulate import simulate, write_report

    b = _load_bundle_or_exit(bundle or default_bundle())
    try:
        with Progress(console=err) as bar:
            task = bar.add_task("replaying", total=None)
            report = simulate(
                labels,
                images_root,
                b.root,
                target_error=target_error,
                every=every,
                source=source,
                limit=limit,
                leave_stream_out=leave_stream_out,
                progress=lambda d, n: bar.update(task, completed=d, total=n),
            )
    except (OSError, RuntimeError, ValueError) as e:
        err.print(f"[red]simulate failed:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    write_report(json_out, report)
    t = Table(title=f"{report['n_frames']} frames, target error {target_error:.1%}")
    for col in ("policy", "reviewed", "residual error", "empty lost"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    rows = {f"learning every {every} answers": report, **report["baselines"]}
    for name, r in rows.items():
        t.add_row(
            name,
            f"{r['reviewed_share']:.1%}",
            f"{r['residual_error']:.2%}",
            f"{r['empty_lost']:.2%}",
        )
    console.print(t)
    quarters = ", ".join(f"{q:.1%}" for q in report["reviewed_by_quarter"])
    console.print(f"reviewed in each quarter of the stream, learning: {quarters}")
    console.print(
        f"{report['installs']} bundles installed in {len(report['steps'])} steps; json: {json_out}"
    )


@app.command("audit")
def audit_cmd(
    labels: LabelsArg,
    json_out: Annotated[Path, typer.Option("--json", help="Write every example's cues here.")],
    html_out: Annotated[Path, typer.Option("--html", help="Write the suspects' page here.")],
    images_root: ImagesRoot = None,
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder.")] = None,
    folds: Annotated[int, typer.Option(min=2, help="Folds of the out-of-fold heads.")] = 5,
    top: Annotated[int, typer.Option(min=1, help="Suspects shown on the page.")] = 50,
    label_column: Annotated[str, typer.Option(help="The CSV's column with the label.")] = "label",
    masks: Annotated[
        str | None, typer.Option(help="Column with a true mask file per frame (1 = object).")
    ] = None,
    source: SourceOpt = None,
    overmap_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Weight of the Over-MAP cue in the suspicion, against p(label)'s 1 (0, the "
            "default: p(label) only, measured best on label flips; the page lists the labels "
            "learnt off the object apart).",
        ),
    ] = 0.0,
) -> None:
    """Rank a labelled training set by how suspicious each label is: out-of-fold heads that
    disagree with it, and their map for it falling off the object (Over-MAP). See docs/audit.md.

    Example: `edge audit labels.csv --images-root DIR --json audit.json --html audit.html`
    """
    from rich.progress import Progress

    from edge.audit import run_audit, write_html, write_json
    from edge.evaluate import read_rows

    _labels_or_exit(labels)
    b = _load_bundle_or_exit(bundle or default_bundle())
    try:
        examples = read_rows(
            labels,
            images_root=images_root,
            label_column=label_column,
            masks_column=masks,
            source=source,
        )
        with Progress(console=err) as bar:
            task = bar.add_task("features", total=len(examples))
            report, ex, cues = run_audit(
                examples,
                b,
                folds=folds,
                weights=(1.0, overmap_weight),
                progress=lambda d, n: bar.update(task, completed=d),
            )
        write_json(json_out, report)
        write_html(html_out, report, ex, cues, b, top=top)
    except OSError as e:
        err.print(f"[red]audit failed: {escape(str(e.filename or e))}: {escape(e.strerror or '')}")
        raise typer.Exit(2) from None
    except (RuntimeError, ValueError) as e:
        err.print(f"[red]audit failed:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    for r in report["examples"][: min(top, 10)]:
        console.print(
            f"{r['rank']:>3}  {r['suspicion']:.3f}  {escape(r['label'])} -> "
            f"{escape(r['predicted'])} (p_label {r['p_label']:.2f}, Over-MAP "
            f"{r['overmap_label']:.2f})  {escape(r['file'])}"
        )
    console.print(f"json: {json_out}  html: {html_out}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # python -m edge.cli
    app()
