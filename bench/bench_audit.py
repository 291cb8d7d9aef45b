"""`edge audit` against cleanlab on injected label flips, on the SAME out-of-fold probabilities.

    .venv/bin/python bench/bench_audit.py [--bundle edge/default_bundle] [--folds 5]
        [--rates 0.05 0.1 0.2] [--seed 0] [--repeats 3] [--json /tmp/bench_audit.json]

Data: Oxford-IIIT Pet 37 breeds (/work/shared/data/pets37: trainval audited, test held out)
and the MLWIC camera CA-01 (/work/shared/data/camtrap, source mlwic_examples: rows 0:900
audited, 900:1300 held out; held-out rows whose class the first 900 lack are left out of the
accuracy). Each frame goes once through the bundle (features, fmap, the segmenter's
foreground), cached in $TMPDIR/bench_audit_cache (a rerun takes seconds for the features).

For each rate (share of the audited rows flipped) and kind of flip ("confusable": to the class
the clean out-of-fold confusion matrix confuses it with most; "random": to any other class),
seeded:
- the audit runs on the noisy labels (edge.audit.audit: K-fold linear heads, out-of-fold
  p(label) and the given label's Over-MAP against the segmenter's mask);
- cleanlab gets the very same out-of-fold probabilities: cleanlab.filter.find_label_issues
  (its own set, default prune_by_noise_rate) and cleanlab.rank.get_label_quality_scores
  (self-confidence, the ranking; normalized margin beside it);
- precision and recall of each ranking's top k (k = number of flips) against the flips:
  audit (suspicion), cleanlab (1 - self-confidence), their rank average ("combined"), and the
  Over-MAP cue alone; find_label_issues' own set at its own size;
- held-out accuracy of a head refitted on all noisy labels, on the labels without each
  ranking's top k ("remove"), and with the top k checked by a person ("fix": a flip among them
  gets its true label back), beside the clean labels' head.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine import cores, cpu_model, load_avg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.audit import (  # noqa: E402
    audit,
    out_of_fold,
    rank_average,
    suspicion_from_cues,
    topk_precision_recall,
)
from edge.linear_head import fit_head, head_logits  # noqa: E402

DATA = Path("/work/shared/data")
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_audit_cache"
SWEEP = (0.5, 2.0)  # w_overmap against w_p = 1, besides the default 1:1
RETRAINED = ("audit", "cleanlab_self_confidence", "combined")


def frames_of(name: str) -> list[tuple[Path, str]]:
    """(file, label) in order for a cached set: pets_trainval, pets_test, mlwic."""
    if name.startswith("pets_"):
        split = name.split("_", 1)[1]
        base = DATA / "pets37" / split
        with open(base / "labels.csv", newline="") as f:
            return [(base / r["file"], r["class_name"]) for r in csv.DictReader(f)]
    with open(DATA / "camtrap" / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == "mlwic_examples"]
    return [(DATA / "camtrap" / r["file"], r["label"]) for r in rows]


def cached(name: str, bundle: Path) -> dict[str, np.ndarray]:
    """features [N,K], fmap [N,K,h,w] float16, masks [N,28,28] (segmenter) and labels."""
    path = CACHE / f"{name}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from edge.audit import extract
    from edge.bundle import load_bundle
    from edge.evaluate import Row

    rows = frames_of(name)
    t0 = time.perf_counter()
    ex = extract([Row(f, lab) for f, lab in rows], load_bundle(bundle))
    print(f"  features of {name}: {len(rows)} frames in {time.perf_counter() - t0:.0f} s")
    out = {
        "features": ex.features,
        "fmap": ex.fmap,
        "masks": np.stack(ex.masks).astype(np.float32),
        "labels": np.array([lab for _, lab in rows]),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def flips(
    y: np.ndarray, rate: float, kind: str, confused: np.ndarray, n_classes: int, seed: int
) -> np.ndarray:
    """Noisy labels: round(rate * N) rows (seeded) moved to another class, either the one
    their class is most confused with ("confusable") or any other at random ("random")."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(y.size, size=round(rate * y.size), replace=False)
    noisy = y.copy()
    for i in idx:
        if kind == "confusable":
            noisy[i] = confused[y[i]]
        else:
            others = np.setdiff1d(np.unique(y), [y[i]])
            noisy[i] = rng.choice(others)
    return noisy


