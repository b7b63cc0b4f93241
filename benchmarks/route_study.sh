#!/usr/bin/env bash
# The route study of issue #17, parts a-c, two runs at a time with one thread each.
cd /work/main
A="python benchmarks/ablation_routes.py --jobs 2 --threads 1 --reuse --eval-every 175"
P=(--settings "primary only" "all three routes")
nice -n 5 $A --tag a_700it --iters 700 --seeds 1 2 "${P[@]}" --json benchmarks/results/route_study/a_700it.json
nice -n 5 $A --tag b_1400it --iters 1400 --seeds 1 "${P[@]}" --json benchmarks/results/route_study/b_1400it.json
nice -n 5 $A --tag c_300q --iters 700 --seeds 1 2 "${P[@]}" --json benchmarks/results/route_study/c_300q.json \
  --opts model.num_queries=300 model.select_box_nums_for_evaluation=100 model.criterion.one_to_many_matcher.num_queries=900
