"""Route diagnostics of a checkpoint: per-route AP (raw and after class-wise NMS), duplicates per
found object and the one-to-many assigner's positives (``mrdetr.evaluation.route_diagnostics``).

    python tools/route_report.py --config-file CFG --opts train.init_checkpoint=model_0000699.pth \
        [--nms 0.7] [--score-threshold 0.3] [--match-iou 0.5] [--routes primary instruct sep_ffn] \
        [--json report.json]

Evaluates on the config's ``dataloader.test`` dataset on ``train.device`` ("auto": a GPU if there is
one); prints a table and writes the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["build_parser", "format_report", "main"]

_COLUMNS = (
    ("AP", "AP"),
    ("AP50", "AP50"),
    ("AP_nms", "AP (NMS)"),
    ("AP50_nms", "AP50 (NMS)"),
    ("dups_per_object", "dups/object"),
    ("dups_per_object_nms", "dups/object (NMS)"),
    ("found_fraction", "found"),
    ("o2m_positive_fraction", "o2m positives/query"),
    ("o2m_matches_per_object", "o2m matches/object"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--routes", nargs="+", default=["primary", "instruct", "sep_ffn"])
    p.add_argument("--nms", type=float, default=0.7, help="IoU of the class-wise NMS")
    p.add_argument(
        "--score-threshold", type=float, default=0.3, help="score of a counted duplicate"
    )
    p.add_argument("--match-iou", type=float, default=0.5, help="IoU of a counted duplicate")
    p.add_argument("--json", default="", help="write the report here")
    p.add_argument("--quiet", action="store_true", help="no table on stdout")
    p.add_argument("--opts", nargs="*", default=[], help="config overrides key=value ...")
    return p


def format_report(report: dict) -> str:
    """The report as a Markdown table, one row per route."""
    lines = [
        "| route | " + " | ".join(label for _, label in _COLUMNS) + " |",
        "| --- | " + " | ".join("---" for _ in _COLUMNS) + " |",
    ]
    for route, metrics in report["routes"].items():
        cells = [f"{metrics[k]:.3f}" if k in metrics else "-" for k, _ in _COLUMNS]
        lines.append(f"| {route} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from ..checkpoint.checkpointer import Checkpointer
    from ..config import instantiate
    from ..engine.defaults import resolve_device
    from ..engine.predictor import load_config
    from ..evaluation.route_diagnostics import checkpoint_iteration, run_route_diagnostics

    cfg = load_config(args.config_file, args.opts)
    weights = cfg.train.get("init_checkpoint", "")
    if not weights:
        raise ValueError("route_report: set the checkpoint with --opts train.init_checkpoint=PATH")
    model = instantiate(cfg.model).to(resolve_device(str(cfg.train.get("device", "auto"))))
    Checkpointer(model, save_to_disk=False).load_weights(weights)
    dataset = cfg.dataloader.test.dataset
    report = run_route_diagnostics(
        model, instantiate(cfg.dataloader.test), dataset, routes=args.routes, nms_iou=args.nms,
        score_threshold=args.score_threshold, match_iou=args.match_iou,
    )  # fmt: skip
    report["checkpoint"] = os.fspath(weights)
    try:
        report["iteration"] = checkpoint_iteration(weights)
    except ValueError:
        pass  # a model_final.pth or a renamed file: no iteration in the name
    if not args.quiet:
        print(f"Route diagnostics of {weights} on {dataset} (NMS IoU {args.nms}):")
        print(format_report(report))
        if "one_to_many" in report:
            o2m = report["one_to_many"]
            print(
                f"one-to-many assigner on {', '.join(o2m['routes'])}: "
                f"{o2m['positive_fraction']:.3f} of queries positive, "
                f"{o2m['matches_per_object']:.2f} matches per object"
            )
    if args.json:
        from ..utils.file_io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
