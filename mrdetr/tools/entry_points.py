"""The console commands of the wheel (``[project.scripts]`` in ``pyproject.toml``).

Each command runs the ``main(argv)`` of one tool module through :func:`mrdetr.tools._cli.run_cli`,
exactly as ``python -m mrdetr.tools.<module>`` does: an expected error is one ``error:`` line on
stderr and a non-zero exit code.
"""

from __future__ import annotations

import importlib

from ._cli import run_cli

__all__ = [
    "COMMANDS",
    "benchmark",
    "demo",
    "export_onnx",
    "model_mean",
    "plot_logs",
    "train",
    "visualize",
]

# command name -> module of mrdetr.tools whose main(argv) it runs
COMMANDS: dict[str, str] = {
    "mrdetr-train": "train_net",
    "mrdetr-demo": "demo",
    "mrdetr-export-onnx": "export_onnx",
    "mrdetr-visualize": "visualize_json_results",
    "mrdetr-model-mean": "model_mean",
    "mrdetr-plot-logs": "plot_logs",
    "mrdetr-benchmark": "benchmark",
}


def _run(module: str) -> int:
    return run_cli(importlib.import_module(f"{__package__}.{module}").main)


def train() -> int:
    """``mrdetr-train``: :mod:`mrdetr.tools.train_net`."""
    return _run("train_net")


def demo() -> int:
    """``mrdetr-demo``: :mod:`mrdetr.tools.demo`."""
    return _run("demo")


def export_onnx() -> int:
    """``mrdetr-export-onnx``: :mod:`mrdetr.tools.export_onnx`."""
    return _run("export_onnx")


def visualize() -> int:
    """``mrdetr-visualize``: :mod:`mrdetr.tools.visualize_json_results`."""
    return _run("visualize_json_results")


def model_mean() -> int:
    """``mrdetr-model-mean``: :mod:`mrdetr.tools.model_mean`."""
    return _run("model_mean")


def plot_logs() -> int:
    """``mrdetr-plot-logs``: :mod:`mrdetr.tools.plot_logs`."""
    return _run("plot_logs")


def benchmark() -> int:
    """``mrdetr-benchmark``: :mod:`mrdetr.tools.benchmark`."""
    return _run("benchmark")
