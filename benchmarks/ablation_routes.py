"""Route ablation / route study on synthetic data: which decoder routes help the primary route.

Every setting trains the quick-start model (``projects/mr_detr_deformable/configs/quickstart_synthetic.py``)
with the same iterations, data and seeds through ``projects/train_net.py``; any further override goes
through ``--opts``. Each run keeps a checkpoint at every evaluation; ``--diagnose`` runs the route
diagnostics (``mrdetr.evaluation.route_diagnostics``: per-route AP raw and after class-wise NMS,
duplicates per found object, one-to-many positive fraction) on each of them, also on those a run
stopped by a signal reached. Everything lands in one JSON file (``--json``); the Markdown tables and
the plot regenerate from it alone:

    python benchmarks/ablation_routes.py --tag a_700it --iters 700 --eval-every 175 --seeds 1 2 \\
        --settings "primary only" "all three routes" --jobs 2 --threads 1 --diagnose --reuse
    python benchmarks/ablation_routes.py --report benchmarks/results/route_study/a_700it.json

The paper's ordering (COCO, 12 epochs: primary only 47.6 < + one auxiliary route 49.6 / 50.4 < all three
50.7) is the hypothesis; ``--seeds`` gives the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_report import combine, write_outputs  # noqa: E402
from machine import cpu_info  # noqa: E402

BASE = REPO / "projects/mr_detr_deformable/configs/quickstart_synthetic.py"
PLUSPLUS = REPO / "projects/mr_detr_pp_align/configs/quickstart_synthetic_pp.py"
SETTINGS = {
    "primary only": (BASE, ["primary"]),
    "+ SEP_FFN": (BASE, ["primary", "sep_ffn"]),
    "+ INSTRUCT": (BASE, ["primary", "instruct"]),
    "all three routes": (BASE, ["primary", "instruct", "sep_ffn"]),
    "++ (route-aware MoE)": (PLUSPLUS, ["primary", "instruct", "sep_ffn"]),
}
# train_net's status after a stop on SIGTERM / SIGINT with a checkpoint (train.stop_signals), or
# killed by one of them before its handlers were installed (while it started)
STOPPED_BY_SIGNAL = (128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM, -signal.SIGINT)


def run_tag(name: str, seed: int) -> str:
    """Folder name of one (setting, seed) run."""
    tag = name.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "")
    return f"{tag}_seed{seed}"


def run_setting(config: Path, routes: list[str], seed: int, args, out: Path) -> dict | None:
    """Train one setting (resuming a partial run found in ``out``); return its curve and speed.

    A training stopped by SIGTERM / SIGINT (``STOPPED_BY_SIGNAL``) returns its evaluations so far
    (``read_run(..., partial=True)``), None if it stopped before the first.
    """
    overrides = [
        f"model.train_routes={json.dumps(routes)}",
        f"train.max_iter={args.iters}",
        f"train.eval_period={args.eval_every}",
        f"train.checkpointer.period={args.eval_every}",
        "train.checkpointer.max_to_keep=1000",
        f"train.seed={seed}",
        f"dataloader.train.seed={seed}",
        f"train.output_dir={out}",
        "train.eval_at_start=False",
        *_device_opts(args),
        *args.opts,
    ]
    cmd = [sys.executable, str(REPO / "projects/train_net.py"), "--config-file", str(config)]
    if (out / "last_checkpoint").is_file():
        cmd.append("--resume")
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train_stdout.txt", "a") as log:
        proc = subprocess.run(
            cmd + overrides, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    if proc.returncode in STOPPED_BY_SIGNAL:
        print(
            f"{out}: training stopped by a signal after a checkpoint; run the same command "
            "with --reuse to continue it.",
            flush=True,
        )
        return read_run(out, args.iters, partial=True)
    if proc.returncode != 0:
        tail = (out / "train_stdout.txt").read_text()[-3000:]
        raise RuntimeError(f"{config.name} {routes} seed {seed}: training failed:\n{tail}")
    run = read_run(out, args.iters)
    if run is None:
        raise RuntimeError(f"{config.name} {routes}: no final evaluation in {out / 'metrics.json'}")
    return run


def read_run(run_dir: Path, iters: int, partial: bool = False) -> dict | None:
    """A finished run's curve and speed from its ``metrics.json``, or None if it did not finish.

    With ``partial``, an unfinished run's evaluations so far (``"complete": False``; None if it has
    none yet): a study stopped part-way keeps what its runs measured, since the run folders do not
    outlive the machine they ran on.
    """
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return None
    curve, times = {}, []
    for line in metrics.read_text().splitlines():
        m = json.loads(line)
        if "bbox/AP" in m:  # a resumed run may log an evaluation twice: keep the last
            curve[m["iteration"]] = (m["iteration"], m["bbox/AP"], m["bbox/AP50"])
        if "time" in m:
            times.append(m["time"])
    points = [curve[k] for k in sorted(curve)]
    complete = _reaches_end(points, iters)
    if not points or not (complete or partial):
        return None
    sec = statistics.median(times) if times else float("nan")
    return {"curve": points, "sec_per_iter": sec, "complete": complete}


def _reaches_end(curve: list, iters: int) -> bool:
    """Whether a curve of ``(iteration, AP, AP50)`` points holds the final evaluation of ``iters``."""
    return bool(curve) and curve[-1][0] >= iters - 1


def diagnose_run(run_dir: Path, config: Path, routes: list[str], args) -> dict[str, dict]:
    """Route diagnostics of the run's checkpoints at its evaluations (every ``--eval-every``
    iterations), cached as ``route_report_<it>.json``; a checkpoint written by a stop signal
    between evaluations (train.stop_signals) is not a point of the curve and is left out."""
    from mrdetr.evaluation.route_diagnostics import checkpoint_iteration

    reports = {}
    for ckpt in sorted(run_dir.glob("model_*.pth")):
        if ckpt.stem == "model_final":
            continue
        it = checkpoint_iteration(ckpt)
        if it % args.eval_every:
            continue
        cached = run_dir / f"route_report_{it:07d}.json"
        if not cached.is_file():
            cmd = [
                sys.executable, str(REPO / "tools/route_report.py"), "--config-file", str(config),
                "--json", str(cached), "--nms", str(args.nms), "--quiet",
                # the study's overrides first: this checkpoint and these routes must win over
                # a train.init_checkpoint in them (a warm start)
                "--opts", *_device_opts(args), *args.opts,
                f"train.init_checkpoint={ckpt}", f"model.train_routes={json.dumps(routes)}",
            ]  # fmt: skip
            env = dict(os.environ)
            if args.threads:
                env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"route report of {ckpt} failed:\n{proc.stderr[-3000:]}")
        reports[str(it)] = json.loads(cached.read_text())
    return reports


def _device_opts(args) -> list[str]:
    return [f"train.device={args.device}"] if getattr(args, "device", "") else []


def machine(device: str = "") -> dict:
    """CPU model and matrix-unit flags of this machine (``machine.cpu_info``), and the GPU the runs
    used when ``device`` is a CUDA device, for the record."""
    cpu, isa = cpu_info()
    info = {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "host": platform.node()}
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=700)
    parser.add_argument("--eval-every", type=int, default=175)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--tag", default="ablation_routes", help="name of this study part")
    parser.add_argument("--output", default="", help="run folders (default output/route_study/TAG)")
    parser.add_argument("--json", default="", help="results file (default OUTPUT/TAG.json)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=0, help="threads per run (0: torch default)")
    parser.add_argument(
        "--device",
        default="",
        help="train.device of the runs and their diagnostics (default: the config's, 'auto'); "
        "recorded in the JSON, not part of the study's overrides",
    )
    parser.add_argument("--diagnose", action="store_true", help="route diagnostics per checkpoint")
    parser.add_argument("--nms", type=float, default=0.7, help="class-wise NMS IoU of diagnostics")
    parser.add_argument(
        "--reuse", action="store_true", help="keep finished runs found in --output (resume)"
    )
    parser.add_argument(
        "--skip-if-complete",
        action="store_true",
        help="do nothing when --json already holds every (seed, setting) run of this study part "
        "(with diagnostics when --diagnose): results survive where the run folders do not",
    )
    parser.add_argument(
        "--check-complete",
        action="store_true",
        help="train nothing: exit 0 when --json holds every run asked for, else 1",
    )
    parser.add_argument(
        "--report",
        metavar="JSON",
        nargs="+",
        help="only regenerate tables/plot from JSON; several files: one report of all their runs "
        "(--combined STEM)",
    )
    parser.add_argument("--combined", metavar="STEM", help="where the combined report goes")
    args = parser.parse_args(argv)
    if args.report:
        studies = [json.loads(Path(name).read_text()) for name in args.report]
        if len(studies) == 1:
            write_outputs(studies[0], Path(args.report[0]).with_suffix(""))
        elif not args.combined:
            parser.error("--report with several files needs --combined STEM")
        else:
            write_outputs(
                combine(studies, [Path(n).name for n in args.report]), Path(args.combined)
            )
        return
    out_dir = Path(args.output or REPO / "output" / "route_study" / args.tag)
    json_path = Path(args.json) if args.json else out_dir / f"{args.tag}.json"
    if args.check_complete:
        raise SystemExit(0 if _complete(json_path, args) else 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.skip_if_complete and _complete(json_path, args):
        print(f"{json_path}: every run of '{args.tag}' is there, nothing to do", flush=True)
        return
    study = {
        "tag": args.tag,
        "base_configs": {name: str(SETTINGS[name][0].relative_to(REPO)) for name in args.settings},
        "iters": args.iters,
        "eval_every": args.eval_every,
        "seeds": args.seeds,
        "opts": args.opts,
        "nms": args.nms,
        "machine": machine(args.device),
        "device": args.device or "config",
        "command": shlex.join(["python", "benchmarks/ablation_routes.py", *(argv or sys.argv[1:])]),
        "runs": [],
    }
    # seeds outside, settings inside: an interrupted study still has complete seeds to compare
    todo = [(seed, name) for seed in args.seeds for name in args.settings]
    recorded = _recorded_runs(json_path, args) if args.reuse else {}

    def one(item):
        seed, name = item
        config, routes = SETTINGS[name]
        run_dir = out_dir / run_tag(name, seed)
        run = read_run(run_dir, args.iters) if args.reuse else None
        if run is None and (seed, name) in recorded and not run_dir.is_dir():
            # finished on another machine: its folder is gone, the results file keeps it
            print(f"{name} seed {seed}: finished, taken from {json_path}", flush=True)
            return recorded[(seed, name)]
        start = time.time()
        if run is None:
            run = run_setting(config, routes, seed, args, run_dir)
        if run is None:  # stopped before its first evaluation
            return None
        run.update(setting=name, seed=seed, routes=routes, dir=str(run_dir))
        if args.diagnose:  # a stopped run too: the evaluations it reached, cached for its resume
            run["diagnostics"] = diagnose_run(run_dir, config, routes, args)
        final = run["curve"][-1]
        state = "" if run["complete"] else f" (stopped; last evaluation at {final[0]})"
        print(f"{name:24s} seed {seed}: AP {final[1]:.1f} AP50 {final[2]:.1f} "
              f"{run['sec_per_iter']:.2f} s/iter ({time.time() - start:.0f} s){state}", flush=True)  # fmt: skip
        return run

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for run in pool.map(one, todo):
            if run is None:
                continue
            study["runs"].append(run)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(study, indent=1))
            write_outputs(study, json_path.with_suffix(""))
    if not all(r.get("complete", True) for r in study["runs"]) or len(study["runs"]) < len(todo):
        raise SystemExit(f"{json_path}: stopped part-way; run the same command with --reuse")


def _recorded_runs(json_path: Path, args) -> dict[tuple[int, str], dict]:
    """The finished runs (with diagnostics when --diagnose) that ``json_path`` holds for this
    study part's iterations and overrides, by (seed, setting)."""
    if not json_path.is_file():
        return {}
    study = json.loads(json_path.read_text())
    if study.get("iters") != args.iters or study.get("opts") != args.opts:
        return {}
    return {
        (r["seed"], r["setting"]): r
        for r in study.get("runs", [])
        if _reaches_end(r["curve"], args.iters) and (not args.diagnose or r.get("diagnostics"))
    }


def _complete(json_path: Path, args) -> bool:
    """Whether ``json_path`` holds a finished run of every (seed, setting) asked for."""
    done = _recorded_runs(json_path, args)
    return all((seed, name) in done for seed in args.seeds for name in args.settings)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
