"""The console commands of the wheel (``[project.scripts]`` in ``pyproject.toml``).

Each command runs the ``main(argv)`` of one tool module through :func:`mrdetr.tools._cli.run_cli`,
exactly as ``python -m mrdetr.tools.<module>`` does: an expected error is one ``error:`` line on
stderr and a non-zero exit code. ``mrdetr-train`` runs ``train_net.main`` as it is: it reports its
own errors (``error:`` + ``hint:``, exit 2) and keeps the traceback of unexpected ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ._cli import run_cli

__all__ = [
    "COMMANDS",
    "benchmark",
    "demo",
    "export_onnx",
    "model_mean",
    "plot_logs",
    "route_report",
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
    "mrdetr-route-report": "route_report",
}
# commands whose main() reports its own errors (not wrapped in run_cli)
SELF_REPORTING = ("mrdetr-train",)


def _command(name: str) -> Callable[[], int]:
    module = COMMANDS[name]

    def run() -> int:
        main = importlib.import_module(f"{__package__}.{module}").main
        return main() if name in SELF_REPORTING else run_cli(main)

    run.__doc__ = f"``{name}``: :mod:`mrdetr.tools.{module}`."
    return run


train = _command("mrdetr-train")
demo = _command("mrdetr-demo")
export_onnx = _command("mrdetr-export-onnx")
visualize = _command("mrdetr-visualize")
model_mean = _command("mrdetr-model-mean")
plot_logs = _command("mrdetr-plot-logs")
benchmark = _command("mrdetr-benchmark")
route_report = _command("mrdetr-route-report")
