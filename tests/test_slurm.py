"""Cluster launch through submitit: SLURM variables -> process group, sbatch script, and a real
2-process (gloo) job on submitit's LocalExecutor that is preempted, requeued and resumed."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mrdetr.data.synthetic import generate_synthetic_dataset
from mrdetr.engine.launch import _launched_by_torchrun

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny_synthetic.py"
needs_submitit = pytest.mark.skipif(
    importlib.util.find_spec("submitit") is None,
    reason="submitit is not installed (pip install 'mrdetr[submitit]')",
)
MAX_ITER = 4
WAIT_S = 150  # per job; the whole preemption test takes well under this on two cores
# the tiny synthetic run without evaluation, one input shape (64 x 64: no crop, one size)
CONFIG_TEXT = f"""
from mrdetr.config import LazyConfig

_base = LazyConfig.load({str(TINY)!r})
model, optimizer, lr_multiplier, train = (
    _base.model, _base.optimizer, _base.lr_multiplier, _base.train
)
dataloader = dict(train=_base.dataloader.train)
dataloader["train"].mapper.augmentation.min_sizes = [64]
dataloader["train"].mapper.augmentation.max_size = 64
dataloader["train"].mapper.augmentation.crop_prob = 0.0
train.max_iter = {MAX_ITER}
train.checkpointer.period = 0  # only model_final: a resume can only start from the stop checkpoint
"""


@needs_submitit
def test_process_group_env_from_slurm_variables(monkeypatch) -> None:
    import submitit

    from mrdetr.engine.slurm import master_port, process_group_env, requeued_by_slurm

    slurm = dict(
        SUBMITIT_EXECUTOR="slurm",
        SLURM_JOB_ID="4321",
        SLURM_NTASKS="16",
        SLURM_JOB_NUM_NODES="2",
        SLURM_NODEID="1",
        SLURM_JOB_NODELIST="gpu-[07-08]",
        SLURM_PROCID="11",
        SLURM_LOCALID="3",
    )
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    env = process_group_env(submitit.JobEnvironment())
    assert env == dict(
        RANK="11",
        LOCAL_RANK="3",
        WORLD_SIZE="16",
        LOCAL_WORLD_SIZE="8",
        MASTER_ADDR="gpu-07",
        MASTER_PORT=str(master_port("4321")),
    )
    assert master_port("4321") == master_port("4321") != master_port("4322")
    assert process_group_env(submitit.JobEnvironment(), port=29500)["MASTER_PORT"] == "29500"
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert not requeued_by_slurm()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # SLURM requeued the job: it must resume
    assert requeued_by_slurm()


@needs_submitit
def test_dry_run_prints_the_sbatch_script(tmp_path) -> None:
    cmd = [sys.executable, "-m", "mrdetr.engine.slurm", "--config-file", str(TINY)]
    cmd += ["--nodes", "2", "--gpus-per-node", "8", "--partition", "P", "--timeout", "4320"]
    cmd += ["--dry-run", f"train.output_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = proc.stdout
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=P",
        "#SBATCH --time=4320",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script.splitlines(), (line, script)
    (srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    assert f"--output {tmp_path}/submitit/%j_%t_log.out" in srun  # one log per task
    assert srun.endswith(f"-m submitit.core._submit {tmp_path}/submitit")


def test_missing_submitit_is_one_line_naming_the_extra(monkeypatch) -> None:
    from mrdetr.engine.slurm import main

    monkeypatch.setitem(sys.modules, "submitit", None)  # makes `import submitit` fail
    with pytest.raises(SystemExit) as info:
        main(["--config-file", str(TINY), "--dry-run"])
    message = str(info.value)
    assert "\n" not in message and "pip install 'mrdetr[submitit]'" in message


def _args(config: Path, out: Path):
    from mrdetr.engine.slurm import slurm_argument_parser

    # --timeout 60: far from the time limit, so the signal below reads as a preemption
    flags = ["--local", "--tasks-per-node", "2", "--gpus-per-node", "0", "--timeout", "60"]
    flags += ["--dist-backend", "gloo", "--config-file", str(config), f"train.output_dir={out}"]
    return slurm_argument_parser().parse_args(flags)


def _wait(job, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not job.done():
        assert time.monotonic() < deadline, f"{what}: job {job.job_id} still running"
        time.sleep(0.2)


def _task_pids(job) -> list[int]:
    """The task processes of a local job (children of its controller process)."""
    pid = job._process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model_final.pth", map_location="cpu", weights_only=True)["model"]


@needs_submitit
@pytest.mark.slow  # two 2-process jobs, one of them started twice (~1.5 min on two cores)
@pytest.mark.skipif(_launched_by_torchrun(), reason="the jobs build their own process group")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_local_job_preempted_requeues_and_resumes_to_the_same_weights(
    tmp_path, monkeypatch
) -> None:
    from mrdetr.engine.slurm import submit

    generate_synthetic_dataset(
        tmp_path / "datasets" / "synthetic", num_train=8, num_val=1, seed=1, image_size=64,
        progress=False,
    )  # fmt: skip
    config = tmp_path / "tiny_no_eval.py"
    config.write_text(CONFIG_TEXT)
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes share the cores
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)

    reference = submit(_args(config, tmp_path / "uninterrupted"))
    _wait(reference, "uninterrupted run")
    assert reference.results() == [None, None]

    run = tmp_path / "preempted"
    job = submit(_args(config, run))
    deadline = time.monotonic() + WAIT_S
    metrics = run / "metrics.json"
    while not (metrics.exists() and metrics.read_text().strip()):  # iteration 0 has finished
        assert not job.done() and time.monotonic() < deadline, job.stderr()
        time.sleep(0.05)
    pids = _task_pids(job)
    assert len(pids) == 2
    for pid in pids:  # what SLURM does on preemption: USR2 to every task
        os.kill(pid, signal.SIGUSR2)
    _wait(job, "preempted run")
    assert job.results() == [None, None]

    submitit_log = (job.stderr() or "") + (job.stdout() or "")
    assert "this job is preempted" in submitit_log and "Requeued job" in submitit_log
    log = (run / "log.txt").read_text()
    starts = [
        int(line.rsplit(" ", 1)[1])
        for line in log.splitlines()
        if "Starting training from iteration" in line
    ]
    assert len(starts) == 2 and starts[0] == 0 and 0 < starts[1] < MAX_ITER, log[-2000:]
    # the running iteration was checkpointed before the requeue: no finished iteration is redone
    stops = re.findall(r"Training stopped by SIGUSR2 after iteration (\d+)", log)
    assert len(stops) == 1 and starts[1] == int(stops[0]) + 1, log[-2000:]

    final, again = _weights(tmp_path / "uninterrupted"), _weights(run)
    assert final.keys() == again.keys()
    for key in final:
        assert torch.equal(final[key], again[key]), key
