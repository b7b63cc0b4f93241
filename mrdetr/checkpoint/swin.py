"""Swin key conversion: ImageNet Swin files (Microsoft release or timm) <-> our detection layout.

Our backbone (:class:`mrdetr.modeling.backbone.swin.SwinTransformer`) uses the official Mr. DETR /
detectron2 names, so official Mr. DETR Swin-L checkpoints need no renaming. ImageNet files do:

- Microsoft release (``swin_large_patch4_window12_384_22k.pth``, ``{"model": ...}``): same names without
  the ``backbone.`` prefix, patch merging at the **end** of stage s (``layers.{s}.downsample``), a final
  ``norm.*`` and a classifier ``head.*``.
- timm (``timm.models.swin_transformer.SwinTransformer.state_dict()``): patch merging at the **start** of
  stage s+1 (``layers.{s+1}.downsample``), ``head.fc.*``, no ``relative_position_index`` (not persistent).

Conversion into our layout: prefix ``backbone.``, move timm's downsample one stage down, drop ``head.*``,
the final ``norm.*`` (we have a fresh ``norm{i}`` per output instead) and ``attn_mask``, and recompute
``relative_position_index`` from the window size. The mapping is explicit because the original
training script loads the backbone with detectron2's ``DetectionCheckpointer``, which matches the
un-prefixed keys of a plain ``.pth`` only with ``?matching_heuristics=True``; without it they
silently fail to load.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping

from timm.models.swin_transformer import get_relative_position_index
from torch import Tensor, nn

from .io import IncompatibleKeys, load_checked, read_state_dict

logger = logging.getLogger(__name__)

__all__ = [
    "convert_ours_to_timm_swin",
    "convert_swin_imagenet_to_ours",
    "convert_timm_swin_to_ours",
    "is_timm_swin_layout",
    "load_swin_imagenet",
]

_PREFIX = "backbone."
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
_TABLE_SUFFIX = "attn.relative_position_bias_table"
_INDEX_SUFFIX = "attn.relative_position_index"
_DROPPED = (re.compile(r"^head\."), re.compile(r"^norm\."), re.compile(r"attn_mask$"))


def _shift_downsample(key: str, offset: int) -> str:
    m = _DOWNSAMPLE.match(key)
    if m is None:
        return key
    return f"layers.{int(m.group(1)) + offset}.downsample." + key[m.end() :]


def _relative_position_indices(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """A freshly computed int64 ``relative_position_index`` for every bias table in ``state_dict``."""
    out = {}
    for key, table in state_dict.items():
        if key.endswith(_TABLE_SUFFIX):
            side = math.isqrt(table.shape[0])
            if side * side != table.shape[0] or side % 2 == 0:
                raise ValueError(
                    f"Swin checkpoint: {key} has {table.shape[0]} rows, expected (2*window-1)**2"
                )
            window = (side + 1) // 2
            out[prefix + key[: -len(_TABLE_SUFFIX)] + _INDEX_SUFFIX] = get_relative_position_index(
                window, window
            )
    return out


def is_timm_swin_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """timm layout: downsample at the start of stages 1.. (no ``layers.0.downsample``)."""
    keys = [k[len(_PREFIX) :] if k.startswith(_PREFIX) else k for k in state_dict]
    has_down = {int(m.group(1)) for k in keys if (m := _DOWNSAMPLE.match(k))}
    return bool(has_down) and 0 not in has_down


def _to_ours(state_dict: Mapping[str, Tensor], shift: int) -> dict[str, Tensor]:
    state_dict = {k.removeprefix(_PREFIX): v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if any(p.search(key) for p in _DROPPED) or key.endswith(_INDEX_SUFFIX):
            continue
        out[_PREFIX + _shift_downsample(key, shift)] = value
    out.update(_relative_position_indices(state_dict, _PREFIX))
    return out


def convert_timm_swin_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm ``SwinTransformer`` state dict -> our ``backbone.*`` keys (downsample moved to stage s-1)."""
    return _to_ours(state_dict, shift=-1)


def convert_ours_to_timm_swin(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our backbone keys (with or without ``backbone.``) -> timm names (without head / final norm).

    ``norm{i}`` (per-output norms) and ``relative_position_index`` have no timm counterpart and are dropped.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(_PREFIX):
            key = key[len(_PREFIX) :]
        elif _PREFIX in key or not key.startswith(("patch_embed.", "layers.", "norm")):
            continue
        if re.match(r"^norm\d+\.", key) or key.endswith(_INDEX_SUFFIX):
            continue
        out[_shift_downsample(key, +1)] = value
    return out


def convert_swin_imagenet_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An ImageNet Swin state dict (Microsoft release or timm; detected) -> our ``backbone.*`` keys."""
    if is_timm_swin_layout(state_dict):
        return convert_timm_swin_to_ours(state_dict)
    return _to_ours(state_dict, shift=0)


def load_swin_imagenet(
    model: nn.Module,
    state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike,
    *,
    trusted: bool = False,
) -> IncompatibleKeys:
    """Load ImageNet Swin weights into the ``backbone`` of a detector (or into a bare backbone).

    ``state_dict_or_path`` and ``trusted`` are read by :func:`mrdetr.checkpoint.io.read_state_dict`;
    ``model`` is a detector with a ``backbone`` attribute, or a :class:`SwinTransformer`.

    Returns:
        missing keys of the backbone (normally only the fresh ``norm{i}``) and unexpected file keys (in
        our names); both are logged.

    Raises:
        ValueError: naming every key whose shape differs from the model's.
    """
    converted = convert_swin_imagenet_to_ours(read_state_dict(state_dict_or_path, trusted=trusted))
    target = model.backbone if hasattr(model, "backbone") else model
    converted = {k[len(_PREFIX) :]: v for k, v in converted.items()}
    keys = load_checked(target, converted, what="Swin checkpoint", prefix=_PREFIX)
    if keys.missing_keys:
        logger.info(
            "Swin backbone keys not in the checkpoint (freshly initialised): %s", keys.missing_keys
        )
    if keys.unexpected_keys:
        logger.warning("Swin checkpoint keys not in the backbone: %s", keys.unexpected_keys)
    return keys
