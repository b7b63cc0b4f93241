"""Markdown tables and plot of a route study, regenerated from its JSON alone.

    python benchmarks/ablation_routes.py --report benchmarks/results/route_study/a_700it.json

Writes ``<stem>.md`` (final values, mean ± sd over seeds, per-seed values; the curve of every metric
per evaluation) and ``<stem>.png`` (one panel per metric; per setting the mean line over seeds and a
band from the lowest to the highest seed).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

# (label, route, key) of the route diagnostics shown in the tables and the plot
DIAGNOSTIC_METRICS = (
    ("primary AP, NMS", "primary", "AP_nms"),
    ("primary dups / object", "primary", "dups_per_object"),
    ("instruct AP, NMS", "instruct", "AP_nms"),
    ("sep_ffn AP, NMS", "sep_ffn", "AP_nms"),
    ("o2m positives / query", "o2m", "positive_fraction"),
    ("o2m matches / object", "o2m", "matches_per_object"),
)


def run_metrics(run: dict) -> dict[str, dict[int, float]]:
    """Every metric of one run as ``{label: {steps taken: value}}``.

    Diagnostics are keyed by the optimizer steps behind their checkpoint (``model_0000174.pth``:
    175). The evaluation after that step is logged in ``metrics.json`` at the 0-based iteration
    (174, detectron2's convention; the final one at ``max_iter``); it is shown in the same column.
    """
    steps = {int(it) for it in run.get("diagnostics", {})}

    def column(it: int) -> int:
        return it + 1 if it + 1 in steps and it not in steps else it

    metrics: dict[str, dict[int, float]] = {
        "primary AP": {column(int(c[0])): c[1] for c in run["curve"]},
        "primary AP50": {column(int(c[0])): c[2] for c in run["curve"]},
    }
    for it, report in run.get("diagnostics", {}).items():
        for label, route, key in DIAGNOSTIC_METRICS:
            if route == "o2m":
                value = report.get("one_to_many", {}).get(key)
            else:
                value = report.get("routes", {}).get(route, {}).get(key)
            if value is not None:
                metrics.setdefault(label, {})[int(it)] = value
    return metrics


def mean_sd(values: list[float], digits: int = 2) -> str:
    """``"mean ± sd"`` over seeds, or the single value, with ``digits`` decimals."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def gather(study: dict) -> dict[str, dict[str, list[dict[int, float]]]]:
    """``{setting: {metric: [per-seed {iteration: value}]}}`` in the study's run order."""
    by_setting: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for run in study["runs"]:
        for label, series in run_metrics(run).items():
            by_setting[run["setting"]][label].append(series)
    return by_setting


def tables(study: dict) -> str:
    """The Markdown report of one study part."""
    by_setting = gather(study)
    labels = [m for m in ["primary AP", "primary AP50"] + [d[0] for d in DIAGNOSTIC_METRICS]
              if any(m in s for s in by_setting.values())]  # fmt: skip
    mach = study.get("machine", {})
    lines = [
        f"## Route study `{study['tag']}`: {study['iters']} iterations, seeds {study['seeds']}",
        "",
        f"Command: `{study.get('command', '')}`; overrides: {_overrides(study)};"
        f" machine: {mach.get('cpu', '?')}, ISA {', '.join(mach.get('isa', [])) or '-'}"
        + (f"; runs on {mach['gpu']}" if mach.get("gpu") else "")
        + ".",
        "",
        "Final evaluation (mean ± sd over seeds; per-seed values in brackets; a run stopped"
        " part-way shows its last evaluation and says so):",
        "",
        "| setting | seeds | s / iter | " + " | ".join(labels) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in labels) + " |",
    ]
    for name, metrics in by_setting.items():
        runs = [r for r in study["runs"] if r["setting"] == name]
        sec = statistics.mean(r["sec_per_iter"] for r in runs)
        cells = []
        for label in labels:
            finals = [s[max(s)] for s in metrics.get(label, []) if s]
            per_seed = ", ".join(f"{v:.1f}" for v in finals)
            cells.append(f"{mean_sd(finals)} [{per_seed}]" if finals else "-")
        stopped = [r["curve"][-1][0] for r in runs if not r.get("complete", True)]
        if stopped:  # a run stopped part-way: its last evaluation, not the final one
            name = f"{name} (stopped part-way: last evaluation at {max(stopped)})"
        lines.append(f"| {name} | {len(runs)} | {sec:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Per evaluation (mean over seeds):", ""]
    for label in labels:
        its = sorted({it for m in by_setting.values() for s in m.get(label, []) for it in s})
        lines += [f"{label}:", "", "| setting | " + " | ".join(str(i) for i in its) + " |",
                  "| --- | " + " | ".join("---" for _ in its) + " |"]  # fmt: skip
        for name, metrics in by_setting.items():
            row = []
            for it in its:
                vals = [s[it] for s in metrics.get(label, []) if it in s]
                row.append(f"{statistics.mean(vals):.2f}" if vals else "-")
            lines.append(f"| {name} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _overrides(study: dict) -> str:
    """The study's overrides, or each source file's for a combined study."""
    if "sources" in study:
        return ", ".join(
            f"`{src['tag']}` ({src['iters']} iterations): `{' '.join(src['opts']) or '-'}`"
            for src in study["sources"]
        )
    return f"`{' '.join(study.get('opts', [])) or '-'}`"


def write_plot(study: dict, path: Path) -> bool:
    """One panel per metric: mean over seeds per setting, band from the lowest to the highest seed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install mrdetr[plot])")
        return False
    by_setting = gather(study)
    labels = [m for m in ["primary AP", "primary AP50"] + [d[0] for d in DIAGNOSTIC_METRICS]
              if any(m in s for s in by_setting.values())]  # fmt: skip
    cols = min(3, len(labels))
    rows = (len(labels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, label in zip(axes.flat, labels):
        for j, (name, metrics) in enumerate(by_setting.items()):
            series = metrics.get(label, [])
            its = sorted({it for s in series for it in s})
            if not its:
                continue
            vals = [[s[it] for s in series if it in s] for it in its]
            mean = [statistics.mean(v) for v in vals]
            ax.plot(
                its,
                mean,
                marker="o",
                color=f"C{j}",
                label=f"{name} ({len(series)} seed{'s' * (len(series) > 1)})",
            )
            if len(series) > 1:
                ax.fill_between(its, [min(v) for v in vals], [max(v) for v in vals],
                                color=f"C{j}", alpha=0.2)  # fmt: skip
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"route study {study['tag']} ({study['iters']} iterations)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def combine(studies: list[dict], names: list[str]) -> dict:
    """One study of the runs of several study files (e.g. the two single-setting files of a pair), for
    one table and one plot. A setting found in more than one file is labelled with its file's tag;
    ``sources`` records each file's name, tag, iterations and overrides."""
    files_of: dict[str, set[str]] = defaultdict(set)
    for study in studies:
        for run in study["runs"]:
            files_of[run["setting"]].add(study["tag"])
    runs = [
        {**run, "setting": run["setting"]
         + (f" ({study['tag']})" if len(files_of[run["setting"]]) > 1 else "")}
        for study in studies
        for run in study["runs"]
    ]  # fmt: skip
    return {
        "tag": " + ".join(study["tag"] for study in studies),
        "iters": max(study["iters"] for study in studies),
        "seeds": sorted({seed for study in studies for seed in study["seeds"]}),
        "machine": studies[0].get("machine", {}),
        "command": "python benchmarks/ablation_routes.py --report " + " ".join(names),
        "opts": [],
        "sources": [
            {"file": name, "tag": study["tag"], "iters": study["iters"], "opts": study["opts"]}
            for name, study in zip(names, studies)
        ],
        "runs": runs,
    }


def write_outputs(study: dict, stem: Path) -> None:
    """Write ``stem.md`` and ``stem.png``; a reporting error never stops a running study."""
    try:
        text = tables(study)
        stem.with_suffix(".md").write_text(text)
        print(text, flush=True)
        if write_plot(study, stem.with_suffix(".png")):
            print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.png')}", flush=True)
    except Exception as exc:  # noqa: BLE001 - the runs matter more than their report
        print(f"warning: could not write the report {stem}: {exc!r}", flush=True)
