#!/usr/bin/env bash
# Install overmap-edge into ./.venv. Safe to run again. The default bundle ships inside the
# package (edge/default_bundle), so nothing is built and the device needs no torch.
#
#   ./install.sh --device     device runtime only (onnxruntime, OpenCV; no torch): enough to watch
#   ./install.sh              the device runtime + the workstation's export tools (torch)
#   ./install.sh --dev        the same, plus the test tools and ray for edge batch (and, as
#                             root, dosfstools + fusefat)
#   ./install.sh --rebuild    also rebuild edge/default_bundle from ../shared/data (minutes)
set -euo pipefail
cd "$(dirname "$0")"

dev=0 device=0 rebuild=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --device) device=1 ;;
    --no-bundle) ;;  # kept for old scripts: nothing is built unless --rebuild
    --rebuild) rebuild=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "install.sh: Python >= 3.11 is needed (set PYTHON=...)" >&2; exit 2; }

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip setuptools wheel

# The runtime: onnxruntime-gpu built for JetPack on a Jetson, onnxruntime elsewhere.
if [ -f /etc/nv_tegra_release ]; then
  echo "Jetson detected ($(head -c 40 /etc/nv_tegra_release)): onnxruntime-gpu for JetPack"
  "${pip[@]}" --extra-index-url "${JETSON_INDEX_URL:-https://pypi.jetson-ai-lab.io/jp6/cu126}" \
    onnxruntime-gpu
  runtime=""
else
  runtime="cpu"
fi

extras=()
[ -n "$runtime" ] && extras+=("$runtime")
[ "$device" = 1 ] || extras+=("export" "eval")
[ "$dev" = 1 ] && extras+=("dev" "batch")
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
echo "installing overmap-edge $spec into .venv"
"${pip[@]}" -c constraints.txt -e "$spec"

# The tests on real filesystems (an SD card's FAT through FUSE, a full disk on a tmpfs) need
# mkfs.vfat and fusefat; they skip, saying why, where these cannot be installed or mounted.
if [ "$dev" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! { command -v mkfs.vfat && command -v fusefat; } >/dev/null; then
  echo "installing dosfstools and fusefat for the filesystem tests"
  { apt-get install -y -q dosfstools fusefat >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 \
         && apt-get install -y -q dosfstools fusefat >/dev/null 2>&1; }; } \
    || echo "install.sh: could not install dosfstools/fusefat; the FAT tests will skip" >&2
fi

# The review page's browser test drives Debian's chromium with playwright (never
# `playwright install`: no download); it skips, saying why, where chromium is missing.
if [ "$dev" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium for the review page's browser test"
  { apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 \
         && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
    || echo "install.sh: could not install chromium; the browser test will skip" >&2
fi

if [ "$rebuild" = 1 ]; then
  [ "$device" = 0 ] || { echo "install.sh: --rebuild needs the export tools (not --device)" >&2; exit 2; }
  echo "rebuilding edge/default_bundle (camera-trap head, measured leave-one-source-out)"
  .venv/bin/python -m export.default_bundle --out edge/default_bundle
fi
.venv/bin/edge bundle edge/default_bundle >/dev/null \
  || { echo "install.sh: edge/default_bundle does not verify (see: .venv/bin/edge bundle edge/default_bundle)" >&2; exit 1; }
echo "done: .venv/bin/edge --help"
