"""Submit a training to SLURM through submitit: requeue on preemption or timeout, then resume.

    python -m mrdetr.engine.slurm --config-file CFG --nodes 2 --gpus-per-node 8 \\
        --partition P --timeout 4320 [--resume] [key=value ...]

Each SLURM task (one per GPU) runs :class:`TrainJob`: it maps the job's environment (rank, world
size, first node as master address, a port derived from the job id) to the variables ``torchrun``
sets, and :func:`mrdetr.engine.launch` joins the process group from them (``env://``). When SLURM
signals a preemption or the coming time limit (SIGUSR2), the running iteration finishes and is
checkpointed (:mod:`mrdetr.engine.stop_signal`), then submitit calls :meth:`TrainJob.checkpoint`,
which requeues the same training with ``--resume``: it restarts from that checkpoint
(``last_checkpoint`` in ``train.output_dir``), so no finished iteration is redone. A job that SLURM
requeues by itself (``SLURM_RESTART_COUNT`` > 0) resumes as well, from the last checkpoint.

``--local`` runs the job on this machine through submitit's ``LocalExecutor`` (same code path,
``--tasks-per-node`` processes) and waits for it; ``--dry-run`` prints the sbatch script only.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import re
import shlex
import sys
from typing import Any

from mrdetr.engine.defaults import default_argument_parser, dist_backend_for
from mrdetr.engine.launch import launch
from mrdetr.engine.train_loop import TrainingStopped

__all__ = ["TrainJob", "build_executor", "main", "process_group_env", "slurm_argument_parser"]

logger = logging.getLogger(__name__)

JOB_DIR_NAME = "submitit"  # default job folder (logs, pickles) inside train.output_dir
PORT_BASE, PORT_SPAN = 20000, 20000  # MASTER_PORT = PORT_BASE + job id % PORT_SPAN
SLURM_RESTART_COUNT = "SLURM_RESTART_COUNT"  # set by SLURM on a requeued job
_SINGLE_MACHINE_FLAGS = ("num_gpus", "num_machines", "machine_rank", "dist_url")


def slurm_argument_parser() -> argparse.ArgumentParser:
    """The training CLI (``--config-file``, ``--resume``, ``key=value``) plus the cluster flags."""
    parser = default_argument_parser(
        epilog=(
            "Example:\n"
            "    $ python -m mrdetr.engine.slurm --config-file cfg.py --nodes 2 "
            "--gpus-per-node 8 --partition P --timeout 4320 train.output_dir=out\n"
        )
    )
    parser.prog = "python -m mrdetr.engine.slurm"
    for action in parser._actions:  # one machine's spawning flags: SLURM decides those here
        if action.dest in _SINGLE_MACHINE_FLAGS:
            action.help = argparse.SUPPRESS
    group = parser.add_argument_group("cluster (submitit)")
    group.add_argument("--nodes", type=int, default=1, help="number of nodes")
    group.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node")
    group.add_argument(
        "--tasks-per-node",
        type=int,
        default=None,
        help="processes per node (default: --gpus-per-node, at least 1)",
    )
    group.add_argument("--cpus-per-task", type=int, default=10, help="CPU cores per process")
    group.add_argument("--mem-gb", type=int, default=0, help="memory per node in GB (0: default)")
    group.add_argument("--partition", default="", help="SLURM partition")
    group.add_argument("--timeout", type=int, default=60 * 72, help="time limit in minutes")
    group.add_argument("--job-name", default="mrdetr", help="SLURM job name")
    group.add_argument(
        "--job-dir", default="", help="submitit folder (default: <train.output_dir>/submitit)"
    )
    group.add_argument("--account", default="", help="SLURM account")
    group.add_argument("--qos", default="", help="SLURM quality of service")
    group.add_argument("--constraint", default="", help="SLURM node constraint")
    group.add_argument("--comment", default="", help="SLURM comment")
    group.add_argument("--exclude", default="", help="nodes to exclude")
    group.add_argument(
        "--signal-delay", type=int, default=120, help="seconds before the time limit to requeue"
    )
    group.add_argument(
        "--max-requeues", type=int, default=10, help="how many time-outs are requeued"
    )
    group.add_argument(
        "--master-port", type=int, default=0, help="rendezvous port (0: derived from the job id)"
    )
    group.add_argument(
        "--dist-backend", default="auto", choices=("auto", "nccl", "gloo"), help="process group"
    )
    group.add_argument(
        "--local", action="store_true", help="run here through submitit's LocalExecutor and wait"
    )
    group.add_argument("--dry-run", action="store_true", help="print the sbatch script and exit")
    return parser


def _tasks_per_node(args: argparse.Namespace) -> int:
    return args.tasks_per_node if args.tasks_per_node else max(args.gpus_per_node, 1)


def master_port(job_id: str) -> int:
    """A port every task of a job derives alike from its id (``"123"``, ``"123_4"``)."""
    digits = re.sub(r"\D", "", str(job_id))
    return PORT_BASE + int(digits or 0) % PORT_SPAN


def process_group_env(job_env: Any, port: int = 0) -> dict[str, str]:
    """The ``torchrun`` variables for this task of a submitit job.

    Args:
        job_env: a ``submitit.JobEnvironment`` (reads ``global_rank``, ``local_rank``,
            ``num_tasks``, ``num_nodes``, ``hostnames``, ``job_id``).
        port: rendezvous port; 0 derives it from the job id (:func:`master_port`).

    Returns:
        ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` (the
        job's first node) and ``MASTER_PORT``.
    """
    return dict(
        RANK=str(job_env.global_rank),
        LOCAL_RANK=str(job_env.local_rank),
        WORLD_SIZE=str(job_env.num_tasks),
        LOCAL_WORLD_SIZE=str(job_env.num_tasks // job_env.num_nodes),
        MASTER_ADDR=str(job_env.hostnames[0]),
        MASTER_PORT=str(port or master_port(job_env.job_id)),
    )


def requeued_by_slurm() -> bool:
    """Whether SLURM restarted this job (``SLURM_RESTART_COUNT`` > 0), e.g. after a preemption."""
    return int(os.environ.get(SLURM_RESTART_COUNT, "0") or 0) > 0


def _with_resume(args: argparse.Namespace) -> argparse.Namespace:
    resumed = copy.copy(args)
    resumed.resume = True
    return resumed


class TrainJob:
    """The callable submitit runs in every task: join the process group, then train.

    Args:
        args: parsed :func:`slurm_argument_parser` arguments (``config_file``, ``opts``,
            ``resume``, ``master_port``, ``dist_backend`` are used).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def __call__(self) -> Any:
        import submitit

        from mrdetr.engine.runner import main as train_main

        job_env = submitit.JobEnvironment()
        os.environ.update(process_group_env(job_env, self.args.master_port))
        args = _with_resume(self.args) if requeued_by_slurm() else self.args
        logger.info("%s (resume=%s)", job_env, args.resume)
        # submitit's preemption signal: checkpoint the running iteration, then let submitit
        # requeue (its handler exits task 0; the other tasks return here)
        chain = f'+train.stop_chained_signals=["SIG{submitit.JobEnvironment.USR_SIG}"]'
        run_args = copy.copy(args)
        run_args.opts = [*(args.opts or []), chain]
        results: list[Any] = []
        try:
            launch(
                lambda a: results.append(train_main(a)),
                1,  # ignored: launch joins the process group from the variables just set
                args=(run_args,),
                backend=(
                    dist_backend_for(args.config_file, args.opts)
                    if args.dist_backend == "auto"
                    else args.dist_backend
                ),
            )
        except TrainingStopped as stop:  # a task other than 0: the requeued job continues
            logger.info("%s", stop)
        return results[0] if results else None

    def checkpoint(self) -> Any:
        """Called by submitit on preemption/time-out: requeue this training with ``--resume``."""
        import submitit

        return submitit.helpers.DelayedSubmission(type(self)(_with_resume(self.args)))


def _output_dir(args: argparse.Namespace) -> str:
    from mrdetr.config import LazyConfig

    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts or [])
    return os.path.abspath(str(cfg.train.output_dir))


def _job_dir(args: argparse.Namespace) -> str:
    return (
        os.path.abspath(args.job_dir)
        if args.job_dir
        else os.path.join(_output_dir(args), JOB_DIR_NAME)
    )


def slurm_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords (sbatch options) for ``args``."""
    params: dict[str, Any] = dict(
        job_name=args.job_name,
        nodes=args.nodes,
        ntasks_per_node=_tasks_per_node(args),
        cpus_per_task=args.cpus_per_task,
        time=args.timeout,
        signal_delay_s=args.signal_delay,
    )
    if args.gpus_per_node > 0:
        params["gpus_per_node"] = args.gpus_per_node
    if args.mem_gb > 0:
        params["mem"] = f"{args.mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint", "comment", "exclude"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    return params


def build_executor(args: argparse.Namespace, job_dir: str) -> Any:
    """A submitit executor: ``LocalExecutor`` with ``--local``, else ``SlurmExecutor``."""
    import submitit

    if args.local:
        executor = submitit.LocalExecutor(folder=job_dir, max_num_timeout=args.max_requeues)
        executor.update_parameters(
            tasks_per_node=_tasks_per_node(args),
            gpus_per_node=args.gpus_per_node,
            timeout_min=args.timeout,
            signal_delay_s=args.signal_delay,
        )
        return executor
    executor = submitit.SlurmExecutor(folder=job_dir, max_num_timeout=args.max_requeues)
    executor.update_parameters(**slurm_parameters(args))
    return executor


def sbatch_script(args: argparse.Namespace, job_dir: str) -> str:
    """The sbatch script submitit would submit for ``args`` (nothing is submitted)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join(
        [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(job_dir)]
    )
    return _make_sbatch_string(command=command, folder=job_dir, **slurm_parameters(args))


def submit(args: argparse.Namespace) -> Any:
    """Submit :class:`TrainJob` for ``args``; returns the submitit job."""
    job_dir = _job_dir(args)
    job = build_executor(args, job_dir).submit(TrainJob(args))
    logger.info("Submitted job %s; logs in %s", job.job_id, job_dir)
    return job


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (``python -m mrdetr.engine.slurm``)."""
    args = slurm_argument_parser().parse_args(argv)
    if not args.config_file:
        raise SystemExit("mrdetr.engine.slurm: --config-file is required.")
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            "mrdetr.engine.slurm needs the 'submitit' package: pip install 'mrdetr[submitit]'."
        ) from exc
    if args.dry_run:
        print(sbatch_script(args, _job_dir(args)))
        return
    job = submit(args)
    print(f"Submitted job {job.job_id}: logs in {job.paths.folder}")
    if args.local:
        job.results()
        print(f"Job {job.job_id} finished.")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
