"""Optimizer parameter groups from name-pattern rules (config-driven LR factors / weight decay)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["DEFAULT_PARAM_GROUP_RULES", "get_param_groups", "largest_param_group"]

# Official Mr. DETR recipe (the optimizer the original train_net.py builds): backbone and the MSDA sampling heads train at 0.1x.
DEFAULT_PARAM_GROUP_RULES: tuple[dict[str, Any], ...] = (
    {"pattern": "backbone", "lr_factor": 0.1},
    {"pattern": ["reference_points", "sampling_offsets"], "lr_factor": 0.1},
)

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
_RULE_KEYS = {"pattern", "lr_factor", "weight_decay"}


def _is_norm(module: nn.Module) -> bool:
    # FrozenBatchNorm has no trainable parameters, so it never reaches here.
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith(("Norm", "Norm2d"))


def _validate_rules(rules: Sequence[dict[str, Any]]) -> list[tuple[tuple[str, ...], dict]]:
    parsed = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict) or "pattern" not in rule:
            raise ValueError(
                f"get_param_groups: rules[{index}]={rule!r} must be a dict with a 'pattern' key "
                "(str or list of str) and optional 'lr_factor' / 'weight_decay'."
            )
        unknown = set(rule) - _RULE_KEYS
        if unknown:
            raise ValueError(
                f"get_param_groups: rules[{index}] has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(_RULE_KEYS)}."
            )
        pattern = rule["pattern"]
        patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ValueError(
                f"get_param_groups: rules[{index}]['pattern']={pattern!r} must be a non-empty "
                "string or a non-empty list of non-empty strings."
            )
        parsed.append((patterns, rule))
    return parsed


def get_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    rules: Sequence[dict[str, Any]] = DEFAULT_PARAM_GROUP_RULES,
    weight_decay_norm: float | None = None,
    weight_decay_embed: float | None = None,
) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``model`` into optimizer parameter groups.

    Each parameter's full name (as in ``model.named_parameters()``, shared parameters once) is
    matched against ``rules`` in order; the first rule with a pattern that is a substring of the
    name sets its LR factor (``lr = base_lr * lr_factor``) and optionally its weight decay.
    Parameters of normalization layers / ``nn.Embedding`` use ``weight_decay_norm`` /
    ``weight_decay_embed`` when those are given (a rule's explicit ``weight_decay`` wins).
    Frozen parameters (``requires_grad=False``) are skipped. Parameters with equal
    ``(lr, weight_decay)`` share one group, in order of first appearance.

    Args:
        model: the model (a DDP wrapper works too; names then start with ``module.``).
        base_lr: learning rate of parameters that match no rule.
        weight_decay: default weight decay.
        rules: list of ``{"pattern": str | list[str], "lr_factor": float = 1.0,
            "weight_decay": float (optional)}``.
        weight_decay_norm: weight decay of normalization-layer parameters (``None``: default).
        weight_decay_embed: weight decay of embedding tables (``None``: default).

    Returns:
        ``[{"params": [...], "param_names": [...], "lr": float, "weight_decay": float,
        "lr_factor": float}, ...]``, ready for any ``torch.optim`` optimizer. ``param_names`` is
        understood by torch's optimizers and kept in their state dict.

    Raises:
        ValueError: on malformed rules or a model without trainable parameters.
    """
    parsed_rules = _validate_rules(rules)
    special_wd: dict[int, float] = {}
    for module in model.modules():
        override = None
        if weight_decay_norm is not None and _is_norm(module):
            override = weight_decay_norm
        elif weight_decay_embed is not None and isinstance(module, nn.Embedding):
            override = weight_decay_embed
        if override is not None:
            for param in module.parameters(recurse=False):
                special_wd[id(param)] = override

    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr_factor, decay = 1.0, special_wd.get(id(param), weight_decay)
        for patterns, rule in parsed_rules:
            if any(pattern in name for pattern in patterns):
                lr_factor = float(rule.get("lr_factor", 1.0))
                decay = float(rule.get("weight_decay", decay))
                break
        key = (lr_factor, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": base_lr * lr_factor,
                "weight_decay": decay,
                "lr_factor": lr_factor,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError(
            f"get_param_groups: {type(model).__name__} has no trainable parameters "
            "(all have requires_grad=False)."
        )
    return list(groups.values())


def largest_param_group(optimizer: torch.optim.Optimizer) -> int:
    """Index of the group whose LR best represents the run (the one with most parameters)."""
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    return sizes.index(max(sizes))
