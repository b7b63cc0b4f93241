"""Weighted average of the checkpoints of one run ("model mean", +0.1-0.2 AP, steadier than EMA).

    python -m mrdetr.tools.model_mean --folder DIR --iters 89999,29999,59999 --weights 0.8,0.15,0.05 \
        [--ema] [--output meanmodel.pth]

reads ``DIR/model_{iter:07d}.pth`` for every iteration and writes ``DIR/meanmodel.pth`` =
``{"model": sum_i w_i * theta_i}``. Floating-point tensors are averaged (in float64, stored in their
own dtype); integer/bool buffers (e.g. Swin's ``relative_position_index``) are copied from the newest
checkpoint. All files must exist and agree in keys and shapes, and the weights must sum to 1. The
output is written atomically (:func:`mrdetr.utils.file_io.atomic_write`). It never replaces an input, a
``model_*.pth`` training checkpoint or another file of the run (``last_checkpoint``,
``config.yaml``, ``log.txt``, ``metrics.json``), and it stays inside ``--folder`` unless
``--allow-outside-folder`` is given. Evaluate it with
``--eval-only train.init_checkpoint=DIR/meanmodel.pth``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mrdetr.checkpoint.checkpointer import METADATA_KEY
from mrdetr.utils.file_io import atomic_write

__all__ = [
    "checkpoint_path",
    "main",
    "mean_state_dicts",
    "model_mean",
    "output_path",
    "parse_list",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = "model_{:07d}.pth"
DEFAULT_OUTPUT = "meanmodel.pth"
WEIGHT_SUM_TOLERANCE = 1e-6
RUN_FILES = ("last_checkpoint", "config.yaml", "log.txt", "metrics.json")
TRAINING_CHECKPOINT_PREFIX = "model_"


def checkpoint_path(folder: str, iteration: int) -> str:
    """``folder/model_{iteration:07d}.pth``."""
    return os.path.join(folder, CHECKPOINT_PATTERN.format(iteration))


def parse_list(text: str, kind: type, name: str) -> list:
    """Parse ``"a,b,c"`` into a list of ``kind`` (error names the flag)."""
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"{name}: expected comma-separated {kind.__name__} values, got '{text}'"
        ) from None


def _read_state_dict(path: str, use_ema: bool) -> tuple[dict[str, Tensor], Any]:
    """(the model or EMA state dict, the checkpoint's dataset metadata or None) of ``path``."""
    from ..checkpoint.io import extract_state_dict, load_checkpoint_file

    obj = load_checkpoint_file(path)
    metadata = obj.get(METADATA_KEY) if isinstance(obj, Mapping) else None
    if use_ema:
        ema = obj.get("ema") if isinstance(obj, Mapping) else None
        if ema is None:
            raise KeyError(f"{path}: --ema was given but the checkpoint has no 'ema' entry")
        # our ModelEMA saves {"decay", "state"}; a plain state dict is accepted too
        obj = ema["state"] if isinstance(ema, Mapping) and "state" in ema else ema
    return extract_state_dict(obj), metadata


def mean_state_dicts(
    state_dicts: Sequence[Mapping[str, Tensor]], weights: Sequence[float], names: Sequence[str]
) -> dict[str, Tensor]:
    """Weighted sum of state dicts; ``state_dicts[0]`` is the newest (its non-float tensors are kept).

    Raises:
        ValueError: keys or shapes differ between files (named), or the weights do not sum to 1.
    """
    if len(state_dicts) != len(weights) or not state_dicts:
        raise ValueError(
            f"need one weight per checkpoint, got {len(weights)} weights for {len(state_dicts)} files"
        )
    if not math.isclose(sum(weights), 1.0, abs_tol=WEIGHT_SUM_TOLERANCE):
        raise ValueError(f"--weights must sum to 1, got {list(weights)} (sum {sum(weights):.6g})")
    ref, ref_name = state_dicts[0], names[0]
    for sd, name in zip(state_dicts[1:], names[1:]):
        if sd.keys() != ref.keys():
            missing, extra = sorted(ref.keys() - sd.keys()), sorted(sd.keys() - ref.keys())
            raise ValueError(
                f"checkpoints disagree in keys: {name} lacks {missing[:5]} and adds {extra[:5]} vs {ref_name}"
            )
        bad = [k for k in ref if sd[k].shape != ref[k].shape]
        if bad:
            k = bad[0]
            raise ValueError(
                f"checkpoints disagree in shapes: '{k}' is {tuple(sd[k].shape)} in {name} "
                f"but {tuple(ref[k].shape)} in {ref_name} ({len(bad)} keys differ)"
            )
    out: dict[str, Tensor] = {}
    for key, value in ref.items():
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        acc = torch.zeros(value.shape, dtype=torch.float64)
        for sd, w in zip(state_dicts, weights):
            acc += float(w) * sd[key].to(torch.float64)
        out[key] = acc.to(value.dtype)
    return out


def output_path(
    folder: str, output: str, inputs: Sequence[str], *, allow_outside_folder: bool = False
) -> str:
    """Where ``--output`` writes, after checking that it harms no file of the run.

    Args:
        folder: the run's checkpoint folder.
        output: a file name inside ``folder`` or a path (relative paths are taken inside
            ``folder``).
        inputs: the checkpoints being averaged.
        allow_outside_folder: permit a path that leaves ``folder``.

    Raises:
        ValueError: the output is an input checkpoint, is named ``model_*.pth`` or like another
            file of a run, or lies outside ``folder`` without ``allow_outside_folder``.
    """
    path = output if os.path.isabs(output) else os.path.join(folder, output)
    real, real_folder = os.path.realpath(path), os.path.realpath(folder)
    name = os.path.basename(real)
    if os.path.exists(real) and any(os.path.samefile(p, real) for p in inputs):
        raise ValueError(f"--output {output}: this is one of the input checkpoints ({path})")
    if name.startswith(TRAINING_CHECKPOINT_PREFIX) and name.endswith(".pth"):
        raise ValueError(
            f"--output {output}: refusing to write a model_*.pth file (the name of a run's "
            f"training checkpoints); choose another name, e.g. {DEFAULT_OUTPUT}"
        )
    if name in RUN_FILES:
        raise ValueError(f"--output {output}: refusing to replace a run's {name}")
    if os.path.commonpath([real, real_folder]) != real_folder and not allow_outside_folder:
        raise ValueError(
            f"--output {output}: resolves to {real}, outside --folder {folder}; pass "
            "--allow-outside-folder to write there"
        )
    return path


def model_mean(
    folder: str,
    iters: Sequence[int],
    weights: Sequence[float],
    *,
    use_ema: bool = False,
    output: str = DEFAULT_OUTPUT,
    allow_outside_folder: bool = False,
) -> str:
    """Average ``folder/model_{iter}.pth`` with ``weights`` and write ``folder/output``.

    Returns:
        the path written.

    Raises:
        FileNotFoundError: a checkpoint is missing (all missing files are named).
        ValueError: mismatched checkpoints or weights, or an output that :func:`output_path`
            refuses.
    """
    if len(iters) != len(weights):
        raise ValueError(f"--iters has {len(iters)} values but --weights has {len(weights)}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    paths = [checkpoint_path(folder, i) for i in iters]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"checkpoint file(s) not found: {', '.join(missing)}")
    out_path = output_path(folder, output, paths, allow_outside_folder=allow_outside_folder)
    order = sorted(range(len(iters)), key=lambda i: -iters[i])  # newest first
    read = [_read_state_dict(paths[i], use_ema) for i in order]
    mean = mean_state_dicts(
        [sd for sd, _ in read], [weights[i] for i in order], [paths[i] for i in order]
    )
    out = {"model": mean}
    if read[0][1] is not None:  # the class names of the newest checkpoint travel on
        out[METADATA_KEY] = read[0][1]
    atomic_write(out_path, lambda f: torch.save(out, f))
    terms = " + ".join(f"{weights[i]:g}*{os.path.basename(paths[i])}" for i in range(len(iters)))
    logger.info("wrote %s = %s%s", out_path, terms, " (EMA weights)" if use_ema else "")
    return out_path


def build_parser(defaults: tuple[str, str] | None = None) -> argparse.ArgumentParser:
    """The CLI; ``defaults`` = (iters, weights) of a fixed recipe (then the flags are optional)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-n", "--folder", required=True, help="folder holding model_XXXXXXX.pth files"
    )
    parser.add_argument("--iters", default=defaults[0] if defaults else None, required=defaults is None,
                        help="comma-separated iterations, e.g. 89999,29999,59999")  # fmt: skip
    parser.add_argument("--weights", default=defaults[1] if defaults else None, required=defaults is None,
                        help="comma-separated weights summing to 1, e.g. 0.8,0.15,0.05")  # fmt: skip
    parser.add_argument("--ema", action="store_true", help="average the checkpoints' EMA weights")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="output file name inside --folder")
    parser.add_argument(
        "--allow-outside-folder",
        action="store_true",
        help="allow an --output path outside --folder",
    )
    return parser


def main(argv: list[str] | None = None, defaults: tuple[str, str] | None = None) -> int:
    args = build_parser(defaults).parse_args(argv)
    model_mean(
        args.folder,
        parse_list(args.iters, int, "--iters"),
        parse_list(args.weights, float, "--weights"),
        use_ema=args.ema,
        output=args.output,
        allow_outside_folder=args.allow_outside_folder,
    )
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
