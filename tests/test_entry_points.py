"""The wheel's console commands (``[project.scripts]``) run the ``main`` of their tool module, and
each module also runs as ``python -m mrdetr.tools.<module>``."""

from __future__ import annotations

import importlib

import pytest
from tiny_model import REPO

from mrdetr.tools import entry_points
from mrdetr.tools.entry_points import COMMANDS


def test_project_scripts_match_the_commands():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(COMMANDS)
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert module == "mrdetr.tools.entry_points" and callable(getattr(entry_points, attr))
        assert f"mrdetr.tools.{COMMANDS[name]}" in getattr(entry_points, attr).__doc__
        tool = importlib.import_module(f"mrdetr.tools.{COMMANDS[name]}")
        assert callable(tool.main)
        source = (REPO / "mrdetr" / "tools" / f"{COMMANDS[name]}.py").read_text()
        assert 'if __name__ == "__main__":' in source  # python -m mrdetr.tools.<module>


def test_train_command_has_the_train_net_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module("mrdetr.tools.train_net").main(["--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    for flag in ("--config-file", "--resume", "--eval-only", "--num-gpus", "--dist-url"):
        assert flag in usage, flag


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--num-gpus", "2", "train.device=cpu"], "gloo"),  # a CPU run on a machine with GPUs
        (["--num-gpus", "2", "train.device=cpu:0"], "gloo"),
        (["--num-gpus", "2", "train.device=auto"], "auto"),  # NCCL where CUDA is available
        (["--num-gpus", "2", "train.device=cuda"], "auto"),
        (["train.device=cpu"], "auto"),  # one process: no group
    ],
)
def test_train_command_picks_gloo_for_a_cpu_run(flags, expected, monkeypatch):
    train_net = importlib.import_module("mrdetr.tools.train_net")
    seen = {}
    monkeypatch.setattr(train_net, "launch", lambda *a, **kw: seen.update(kw))
    config = str(REPO / "tests/configs/tiny_synthetic.py")
    assert train_net.main(["--config-file", config, *flags]) == 0
    assert seen["backend"] == expected
