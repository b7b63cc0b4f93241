"""Model zoo: the released Mr. DETR models by name (configs + Hugging Face Hub weights)."""

from .model_zoo import (
    HUB_REPO,
    ModelZooEntry,
    config_root,
    get,
    get_checkpoint_url,
    get_config,
    get_config_file,
    list_models,
    resolve_checkpoint,
)

__all__ = [
    "HUB_REPO",
    "ModelZooEntry",
    "config_root",
    "get",
    "get_checkpoint_url",
    "get_config",
    "get_config_file",
    "list_models",
    "resolve_checkpoint",
]
