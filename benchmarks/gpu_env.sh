# Sourced by the GPU scripts (gpu_check.sh, route_study_gpu.sh): sets PY to $PYTHON, else to the
# first of python, python3 that imports torch; when mrdetr's dependencies do not import there (the
# lent GPU machine's image) and .whl/ holds them (benchmarks/gpu_wheels.sh), installs them into a
# folder of their own on PYTHONPATH. The repository root goes on PYTHONPATH too.
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
