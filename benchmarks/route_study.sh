#!/usr/bin/env bash
# The route study of docs/route_study.md, parts a to k (the short digging runs f, g, i, j, k and h
# before the long e), two runs at a time on one thread each, with the route diagnostics of every
# kept checkpoint. Run it again to continue an interrupted study: a part whose results file already holds every run is skipped (--skip-if-complete), finished
# runs found in output/ are kept and partial runs resume from their last checkpoint (--reuse).
# To stop it without losing a finished iteration:
#   pkill -f benchmarks/route_study.sh; pkill -TERM -f projects/train_net.py
# (each training finishes its iteration and checkpoints it: train.stop_signals).
set -euo pipefail
cd "$(dirname "$0")/.."
A=(python benchmarks/ablation_routes.py --jobs 2 --threads 1 --reuse --skip-if-complete
   --eval-every 175 --diagnose)
P=(--settings "primary only" "all three routes")
R=benchmarks/results/route_study
source benchmarks/route_study_parts.sh  # E_OPTS
"${A[@]}" --tag a_700it --iters 700 --seeds 1 2 "${P[@]}" --json "$R/a_700it.json"
"${A[@]}" --tag b_1400it --iters 1400 --seeds 1 "${P[@]}" --json "$R/b_1400it.json"
"${A[@]}" --tag c_300q --iters 700 --seeds 1 2 "${P[@]}" --json "$R/c_300q.json" \
  --opts model.num_queries=300 model.select_box_nums_for_evaluation=100 \
  model.criterion.one_to_many_matcher.num_queries=900
# d: both settings from the backbone, neck and encoder of part a's finished primary-only run (seed 1),
# backbone LR x 0.1 (the stand-in for the paper's ImageNet start)
W=output/route_study/warm_start_a_primary_seed1.pth
warm_start() {
  # the run folders do not survive a new machine: part a's seed-1 primary-only run is trained again
  # when its checkpoint is missing (same config and seed; its results go to output/, not to a_700it.json)
  [ -f "$W" ] && return
  "${A[@]}" --tag a_700it --iters 700 --seeds 1 --settings "primary only" \
    --json output/route_study/a_700it_primary_seed1_again.json
  python benchmarks/warm_start_weights.py \
    output/route_study/a_700it/primary_only_seed1/model_final.pth "$W"
}
D=(--tag d_warm --iters 700 --seeds 1 2 "${P[@]}" --json "$R/d_warm.json"
   --opts train.init_checkpoint="$W"
   'optimizer.params.rules=[{"pattern":"backbone","lr_factor":0.1},{"pattern":["reference_points","sampling_offsets"],"lr_factor":0.1}]')
"${A[@]}" --check-complete "${D[@]}" || { warm_start; "${A[@]}" "${D[@]}"; }
# f (digging): each auxiliary route alone with the primary one, quick-start schedule, seed 1
"${A[@]}" --tag f_single_aux --iters 700 --seeds 1 --settings "+ INSTRUCT" "+ SEP_FFN" \
  --json "$R/f_single_aux.json"
# g (digging): fewer one-to-many matches per object (max_k 2 instead of 6) and half the one-to-many
# loss weights, all three routes, seed 1, each against part a's seed-1 runs (primary only does not
# use the one-to-many assigner or weights); the two single runs train at the same time
"${A[@]}" --tag g_maxk2 --iters 700 --seeds 1 --settings "all three routes" \
  --json "$R/g_maxk2.json" --opts model.criterion.one_to_many_matcher.max_k=2 &
"${A[@]}" --tag g_o2m_half --iters 700 --seeds 1 --settings "all three routes" \
  --json "$R/g_o2m_half.json" \
  --opts '+model.weight_dict.one_to_many={"loss_class":1.0,"loss_bbox":2.5,"loss_giou":1.0}' &
wait
# g2 and i (digging, after g's max_k 2 closed most of the gap): the same with seed 2, and for twice the
# schedule (against part b's seed-1 primary-only run); the two single runs train at the same time
"${A[@]}" --tag g_maxk2 --iters 700 --seeds 1 2 --settings "all three routes" \
  --json "$R/g_maxk2.json" --opts model.criterion.one_to_many_matcher.max_k=2 &
"${A[@]}" --tag i_maxk2_1400it --iters 1400 --seeds 1 --settings "all three routes" \
  --json "$R/i_maxk2_1400it.json" --opts model.criterion.one_to_many_matcher.max_k=2 &
wait
# j (digging, after i's max_k 2 drew level with primary only at 1,400 iterations): the same pair
# with seed 2 (part i grows to seeds 1 and 2; primary only's seed 2 has its own file, part b keeps seed 1)
"${A[@]}" --tag i_maxk2_1400it --iters 1400 --seeds 1 2 --settings "all three routes" \
  --json "$R/i_maxk2_1400it.json" --opts model.criterion.one_to_many_matcher.max_k=2 &
"${A[@]}" --tag j_primary_1400it --iters 1400 --seeds 2 --settings "primary only" \
  --json "$R/j_primary_1400it.json" &
wait
# k (digging, after i and j drew level at 1,400 iterations): max_k 2 for 1.5x that schedule, against
# primary only at the same schedule, seed 1; the two single runs train at the same time
"${A[@]}" --tag k_maxk2_2100it --iters 2100 --seeds 1 --settings "all three routes" \
  --json "$R/k_maxk2_2100it.json" --eval-every 350 --opts model.criterion.one_to_many_matcher.max_k=2 &
( "${A[@]}" --tag k_primary_2100it --iters 2100 --seeds 1 --settings "primary only" \
  --json "$R/k_primary_2100it.json" --eval-every 350 && warm_start ) &
wait
# h (digging): a longer run from the shared warm start of part d (twice the schedule, as part b from
# scratch; 3x did not fit the eighth session's machine time after k), seed 1
warm_start
"${A[@]}" --tag h_warm_1400it --iters 1400 --seeds 1 "${P[@]}" --json "$R/h_warm_1400it.json" \
  --eval-every 350 --opts train.init_checkpoint="$W" \
  'optimizer.params.rules=[{"pattern":"backbone","lr_factor":0.1},{"pattern":["reference_points","sampling_offsets"],"lr_factor":0.1}]'
# e: the official decoder width and depth (E_OPTS), last: about 4 h for the pair on one thread each,
# more than a session's machine time, and run folders do not survive a new machine. On a GPU,
# benchmarks/route_study_gpu.sh runs it in minutes; with its e_d256.json here this step is skipped.
"${A[@]}" --tag e_d256 --iters 700 --seeds 1 "${P[@]}" --json "$R/e_d256.json" --opts "${E_OPTS[@]}"
