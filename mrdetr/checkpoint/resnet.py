"""torchvision ImageNet ResNet weights -> our ``backbone.*`` keys (detectron2 layout).

The original configs load ``detectron2://ImageNetPretrained/torchvision/R-50.pkl``: torchvision's
ResNet-50 (v1) renamed by detectron2's ``convert-torchvision-to-d2.py`` and loaded by suffix
matching. We read torchvision's own weights with the same renaming, written out:

``conv1``/``bn1`` -> ``stem.conv1`` / ``stem.conv1.norm``; ``layer{N}.{i}.conv{k}``/``bn{k}`` ->
``res{N+1}.{i}.conv{k}`` / ``.conv{k}.norm``; ``downsample.0``/``.1`` -> ``shortcut`` / ``shortcut.norm``;
``fc.*`` and ``num_batches_tracked`` are dropped. An explicit map, no suffix heuristics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

_STAGE = re.compile(r"^layer(\d)\.(\d+)\.(.*)$")
_TORCHVISION_MARKERS = ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight")


def is_torchvision_resnet(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a state dict is a plain torchvision ResNet (``conv1``, ``bn1``, ``layer1``...)."""
    return all(k in state_dict for k in _TORCHVISION_MARKERS)


def _block_key(rest: str) -> str:
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    return re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)


def convert_torchvision_resnet_to_ours(
    state_dict: Mapping[str, Tensor], prefix: str = "backbone."
) -> dict[str, Tensor]:
    """Rename a torchvision ResNet state dict to our backbone keys (with ``prefix``)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        if key.startswith("conv1."):
            new = "stem." + key
        elif key.startswith("bn1."):
            new = "stem.conv1.norm." + key[len("bn1.") :]
        elif m := _STAGE.match(key):
            new = f"res{int(m.group(1)) + 1}.{m.group(2)}.{_block_key(m.group(3))}"
        else:
            new = key
        out[prefix + new] = value
    return out
