"""Eval forward and one training step of the R50 Mr. DETR-Deformable 300q model on CPU.

Protocol of ``../shared/reference/timings.md`` (original code: 2.29 s eval, 6.25-7.60 s train step on
a 2-vCPU AMD EPYC; 1.82 s eval on a 2-vCPU Xeon): 2 threads, 3 warm-ups, 5 timed runs, median; the
512x512 timing image and its 5 GT boxes. Absolute times from different machines do not compare, so
the ratios printed against the original figures are indicative; ``--primary-only-baseline`` also
times, in the same run, an eval forward that runs all three decoder routes as the original code does.

    python benchmarks/bench_model.py [--threads 2] [--warmup 3] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ORIGINAL = {"eval": 2.29, "train_step": (6.25, 7.60)}  # timings.md, AMD EPYC, run 1/2 medians
ORIGINAL_XEON_EVAL = 1.82  # timings.md, second build on a 2-vCPU Intel Xeon


def _median_time(fn, warmup: int, runs: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO / "tests"))
    from reference_data import ref_inputs

    from mrdetr.config import LazyConfig, instantiate
    from mrdetr.modeling.routes import Route
    from mrdetr.structures import Boxes, Instances

    cfg = LazyConfig.load(str(REPO / "configs/common/models/mr_detr_r50.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    inputs = ref_inputs()
    image = inputs["timing_image"]
    gt = inputs["timing_gt"]
    eval_batch = [{"image": image, "height": 512, "width": 512}]
    boxes = torch.as_tensor(gt["boxes_xyxy_abs"], dtype=torch.float32)
    classes = torch.as_tensor(gt["classes"], dtype=torch.long)
    train_batch = [
        {
            "image": image,
            "instances": Instances((512, 512), gt_boxes=Boxes(boxes), gt_classes=classes),
        }
    ]

    def eval_forward():
        model.eval()
        with torch.no_grad():
            model(eval_batch)

    def eval_all_routes():  # what the original code computes at eval
        model.eval()
        with torch.no_grad():
            model.forward_features(eval_batch, (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN))

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        sum(model(train_batch).values()).backward()

    from tiny_model import tiny_batch, tiny_model

    tiny, tiny_inputs = tiny_model(), tiny_batch(num_boxes=(3, 2))
    tiny.train()

    def tiny_step():
        tiny.zero_grad(set_to_none=True)
        sum(tiny(tiny_inputs).values()).backward()

    torch.manual_seed(5)
    rows = []
    t_tiny, s_tiny = _median_time(tiny_step, args.warmup, args.runs)
    rows.append(("tiny test model fwd+bwd (2 images)", t_tiny, s_tiny, 1.0 / t_tiny))
    t_eval, s_eval = _median_time(eval_forward, args.warmup, args.runs)
    rows.append(("eval forward (primary route only)", t_eval, s_eval, ORIGINAL["eval"] / t_eval))
    t_all, s_all = _median_time(eval_all_routes, args.warmup, args.runs)
    rows.append(("eval forward, all 3 routes (same run)", t_all, s_all, t_all / t_eval))
    t_train, s_train = _median_time(train_step, args.warmup, args.runs)
    rows.append(
        (
            "train step (zero_grad+fwd+bwd)",
            t_train,
            s_train,
            statistics.mean(ORIGINAL["train_step"]) / t_train,
        )
    )
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.warmup} warm-ups, {args.runs} runs"
    )
    print(f"{'what':42s} {'median s':>9s} {'speed-up':>9s}  samples")
    for name, med, samples, ratio in rows:
        print(f"{name:42s} {med:9.3f} {ratio:8.2f}x  {' '.join(f'{x:.2f}' for x in samples)}")
    print("tiny row: the ratio column is steps per second (goal: well under a second per step).")
    print(
        "eval / train rows: original code's median / ours. The original's eval anchor is 2.29 s on a"
    )
    print(
        f"2-vCPU AMD EPYC and 1.82 s on a 2-vCPU Xeon (ours vs the Xeon: {ORIGINAL_XEON_EVAL / t_eval:.2f}x);"
    )
    print(
        "the train anchor (6.25-7.60 s) is AMD only. 'all 3 routes' row: its time / the primary-only"
    )
    print(
        "eval (what running the auxiliary routes at inference, as the original does, would cost)."
    )


if __name__ == "__main__":
    main()
