# Sourced by the GPU scripts (gpu_check.sh, route_study_gpu.sh): sets PY to the Python that holds
# torch (python, else python3) and, when mrdetr's dependencies do not import there (the lent GPU
# machine's image) and .whl/ holds them (benchmarks/gpu_wheels.sh), installs them into a folder of
# their own on PYTHONPATH. The repository root goes on PYTHONPATH too.
PY="${PYTHON:-$(command -v python >/dev/null 2>&1 && echo python || echo python3)}"
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
