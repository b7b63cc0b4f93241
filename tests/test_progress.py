"""Progress bars: none when output is captured; on a terminal, log lines print above the bar."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

import pytest
from tiny_model import REPO

from mrdetr.utils.progress import progress_bar, track


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def mrdetr_console():
    """The ``mrdetr`` logger with only a console handler (INFO) on a fake terminal."""
    logger = logging.getLogger("mrdetr")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    tty = _Terminal()
    handler = logging.StreamHandler(tty)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    yield tty, logger
    logger.handlers, logger.level, logger.propagate = saved


def test_captured_evaluation_has_no_bar():
    """inference_on_dataset in a process whose stdout and stderr are pipes (as under nohup/CI)."""
    script = textwrap.dedent(
        """
        import torch
        from mrdetr.evaluation.evaluator import inference_on_dataset
        from mrdetr.utils.logger import setup_logger

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.ones(()))

            def forward(self, inputs):
                return [{} for _ in inputs]

        setup_logger()
        loader = [[{"image_id": i}] for i in range(30)]
        inference_on_dataset(Model(), loader, None, log_period_s=0)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout + proc.stderr
    assert "%|" not in proc.stdout + proc.stderr  # no bar, not even a final one
    # the periodic progress lines replace it: one per batch with log_period_s=0
    assert proc.stdout.count("Inference done") == 30
    assert "Inference done 30/30" in proc.stdout


def test_bar_only_on_a_terminal():
    pipe = io.StringIO()
    with progress_bar(total=4, desc="work", stream=pipe) as bar:
        bar.update(4)
    assert pipe.getvalue() == ""
    tty = _Terminal()
    with progress_bar(total=4, desc="work", stream=tty) as bar:
        bar.update(4)
    assert "work: 100%" in tty.getvalue() and "4/4" in tty.getvalue()
    disabled = _Terminal()
    with progress_bar(total=4, desc="work", stream=disabled, enabled=False) as bar:
        bar.update(4)
    assert disabled.getvalue() == ""


def test_log_lines_do_not_interleave_with_the_bar(mrdetr_console, monkeypatch):
    tty, logger = mrdetr_console
    monkeypatch.setattr(sys, "stderr", tty)  # the bar's default stream
    child = logging.getLogger("mrdetr.some.module")
    for i in track(range(3), "images"):
        child.info("image %d done", i)
        child.debug("hidden")  # the console handler's level still applies
    out = tty.getvalue()
    # every log line starts a fresh line: the bar was cleared (\r) before it, never glued to it
    log_segments = [seg for seg in out.replace("\n", "\r").split("\r") if "LOG" in seg]
    assert log_segments == [f"LOG image {i} done" for i in range(3)]
    assert "hidden" not in out
    assert "images: 100%" in out  # the bar is there, redrawn below the lines
    # handlers are restored afterwards: a line outside the bar goes straight to the stream
    assert logger.handlers[0].__class__ is logging.StreamHandler
    logger.info("after")
    assert tty.getvalue().endswith("LOG after\n")


def test_track_breaks_early_and_restores_handlers(mrdetr_console, monkeypatch):
    tty, logger = mrdetr_console
    monkeypatch.setattr(sys, "stderr", tty)
    original = list(logger.handlers)
    seen = []
    for i in track(iter(range(10)), "early"):  # no len(): total unknown
        seen.append(i)
        if i == 2:
            break
    assert seen == [0, 1, 2]
    assert logger.handlers == original
