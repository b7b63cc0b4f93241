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
    python benchmarks/bench_train.py --profile [--profile-size 256] [--threads 1]

``--profile`` instead profiles one training step of the R50 model (batch 1) with ``torch.profiler``,
in float32 and under bf16 autocast (alternating fresh processes, ``--profile-rounds`` each), and
prints the step times and the ops by self CPU time in both, with the bf16 / fp32 ratio.
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
    if spec.get("profile"):
        return _profile_step(step)
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


def _profile_step(step) -> dict:
    """One timed step, then one step under ``torch.profiler``: {step_s, ops: {name: [ms, calls]}}."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    step()
    step_s = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = {e.key: [e.self_cpu_time_total / 1e3, e.count] for e in prof.key_averages()}
    return {"step_s": step_s, "ops": ops}


def _print_profile(size: int, threads: int, rounds: int, top: int) -> None:
    """Profile the R50 step in fp32 and bf16 AMP (alternating processes) and print both."""
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for label, amp in (("fp32", False), ("bf16", True)):
            spec = dict(
                config=str(R50),
                size=size,
                batch=1,
                ckpt=False,
                amp=amp,
                peer=False,
                threads=threads,
                steps=0,
                profile=True,
            )
            runs[label].append(_run(spec))
    step = {k: sorted(r["step_s"] for r in v)[len(v) // 2] for k, v in runs.items()}
    print(
        f"R50 300q, {size} px, batch 1, {threads} thread(s), {rounds} round(s) of fresh processes"
    )
    print(
        f"step (median, unprofiled): fp32 {step['fp32']:.3f} s, bf16 AMP {step['bf16']:.3f} s, "
        f"bf16 speed {step['fp32'] / step['bf16']:.2f}x"
    )

    def median_ops(label: str) -> dict[str, tuple[float, int]]:
        names = set().union(*(r["ops"] for r in runs[label]))
        out = {}
        for name in names:
            values = sorted(r["ops"].get(name, [0.0, 0])[0] for r in runs[label])
            out[name] = (values[len(values) // 2], runs[label][0]["ops"].get(name, [0, 0])[1])
        return out

    fp32, bf16 = median_ops("fp32"), median_ops("bf16")
    totals = {k: sum(v[0] for v in ops.values()) for k, ops in (("fp32", fp32), ("bf16", bf16))}
    print(f"profiled self CPU total: fp32 {totals['fp32']:.0f} ms, bf16 {totals['bf16']:.0f} ms")
    print("| op | fp32 ms | bf16 ms | bf16 / fp32 | calls fp32 | calls bf16 |")
    print("| --- | --- | --- | --- | --- | --- |")
    names = sorted(
        set(fp32) | set(bf16), key=lambda n: -max(fp32.get(n, (0,))[0], bf16.get(n, (0,))[0])
    )
    for name in names[:top]:
        a, b = fp32.get(name, (0.0, 0)), bf16.get(name, (0.0, 0))
        ratio = f"{b[0] / a[0]:.2f}" if a[0] > 0 else "new"
        print(f"| `{name[:60]}` | {a[0]:.1f} | {b[0]:.1f} | {ratio} | {a[1]} | {b[1]} |")


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
    parser.add_argument("--profile", action="store_true", help="profile fp32 vs bf16 AMP (R50)")
    parser.add_argument("--profile-size", type=int, default=256, help="image side for --profile")
    parser.add_argument("--profile-rounds", type=int, default=2, help="processes per dtype")
    parser.add_argument("--profile-top", type=int, default=25, help="ops listed")
    args = parser.parse_args(argv)
    if args.profile:
        sys.path.insert(0, str(REPO / "benchmarks"))
        import torch
        from machine import machine_line

        torch.set_num_threads(args.threads)
        print(machine_line(torch.device("cpu")))
        _print_profile(args.profile_size, args.threads, args.profile_rounds, args.profile_top)
        return
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
