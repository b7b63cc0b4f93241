"""Route ablation on synthetic data: primary only vs + SEP_FFN vs + INSTRUCT vs all three vs ++ (MoE).

Every setting trains the quick-start model (``projects/mr_detr_deformable/configs/quickstart_synthetic.py``)
with the same iterations, data and seeds through ``projects/train_net.py``, and reports bbox AP / AP50
(``synthetic_val``) and seconds per iteration. Writes a Markdown table and a PNG of AP vs iteration.
The paper's ordering (COCO, 12 epochs: primary only 47.6 < + one auxiliary route 49.6 / 50.4 < all three
50.7) is the hypothesis; with few iterations and one seed, differences can be within noise: use
``--seeds`` to see the spread.

    python benchmarks/ablation_routes.py [--iters 700] [--eval-every 175] [--seeds 42] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "projects/mr_detr_deformable/configs/quickstart_synthetic.py"
PLUSPLUS = REPO / "projects/mr_detr_pp_align/configs/quickstart_synthetic_pp.py"
SETTINGS = {
    "primary only": (BASE, ["primary"]),
    "+ SEP_FFN": (BASE, ["primary", "sep_ffn"]),
    "+ INSTRUCT": (BASE, ["primary", "instruct"]),
    "all three routes": (BASE, ["primary", "instruct", "sep_ffn"]),
    "++ (route-aware MoE)": (PLUSPLUS, ["primary", "instruct", "sep_ffn"]),
}


def run_setting(config: Path, routes: list[str], seed: int, args, out: Path) -> dict:
    """Train one setting; return its AP curve and median seconds per iteration."""
    overrides = [
        f"model.train_routes={json.dumps(routes)}",
        f"train.max_iter={args.iters}",
        f"train.eval_period={args.eval_every}",
        f"train.checkpointer.period={args.iters}",
        f"train.seed={seed}",
        f"dataloader.train.seed={seed}",
        f"train.output_dir={out}",
        "train.eval_at_start=False",
    ]
    cmd = [sys.executable, str(REPO / "projects/train_net.py"), "--config-file", str(config)]
    proc = subprocess.run(cmd + overrides, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{config.name} {routes}: training failed:\n{proc.stderr[-3000:]}")
    run = read_run(out, args.iters)
    if run is None:
        raise RuntimeError(f"{config.name} {routes}: no final evaluation in {out / 'metrics.json'}")
    return run


def read_run(run_dir: Path, iters: int) -> dict | None:
    """A finished run's curve and speed from its ``metrics.json``, or None if it did not finish."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return None
    curve, times = [], []
    for line in metrics.read_text().splitlines():
        m = json.loads(line)
        if "bbox/AP" in m:
            curve.append((m["iteration"], m["bbox/AP"], m["bbox/AP50"]))
        if "time" in m:
            times.append(m["time"])
    if not curve or curve[-1][0] < iters - 1:
        return None
    return {"curve": curve, "sec_per_iter": statistics.median(times) if times else float("nan")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=700)
    parser.add_argument("--eval-every", type=int, default=175)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--output", default=str(REPO / "output" / "ablation_routes"))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--reuse", action="store_true", help="keep finished runs found in --output (resume)"
    )
    args = parser.parse_args(argv)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {name: [] for name in args.settings}
    # seeds outside, settings inside: an interrupted run still has complete seeds to compare
    for seed in args.seeds:
        for name in args.settings:
            config, routes = SETTINGS[name]
            tag = name.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "")
            run_dir = out_dir / f"{tag}_seed{seed}"
            run = read_run(run_dir, args.iters) if args.reuse else None
            if run is None:
                run = run_setting(config, routes, seed, args, run_dir)
            results[name].append(run)
            final = run["curve"][-1]
            print(f"{name:24s} seed {seed}: AP {final[1]:.1f} AP50 {final[2]:.1f} "
                  f"{run['sec_per_iter']:.2f} s/iter", flush=True)  # fmt: skip
            write_table(results, args, out_dir)
            write_plot(results, out_dir)


def write_table(results: dict[str, list[dict]], args, out_dir: Path) -> None:
    """Markdown table (mean ± sd over the finished seeds) and the raw curves as JSON."""
    done = {name: runs for name, runs in results.items() if runs}
    lines = [
        f"Route ablation: quick-start model, {args.iters} iterations, seeds {args.seeds}",
        "",
        "| setting | runs | AP (mean ± sd) | AP50 (mean ± sd) | s / iteration |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, runs in done.items():
        ap = [r["curve"][-1][1] for r in runs]
        ap50 = [r["curve"][-1][2] for r in runs]
        sec = statistics.mean(r["sec_per_iter"] for r in runs)
        lines.append(f"| {name} | {len(runs)} | {_mean_sd(ap)} | {_mean_sd(ap50)} | {sec:.2f} |")
    table = "\n".join(lines) + "\n"
    (out_dir / "ablation_routes.md").write_text(table)
    (out_dir / "ablation_routes.json").write_text(json.dumps(results, indent=1))
    print(table, flush=True)


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def write_plot(results: dict[str, list[dict]], out_dir: Path) -> None:
    """PNG of AP vs iteration, one line per (setting, seed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install mrdetr[plot])")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, (name, runs) in enumerate(results.items()):
        for i, run in enumerate(runs):
            its, aps = [c[0] for c in run["curve"]], [c[1] for c in run["curve"]]
            label = name if i == 0 else None
            ax.plot(its, aps, marker="o", color=f"C{j}", label=label, alpha=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("bbox AP (synthetic_val)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "ablation_routes.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out_dir / 'ablation_routes.md'} and {out_dir / 'ablation_routes.png'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
