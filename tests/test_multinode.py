"""Multi-machine ``torchrun`` launch as ``docs/cluster.md`` shows it: two "machines" (two
``torchrun --nnodes 2 --node-rank R`` invocations) on localhost train one job; train_net joins the
process group from torchrun's variables (env://)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine_common import toy_subprocess_env
from test_engine_runner import CONFIG_TEXT

from mrdetr.engine.launch import _launched_by_torchrun

REPO = Path(__file__).resolve().parents[1]
NODES = 2
_TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(node_rank: int, port: int) -> list[str]:
    runner = (
        [str(_TORCHRUN)] if _TORCHRUN.exists() else [sys.executable, "-m", "torch.distributed.run"]
    )
    return runner + [
        f"--nnodes={NODES}",
        f"--node-rank={node_rank}",
        "--nproc-per-node=1",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        str(REPO / "projects" / "train_net.py"),
    ]


@pytest.mark.slow  # two torchrun agents with one training process each (~30 s)
@pytest.mark.skipif(_launched_by_torchrun(), reason="the launchers build their own process group")
def test_torchrun_two_nodes_on_localhost_train_as_one_job(tmp_path) -> None:
    config = tmp_path / "toy_config.py"
    config.write_text(CONFIG_TEXT)
    out = tmp_path / "run"
    env = toy_subprocess_env(OMP_NUM_THREADS="1")
    port = _free_port()
    args = ["--config-file", str(config), f"train.output_dir={out}", "train.max_iter=2"]
    args += ["train.eval_period=0"]
    procs = [
        subprocess.Popen(
            _torchrun(rank, port) + args,
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(NODES)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    checkpoint = torch.load(out / "model_final.pth", weights_only=True)
    assert checkpoint["iteration"] == 1 and len(checkpoint["rng_per_rank"]) == NODES
    log = (out / "log.txt").read_text()
    assert f"World size: {NODES}" in log
