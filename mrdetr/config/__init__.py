"""LazyConfig-style Python configs on omegaconf: ``LazyCall``, ``instantiate``, load/save, overrides.

Example:
    >>> from mrdetr.config import LazyConfig, instantiate
    >>> cfg = LazyConfig.load("projects/mr_detr_deformable/configs/<config>.py")
    >>> cfg = LazyConfig.apply_overrides(cfg, ["model.num_queries=900"])
    >>> model = instantiate(cfg.model)
"""

from __future__ import annotations

from .access import get_dotted, has_dotted, set_dotted
from .instantiate import InstantiationError, instantiate
from .lazy import LazyCall, locate, target_to_str
from .lazy_config import LazyConfig
from .loader import ConfigLoadError
from .overrides import ConfigKeyError, ConfigValueError, parse_override_value

__all__ = [
    "ConfigKeyError",
    "ConfigLoadError",
    "ConfigValueError",
    "InstantiationError",
    "LazyCall",
    "LazyConfig",
    "get_dotted",
    "has_dotted",
    "instantiate",
    "locate",
    "parse_override_value",
    "set_dotted",
    "target_to_str",
]
