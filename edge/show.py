"""Render a bundle for a person: what it classifies, how it was validated, what it will run on.

Used by `edge bundle DIR`, so that before a device goes into the field someone can read, on one
screen, the figures the export measured (does the quantized model still agree with the float
one?) and the thresholds the triage will use.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from edge.bundle import Bundle, FileEntry, InputSpec
from edge.providers import provider_order

# How to read the usual validation keys; anything else is shown under its own name.
FIGURES = {
    "top1_agreement": ("top-1 agreement (ONNX vs PyTorch)", "pct"),
    "top1_accuracy_fp32": ("top-1 accuracy, PyTorch fp32", "pct"),
    "top1_accuracy_onnx": ("top-1 accuracy, bundle", "pct"),
    "cam_correlation": ("map correlation (ONNX vs PyTorch)", "num"),
    "overmap_drift_mean": ("Over-MAP drift, mean", "num"),
}
SHOWN_CLASSES = 6


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _value(value: Any, kind: str = "num") -> str:
    if isinstance(value, dict):  # nested figures, e.g. the segmenter's agreement
        return ", ".join(f"{k}={_value(v, kind)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_value(v, kind) for v in value) or "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if kind == "pct" and 0 <= value <= 1:
        return f"{100 * value:.1f} %"
    return f"{value:.4g}"


def _input(spec: InputSpec) -> str:
    mean = ", ".join(f"{v:g}" for v in spec.mean)
    std = ", ".join(f"{v:g}" for v in spec.std)
    h, w = spec.size
    return f"{h}x{w} {spec.color_order}, {spec.resize}, (x - [{mean}]) / [{std}]"


def _classes(names: list[str]) -> str:
    head = ", ".join(names[:SHOWN_CLASSES])
    more = len(names) - SHOWN_CLASSES
    return f"{len(names)}: {head}" + (f", ... (+{more})" if more > 0 else "")


def _kv(title: str) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False, title=title, title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    return table


def _file(entry: FileEntry) -> str:
    return f"{entry.path}  {_size(entry.bytes)}  sha256 {entry.sha256[:12]}"


def validation_table(validation: dict[str, Any]) -> Table:
    """The export's validation figures, known keys first with a readable name."""
    table = Table(title="validation (at export)", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    known = [k for k in FIGURES if k in validation]
    for key in known + [k for k in validation if k not in FIGURES]:
        if key == "camtrap_loso":
            table.add_row("new cameras (leave one source out)", _loso(validation[key]))
            continue
        label, kind = FIGURES.get(key, (key, "num"))
        table.add_row(label, _value(validation[key], kind))
    return table


def _loso(r: dict[str, Any]) -> str:
    """The held-out sources in one line each: what went to empty/, right and wrong."""
    per = r.get("per_source", {})
    aside = sum(v["empties_set_aside"] for v in per.values())
    empties = sum(v["empties"] for v in per.values())
    lost = sum(v["non_empty_lost"] for v in per.values())
    others = sum(v["non_empty"] for v in per.values())
    return (
        f"{len(per)} sources: empties set aside {aside}/{empties}, animals, people and "
        f"vehicles in empty {lost}/{others} (P(empty) >= {r.get('t_empty')}; "
        "docs/default_bundle.md)"
    )


def show_bundle(bundle: Bundle, console: Console) -> None:
    """Print the bundle: target, models, files, validation figures, thresholds, versions."""
    m = bundle.manifest
    c, s = m.classifier, m.segmenter

    head = _kv("")
    head.add_row("folder", str(bundle.root))
    head.add_row("target", f"{m.target}  (classifier {c.precision}, segmenter {s.precision})")
    head.add_row("created", m.created)
    head.add_row("providers", " > ".join(m.providers) or "-")
    try:
        head.add_row("would use here", " > ".join(provider_order(fallback=m.providers)))
    except ValueError as e:  # an unknown name in $OVERMAP_PROVIDERS or the manifest
        head.add_row("would use here", f"[red]{e}[/]")

    cls = _kv("classifier")
    cls.add_row("name", c.name)
    cls.add_row("classes", _classes(c.classes))
    cls.add_row("empty", ", ".join(c.empty_classes) or "-")
    cls.add_row("human", ", ".join(c.human_classes) or "-")
    cls.add_row("input", _input(c.input))
    cls.add_row("map", f"{c.cam_layer}, {c.cam_size[0]}x{c.cam_size[1]}")
    cls.add_row("file", _file(c.file))

    seg = _kv("segmenter")
    seg.add_row("name", s.name)
    seg.add_row("input", _input(s.input))
    seg.add_row("output", f"foreground {s.output_size[0]}x{s.output_size[1]}")
    if s.in_classifier:
        seg.add_row("runs", "inside classifier.onnx: one backbone pass for both")
    seg.add_row("file", _file(s.file))

    parts: list[Any] = [head, cls, seg]
    if m.validation:
        parts.append(validation_table(m.validation))
    else:
        parts.append("[yellow]no validation figures in the manifest[/]")
    if m.thresholds:
        th = _kv("thresholds")
        for key, value in m.thresholds.items():
            th.add_row(key, _value(value))
        parts.append(th)
    if m.calibration:
        cal = _kv("calibration")
        for key, value in m.calibration.items():
            cal.add_row(key, _value(value))
        parts.append(cal)
    if m.versions:
        parts.append(
            "[dim]versions: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()) + "[/]"
        )
    console.print(Panel(Group(*parts), title=f"bundle {bundle.root.name}", expand=False))
