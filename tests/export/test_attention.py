"""The attention head end to end: trained on real camera-trap frames with the real Lite0, exported
to a real INT8 bundle, opened with ONNX Runtime, scored by the watcher against its attention map.
"""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edge.bundle import ClassifierSpec, default_bundle, load_bundle
from edge.cli import app
from edge.scorer import MapSourceError, check_map_source
from export.attention import AttentionHead

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CAMTRAP = DATA / "camtrap"
FRAMES = {  # real MLWIC frames of one camera, by label
    "empty": [6528, 6529, 6530, 6531],
    "elk": [7135, 7136, 7137, 7138],
    "human": [6503, 6505, 6506, 6509],
}
runner = CliRunner()


def _frame(n: int) -> Path:
    return CAMTRAP / "mlwic_examples" / "CA-01" / f"CA-01_{n:07d}.jpg"


# ---- the head alone (fast) ----------------------------------------------------------------


def test_the_class_map_is_the_logit_split_over_space_and_attention_is_normalised() -> None:
    torch.manual_seed(0)
    head = AttentionHead(channels=16, classes=5, maps=3).eval()
    torch.nn.init.normal_(head.attend.weight, std=0.5)  # peaked, not uniform, attention
    a = torch.relu(torch.randn(4, 16, 6, 7))
    with torch.no_grad():
        logits, cam, attention = head.maps(a)
        att = head.attention(a)
        assert torch.allclose(logits, head(a), atol=1e-5)
        assert torch.allclose(att.sum(-1), torch.ones(4, 3), atol=1e-5)  # each a_m sums to 1
        for c in range(5):  # every class's logit is its map summed over space, plus the bias
            split = head.class_maps(a, att, torch.full((4,), c)).sum(dim=(1, 2))
            assert torch.allclose(split + head.fc.bias[c], logits[:, c], atol=1e-4)
        top = logits.argmax(1)
        assert torch.allclose(cam, torch.relu(head.class_maps(a, att, top)))
    assert cam.shape == attention.shape == (4, 6, 7)
    assert (cam >= 0).all()
    flat = attention.flatten(1)
    assert torch.allclose(flat.amax(1), torch.ones(4)) and (flat > 0).all()
    # the map is sum_m a_m over its peak: where the head looks, whatever the class
    total = att.sum(1)
    assert torch.allclose(flat, total / total.amax(1, keepdim=True))


def test_old_manifests_read_as_cam_only_with_a_linear_head() -> None:
    spec = load_bundle(default_bundle()).manifest.classifier
    assert spec.maps == ["cam"] and spec.head_kind == "linear"
    raw = spec.model_dump(mode="json")
    del raw["maps"], raw["head_kind"]  # a manifest written before the fields existed
    again = ClassifierSpec.model_validate(raw)
    assert again.maps == ["cam"] and again.head_kind == "linear"


def test_attention_on_a_bundle_without_it_is_refused_by_name(tmp_path: Path) -> None:
    m = load_bundle(default_bundle()).manifest
    check_map_source(m, "cam")
    with pytest.raises(MapSourceError, match="returns only cam"):
        check_map_source(m, "attention")
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(_frame(6528), inbox)
    result = runner.invoke(
        app, ["watch", str(inbox), "--once", "--no-tui", "--map", "attention"], env={}
    )
    assert result.exit_code == 2, result.output
    assert "--map" in result.output and "returns only cam" in " ".join(result.output.split())
    assert (inbox / _frame(6528).name).is_file()  # refused before any frame was touched
    assert not (inbox / "sorted").exists()


def test_a_pets_labels_csv_reads_its_class_names_as_labels() -> None:
    from export.train_head import read_labels

    rows = read_labels(DATA / "pets37" / "trainval" / "labels.csv", first=0, last=31)
    assert len(rows) == 31 and rows[0]["label"] == rows[0]["class_name"] == "Abyssinian"
    assert len({r["label"] for r in rows}) == 2


def test_a_csv_without_labels_is_refused_naming_the_columns(tmp_path: Path) -> None:
    from export.train_head import read_labels

    (tmp_path / "l.csv").write_text("file,kind\na.jpg,x\n")
    with pytest.raises(ValueError, match="needs the columns file,label; lacks \\['label'\\]"):
        read_labels(tmp_path / "l.csv")


# ---- a real attention head, exported (slow) -------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from export import train_head as th

    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("att")
    labels = tmp / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for label, frames in FRAMES.items():
            for n in frames:
                w.writerow([str(_frame(n).relative_to(CAMTRAP)), label])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = th.train_head(
            labels,
            out=tmp / "att.pt",
            images_root=CAMTRAP,
            head="attention",
            maps=2,
            epochs=30,
            folds=2,
            progress=False,
        )
    return fig, tmp / "att.pt"


