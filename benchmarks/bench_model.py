"""Eval forward and one training step of the R50 Mr. DETR-Deformable 300q model, against a peer
timed in the same run: HF transformers' Deformable DETR (two-stage, box refine, 300 queries,
random weights, same widths/layers/levels/points; ``benchmarks/peer.py``).

Protocol of ``../shared/reference/timings.md``: 2 threads, 3 warm-ups, 5 timed runs, median, the
512x512 timing image and its 5 GT boxes; the two models are timed in interleaved rounds. Every row
also gives the FLOPs of one call (``FlopCounterMode``: matmuls and convolutions), the GEMM rate this
machine reaches in the row's dtype (measured now), and the fraction of the GEMM-bound floor
(FLOPs / rate) reached. Non-fp32 dtypes run both models under autocast; in bfloat16 our model also
runs with the inference switch (``mrdetr.engine.precision``: weights cast once, frozen batch norms
folded, channels-last backbone).

    python benchmarks/bench_model.py [--threads 2] [--device cpu] [--dtypes float32 bfloat16]
    python benchmarks/bench_model.py --quick      # 128 px, 1 run: checks the script, not the speed
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (  # noqa: E402  (benchmarks/ is not a package)
    QUICK_GEMM_SIZE,
    count_flops,
    gemm_rate,
    interleaved_medians,
    machine_line,
)
from peer import (  # noqa: E402
    build_peer,
    peer_inputs,
    peer_labels,
    peer_train_step,
    peer_unavailable_reason,
)

REPO = Path(__file__).resolve().parents[1]
R50_CONFIG = REPO / "configs/common/models/mr_detr_r50.py"
TIMING_SIZE = 512  # the timing image of ../shared/reference (other sizes use a random image)
QUICK_SIZE = 128  # --quick: checks that the script runs, not the speed (>= 300 encoder tokens)
# Footnote only (another machine, another day): the original code's medians from timings.md.
ORIGINAL = "original code (timings.md, 2-vCPU AMD EPYC): eval 2.29 s, train step 6.25-7.60 s"


def _inputs(size: int):
    """A 0..255 CHW image and 5 xyxy boxes + classes: the timing image at 512, else random."""
    sys.path.insert(0, str(REPO / "tests"))
    from reference_data import ref_inputs, reference_dir  # honours MRDETR_REFERENCE_DIR

    if size == TIMING_SIZE and reference_dir().exists():
        inputs = ref_inputs()
        gt = inputs["timing_gt"]
        return inputs["timing_image"], gt["boxes_xyxy_abs"], gt["classes"]
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
    boxes = (torch.tensor([[30, 40, 200, 220], [250, 60, 500, 300], [100, 300, 260, 500],
                           [10, 10, 90, 120], [300, 320, 480, 500]]) * size / 512).tolist()  # fmt: skip
    return image, boxes, [1, 2, 3, 4, 5]


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=TIMING_SIZE, help="square image side")
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"]
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the HF Deformable DETR peer")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step rows")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE} px, 1 run, small GEMM")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.warmup, args.runs = QUICK_SIZE, 0, 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from mrdetr.config import LazyConfig, instantiate
    from mrdetr.engine.precision import inference_autocast, prepare_for_inference
    from mrdetr.modeling.routes import Route
    from mrdetr.structures import Boxes, Instances

    cfg = LazyConfig.load(str(R50_CONFIG))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    image, boxes, classes = _inputs(args.size)
    size = (args.size, args.size)
    eval_batch = [{"image": image, "height": args.size, "width": args.size}]
    instances = Instances(
        size,
        gt_boxes=Boxes(torch.as_tensor(boxes, dtype=torch.float32)),
        gt_classes=torch.as_tensor(classes, dtype=torch.long),
    )
    train_batch = [{"image": image, "instances": instances.to(device)}]

    reason = "--no-peer" if args.no_peer else peer_unavailable_reason()
    peer = None if reason else build_peer(cfg.model).to(device)
    hf_inputs = peer_inputs([image], cfg.model.pixel_mean, cfg.model.pixel_std, device)
    hf_labels = peer_labels([(boxes, classes)], size, device)

    def eval_ours():
        model.eval()
        with torch.no_grad():
            model(eval_batch)

    def eval_all_routes():  # what the original code computes at eval
        model.eval()
        with torch.no_grad():
            model.forward_features(eval_batch, (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN))

    cast_model = {}  # bf16 copy for the inference switch, built on first use

    def eval_cast():
        bf16 = cast_model.setdefault(
            "model", prepare_for_inference(copy.deepcopy(model), torch.bfloat16)
        )
        with inference_autocast(device, torch.bfloat16):
            bf16(eval_batch)

    def eval_peer():
        peer.eval()
        with torch.no_grad():
            peer(**hf_inputs)

    def train_ours():
        model.train()
        model.zero_grad(set_to_none=True)
        sum(model(train_batch).values()).backward()

    def train_peer():
        peer_train_step(peer, hf_inputs, hf_labels)

    print(machine_line(device))
    print(
        f"image {args.size}x{args.size}, {args.warmup} warm-ups, median of {args.runs} "
        f"interleaved rounds; peer: {'HF DeformableDetr (two-stage, box refine)' if peer else reason}"
    )
    flops = {"ours eval": count_flops(eval_ours, model)}
    if peer is not None:
        flops["peer eval"] = count_flops(eval_peer, peer)
    gemm_size = QUICK_GEMM_SIZE if args.quick else None
    print("| dtype | what | median s | GFLOP | GEMM GFLOP/s | floor s | % of floor | vs peer |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        rate = gemm_rate(device, dtype, gemm_size)
        with _autocast(device, dtype):
            fns = {"ours eval": eval_ours, "ours eval, all 3 routes": eval_all_routes}
            if dtype == torch.bfloat16:
                fns["ours eval, bf16 weights cast once"] = eval_cast
            if peer is not None:
                fns["peer eval"] = eval_peer
            times = interleaved_medians(fns, device, args.warmup, args.runs)
            if not args.no_train:
                train = {"ours train step": train_ours}
                if peer is not None:
                    train["peer train step"] = train_peer
                times |= interleaved_medians(train, device, args.warmup, args.runs)
        for name, seconds in times.items():
            peer_time = times.get(name.replace("ours", "peer").split(",")[0])
            vs_peer = f"{peer_time / seconds:.2f}x" if peer_time and name.startswith("ours") else ""
            flop = flops.get(name.split(",")[0] if "cast once" in name else name)
            cells = ["", "", ""]
            if flop:
                floor = flop / rate
                cells = [f"{flop / 1e9:.1f}", f"{floor:.3f}", f"{100 * floor / seconds:.0f}"]
            print(
                f"| {dtype_name} | {name} | {seconds:.3f} | {cells[0]} | {rate / 1e9:.0f} | "
                f"{cells[1]} | {cells[2]} | {vs_peer} |"
            )
    print(
        "vs peer: peer time / ours (>1 = ours faster), same run, same shapes. GFLOP: one eval call "
        "(matmuls + convolutions), the floor: GFLOP / the GEMM rate measured above in that dtype."
    )
    print(f"Footnote, not comparable (other machine): {ORIGINAL}.")


if __name__ == "__main__":
    main()
