"""Environment helpers: seeding, determinism, RNG state capture/restore and env info."""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import os
import platform
import random
import sys
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "collect_env_info",
    "restore_rng_state",
    "seed_all_rng",
    "set_deterministic",
]

logger = logging.getLogger(__name__)

_CUBLAS_WORKSPACE_CONFIG = ":4096:8"  # documented value that makes cuBLAS deterministic
_SEED_BITS = 31  # seeds stay in numpy's accepted range [0, 2**32)


def seed_all_rng(seed: int | None = None) -> int:
    """Seed Python ``random``, NumPy and torch (all devices).

    Args:
        seed: the seed; ``None`` (or negative) draws a fresh one from pid, time and urandom.

    Returns:
        The seed actually used (log it to reproduce the run).
    """
    if seed is None or seed < 0:
        seed = (
            os.getpid()
            + int(datetime.datetime.now().strftime("%S%f"))
            + int.from_bytes(os.urandom(2), "big")
        ) % (1 << _SEED_BITS)
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


def set_deterministic(enabled: bool, *, warn_only: bool | None = None) -> None:
    """Switch deterministic algorithms (and cuDNN flags) on or off.

    Args:
        enabled: request deterministic kernels.
        warn_only: passed to ``torch.use_deterministic_algorithms``. ``None`` means strict on
            CPU-only machines and warn-only when CUDA is available (``grid_sample`` backward, used
            by the reference deformable attention, has no deterministic CUDA kernel).
    """
    if warn_only is None:
        warn_only = torch.cuda.is_available()
    if enabled and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE_CONFIG)
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False if enabled else torch.backends.cudnn.benchmark


def capture_rng_state() -> dict[str, Any]:
    """Return the Python, NumPy, torch (and CUDA) RNG states as ``weights_only``-safe values.

    Returns:
        ``{"python": [version, list[int], gauss_next], "numpy": [name, list[int], pos,
        has_gauss, cached_gaussian], "torch": uint8 tensor, "cuda": list of uint8 tensors}``
        (``"cuda"`` only when CUDA is available).
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore states produced by :func:`capture_rng_state`.

    Raises:
        ValueError: when a required entry is missing or malformed.
    """
    missing = {"python", "numpy", "torch"} - set(state)
    if missing:
        raise ValueError(
            f"RNG state is missing {sorted(missing)}; expected keys python/numpy/torch"
        )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) != torch.cuda.device_count():
            logger.warning(
                "Checkpoint holds %d CUDA RNG states but %d devices are visible; "
                "restoring the common prefix.",
                len(cuda_states),
                torch.cuda.device_count(),
            )
        for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def _version_of(module_name: str) -> str:
    """``module.__version__``, else the installed distribution's version (pycocotools has none)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return "not installed"
    if hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return importlib.metadata.version(module_name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def collect_env_info() -> str:
    """Return a short multi-line description of the software/hardware environment."""
    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("platform", platform.platform()),
        ("numpy", np.__version__),
        ("torch", torch.__version__),
        ("torch CUDA build", str(torch.version.cuda)),
        ("CUDA available", str(torch.cuda.is_available())),
    ]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            rows.append((f"GPU {index}", torch.cuda.get_device_name(index)))
    for module_name in (
        "mrdetr",
        "torchvision",
        "fvcore",
        "omegaconf",
        "pycocotools",
        "timm",
        "triton",
    ):
        rows.append((module_name, _version_of(module_name)))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)
