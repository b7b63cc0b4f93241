"""Plot training curves from one or more ``metrics.json`` files (JSON lines) to a PNG.

    python tools/plot_logs.py output/run_a/metrics.json output/run_b/metrics.json --output curves.png

Left: ``total_loss`` and the summed loss of each route (primary, instruct = ``*_group*``/``*_o2m``,
sep_ffn = ``*_sep*``) over iterations. Right: AP over iterations (every ``*/AP`` key, e.g. ``bbox/AP``).
Each file is one run (labelled by its folder name). Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

from mrdetr.utils.file_io import atomic_write

from ..utils.route_losses import ROUTE_PATTERNS, route_totals

__all__ = ["ROUTE_PATTERNS", "build_parser", "main", "plot_logs", "read_metrics", "route_totals"]

_AP_SUFFIX = "/AP"
_FIGURE_SIZE = (12.0, 4.5)
_DPI = 100


def read_metrics(path: str) -> list[dict]:
    """The JSON objects of a metrics.json file, in file order.

    Raises:
        FileNotFoundError: missing file. ValueError: a line is not a JSON object with ``iteration``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file not found: {path}")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({exc})") from None
            if not isinstance(row, dict) or "iteration" not in row:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with an 'iteration' key")
            rows.append(row)
    return rows


def _series(rows: list[dict]) -> tuple[dict[str, list], dict[str, list]]:
    losses: dict[str, list] = defaultdict(list)
    aps: dict[str, list] = defaultdict(list)
    for row in rows:
        it = row["iteration"]
        if "total_loss" in row:
            losses["total_loss"].append((it, row["total_loss"]))
        for route, value in route_totals(row).items():
            losses[route].append((it, value))
        for key, value in row.items():
            if key.endswith(_AP_SUFFIX) and isinstance(value, (int, float)):
                aps[key].append((it, value))
    return losses, aps


def plot_logs(files: list[str], output: str) -> str:
    """Draw the curves of ``files`` into ``output`` (PNG, written atomically); returns ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [
        (os.path.basename(os.path.dirname(os.path.abspath(f))) or f, read_metrics(f)) for f in files
    ]
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=_FIGURE_SIZE)
    for label, rows in runs:
        losses, aps = _series(rows)
        for name, points in losses.items():
            xs, ys = zip(*points)
            ax_loss.plot(xs, ys, label=f"{label}: {name}")
        for name, points in aps.items():
            xs, ys = zip(*points)
            ax_ap.plot(xs, ys, marker="o", label=f"{label}: {name}")
    ax_loss.set(title="losses", xlabel="iteration", ylabel="loss")
    ax_ap.set(title="AP", xlabel="iteration", ylabel="AP")
    for ax in (ax_loss, ax_ap):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    try:
        atomic_write(output, lambda f: fig.savefig(f, format="png", dpi=_DPI))
    finally:
        plt.close(fig)
    return output


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="metrics.json files (one per run)")
    p.add_argument("--output", default="curves.png", help="PNG to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"wrote {plot_logs(args.files, args.output)}")
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
