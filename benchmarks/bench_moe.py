"""Cost of the Mr. DETR++ MoE layers, printed as ratios against the dense Mr. DETR layers of the same run.

Decoder FFN (one layer, [B, Q, d] queries):
- inference (PRIMARY): ``RouteFFN`` vs ``RouteAwareMoEFFN`` with PRIMARY pinned to expert 0 (default
  ++ config) vs PRIMARY routed through the learned router (``route_to_expert=None``);
- training (SEP_FFN route, forward + backward): ``RouteFFN.sep`` vs the routed MoE.
Encoder (``DeformableEncoder``, ``--encoder-layers`` layers): dense vs MoE on the coarsest level and on
the two coarsest levels, inference and training step, at tiny and R50-sized shapes.

Usage: ``python benchmarks/bench_moe.py [--device cpu|cuda] [--repeats 5] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from mrdetr.modeling.routes import Route
from mrdetr.modeling.transformer import DeformableEncoder, RouteFFN
from mrdetr.modeling.transformer.levels import flatten_levels
from mrdetr.modeling.transformer.moe import RouteAwareMoEFFN, moe_ffn_factory


def timeit(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Fastest of ``repeats`` calls in seconds (the minimum is the most robust on a shared machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def train_step(module: nn.Module, call: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        call().float().pow(2).mean().backward()

    return step


def bench_decoder_ffn(args, device: torch.device) -> None:
    d, hidden, e, k = args.embed_dim, args.ffn_dim, args.num_experts, args.top_k
    print(f"\n## decoder FFN, one layer (d={d}, hidden={hidden}, E={e}, top_k={k})")
    print(
        "| B x Q | inference: pinned / dense | inference: routed / dense | train SEP: MoE / dense |"
    )
    print("| --- | --- | --- | --- |")
    for b, q in ((1, 300), (2, 900)):
        torch.manual_seed(0)
        x = torch.randn(b, q, d, device=device)
        dense = RouteFFN(embed_dim=d, hidden_dim=hidden).to(device)
        common = dict(embed_dim=d, hidden_dim=hidden, num_experts=e, top_k=k, router="token+route")
        pinned = RouteAwareMoEFFN(**common, route_to_expert={"primary": 0, "instruct": 0}).to(
            device
        )
        routed = RouteAwareMoEFFN(**common, route_to_expert=None).to(device)
        with torch.no_grad():
            for m in (dense, pinned, routed):
                m.eval()
            t_dense = timeit(partial(dense, x, Route.PRIMARY), device, args.repeats)
            t_pinned = timeit(partial(pinned, x, Route.PRIMARY), device, args.repeats)
            t_routed = timeit(partial(routed, x, Route.PRIMARY), device, args.repeats)
        dense.train()
        pinned.train()
        t_dense_tr = timeit(
            train_step(dense, partial(dense, x, Route.SEP_FFN)), device, args.repeats
        )
        t_moe_tr = timeit(
            train_step(pinned, partial(pinned, x, Route.SEP_FFN)), device, args.repeats
        )
        pinned.aux_losses.clear()
        print(
            f"| {b} x {q} | {t_pinned / t_dense:.2f} | {t_routed / t_dense:.2f} | "
            f"{t_moe_tr / t_dense_tr:.2f} (dense {t_dense * 1e3:.1f} ms eval, {t_dense_tr * 1e3:.1f} ms train) |"
        )


def _inputs(shapes, d: int, batch: int, device: torch.device):
    feats = [torch.randn(batch, d, h, w, device=device) for h, w in shapes]
    masks = [torch.zeros(batch, h, w, dtype=torch.bool, device=device) for h, w in shapes]
    pos = [torch.randn(batch, d, h, w, device=device) for h, w in shapes]
    return flatten_levels(feats, masks, pos, torch.zeros(len(shapes), d, device=device))


def bench_encoder(args, device: torch.device) -> None:
    configs = [("tiny", 32, 64, [(16, 20), (8, 10), (4, 5), (2, 3)])]
    if not args.quick:
        # R50 at a 512x640 input: strides 8/16/32/64
        configs.append(("R50 512x640", 256, 2048, [(64, 80), (32, 40), (16, 20), (8, 10)]))
    print(
        f"\n## encoder ({args.encoder_layers} layers, E={args.num_experts}, top_k={args.encoder_top_k})"
    )
    print(
        "| shapes | tokens (coarsest / all) | MoE[-1] eval | MoE[-1] train | MoE[-2,-1] eval | MoE[-2,-1] train |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, d, hidden, shapes in configs:
        tokens, pos, levels = _inputs(shapes, d, 1, device)
        kw = dict(
            num_layers=args.encoder_layers,
            embed_dim=d,
            num_heads=8 if d >= 64 else 2,
            num_levels=len(shapes),
            num_points=4,
            ffn_dim=hidden,
        )
        factory = moe_ffn_factory(
            embed_dim=d, hidden_dim=hidden, num_experts=args.num_experts, top_k=args.encoder_top_k
        )
        torch.manual_seed(0)
        encoders = {
            "dense": DeformableEncoder(**kw),
            "moe1": DeformableEncoder(**kw, moe_factory=factory, moe_levels=[-1]),
            "moe2": DeformableEncoder(**kw, moe_factory=factory, moe_levels=[-2, -1]),
        }
        t_eval, t_train = {}, {}
        for key, enc in encoders.items():
            enc.to(device).eval()
            with torch.no_grad():
                t_eval[key] = timeit(partial(enc, tokens, pos, levels), device, args.repeats)
            enc.train()
            t_train[key] = timeit(
                train_step(enc, partial(enc, tokens, pos, levels)), device, args.repeats
            )
        coarse = shapes[-1][0] * shapes[-1][1]
        print(
            f"| {name} | {coarse} / {tokens.shape[1]} | {t_eval['moe1'] / t_eval['dense']:.2f} | "
            f"{t_train['moe1'] / t_train['dense']:.2f} | {t_eval['moe2'] / t_eval['dense']:.2f} | "
            f"{t_train['moe2'] / t_train['dense']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--ffn-dim", type=int, default=2048)
    parser.add_argument("--num-experts", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--encoder-top-k", type=int, default=1)
    parser.add_argument("--encoder-layers", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads (0 = default)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny encoder shapes only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device={device}, threads={torch.get_num_threads()}, torch {torch.__version__}; ratios < 1 are faster"
    )
    bench_decoder_ffn(args, device)
    bench_encoder(args, device)


if __name__ == "__main__":
    main()
