"""Inference in bfloat16: the dtype switch, its "auto" choice, and running a model in it.

``dtype="float32" | "bfloat16" | "auto"`` (in a config: ``train.inference_dtype``, read by the
Predictor, the demo and the evaluation of ``train_net.py``): "auto" picks bfloat16 where it is
expected to be faster than float32 and logs what it picked and why: a CUDA device with bf16
support, or a CPU with native bf16 instructions (AMX tiles, or avx512_bf16 dot products: on such a
CPU without AMX the R50 model's eval ran 1.8x faster in bf16, ``benchmarks/README.md``); on a CPU
with neither, bf16 would be emulated and "auto" keeps float32.

Running in bf16 (:func:`prepare_for_inference` once, then :func:`inference_autocast` per call):

- every floating-point parameter and buffer is cast to bfloat16 once, so autocast finds the weights
  already in bf16 and does not re-cast them on every call;
- the backbone's frozen batch norms are folded into their convolutions (in float32, before the
  cast: :func:`fold_frozen_batchnorm`), so no per-call scale/shift is computed, and its weights are
  channels-last (the layout oneDNN and cuDNN run convolutions in);
- activations that the model builds in float32 (position embeddings, normalised images) are cast
  by autocast at the first matmul or convolution that reads them; reductions autocast lists as
  float32 ops (softmax, norms, losses) still run in float32;
- floating-point outputs are returned in float32 (:func:`outputs_to_float32`).

:func:`inference_model` gives the model to run: the model itself in float32, else a prepared copy,
so evaluating a model that is being trained never changes its weights.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from mrdetr.config.access import get_dotted
from mrdetr.modeling.backbone.resnet import ConvNorm

__all__ = [
    "INFERENCE_DTYPES",
    "INFERENCE_DTYPE_KEY",
    "configured_inference_dtype",
    "fold_frozen_batchnorm",
    "inference_autocast",
    "inference_model",
    "outputs_to_float32",
    "prepare_for_inference",
    "resolve_inference_dtype",
]

INFERENCE_DTYPES = ("float32", "bfloat16", "auto")
INFERENCE_DTYPE_KEY = "train.inference_dtype"  # the config key of the switch
_DEFAULT_INFERENCE_DTYPE = "float32"

logger = logging.getLogger(__name__)


def _cpu_supports(name: str) -> bool:
    check = getattr(torch.cpu, name, None)  # private probes of torch.cpu; absent means "no"
    return bool(check is not None and check())


def _cpu_has_amx() -> bool:
    return _cpu_supports("_is_amx_tile_supported")


def _cpu_has_avx512_bf16() -> bool:
    return _cpu_supports("_is_avx512_bf16_supported")


def _cpu_bf16_reason() -> tuple[bool, str]:
    """Whether bf16 is expected to be faster than float32 on this CPU, and why."""
    if _cpu_has_amx():
        return True, "the CPU has AMX tiles (bf16 matrix units)"
    if _cpu_has_avx512_bf16():
        return True, "the CPU has avx512_bf16 (native bf16 dot products; no AMX)"
    return False, "the CPU has neither AMX nor avx512_bf16 (bf16 would be emulated)"


def configured_inference_dtype(cfg: Any) -> str:
    """The config's ``train.inference_dtype`` ("float32" when the key is missing)."""
    return str(get_dotted(cfg, INFERENCE_DTYPE_KEY, _DEFAULT_INFERENCE_DTYPE))


