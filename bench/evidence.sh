#!/usr/bin/env bash
# Every figure in docs/evidence.md, from scratch: train, export, calibrate, evaluate, on the
# MLWIC camera stream and on Oxford-IIIT Pet with true trimaps.
#
#   bash bench/evidence.sh [OUT]      # default OUT=/tmp/evidence; 3 min on 2 idle cores, ~15 busy
#
# Writes OUT/<dataset>/*.json (every figure, every frame's confidences, the overlap-accuracy
# curves), OUT/<dataset>/plots*/ (risk-coverage, reliability and overlap-accuracy PNGs) and the
# logs. Run from the repository root.
set -euo pipefail
OUT=${1:-/tmp/evidence}
DATA=${DATA:-/work/shared/data}
EDGE=${EDGE:-.venv/bin/edge}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT/mlwic" "$OUT/pets"
CT=$DATA/camtrap/labels.csv

# ---- MLWIC CA-01: head on frames 0:600, fusion on 600:900, test on 900:1300 ---------------
M=$OUT/mlwic
$EDGE train "$CT" --source mlwic_examples --rows 0:600 --out "$M/cam.pt"
# INT8 validation on real frames of the camera (agreement with FP32; labels are ignored)
mkdir -p "$M/val"
# (sed reads to the end: `head` would close the pipe early, which pipefail reports as a failure)
printf '%s\n' "$DATA/camtrap/mlwic_examples/"*/*.jpg | sed -n 1,64p | xargs -I{} cp {} "$M/val/"
$EDGE export --classifier "$M/cam.pt" --out "$M/bundle" --val "$M/val" --val-limit 64 --force
$EDGE calibrate "$CT" --bundle "$M/bundle" --source mlwic_examples --rows 600:900 \
    | tee "$M/calibrate.log"
$EDGE evaluate "$CT" --bundle "$M/bundle" --source mlwic_examples --rows 900:1300 \
    --json "$M/test.json" --plots "$M/plots" | tee "$M/test.log"
# the calibration frames' cues, for the ablation (fit on 600:900, measured on 900:1300)
$EDGE evaluate "$CT" --bundle "$M/bundle" --source mlwic_examples --rows 600:900 \
    --json "$M/calibration.json" | tee "$M/calibration.log"
$EDGE evaluate "$CT" --bundle "$M/bundle" --source mlwic_examples --rows 900:1300 \
    --no-background --json "$M/test_nobg.json" | tee "$M/test_nobg.log"

# ---- Oxford-IIIT Pet: 37-breed head on pets37 trainval, tested on pets-masks test ----------
P=$OUT/pets
"$PY" - "$DATA" "$P" <<'PYEOF'
"""Derived CSVs (file,label[,mask]) with paths relative to the data folders; no copies of images.
Each pet photo is its own "camera" (camera_or_sequence = its stem), so no background model is
ever built from unrelated photos."""
import csv, sys
from pathlib import Path
data, out = Path(sys.argv[1]), Path(sys.argv[2])
with open(data / "pets37/trainval/labels.csv", newline="") as f:
    train = list(csv.DictReader(f))
with open(out / "train.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["file", "label"])
    w.writerows([r["file"], r["class_name"]] for r in train)
seen = {Path(r["file"]).name for r in train}  # the head's own training images
# all 37 breeds' test photos (learned segmenter): the overlap-accuracy curve on a fine-grained task
test37 = data / "pets37/test/labels.csv"
with open(test37, newline="") as f, open(out / "test37.csv", "w", newline="") as g:
    w = csv.writer(g); w.writerow(["file", "label", "camera_or_sequence"])
    w.writerows([r["file"], r["class_name"], Path(r["file"]).stem] for r in csv.DictReader(f))
with open(data / "pets-masks/labels.csv", newline="") as f:
    masks = list(csv.DictReader(f))
for split, name in (("trainval", "calib.csv"), ("test", "test.csv")):
    with open(out / name, "w", newline="") as f:
        w = csv.writer(f); w.writerow(["file", "label", "mask", "camera_or_sequence"])
        w.writerows([r["file"], r["class_name"], r["mask"], Path(r["file"]).stem] for r in masks
                    if r["split"] == split and Path(r["file"]).name not in seen)
PYEOF
$EDGE train "$P/train.csv" --images-root "$DATA/pets37/trainval" --out "$P/pets.pt"
$EDGE export --classifier "$P/pets.pt" --out "$P/bundle" \
    --val "$DATA/pets37/test/images" --val-limit 64 --force
# one bundle per mask source, each with a fusion fitted on that source (calibration split)
rm -rf "$P/bundle_true" && cp -r "$P/bundle" "$P/bundle_true"
$EDGE calibrate "$P/calib.csv" --bundle "$P/bundle_true" --images-root "$DATA/pets-masks" \
    --masks mask | tee "$P/calibrate_true.log"
$EDGE calibrate "$P/calib.csv" --bundle "$P/bundle" --images-root "$DATA/pets-masks" \
    | tee "$P/calibrate_learned.log"
$EDGE evaluate "$P/test.csv" --bundle "$P/bundle_true" --images-root "$DATA/pets-masks" \
    --masks mask --json "$P/test_true.json" --plots "$P/plots_true" | tee "$P/test_true.log"
$EDGE evaluate "$P/test.csv" --bundle "$P/bundle" --images-root "$DATA/pets-masks" \
    --json "$P/test_learned.json" --plots "$P/plots_learned" | tee "$P/test_learned.log"
$EDGE evaluate "$P/test37.csv" --bundle "$P/bundle" --images-root "$DATA/pets37/test" \
    --json "$P/test37.json" --plots "$P/plots37" | tee "$P/test37.log"
for src in true learned; do
    masks=(); [ "$src" = true ] && masks=(--masks mask)
    b="$P/bundle"; [ "$src" = true ] && b="$P/bundle_true"
    $EDGE evaluate "$P/calib.csv" --bundle "$b" --images-root "$DATA/pets-masks" "${masks[@]}" \
        --json "$P/calibration_$src.json" | tee "$P/calibration_$src.log"
done

{
    "$PY" -m edge.evaluate tables "$M/test.json" "$M/test_nobg.json" "$P/test_true.json" \
        "$P/test_learned.json" "$P/test37.json"
    "$PY" -m edge.evaluate ablate "$M/calibration.json" "$M/test.json"
    "$PY" -m edge.evaluate ablate "$P/calibration_true.json" "$P/test_true.json"
    "$PY" -m edge.evaluate ablate "$P/calibration_learned.json" "$P/test_learned.json"
    grep -h -A1 "fusion stored" "$M/calibrate.log" "$P/calibrate_true.log" "$P/calibrate_learned.log"
} | tee "$OUT/tables.md"
