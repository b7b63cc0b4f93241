"""Conversion between the official Mr. DETR state-dict layout and ours, and loading of official files.

Our modules name their sublayers explicitly (``self_attn``, ``cross_attn``, ``ffn.primary``/``ffn.sep``,
``norm_cross``...), own the decoder heads once (the official layout stores ``class_embed.*``/``bbox_embed.*``
twice: at the top level and under ``transformer.decoder``), and keep the two encoder proposal heads
under ``transformer.proposals.heads.{primary,instruct}``. The rules below map one layout to the other.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

_E = "transformer.encoder.layers.{i}."
_D = "transformer.decoder.layers.{i}."

# (official prefix, our prefix); ``{i}`` stands for a layer index. First match wins.
_RULES: list[tuple[str, str]] = [
    (_E + "attentions.0.", _E + "self_attn."),
    (_E + "ffns.0.layers.0.0.", _E + "ffn.fc1."),
    (_E + "ffns.0.layers.1.", _E + "ffn.fc2."),
    (_E + "norms.0.", _E + "norm1."),
    (_E + "norms.1.", _E + "norm2."),
    (_D + "attentions.0.attn.", _D + "self_attn.attn."),
    (_D + "attentions.0.instruction_o2m.", _D + "self_attn.instruction_content."),
    (_D + "attentions.0.instruction_o2m_pos.", _D + "self_attn.instruction_pos."),
    (_D + "attentions.0.norm_o2o.", _D + "self_attn.norm."),
    (_D + "attentions.0.norm_o2m.", _D + "self_attn.norm_instruct."),
    (_D + "attentions.1.", _D + "cross_attn."),
    (_D + "ffns.0.layers.0.linear.linear.", _D + "ffn.primary.fc1."),
    (_D + "ffns.0.layers.0.linear.linear_sep.", _D + "ffn.sep.fc1."),
    (_D + "ffns.0.layers.1.linear.", _D + "ffn.primary.fc2."),
    (_D + "ffns.0.layers.1.linear_sep.", _D + "ffn.sep.fc2."),
    (_D + "norms.0.", _D + "norm_cross."),
    (_D + "norms.1.", _D + "norm_ffn."),
    (
        "transformer.decoder.class_embed_o2m_encoder.",
        "transformer.proposals.heads.instruct.class_embed.",
    ),
    ("transformer.decoder.bbox_embed_enc_o2m.", "transformer.proposals.heads.instruct.bbox_embed."),
    ("transformer.enc_output.", "transformer.proposals.enc_output."),
    ("transformer.enc_output_norm.", "transformer.proposals.enc_output_norm."),
    ("label_enc.", "denoising.label_enc."),  # DINO/Align DN label embedding
]


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)"))


_FORWARD = [(_pattern(src), dst) for src, dst in _RULES]
_BACKWARD = [(_pattern(dst), src) for src, dst in _RULES]


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, template in rules:
        m = pattern.match(key)
        if m:
            prefix = template.replace("{i}", m.group("i")) if "i" in m.groupdict() else template
            return prefix + key[m.end() :]
    return key


_DEC = r"transformer\.decoder\.layers\.(\d+)\."
_HEAD = re.compile(r"^(?:transformer\.decoder\.)?(class_embed|bbox_embed)\.(\d+)\.(.*)$")
_OFFICIAL_MARKERS = (
    "attentions.0.",
    "ffns.0.",
    "transformer.enc_output.",
    "class_embed_o2m_encoder",
)


class IncompatibleKeys(NamedTuple):
    """Keys that did not load: ``missing_keys`` (in the model, not in the file) and
    ``unexpected_keys`` (in the file, not in the model)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _num_decoder_layers(keys) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(_DEC, k))}
    return max(idx) + 1 if idx else 0


