"""Counting a process's GLOO worker threads (Linux ``/proc``), for teardown tests."""

from __future__ import annotations

from pathlib import Path

TASKS = Path("/proc/self/task")
# the name torch gives the worker threads of a GLOO process group (``/proc/<pid>/task/<tid>/comm``)
GLOO_WORKER = "pt_gloo_runloop"


def gloo_workers() -> int:
    """Number of live GLOO worker threads in this process."""
    return sum((task / "comm").read_text().strip() == GLOO_WORKER for task in TASKS.iterdir())