@pytest.fixture(scope="module")
def bundle(trained: tuple[dict, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.pipeline import ExportOptions, run_export

    out = tmp_path_factory.mktemp("attb") / "b"
    opts = ExportOptions(
        out=out,
        classifier=str(trained[1]),
        calib_limit=8,
        val=DATA / "imagenet-sample",
        val_limit=16,
        force=True,  # a head fitted on 6 frames: the test is about the bundle's shape
    )
    return run_export(opts)


@pytest.mark.slow
def test_training_figures_and_checkpoint(trained: tuple[dict, Path]) -> None:
    from export.models import build_classifier, load_checkpoint

    fig, ckpt_path = trained
    assert fig["head"] == "attention" and fig["maps"] == 2
    assert fig["classes"] == ["elk", "empty", "human"] and fig["frames"] == 12
    assert fig["heldout_frames"] == 6 and 1 <= fig["best_epoch"] <= fig["epochs_run"] <= 30
    assert fig["train_accuracy"] == 1.0  # 6 frames in 2x1280 dimensions: separable
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["head"]["kind"] == "attention" and ckpt["head"]["maps"] == 2
    assert not any(k.startswith("classifier.") for k in ckpt["state_dict"])
    src = build_classifier(str(ckpt_path))
    assert src.head_kind == "attention" and src.maps == ["cam", "attention"]
    assert src.empty_classes == ["empty"] and src.human_classes == ["human"]


@pytest.mark.slow
def test_export_records_both_maps_and_the_int8_attention_agreement(bundle: Path) -> None:
    m = load_bundle(bundle).manifest
    c = m.classifier
    assert c.head_kind == "attention" and c.maps == ["cam", "attention"]
    assert c.precision == "int8" and c.cam_size == (7, 7)
    assert m.segmenter.in_classifier
    v = m.validation
    assert 0.9 <= v["attention_correlation"] <= 1.0  # INT8 vs FP32, beside the cam's
    assert 0.0 <= v["cam_correlation"] <= 1.0
    assert 0.0 <= v["attention_overmap_drift_mean"] <= v["attention_overmap_drift_max"] <= 1.0
    q = m.calibration["classifier"]
    assert q["features_tensor"]  # the backbone found through the attention conv, quantized
    assert q["nodes_quantized"] > 50


@pytest.mark.slow
def test_runtime_maps_and_the_onnx_cam_is_the_heads_decomposition(
    bundle: Path, trained: tuple[dict, Path]
) -> None:
    import onnxruntime as ort

    from edge.decode import load_image
    from edge.runtime import Runtime
    from export.models import load_checkpoint

    b = load_bundle(bundle)
    rt = Runtime.from_bundle(b, providers=["cpu"], threads=2, features=True)
    images = [load_image(_frame(n)) for n in (6528, 7135, 6503)]
    out = rt.run(images)
    assert out.attention is not None
    assert out.attention.shape == out.cam.shape == (3, 7, 7)
    assert (out.cam >= 0).all()
    flat = out.attention.reshape(3, -1)
    np.testing.assert_allclose(flat.max(1), 1.0, atol=1e-6)
    assert (flat > 0).all() and flat.min() < 0.99  # peaked, not flat
    # the graph's head is float: on the graph's own feature map, torch's head gives its maps
    head = AttentionHead.from_spec(load_checkpoint(trained[1])["head"])
    with torch.no_grad():
        logits, cam, attention = head.maps(torch.from_numpy(out.fmap))
    np.testing.assert_allclose(out.logits, logits.numpy(), rtol=1e-4, atol=1e-4)
    tol = 1e-4 * float(out.cam.max()) + 1e-6
    np.testing.assert_allclose(out.cam, cam.numpy(), atol=tol)
    np.testing.assert_allclose(out.attention, attention.numpy(), atol=1e-5)
    # and no backward pass went into the graph
    sess = ort.InferenceSession(str(b.classifier_path), providers=["CPUExecutionProvider"])
    assert "attention" in {o.name for o in sess.get_outputs()}


@pytest.mark.slow
def test_the_watcher_scores_the_attention_map(bundle: Path, tmp_path: Path) -> None:
    from edge.background import CameraBackgrounds
    from edge.decode import load_image
    from edge.journal import Journal
    from edge.runtime import Runtime
    from edge.scorer import Scorer
    from edge.tui import Stats
    from edge.watch import WatchOptions, run_once

    frames = [6528, 6529, 7135, 7136, 6503, 6505]
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "CA-01").mkdir(parents=True)
    for n in frames:
        shutil.copy(_frame(n), inbox / "CA-01")
    b = load_bundle(bundle)
    opts = WatchOptions(
        inbox,
        out,
        {"tag": 0.6, "empty": 0.8, "empty_foreground": 0.02},
        settle=0.1,
        give_up=2.0,
        batch=3,
        threads=2,
        map="attention",
    )
    assert opts.map_source == "attention"
    run_once(b, opts, Stats(out=out))
    with Journal.open(out) as j:
        journaled = {Path(r.relpath).name: r.overmap for r in j.frames()}
    assert len(journaled) == len(frames)

    rt = Runtime.from_bundle(b, providers=["cpu"], threads=2)
    images = [load_image(_frame(n)) for n in frames]
    expect = {}
    for source in ("attention", "cam"):
        scorer = Scorer(rt, b.manifest, backgrounds=CameraBackgrounds(), map_source=source)
        expect[source] = [s.score.overmap for s in scorer.score(images, ["CA-01"] * len(frames))]
        if source == "attention":
            scored = scorer.score(images[:1], ["CA-01"])
            np.testing.assert_allclose(scored[0].cam, rt.run(images[:1]).attention[0])
    got = [journaled[_frame(n).name] for n in frames]
    np.testing.assert_allclose(got, expect["attention"], atol=1e-5)
    assert not np.allclose(got, expect["cam"], atol=1e-3)  # the other map gives other figures
