"""Training throughput and peak memory on CPU: gradient checkpointing and bf16 AMP off/on, against
HF transformers' Deformable DETR (two-stage, box refine, same sizes, random weights;
``benchmarks/peer.py``) trained on the same batch in the same run.

Each setting runs in its own process (peak RSS is per process): build the model, run warm-up steps,
time the next steps, report iterations/s and the peak resident memory above the resident memory
measured after the warm-up's first step began (the training step's activations and gradients).
Each process also counts the FLOPs of one step (``FlopCounterMode``, forward + backward) and
measures the GEMM rate of its dtype, for the fraction of the GEMM-bound floor reached. Also times
the data loader alone (images/s) for the quick-start config, to show it is not the bottleneck.

    python benchmarks/bench_train.py [--threads 2] [--steps 3] [--skip-r50] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "projects/mr_detr_deformable/configs/quickstart_synthetic.py"
R50 = REPO / "configs/common/models/mr_detr_r50.py"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(spec: dict) -> dict:
    import torch

    from mrdetr.config import LazyConfig, instantiate
    from mrdetr.structures import Boxes, Instances

    sys.path.insert(0, str(REPO / "benchmarks"))
    from machine import count_flops, gemm_rate
    from peer import build_peer, peer_inputs, peer_labels, peer_train_step

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    cfg = LazyConfig.load(spec["config"])
    overrides = [
        f"model.transformer.encoder.use_checkpoint={spec['ckpt']}",
        f"model.transformer.decoder.use_checkpoint={spec['ckpt']}",
    ]
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    model = (build_peer(cfg.model) if spec["peer"] else instantiate(cfg.model)).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    g = torch.Generator().manual_seed(0)
    size, batch = spec["size"], spec["batch"]
    boxes = (
        torch.tensor([[30, 40, 200, 220], [250, 60, 500, 300], [100, 300, 260, 500]]) * size / 512
    )
    inputs = [
        {
            "image": torch.randint(0, 256, (3, size, size), generator=g).float(),
            "instances": Instances(
                (size, size), gt_boxes=Boxes(boxes.float()), gt_classes=torch.tensor([1, 2, 3])
            ),
        }
        for _ in range(batch)
    ]

    if spec["peer"]:
        hf_inputs = peer_inputs(
            [x["image"] for x in inputs], cfg.model.pixel_mean, cfg.model.pixel_std, "cpu"
        )
        targets = [(boxes, x["instances"].gt_classes) for x in inputs]
        hf_labels = peer_labels(targets, (size, size), "cpu")

    def forward_backward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["amp"]):
            if spec["peer"]:
                peer_train_step(model, hf_inputs, hf_labels)
                return
            model.zero_grad(set_to_none=True)
            losses = model(inputs)
        sum(losses.values()).backward()

    def step():
        forward_backward()
        opt.step()

    step()  # warm-up (also allocates optimizer state)
    base = _rss_mb()
    start_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flops = count_flops(forward_backward)
    rate = gemm_rate(torch.device("cpu"), torch.bfloat16 if spec["amp"] else torch.float32)
    return {
        "it_s": spec["steps"] / elapsed,
        "peak_mb": max(peak, start_peak) - base,
        "gflop": flops / 1e9,
        "floor_pct": 100 * flops / rate * spec["steps"] / elapsed,
        "gemm_gflop_s": rate / 1e9,
    }


def _loader_images_per_s(threads: int, n: int) -> float:
    import torch

    from mrdetr.config import LazyConfig, instantiate
    from mrdetr.data.synthetic import ensure_synthetic_dataset

    torch.set_num_threads(threads)
    ensure_synthetic_dataset(progress=False)
    cfg = LazyConfig.load(str(QUICKSTART))
    cfg.dataloader.train.num_workers = 0
    loader = iter(instantiate(cfg.dataloader.train))
    next(loader)
    start = time.perf_counter()
    images = 0
    while images < n:
        images += len(next(loader))
    return images / (time.perf_counter() - start)


def _run(spec: dict) -> dict:
    code = f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import bench_train as b; print('RESULT', json.dumps(b._worker({spec!r})))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"benchmark worker failed: {out.stderr[-2000:]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-r50", action="store_true", help="only the quick-start model")
    parser.add_argument("--no-peer", action="store_true", help="skip the HF Deformable DETR rows")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from machine import machine_line
    from peer import peer_unavailable_reason

    peer_reason = "--no-peer" if args.no_peer else peer_unavailable_reason()
    models = [("quick-start, 256 px, batch 8", str(QUICKSTART), 256, 8)]
    if not args.skip_r50:
        models.append(("R50 300q, 512 px, batch 2", str(R50), 512, 2))
    import torch

    torch.set_num_threads(args.threads)
    print(machine_line(torch.device("cpu")))
    print(f"threads={args.threads} steps={args.steps}; peer: {peer_reason or 'HF DeformableDetr'}")
    print(
        f"{'model':30s} {'setting':18s} {'it/s':>7s} {'peak MB':>8s} {'speed':>6s} {'memory':>7s}"
        f" {'GFLOP':>7s} {'GEMM GFLOP/s':>12s} {'% floor':>7s}"
    )
    settings = [
        ("baseline", False, False, False),
        ("checkpointing", True, False, False),
        ("bf16 AMP", False, True, False),
    ]
    if peer_reason is None:
        settings += [("HF peer", False, False, True), ("HF peer, bf16 AMP", False, True, True)]
    for name, config, size, batch in models:
        base = None
        for label, ckpt, amp, peer in settings:
            spec = dict(
                config=config,
                size=size,
                batch=batch,
                ckpt=ckpt,
                amp=amp,
                peer=peer,
                threads=args.threads,
                steps=args.steps,
            )
            r = _run(spec)
            base = base or r
            print(
                f"{name:30s} {label:18s} {r['it_s']:7.3f} {r['peak_mb']:8.0f} "
                f"{r['it_s'] / base['it_s']:5.2f}x {r['peak_mb'] / base['peak_mb']:6.2f}x"
                f" {r['gflop']:7.1f} {r['gemm_gflop_s']:12.0f} {r['floor_pct']:7.1f}"
            )
    ips = _loader_images_per_s(args.threads, 64)
    print(f"quick-start data loader alone (1 process): {ips:.1f} images/s")
    print("speed/memory: ratio to the baseline row of the same model, measured in this run")
    print("HF peer rows: speed > 1 = the peer is faster than our baseline (same batch, same run)")


if __name__ == "__main__":
    main()
