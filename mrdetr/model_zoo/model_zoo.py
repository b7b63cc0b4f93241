"""The official Mr. DETR checkpoints (Hugging Face Hub ``allencbzhang/Mr.DETR``) and their configs.

``get_config(name)`` loads the LazyConfig of a model (with ``train.init_checkpoint`` pointing at its
weights), ``get(name)`` builds it and loads the released weights, ``resolve_checkpoint`` turns an
``hf://owner/repo/file`` address or a plain path into a local file. Nothing is downloaded when
``HF_HUB_OFFLINE=1`` (or ``local_files_only=True``): the file must then already be in the Hugging Face
cache (``<cache>/models--allencbzhang--Mr.DETR/snapshots/<revision>/<file>``) or be given by path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

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

HUB_REPO = "allencbzhang/Mr.DETR"
HF_SCHEME = "hf://"
CONFIG_ROOT_ENV = "MRDETR_CONFIG_ROOT"
PACKAGED_CONFIG_ROOT = "_config_root"  # filled by setup.py when a wheel is built


@dataclass(frozen=True)
class ModelZooEntry:
    """One released model.

    Attributes:
        config: config path relative to the project root.
        filename: file name in the Hub repository (spelled as released).
        note: what the weights are.
    """

    config: str
    filename: str
    note: str


_DEF = "projects/mr_detr_deformable/configs/"
_DINO = "projects/mr_detr_dino/configs/"
_ALIGN = "projects/mr_detr_align/configs/"
_SEG = "projects/mr_detr_deformable_ins_seg/configs/"

_ZOO: dict[str, ModelZooEntry] = {
    "mr_detr_deformable_r50_12ep_300q": ModelZooEntry(
        _DEF + "deformable_detr_r50_two_stage_12ep_plusplus_300q.py",
        "MrDETR_deformable_r50_12ep_300q.pth",
        "Mr. DETR-Deformable, R50, 12 epochs, 300 queries (COCO)",
    ),
    "mr_detr_deformable_r50_12ep_900q": ModelZooEntry(
        _DEF + "deformable_detr_r50_two_stage_12ep_plusplus.py",
        "MrDETR_deformbale_r50_12ep_900q.pth",  # sic: the released file name is misspelt
        "Mr. DETR-Deformable, R50, 12 epochs, 900 queries (COCO)",
    ),
    "mr_detr_deformable_r50_24ep_900q": ModelZooEntry(
        _DEF + "deformable_detr_r50_two_stage_24ep_plusplus.py",
        "MrDETR_deformable_r50_24ep_900q.pth",
        "Mr. DETR-Deformable, R50, 24 epochs, 900 queries (COCO)",
    ),
    "mr_detr_dino_r50_12ep_900q": ModelZooEntry(
        _DINO + "deformable_detr_r50_two_stage_12ep_plusplus.py",
        "MrDETR_dino_r50_12ep_900q.pth",
        "Mr. DETR-DINO, R50, 12 epochs, 900 queries (COCO)",
    ),
    "mr_detr_align_r50_12ep_900q": ModelZooEntry(
        _ALIGN + "deformable_detr_r50_two_stage_12ep_plusplus.py",
        "MrDETR_align_r50_12ep_900q.pth",
        "Mr. DETR-Align, R50, 12 epochs, 900 queries (COCO)",
    ),
    "mr_detr_align_r50_24ep_900q": ModelZooEntry(
        _ALIGN + "deformable_detr_r50_two_stage_24ep_plusplus.py",
        "MrDETR_align_r50_24ep_900q.pth",
        "Mr. DETR-Align, R50, 24 epochs, 900 queries (COCO)",
    ),
    "mr_detr_align_swinl_12ep_900q": ModelZooEntry(
        _ALIGN + "deformable_detr_swinl_two_stage_12ep_plusplus.py",
        "MrDETR_align_swinL_12ep_900q.pth",
        "Mr. DETR-Align, Swin-L (IN-22k), 4 scales, 12 epochs, 900 queries (COCO)",
    ),
    "mr_detr_align_swinl_12ep_900q_objects365": ModelZooEntry(
        _ALIGN + "deformable_detr_swinl_two_stage_12ep_plusplus_5scale_fintuning.py",
        "MrDETR_align_swinl_12ep_900q_objects365_processed.pth",
        "Mr. DETR-Align, Swin-L, Objects365 pre-training processed for COCO fine-tuning (5 scales)",
    ),
    "mr_detr_deformable_insseg_r50_12ep_300q": ModelZooEntry(
        _SEG + "deformable_detr_r50_two_stage_12ep_plusplus.py",
        "MrDETR_deformable_r50_12ep_300q_insseg.pth",
        "Mr. DETR-Deformable-InstanceSeg, R50, 12 epochs, 300 queries (COCO masks)",
    ),
    "mr_detr_deformable_insseg_r50_24ep_300q": ModelZooEntry(
        _SEG + "deformable_detr_r50_two_stage_24ep_plusplus.py",
        "MrDETR_deformable_r50_24ep_300q_insseg.pth",
        "Mr. DETR-Deformable-InstanceSeg, R50, 24 epochs, 300 queries (COCO masks)",
    ),
}


def list_models() -> list[str]:
    """Names of the released models, in release order."""
    return list(_ZOO)


def _entry(name: str) -> ModelZooEntry:
    try:
        return _ZOO[name]
    except KeyError:
        valid = "\n  ".join(_ZOO)
        raise KeyError(f"unknown model zoo name {name!r}; valid names:\n  {valid}") from None


def config_root() -> Path:
    """Root holding ``configs/`` and ``projects/``: ``$MRDETR_CONFIG_ROOT`` if set, else the source
    checkout the package runs from, else the copy shipped inside the installed package."""
    env = os.environ.get(CONFIG_ROOT_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "configs" / "common").is_dir():
        return checkout
    return Path(__file__).resolve().parent / PACKAGED_CONFIG_ROOT


def get_config_file(name: str) -> Path:
    """Absolute path of the config of ``name``.

    Raises:
        KeyError: unknown name (the message lists the valid ones).
        FileNotFoundError: the config file is not there.
    """
    path = config_root() / _entry(name).config
    if not path.is_file():
        raise FileNotFoundError(
            f"config of model zoo entry {name!r} not found: {path}. The configs ship inside the "
            f"wheel and live in a source checkout; set ${CONFIG_ROOT_ENV} to a folder holding "
            "configs/ and projects/ to use others."
        )
    return path


def get_checkpoint_url(name: str) -> str:
    """``hf://allencbzhang/Mr.DETR/<file>`` of the released weights of ``name``."""
    return f"{HF_SCHEME}{HUB_REPO}/{_entry(name).filename}"


