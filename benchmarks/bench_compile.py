"""``torch.compile`` of submodules (``train.compile``) against eager, timed in the same process.

The quick-start model (the trained checkpoint when given, else random weights) runs its eval
forward on images of several sizes, the eager and the compiled copy alternately; prints the first
compiled call (the compile), both medians and the speed-up. ``--train`` times a training step
(batch 4, 256x256) instead, with the compiled modules in training mode.

    python benchmarks/bench_compile.py [--modules backbone neck] [--static] [--threads 1] \
        [--weights model_final.pth] [--train]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "projects/mr_detr_deformable/configs/quickstart_synthetic.py"
EVAL_SHAPES = [(224, 320), (224, 288), (224, 224), (256, 320), (224, 256)]  # quick-start test sizes
TRAIN_SIZE, TRAIN_BATCH = 256, 4


def _eval_calls(size_list):
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g).float() for h, w in size_list]
    return [[{"image": im, "height": im.shape[1], "width": im.shape[2]}] for im in images]


def _train_batch():
    from mrdetr.structures import Boxes, Instances

    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[30.0, 40.0, 200.0, 220.0], [100.0, 60.0, 250.0, 200.0]])
    size = (TRAIN_SIZE, TRAIN_SIZE)
    return [
        {
            "image": torch.randint(0, 256, (3, *size), generator=g).float(),
            "instances": Instances(size, gt_boxes=Boxes(boxes), gt_classes=torch.tensor([1, 2])),
        }
        for _ in range(TRAIN_BATCH)
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", nargs="+", default=["backbone", "neck"])
    parser.add_argument("--static", action="store_true", help="compile for fixed shapes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", help="checkpoint to load (default: random weights)")
    parser.add_argument("--train", action="store_true", help="time a training step instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mrdetr.checkpoint.checkpointer import Checkpointer
    from mrdetr.config import LazyConfig, instantiate
    from mrdetr.engine.compiling import compile_submodules

    torch.manual_seed(0)
    eager = instantiate(LazyConfig.load(str(QUICKSTART)).model)
    if args.weights:
        Checkpointer(eager, save_to_disk=False).load_weights(args.weights)
    eager.train(args.train)
    compiled = copy.deepcopy(eager)
    compile_submodules(compiled, args.modules, dynamic=not args.static)

    if args.train:
        batch = _train_batch()

        def call(model, _):
            model.zero_grad(set_to_none=True)
            sum(model(batch).values()).backward()

        inputs = [None]
    else:
        inputs = _eval_calls(EVAL_SHAPES[:1] if args.static else EVAL_SHAPES)

        def call(model, x):
            with torch.no_grad():
                model(x)

    start = time.perf_counter()
    call(compiled, inputs[0])
    first = time.perf_counter() - start
    for x in inputs:  # warm-up: every shape once in both
        call(compiled, x)
        call(eager, x)
    times = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for x in inputs:
            for name, model in (("eager", eager), ("compiled", compiled)):
                start = time.perf_counter()
                call(model, x)
                times[name].append(time.perf_counter() - start)
    eager_s, compiled_s = (statistics.median(times[k]) for k in ("eager", "compiled"))
    what = "train step" if args.train else "eval"
    print(
        f"{what}, modules {args.modules}, {'static' if args.static else 'dynamic'} shapes, "
        f"{args.threads} thread(s): first compiled call {first:.1f} s, eager {eager_s:.3f} s, "
        f"compiled {compiled_s:.3f} s, speed {eager_s / compiled_s:.2f}x"
    )


if __name__ == "__main__":
    main()
