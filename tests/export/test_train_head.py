"""`edge train` on real camera-trap frames with the real ImageNet Lite0: the checkpoint it writes
loads with build_classifier and computes what the fitted head computes."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from export import train_head as th

CAMTRAP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "camtrap"
FRAMES = {  # real MLWIC frames of one camera, by label
    "empty": [6528, 6529, 6530, 6531],
    "elk": [7135, 7136, 7137, 7138],
    "human": [6503, 6505, 6506, 6509],
    "fox": [6615],  # too rare: merged into "other", which is then too rare and dropped
}


def _labels_csv(tmp_path: Path) -> Path:
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "source", "label"])
        w.writerow(["elsewhere/none.jpg", "other_camera", "elk"])  # filtered out by source
        for label, frames in FRAMES.items():
            for n in frames:
                w.writerow([f"mlwic_examples/CA-01/CA-01_{n:07d}.jpg", "mlwic_examples", label])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("train")
    labels = _labels_csv(tmp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = th.train_head(
            labels,
            out=tmp / "model.pt",
            images_root=CAMTRAP,
            source="mlwic_examples",
            Cs=(0.1, 1.0),
            folds=3,
            progress=False,
        )
    assert any("merged into 'other'" in str(w.message) for w in caught)
    assert any("dropped" in str(w.message) for w in caught)
    return fig, tmp / "model.pt", labels


def test_figures_and_checkpoint_metadata(trained: tuple[dict, Path, Path]) -> None:
    from export.models import load_checkpoint

    fig, model_pt, _ = trained
    assert fig["classes"] == ["elk", "empty", "human"]  # sorted; fox dropped
    assert fig["counts"] == {"elk": 4, "empty": 4, "human": 4}
    assert fig["merged"] == ["fox"] and fig["dropped"] == 1 and fig["frames"] == 12
    assert fig["cv_folds"] == 3 and fig["C"] in (0.1, 1.0)
    assert fig["train_accuracy"] == 1.0  # 12 frames in 1280 dimensions: separable
    ckpt = load_checkpoint(model_pt)
    assert ckpt["arch"] == "efficientnet_lite0"
    assert ckpt["classes"] == fig["classes"]
    assert ckpt["empty_classes"] == ["empty"] and ckpt["human_classes"] == ["human"]
    assert ckpt["input"] == th.STRETCH_INPUT
    assert ckpt["state_dict"]["classifier.weight"].shape == (3, 1280)


@pytest.mark.slow
def test_checkpoint_builds_and_predicts_like_the_head(trained: tuple[dict, Path, Path]) -> None:
    from edge.decode import load_image
    from edge.preprocess import prepare
    from export.models import build_classifier

    fig, model_pt, labels = trained
    src = build_classifier(model_pt)
    assert src.classes == fig["classes"] and src.empty_classes == ["empty"]
    rows = th.read_labels(labels, source="mlwic_examples")
    paths = [CAMTRAP / r["file"] for r in rows if r["label"] != "fox"]
    x = torch.from_numpy(prepare([load_image(p) for p in paths], src.input))
    with torch.no_grad():
        logits, cam = src.model(x)
    truth = [r["label"] for r in rows if r["label"] != "fox"]
    pred = [src.classes[i] for i in logits.argmax(1).tolist()]
    assert pred == truth
    assert cam.shape == (len(paths), 7, 7) and float(cam.min()) >= 0
    probs, classes = th.predict_probs(model_pt, paths[:4])
    assert classes == src.classes
    np.testing.assert_allclose(probs, torch.softmax(logits[:4], 1).numpy(), atol=1e-5)


def test_fit_linear_head_folds_standardisation_into_the_weights() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    X = rng.normal(5.0, 3.0, (60, 8)) + y[:, None] * np.linspace(0, 2, 8)
    head = th.fit_linear_head(X, y, Cs=(0.1, 1.0), folds=3)
    mean, std = X.mean(0), X.std(0)
    ref = LogisticRegression(C=head["C"], class_weight="balanced", max_iter=2000)
    ref.fit((X - mean) / std, y)
    np.testing.assert_allclose(
        X @ head["weight"].T + head["bias"], ref.decision_function((X - mean) / std), atol=1e-3
    )
    assert set(head["cv_scores"]) == {"0.1", "1.0"}


def test_binary_head_gives_two_rows() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 10)
    X = rng.normal(size=(20, 4)) + y[:, None]
    head = th.fit_linear_head(X, y, Cs=(1.0,), folds=2)
    assert head["weight"].shape == (2, 4)
    logits = X @ head["weight"].T + head["bias"]
    assert np.mean(logits.argmax(1) == y) == head["train_accuracy"]


def test_rows_and_filters(tmp_path: Path) -> None:
    labels = _labels_csv(tmp_path)
    assert th.parse_rows("0:900") == (0, 900) and th.parse_rows("900:") == (900, None)
    assert th.parse_rows(None) == (None, None)
    with pytest.raises(ValueError, match="FIRST:LAST"):
        th.parse_rows("900")
    rows = th.read_labels(labels, source="mlwic_examples", first=2, last=6)
    assert [r["label"] for r in rows] == ["empty", "empty", "elk", "elk"]
    rows = th.read_labels(labels, select=lambda r: r["label"] == "human")
    assert len(rows) == 4
    with pytest.raises(ValueError, match="no rows"):
        th.read_labels(labels, source="nowhere")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,species\na.jpg,elk\n")
    with pytest.raises(ValueError, match="file,label"):
        th.read_labels(bad)


def test_merge_rare_keeps_a_big_enough_other() -> None:
    with pytest.warns(UserWarning, match="merged"):
        out, merged = th.merge_rare(["a"] * 5 + ["b", "c", "d"], min_count=3)
    assert merged == ["b", "c", "d"] and out == ["a"] * 5 + ["other"] * 3
