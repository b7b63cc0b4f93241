#!/usr/bin/env bash
# The route study of docs/route_study.md, parts a to c in order, two runs at a time on one thread
# each, with the route diagnostics of every kept checkpoint. Run it again to continue an interrupted
# study: a part whose results file already holds every run is skipped (--skip-if-complete), finished
# runs found in output/ are kept and partial runs resume from their last checkpoint (--reuse).
set -euo pipefail
cd "$(dirname "$0")/.."
A=(python benchmarks/ablation_routes.py --jobs 2 --threads 1 --reuse --skip-if-complete
   --eval-every 175 --diagnose)
P=(--settings "primary only" "all three routes")
R=benchmarks/results/route_study
"${A[@]}" --tag a_700it --iters 700 --seeds 1 2 "${P[@]}" --json "$R/a_700it.json"
"${A[@]}" --tag b_1400it --iters 1400 --seeds 1 "${P[@]}" --json "$R/b_1400it.json"
"${A[@]}" --tag c_300q --iters 700 --seeds 1 2 "${P[@]}" --json "$R/c_300q.json" \
  --opts model.num_queries=300 model.select_box_nums_for_evaluation=100 \
  model.criterion.one_to_many_matcher.num_queries=900
