"""Training throughput and peak memory on CPU: gradient checkpointing and bf16 AMP off/on.

Each setting runs in its own process (peak RSS is per process): build the model, run warm-up steps,
time the next steps, report iterations/s and the peak resident memory above the resident memory
measured after the warm-up's first step began (the training step's activations and gradients).
Also times the data loader alone (images/s) for the quick-start config, to show it is not the
bottleneck.

    python benchmarks/bench_train.py [--threads 2] [--steps 3] [--skip-r50]
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

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    cfg = LazyConfig.load(spec["config"])
    overrides = [
        f"model.transformer.encoder.use_checkpoint={spec['ckpt']}",
        f"model.transformer.decoder.use_checkpoint={spec['ckpt']}",
    ]
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    model = instantiate(cfg.model).train()
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

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["amp"]):
            losses = model(inputs)
        sum(losses.values()).backward()
        opt.step()

    step()  # warm-up (also allocates optimizer state)
    base = _rss_mb()
    start_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "it_s": spec["steps"] / elapsed,
        "peak_mb": max(peak, start_peak) - base,
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
    args = parser.parse_args(argv)
    models = [("quick-start, 256 px, batch 8", str(QUICKSTART), 256, 8)]
    if not args.skip_r50:
        models.append(("R50 300q, 512 px, batch 2", str(R50), 512, 2))
    print(f"threads={args.threads} steps={args.steps} load average={os.getloadavg()[0]:.1f}")
    print(
        f"{'model':30s} {'setting':18s} {'it/s':>7s} {'peak MB':>8s} {'speed':>6s} {'memory':>7s}"
    )
    for name, config, size, batch in models:
        base = None
        for label, ckpt, amp in (
            ("baseline", False, False),
            ("checkpointing", True, False),
            ("bf16 AMP", False, True),
        ):
            spec = dict(
                config=config,
                size=size,
                batch=batch,
                ckpt=ckpt,
                amp=amp,
                threads=args.threads,
                steps=args.steps,
            )
            r = _run(spec)
            base = base or r
            print(
                f"{name:30s} {label:18s} {r['it_s']:7.3f} {r['peak_mb']:8.0f} "
                f"{r['it_s'] / base['it_s']:5.2f}x {r['peak_mb'] / base['peak_mb']:6.2f}x"
            )
    ips = _loader_images_per_s(args.threads, 64)
    print(f"quick-start data loader alone (1 process): {ips:.1f} images/s")
    print("speed/memory: ratio to the baseline row of the same model, measured in this run")


if __name__ == "__main__":
    main()
