"""Command-line parser and per-run setup (output dir, logging, config dump, seeding)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch

from mrdetr.config.access import get_dotted
from mrdetr.utils import comm
from mrdetr.utils.env import collect_env_info, seed_all_rng, set_deterministic
from mrdetr.utils.logger import setup_logger

__all__ = ["default_argument_parser", "default_setup", "dist_backend_for", "resolve_device"]

CONFIG_DUMP_NAME = "config.yaml"


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """The detectron2-style training CLI.

    Flags: ``--config-file``, ``--resume``, ``--eval-only``, ``--traceback``, ``--num-gpus``,
    ``--num-machines``, ``--machine-rank``, ``--dist-url``, then ``key=value`` config overrides.
    """
    epilog = epilog or (
        "Examples:\n\n"
        "Run on one machine:\n"
        "    $ python projects/train_net.py --num-gpus 8 --config-file cfg.py\n\n"
        "Change some config options:\n"
        "    $ python projects/train_net.py --config-file cfg.py train.output_dir=out "
        "train.amp.enabled=True\n\n"
        "Run on multiple machines:\n"
        "    (machine0)$ python projects/train_net.py --machine-rank 0 --num-machines 2 "
        "--dist-url tcp://HOST:PORT [--other-flags]\n"
        "    (machine1)$ python projects/train_net.py --machine-rank 1 --num-machines 2 "
        "--dist-url tcp://HOST:PORT [--other-flags]\n"
    )
    parser = argparse.ArgumentParser(
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in train.output_dir (else load "
        "train.init_checkpoint and start at iteration 0)",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate train.init_checkpoint")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback of config, data and checkpoint errors (also MRDETR_DEBUG=1)",
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="rank of this machine (unique per machine)"
    )
    parser.add_argument(
        "--dist-url",
        default="auto",
        help='rendezvous URL, e.g. tcp://HOST:PORT; "auto" picks a free local port (one machine)',
    )
    parser.add_argument(
        "opts",
        help="config overrides as key=value pairs, e.g. train.max_iter=100",
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def dist_backend_for(config_file: str, opts: list[str] | None) -> str:
    """The process group's backend for a multi-process run of this config: GLOO when it trains on
    the CPU (``train.device`` ``"cpu"``, also on a machine with GPUs), else ``"auto"`` (NCCL when
    CUDA is available, see :func:`mrdetr.engine.launch`)."""
    from mrdetr.config import LazyConfig

    if not config_file:
        return "auto"
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), opts or [])
    device = str(get_dotted(cfg, "train.device", "auto"))
    return "gloo" if device.split(":")[0] == "cpu" else "auto"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> this process' CUDA device if available, else CPU; other names verbatim."""
    if name in ("auto", "", None):
        if torch.cuda.is_available():
            return torch.device("cuda", comm.get_local_rank())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", comm.get_local_rank())
    return device


def default_setup(cfg: Any, args: argparse.Namespace) -> int:
    """Prepare a run: output dir, logger, config dump, environment log, seed, determinism.

    Args:
        cfg: the loaded config (``cfg.train.*`` is read).
        args: parsed :func:`default_argument_parser` arguments.

    Returns:
        The seed used by this process (``train.seed + rank``, or a random one for ``-1``).
    """
    output_dir = get_dotted(cfg, "train.output_dir", "")
    rank = comm.get_rank()
    if output_dir and comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
    comm.synchronize()
    logger = setup_logger(output_dir or None, distributed_rank=rank, name="mrdetr")

    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Environment info:\n%s", collect_env_info())
    logger.info("Command line arguments: %s", " ".join(sys.argv))
    logger.info("Parsed arguments: %s", args)
    config_file = getattr(args, "config_file", "")
    if config_file and os.path.isfile(config_file):
        with open(config_file) as f:
            logger.info("Contents of config file %s:\n%s", config_file, f.read())

    if output_dir and comm.is_main_process():
        from mrdetr.config import LazyConfig

        path = os.path.join(output_dir, CONFIG_DUMP_NAME)
        LazyConfig.save(cfg, path)
        logger.info("Full config saved to %s", path)

    seed = int(get_dotted(cfg, "train.seed", -1))
    used_seed = seed_all_rng(None if seed < 0 else seed + rank)
    logger.info("Using seed %d%s", used_seed, " (random)" if seed < 0 else "")
    deterministic = bool(get_dotted(cfg, "train.deterministic", False))
    set_deterministic(deterministic)
    if deterministic:
        logger.info("Deterministic algorithms enabled.")
    return used_seed