def get_config(name: str, trained: bool = True):
    """The LazyConfig of ``name``; with ``trained``, ``train.init_checkpoint`` is its released weights."""
    from mrdetr.config import LazyConfig

    cfg = LazyConfig.load(str(get_config_file(name)))
    if trained and "train" in cfg:
        cfg.train.init_checkpoint = get_checkpoint_url(name)
    return cfg


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_cache() -> Path:
    """The Hugging Face cache as the environment names it now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_checkpoint(
    path_or_url: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    revision: str | None = None,
) -> str:
    """Turn a weights address into a local file: the one place that names weights.

    ``train.init_checkpoint``, ``Checkpointer.load_weights``, ``load_official``, ``Predictor(...,
    weights=...)`` and ``Predictor("<zoo name>")`` all resolve their weights here.

    Args:
        path_or_url: a file path (``~`` expanded), ``hf://<owner>/<repo>/<file>`` (downloaded into
            the Hugging Face cache, or found there) or a model-zoo name (:func:`list_models`: its
            released weights on the Hub). An existing file wins over a zoo name of the same spelling.
        cache_dir: Hugging Face cache directory (default: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``,
            else huggingface_hub's default).
        local_files_only: never use the network (default: True when ``HF_HUB_OFFLINE`` is set).
        revision: Hub revision (default ``main``).

    Raises:
        FileNotFoundError: the file is missing; for Hub files the message says where to put it by hand.
        ValueError: a malformed ``hf://`` address.
    """
    text = os.fspath(path_or_url)
    if text in _ZOO and not os.path.isfile(text):
        text = get_checkpoint_url(text)
    if not text.startswith(HF_SCHEME):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {path} does not exist")
        return str(path)
    parts = text[len(HF_SCHEME) :].split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"expected hf://<owner>/<repo>/<file>, got {text!r}")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import hf_hub_download

    cache = Path(cache_dir) if cache_dir is not None else _hub_cache()
    offline = _offline() if local_files_only is None else local_files_only
    try:
        return hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            revision=revision,
            cache_dir=str(cache),
            local_files_only=offline,
        )
    except Exception as exc:  # noqa: BLE001 - offline, network, missing entry: one actionable message
        folder = cache / f"models--{repo_id.replace('/', '--')}"
        raise FileNotFoundError(
            f"cannot get {filename!r} from the Hugging Face Hub repository {repo_id!r}"
            f"{' (offline mode)' if offline else ''}: {type(exc).__name__}: {exc}\n"
            f"Place it by hand, either in the cache as {folder}/snapshots/<revision>/{filename} "
            f"with {folder}/refs/{revision or 'main'} holding <revision>, or anywhere and pass "
            f"train.init_checkpoint=/path/to/{filename} (or the path to model_zoo.get / "
            "resolve_checkpoint)."
        ) from None


def get(
    name: str,
    pretrained: bool = True,
    device: str = "cpu",
    *,
    cache_dir: str | os.PathLike | None = None,
    trusted: bool = False,
) -> nn.Module:
    """Build model ``name`` in eval mode, with its released weights when ``pretrained``.

    Args:
        name: one of :func:`list_models`.
        pretrained: download (or find in the cache) and load the released weights.
        device: where to put the model.
        cache_dir: Hugging Face cache directory.
        trusted: allow full unpickling of the checkpoint (see ``load_official``).

    Raises:
        KeyError: unknown name. FileNotFoundError: config or weights missing.
        RuntimeError: the weights do not fit the model (missing or unexpected keys).
    """
    from mrdetr.checkpoint.official import load_official
    from mrdetr.config import instantiate

    cfg = get_config(name)
    model = instantiate(cfg.model)
    if pretrained:
        path = resolve_checkpoint(get_checkpoint_url(name), cache_dir=cache_dir)
        keys = load_official(model, path, trusted=trusted)
        if keys.missing_keys or keys.unexpected_keys:
            raise RuntimeError(
                f"weights {path} do not match model {name!r}: missing {keys.missing_keys}, "
                f"unexpected {keys.unexpected_keys}"
            )
    return model.to(device).eval()
