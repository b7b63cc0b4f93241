#!/usr/bin/env bash
# Part e of the route study (docs/route_study.md: primary only vs all three routes at the official
# decoder width and depth, 700 iterations, seed 1) on one GPU, where it takes minutes instead of the
# ~4 h on one CPU thread per run that no CPU session has. Both runs train at the same time, then the
# route diagnostics of every kept checkpoint run; the training is bounded by LIMIT seconds (default
# 420): then each run checkpoints its running iteration and the JSON keeps its evaluations so far
# (complete: false), so a call that runs out of time still brings back the curve.
#
# Usage (the lent GPU machine lacks some dependencies: run benchmarks/gpu_wheels.sh here first and
# carry .whl):  bash benchmarks/route_study_gpu.sh [--dry-run] [OUTPUT_DIR]
#   OUTPUT_DIR defaults to $OUT, else ./output/route_study_gpu: e_d256.json (copy it to
#   benchmarks/results/route_study/, then `python benchmarks/ablation_routes.py --report` it),
#   e_d256.md, e_d256.png and route_study_gpu.log. Run folders go to $RUNS (default /tmp/route_study_gpu).
#   --dry-run: the same on the CPU at a tiny size (2 iterations, 64 px images), to check the script.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh  # PY, PYTHONPATH, the wheels of .whl/ where needed; gpu_args
gpu_args ./output/route_study_gpu "$@"
source benchmarks/route_study_parts.sh
RUNS="${RUNS:-/tmp/route_study_gpu}"
DATA="$RUNS/datasets"
LIMIT="${LIMIT:-420}"
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  GEN=(--num-train 4 --num-val 2 --image-size 64)
  SCHEDULE=(--iters 2 --eval-every 2 --threads 1)
  AUG=dataloader.train.mapper.augmentation
  SMALL=(dataloader.train.total_batch_size=2 dataloader.train.num_workers=0
    "$AUG.min_sizes=[64]" "$AUG.max_size=64" "$AUG.crop_pre_sizes=[64]" "$AUG.crop_min_size=48"
    "$AUG.crop_max_size=64" dataloader.test.mapper.augmentation.min_size=64
    dataloader.test.mapper.augmentation.max_size=64)
else
  DEVICE=cuda
  GEN=()
  SCHEDULE=(--iters 700 --eval-every 175 --threads 4)
  SMALL=()
fi
"$PY" -m mrdetr.data.synthetic --output "$DATA/synthetic" --if-missing --quiet "${GEN[@]}" || exit 1
# the time bound: SIGTERM to this study's trainings only (their output folders are under $RUNS)
watchdog() { sleep "$LIMIT" && pkill -TERM -f "train.output_dir=$RUNS/"; }
watchdog </dev/null >/dev/null 2>&1 &
WATCH=$!
set -o pipefail
study() {  # study JSON_STEM [--diagnose]
  local stem="$1"; shift
  MRDETR_DATASETS="$DATA" "$PY" benchmarks/ablation_routes.py --jobs 2 --reuse "$@" \
    --device "$DEVICE" "${SCHEDULE[@]}" --tag e_d256 --seeds 1 --settings "primary only" "all three routes" \
    --output "$RUNS/e_d256" --json "$OUTPUT_DIR/$stem.json" --opts "${E_OPTS[@]}" "${SMALL[@]}" \
    2>&1 | tee -a "$OUTPUT_DIR/route_study_gpu.log"
}
# 1: train (the curves reach e_d256.json as each run ends, stopped or finished); 2: only once both
# finished, the diagnostics of their checkpoints, into a second file that replaces the first when
# complete, so a call that runs out of time in the diagnostics still brings back the curves
study e_d256
STATUS=$?
pkill -P "$WATCH" 2>/dev/null; kill "$WATCH" 2>/dev/null
if [ "$STATUS" = 0 ]; then
  study e_d256_diagnosed --diagnose && for ext in json md png; do
    mv "$OUTPUT_DIR/e_d256_diagnosed.$ext" "$OUTPUT_DIR/e_d256.$ext"
  done
  STATUS=$?
fi
exit "$STATUS"