def most_confused(probs: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """For each class, the other class its examples' out-of-fold probability goes to most
    (the confusion matrix's row, soft so that a class with no hard error still has one)."""
    conf = np.zeros((n_classes, n_classes))
    np.add.at(conf, y, probs)
    np.fill_diagonal(conf, -1)
    return conf.argmax(1)


def accuracy(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, n: int, seed: int):
    head = fit_head(X, y, seed=seed, n_classes=n)
    return float((head_logits(head["weight"], head["bias"], Xt).argmax(1) == yt).mean())


def compare(
    noisy: np.ndarray, probs: np.ndarray, suspicion: np.ndarray, overmap_label: np.ndarray
) -> dict[str, np.ndarray]:
    """The rankings compared (higher = more suspicious), all from the same probabilities,
    plus cleanlab's own issue set as a 0/1 score."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(noisy, probs, method="self_confidence")
    issues = find_label_issues(noisy, probs, n_jobs=1)
    margin = get_label_quality_scores(noisy, probs, method="normalized_margin")
    cl = 1.0 - quality
    return {
        "audit": suspicion,
        "cleanlab_self_confidence": cl,
        "cleanlab_normalized_margin": 1.0 - margin,
        "combined": rank_average(suspicion, cl),
        "overmap_only": 1.0 - overmap_label,
        "cleanlab_find_label_issues": issues.astype(float),
    }


def evaluate_setting(d: dict, rate: float, kind: str, args, seed: int, flip_seed: int) -> dict:
    """One noisy copy of the audited labels (flips seeded by flip_seed), every ranking's
    precision and recall at k, and the held-out accuracy after removing or fixing the top k."""
    X, fmap, masks, y, n = d["X"], d["fmap"], d["masks"], d["y"], d["n"]
    noisy = flips(y, rate, kind, d["confused"], n, flip_seed)
    flipped = noisy != y
    k = int(flipped.sum())
    t0 = time.perf_counter()
    cues = audit(  # equal weights: the table's "audit (1:1)"; the sweep below varies them
        X,
        fmap,
        noisy,
        masks,
        n_classes=n,
        empty_classes=d["empty"],
        folds=args.folds,
        seed=seed,
        weights=(1.0, 1.0),
    )
    audit_s = time.perf_counter() - t0
    present = np.unique(noisy)  # cleanlab wants the columns of classes that occur
    remap = np.full(n, -1)
    remap[present] = np.arange(present.size)
    probs = cues["probs"][:, present]
    probs = probs / probs.sum(1, keepdims=True)
    scores = compare(remap[noisy], probs, cues["suspicion"], cues["overmap_label"])
    for w in SWEEP:  # sensitivity of the rule's weights, from the same cues (no refit)
        scores[f"audit_w{w:g}"] = suspicion_from_cues(
            cues["p_label"], cues["overmap_label"], weights=(1.0, w)
        )
    out: dict = {"rate": rate, "kind": kind, "k": k, "audit_s": audit_s, "methods": {}}
    Xt, yt = d["Xt"], d["yt"]
    out["acc_noisy"] = accuracy(X, noisy, Xt, yt, n, seed)
    for name, s in scores.items():
        if name == "cleanlab_find_label_issues":
            size = int(s.sum())
            hits = int((s.astype(bool) & flipped).sum())
            out["methods"][name] = {
                "size": size,
                "precision": hits / size if size else 0.0,
                "recall": hits / k,
            }
            continue
        p, r = topk_precision_recall(s, flipped, k)
        m = {"precision": p, "recall": r}
        if name in RETRAINED:
            top = np.argsort(-s, kind="stable")[:k]
            keep = np.ones(y.size, bool)
            keep[top] = False
            fixed = noisy.copy()
            fixed[top] = y[top]
            m["acc_remove"] = accuracy(X[keep], noisy[keep], Xt, yt, n, seed)
            m["acc_fix"] = accuracy(X, fixed, Xt, yt, n, seed)
        out["methods"][name] = m
    return out


def load_set(name: str, bundle: Path, folds: int, seed: int) -> dict:
    if name == "pets37":
        tr, te = cached("pets_trainval", bundle), cached("pets_test", bundle)
    else:
        allm = cached("mlwic", bundle)
        tr = {k: v[:900] for k, v in allm.items()}
        te = {k: v[900:] for k, v in allm.items()}
    classes = sorted(set(tr["labels"]))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in tr["labels"]])
    known = np.array([c in index for c in te["labels"]])
    yt = np.array([index[c] for c in te["labels"][known]])
    n = len(classes)
    oof = out_of_fold(tr["features"], y, n_classes=n, folds=folds, seed=seed)
    return {
        "X": tr["features"],
        "fmap": tr["fmap"],
        "masks": tr["masks"],
        "y": y,
        "n": n,
        "Xt": te["features"][known],
        "yt": yt,
        "held_out": int(known.sum()),
        "held_out_left_out": int((~known).sum()),
        "empty": [index["empty"]] if "empty" in index else [],
        "confused": most_confused(oof.probs, y, n),
        "oof_acc_clean": float((oof.probs.argmax(1) == y).mean()),
        "acc_clean": accuracy(tr["features"], y, te["features"][known], yt, n, seed),
        "classes": classes,
    }


def _spread(values, fmt: str = ".3f") -> str:
    v = np.asarray(values, float)
    return f"{v.mean():{fmt}} ({v.min():{fmt}}..{v.max():{fmt}})"


SHORT = {
    "audit": "audit",
    "cleanlab_self_confidence": "cl-rank",
    "combined": "combined",
    "overmap_only": "overmap",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "edge" / "default_bundle")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--sets", nargs="+", default=["pets37", "mlwic"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="flip seeds per setting")
    ap.add_argument("--json", type=Path, default=Path("/tmp/bench_audit.json"))
    args = ap.parse_args()
    import cleanlab
    import sklearn

    print(f"machine: {cpu_model()}, {cores()} cores, load avg {load_avg()}")
    print(
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, cleanlab "
        f"{cleanlab.__version__}; folds {args.folds}, seed {args.seed}"
    )
    report: dict = {"machine": cpu_model(), "cores": cores(), "sets": {}}
    for name in args.sets:
        d = load_set(name, args.bundle, args.folds, args.seed)
        print(
            f"\n{name}: {d['y'].size} audited, {d['n']} classes, {d['held_out']} held out "
            f"({d['held_out_left_out']} of unseen classes left out); clean out-of-fold "
            f"accuracy {d['oof_acc_clean']:.3f}, held-out accuracy {d['acc_clean']:.3f}"
        )
        print(f"precision@k (= recall@k, k = flips), mean (min..max) of {args.repeats} flip seeds")
        runs = []
        for rate in args.rates:
            for kind in ("confusable", "random"):
                reps = [
                    evaluate_setting(d, rate, kind, args, args.seed, args.seed + r)
                    for r in range(args.repeats)
                ]
                runs.append({"rate": rate, "kind": kind, "repeats": reps})
                print(f"{rate:4.2f} {kind:10s} k={reps[0]['k']}")
                for m in reps[0]["methods"]:
                    if m == "cleanlab_find_label_issues":
                        continue
                    print(f"   {m:26s} {_spread([x['methods'][m]['precision'] for x in reps])}")
                fl = [x["methods"]["cleanlab_find_label_issues"] for x in reps]
                print(
                    f"   find_label_issues: size {_spread([f['size'] for f in fl], '.0f')}, "
                    f"precision {_spread([f['precision'] for f in fl])}, "
                    f"recall {_spread([f['recall'] for f in fl])}"
                )
        print(
            "held-out accuracy, mean of the seeds: noisy head; remove | fix the top k of each"
            f" (clean labels' head {d['acc_clean']:.3f})"
        )
        for run in runs:
            reps = run["repeats"]
            cells = "  ".join(
                f"{SHORT[x]} {np.mean([r['methods'][x]['acc_remove'] for r in reps]):.3f}|"
                f"{np.mean([r['methods'][x]['acc_fix'] for r in reps]):.3f}"
                for x in RETRAINED
            )
            noisy = np.mean([r["acc_noisy"] for r in reps])
            print(f"{run['rate']:4.2f} {run['kind']:10s} noisy {noisy:.3f}  {cells}")
        for m in ("audit", "combined"):
            diff = [
                np.mean([r["methods"][m]["precision"] for r in run["repeats"]])
                - np.mean(
                    [r["methods"]["cleanlab_self_confidence"]["precision"] for r in run["repeats"]]
                )
                for run in runs
            ]
            print(
                f"{m} minus cl-rank, precision@k: mean {np.mean(diff):+.3f}, better in "
                f"{sum(x > 0 for x in diff)}, worse in {sum(x < 0 for x in diff)} of {len(diff)}"
            )
        report["sets"][name] = {
            k: v
            for k, v in d.items()
            if k in ("n", "held_out", "held_out_left_out", "oof_acc_clean", "acc_clean")
        } | {"audited": int(d["y"].size), "runs": runs}
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\njson: {args.json}")


if __name__ == "__main__":
    main()
