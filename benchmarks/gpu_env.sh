# Sourced by the GPU scripts (gpu_check.sh, route_study_gpu.sh): sets PY to $PYTHON, else to the
# first of python, python3 that imports torch; when mrdetr's dependencies do not import there (the
# lent GPU machine's image) and .whl/ holds them (benchmarks/gpu_wheels.sh), installs them into a
# folder of their own on PYTHONPATH. The repository root goes on PYTHONPATH too. gpu_args parses
# the scripts' common arguments.

# gpu_args DEFAULT_DIR "$@": sets DRY_RUN (0/1, from --dry-run) and OUTPUT_DIR (the one folder
# argument, else $OUT, else DEFAULT_DIR; made and absolute); -h prints the calling script's header.
gpu_args() {
  local default="$1" arg; shift
  DRY_RUN=0
  OUTPUT_DIR="${OUT:-$default}"
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
      -*) echo "$(basename "$0"): unknown option $arg (expected --dry-run or an output folder)" >&2; exit 2 ;;
      *) OUTPUT_DIR="$arg" ;;
    esac
  done
  mkdir -p "$OUTPUT_DIR"
  OUTPUT_DIR="$(cd "$OUTPUT_DIR" && pwd)"
}
if [ -z "${PYTHON:-}" ]; then
  for PYTHON in python python3; do "$PYTHON" -c "import torch" >/dev/null 2>&1 && break; done
fi
PY="$PYTHON"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ! "$PY" -c "import omegaconf, fvcore, pycocotools" >/dev/null 2>&1; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    GPU_SITE="${GPU_SITE:-/tmp/mrdetr_site}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$GPU_SITE" .whl/*.whl && export PYTHONPATH="$PYTHONPATH:$GPU_SITE"
  else
    echo "mrdetr's dependencies do not import with $PY and .whl/ is empty:" \
      "run benchmarks/gpu_wheels.sh here and carry .whl" >&2
  fi
fi