def resolve_inference_dtype(
    dtype: str, device: torch.device | str, *, name: str = "inference dtype"
) -> torch.dtype:
    """The dtype to run inference in on ``device``; "auto" logs its choice and the reason.

    Args:
        dtype: one of :data:`INFERENCE_DTYPES`.
        device: the device the model runs on.
        name: what ``dtype`` came from (a config key, an argument), for the error message.

    Raises:
        ValueError: ``dtype`` is not one of :data:`INFERENCE_DTYPES`.
    """
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"{name} must be one of {INFERENCE_DTYPES}, got {dtype!r}")
    if dtype != "auto":
        return getattr(torch, dtype)
    device = torch.device(device)
    if device.type == "cuda":
        fast = torch.cuda.is_bf16_supported()
        why = f"CUDA device {'supports' if fast else 'does not support'} bf16"
    elif device.type == "cpu":
        fast, why = _cpu_bf16_reason()
    else:
        fast, why = False, f"no bf16 speed data for device type {device.type!r}"
    picked = torch.bfloat16 if fast else torch.float32
    logger.info("inference dtype 'auto' on %s: %s because %s", device, picked, why)
    return picked


@torch.no_grad()
def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Fold the ``FrozenBatchNorm2d`` of every ``ConvNorm`` under ``module`` into its convolution.

    ``norm(conv(x)) = conv(x) * s + (b - mean * s)`` with ``s = weight / sqrt(var + eps)``: the conv
    weight is scaled by ``s`` per output channel, gets the bias ``b - mean * s`` and the norm becomes
    ``nn.Identity``. Computed in float32. Inference only: the state dict changes (``norm.*`` keys
    gone, ``bias`` added), so save checkpoints from an unfolded model.

    Returns:
        How many convolutions were folded.
    """
    folded = 0
    for conv in module.modules():
        if not (isinstance(conv, ConvNorm) and isinstance(conv.norm, FrozenBatchNorm2d)):
            continue
        norm = conv.norm
        scale = norm.weight.float() * (norm.running_var.float() + norm.eps).rsqrt()
        shift = norm.bias.float() - norm.running_mean.float() * scale
        weight = conv.weight.float() * scale.view(-1, 1, 1, 1)
        conv.weight.copy_(weight.to(conv.weight.dtype))
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
        conv.norm = nn.Identity()
        folded += 1
    return folded


def prepare_for_inference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast ``model`` once for inference in ``dtype`` (in place; float32 leaves it unchanged).

    For a dtype other than float32: the frozen batch norms of ``model.backbone`` (if any) are
    folded into their convolutions, the backbone moves to channels-last, and floating-point
    parameters and buffers become ``dtype`` (integer buffers are kept).

    Returns:
        ``model`` in eval mode.
    """
    model.eval()
    if dtype == torch.float32:
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        fold_frozen_batchnorm(backbone)
        backbone.to(memory_format=torch.channels_last)
    return model.to(dtype=dtype)


def inference_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The model to run inference with in ``dtype``: ``model`` itself for float32, else a copy
    prepared by :func:`prepare_for_inference` (``model``'s weights and mode are not touched).

    The copy holds the weights in ``dtype`` (half the float32 size for bf16) next to the original.
    """
    if dtype == torch.float32:
        return model
    return prepare_for_inference(copy.deepcopy(model), dtype)


@contextlib.contextmanager
def inference_autocast(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device`` (nothing for float32), without gradients."""
    device = torch.device(device)
    with torch.inference_mode():
        if dtype == torch.float32:
            yield
        else:
            with torch.autocast(device.type, dtype=dtype):
                yield


def outputs_to_float32(outputs: Any) -> Any:
    """Floating-point tensors (also inside lists, tuples, dicts and objects with ``get_fields``
    or a ``tensor`` attribute, e.g. ``Instances`` and ``Boxes``) cast to float32, in place where
    the container is mutable."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        for key, value in outputs.items():
            outputs[key] = outputs_to_float32(value)
        return outputs
    if isinstance(outputs, (list, tuple)):
        converted = [outputs_to_float32(v) for v in outputs]
        return type(outputs)(converted) if isinstance(outputs, tuple) else converted
    if hasattr(outputs, "get_fields"):  # Instances
        for name, value in list(outputs.get_fields().items()):
            outputs.set(name, outputs_to_float32(value))
        return outputs
    if isinstance(getattr(outputs, "tensor", None), torch.Tensor):  # Boxes
        outputs.tensor = outputs_to_float32(outputs.tensor)
    return outputs