def is_official_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a state dict uses the official (detrex-style) key names."""
    return any(marker in k for k in state_dict for marker in _OFFICIAL_MARKERS)


def convert_official_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official Mr. DETR state dict to our layout.

    The duplicated head entries (``class_embed.i`` and ``transformer.decoder.class_embed.i``) are merged;
    if both are present they must be equal. Head index ``D`` (= number of decoder layers) is the primary
    encoder proposal head.

    Raises:
        ValueError: if aliased head entries disagree.
    """
    num_layers = _num_decoder_layers(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        head = _HEAD.match(key)
        if head is not None:
            name, idx, rest = head.group(1), int(head.group(2)), head.group(3)
            if idx == num_layers:
                new_key = f"transformer.proposals.heads.primary.{name}.{rest}"
            else:
                new_key = f"{name}.{idx}.{rest}"
        else:
            new_key = _rename(key, _FORWARD)
        if new_key in out:
            if out[new_key].shape != value.shape or not torch.equal(out[new_key], value):
                raise ValueError(f"aliased checkpoint entries disagree for '{key}' ({new_key})")
            continue
        out[new_key] = value
    return out


def convert_ours_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`convert_official_to_ours`, writing the head aliases under both names
    (in the official order: ``transformer.decoder.*`` first, top-level aliases last)."""
    num_layers = _num_decoder_layers_ours(state_dict)
    out: dict[str, Tensor] = {}
    aliases: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = re.match(r"^(class_embed|bbox_embed)\.(\d+)\.(.*)$", key)
        p = re.match(
            r"^transformer\.proposals\.heads\.primary\.(class_embed|bbox_embed)\.(.*)$", key
        )
        if m or p:
            name, idx, rest = (
                (m.group(1), m.group(2), m.group(3)) if m else (p.group(1), num_layers, p.group(2))
            )
            out[f"transformer.decoder.{name}.{idx}.{rest}"] = value
            aliases[f"{name}.{idx}.{rest}"] = value
            continue
        out[_rename(key, _BACKWARD)] = value
    out.update(aliases)
    return out


def _num_decoder_layers_ours(keys) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(r"class_embed\.(\d+)\.", k))}
    return max(idx) + 1 if idx else _num_decoder_layers(keys)


def convert_to_ours(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detect the layout of a state dict and rename it to ours.

    Handles the official Mr. DETR layout (every variant), our own layout (unchanged), and ImageNet
    backbone files for initialisation: torchvision ResNet (``conv1``, ``layer1``...) and plain Swin
    (Microsoft release or timm) — those become ``backbone.*`` keys.
    """
    from .resnet import convert_torchvision_resnet_to_ours, is_torchvision_resnet
    from .swin import convert_swin_imagenet_to_ours

    if is_official_layout(state_dict):
        return convert_official_to_ours(state_dict)
    if is_torchvision_resnet(state_dict):
        return convert_torchvision_resnet_to_ours(state_dict)
    if any(k.startswith("patch_embed.") for k in state_dict) and not any(
        k.startswith("backbone.") for k in state_dict
    ):
        return convert_swin_imagenet_to_ours(state_dict)
    return dict(state_dict)


def load_checkpoint_file(path: str | os.PathLike, *, trusted: bool = False) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: file to read: a path, ``hf://<owner>/<repo>/<file>`` or a model-zoo name (see
            :func:`mrdetr.model_zoo.resolve_checkpoint`).
        trusted: allow full unpickling when ``weights_only`` refuses the file (only for files you trust).

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: the file is unreadable, or needs unpickling and ``trusted`` is False.
    """
    from mrdetr.model_zoo import resolve_checkpoint

    path = resolve_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with context below
        if not trusted:
            raise RuntimeError(
                f"cannot read checkpoint {path} with torch.load(weights_only=True): {exc}. "
                "If you trust this file, load it with trusted=True (it will be unpickled)."
            ) from None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001
            raise RuntimeError(f"cannot read checkpoint {path}: {exc2}") from None


def extract_state_dict(obj) -> dict[str, Tensor]:
    """Unwrap ``{"model": state_dict, ...}`` (official and our checkpoints) or return a plain state dict."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("checkpoint does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def load_official(
    model: nn.Module,
    state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike,
    *,
    trusted: bool = False,
) -> IncompatibleKeys:
    """Load an official (or our) checkpoint into ``model``.

    Args:
        model: the model to fill.
        state_dict_or_path: a state dict, ``{"model": state_dict}``, or a file path.
        trusted: see :func:`load_checkpoint_file`.

    Returns:
        the missing and unexpected keys (in our names); both empty for a matching checkpoint.

    Raises:
        ValueError: if any tensor's shape differs from the model's (every such key is named, with both shapes).
    """
    obj = (
        load_checkpoint_file(state_dict_or_path, trusted=trusted)
        if isinstance(state_dict_or_path, (str, os.PathLike))
        else state_dict_or_path
    )
    state_dict = convert_to_ours(extract_state_dict(obj))
    own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError("checkpoint shapes do not match the model:\n  " + "\n  ".join(mismatched))
    result = model.load_state_dict(state_dict, strict=False)
    keys = IncompatibleKeys(list(result.missing_keys), list(result.unexpected_keys))
    if keys.missing_keys:
        logger.warning("keys missing from the checkpoint: %s", ", ".join(keys.missing_keys))
    if keys.unexpected_keys:
        logger.warning("checkpoint keys not in the model: %s", ", ".join(keys.unexpected_keys))
    return keys
