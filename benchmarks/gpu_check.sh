#!/usr/bin/env bash
# One GPU session's worth of checks, in under 8 minutes on an H100/H200 (each step has its own
# time limit; the limits add up to 7.8 minutes), writing a Markdown summary:
#
#   1. the Triton self-check verdicts on this GPU (float32, bfloat16, float16),
#   2. the CUDA tests (tests/test_msda_triton.py: Triton vs reference on the GPU; the interpreter
#      and self-check tests),
#   3. benchmarks/bench_msda.py on CUDA (reference, gather, Triton; float32 and bfloat16),
#   4. benchmarks/bench_model.py on CUDA in float32, bfloat16 and float16, with the HF peer,
#   5. 50 iterations of the quick start on CUDA with bf16 AMP (and its final AP), on a generated
#      synthetic dataset.
#
# Usage: bash benchmarks/gpu_check.sh [--dry-run] [OUTPUT_DIR]
#   On the lent GPU machine, whose image lacks some of mrdetr's dependencies: run
#   benchmarks/gpu_wheels.sh here first and carry .whl (benchmarks/gpu_env.sh installs it there).
#   OUTPUT_DIR defaults to $OUT, else ./output/gpu_check; it gets two files (the device tool brings
#   back at most 8): the summary gpu_check.md and gpu_check_logs.tar.gz, every step's full log. The
#   data set, the quick start's run folder and the logs themselves go to $WORK (default a new
#   temporary folder).
#   --dry-run: the same steps on the CPU at tiny sizes (a few seconds each), to check the script.
# The exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."

# PY, PYTHONPATH, and the dependencies the GPU image lacks from .whl/ (benchmarks/gpu_wheels.sh)
source benchmarks/gpu_env.sh
gpu_args ./output/gpu_check "$@"
SUMMARY="$OUTPUT_DIR/gpu_check.md"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK/logs"
FAILED=0

if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  MSDA_ARGS=(--shapes encoder_320x480 --repeats 1 --backends reference cpu)
  MODEL_ARGS=(--quick --no-peer --no-train --dtypes float32)
  QUICK_ITERS=1
  AUG=dataloader.train.mapper.augmentation
  QUICK_ARGS=(dataloader.train.total_batch_size=1 dataloader.train.num_workers=0 train.amp.enabled=False
    "$AUG.min_sizes=[96]" "$AUG.max_size=128" "$AUG.crop_pre_sizes=[96]" "$AUG.crop_min_size=64"
    "$AUG.crop_max_size=96" dataloader.test.mapper.augmentation.min_size=96
    dataloader.test.mapper.augmentation.max_size=128)
else
  DEVICE=cuda
  # HBM bandwidth for the memory-bound floor of bench_msda.py: H200 4.8 TB/s, else the H100 SXM figure
  BANDWIDTH=$("$PY" -c 'import torch; print(4.8e12 if "H200" in torch.cuda.get_device_name() else 3.35e12)' 2>/dev/null || echo 3.35e12)
  MSDA_ARGS=(--repeats 5 --bandwidth "$BANDWIDTH")
  MODEL_ARGS=(--dtypes float32 bfloat16 float16 --threads 8)
  QUICK_ITERS=50
  QUICK_ARGS=(train.amp.enabled=True train.amp.dtype=bfloat16)
fi

# step NAME LIMIT_S COMMAND...: run with a time limit, log it, add its status and output to the summary
step() {
  local name="$1" limit="$2"; shift 2
  local log="$WORK/logs/$name.log" start rc
  start=$(date +%s)
  timeout "$limit" "$@" >"$log" 2>&1
  rc=$?
  local took=$(( $(date +%s) - start ))
  [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
  {
    echo "## $name"
    echo
    echo "\`$*\` — exit $rc$([ "$rc" = 124 ] && echo " (time limit ${limit} s)"), ${took} s"
    echo
    echo '```'
    grep -v '^\s*$' "$log" | tail -n 40
    echo '```'
    echo
  } >>"$SUMMARY"
  echo "gpu_check: $name: exit $rc in ${took} s"
}

{
  echo "# gpu_check $( [ "$DRY_RUN" = 1 ] && echo '(dry run, CPU)' ) — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "git $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")' 2>&1)"
  echo
} >"$SUMMARY"

step self_check 60 "$PY" - "$DEVICE" <<'EOF'
import sys
import torch
from mrdetr.ops.msda import triton_self_check, triton_unavailable_reason
device = torch.device(sys.argv[1])
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    x = torch.zeros(1, 1, 1, 1, device=device, dtype=dtype)
    verdict = triton_unavailable_reason(x) or triton_self_check(x, x, x) or "passes"
    print(f"Triton self-check on {device}, {dtype}: {verdict}")
EOF
step cuda_tests 90 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_msda_triton.py -k "cuda"
step bench_msda 90 "$PY" benchmarks/bench_msda.py --device "$DEVICE" "${MSDA_ARGS[@]}"
step bench_model 150 "$PY" benchmarks/bench_model.py --device "$DEVICE" "${MODEL_ARGS[@]}"

DATASETS="$WORK/datasets"
if [ "$DRY_RUN" = 1 ]; then
  GEN=(--num-train 4 --num-val 2 --image-size 64)
else
  GEN=()
fi
step synthetic_data 60 "$PY" -m mrdetr.data.synthetic --output "$DATASETS/synthetic" --if-missing --quiet "${GEN[@]}"
step quickstart 120 env MRDETR_DATASETS="$DATASETS" "$PY" projects/train_net.py \
  --config-file projects/mr_detr_deformable/configs/quickstart_synthetic.py \
  train.device="$DEVICE" train.max_iter="$QUICK_ITERS" train.eval_period="$QUICK_ITERS" \
  train.eval_at_start=False train.log_period=10 train.checkpointer.period=100000 \
  train.output_dir="$WORK/quickstart" "${QUICK_ARGS[@]}"

tar -czf "$OUTPUT_DIR/gpu_check_logs.tar.gz" -C "$WORK" logs
echo "Summary: $SUMMARY, full logs $OUTPUT_DIR/gpu_check_logs.tar.gz ($FAILED failed steps)"
exit "$FAILED"
