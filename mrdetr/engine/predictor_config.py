"""What the :class:`~mrdetr.engine.predictor.Predictor` and the demo read from a config.

Test-time resize (``dataloader.test.mapper.augmentation.min_size`` / ``max_size``), the channel order
the model was trained on (``dataloader.test.mapper.img_format``), the class names of the training
dataset (``dataloader.train.dataset``, else ``dataloader.test.dataset``) and the default score
threshold shared by the Predictor and ``mrdetr-demo``; and the dataset metadata a training
checkpoint carries (class names, dataset-id mapping), so that a model names its classes where its
dataset is not registered.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from ..checkpoint.checkpointer import METADATA_KEY
from ..config.access import get_dotted
from ..data.transforms import build_detr_test_transform

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "class_names_from_checkpoint",
    "class_names_from_config",
    "dataset_metadata",
    "model_image_format",
    "test_resize_from_config",
]

logger = logging.getLogger(__name__)

DEFAULT_SCORE_THRESHOLD = 0.3  # detections with a score above this are kept (Predictor and demo)
_DEFAULT_IMAGE_FORMAT = "RGB"  # the mappers' default channel order
# MetadataCatalog fields copied into checkpoints (those the dataset has)
_CHECKPOINT_FIELDS = (
    "thing_classes",
    "thing_dataset_id_to_contiguous_id",
    "stuff_classes",
    "stuff_dataset_id_to_contiguous_id",
)


def test_resize_from_config(cfg: Any) -> tuple[int, int]:
    """(shorter side, longer-side cap) of the test-time resize the config evaluates at.

    Reads ``dataloader.test.mapper.augmentation.{min_size,max_size}`` (the arguments of
    ``build_detr_test_transform``); missing values take that function's defaults.
    """
    defaults = inspect.signature(build_detr_test_transform).parameters
    aug = "dataloader.test.mapper.augmentation."
    return (
        int(get_dotted(cfg, aug + "min_size", defaults["min_size"].default)),
        int(get_dotted(cfg, aug + "max_size", defaults["max_size"].default)),
    )


def model_image_format(cfg: Any) -> str:
    """Channel order the model was trained and evaluated on (``dataloader.test.mapper.img_format``)."""
    return str(get_dotted(cfg, "dataloader.test.mapper.img_format", _DEFAULT_IMAGE_FORMAT))


def _dataset_names(cfg: Any) -> list[str]:
    names = []
    for role in ("train", "test"):
        value = get_dotted(cfg, f"dataloader.{role}.dataset")
        if isinstance(value, str):
            names.append(value)
        elif value is not None:  # a list of names (or of dataset dicts: no names)
            names.extend(v for v in value if isinstance(v, str))
    return names


def class_names_from_config(cfg: Any, metadata_dataset: str | None = None) -> list[str] | None:
    """Class names of the model: those of ``metadata_dataset`` when given, else of the config's
    training dataset, else of its test dataset.

    Metadata already known is used first; otherwise the dataset is loaded (COCO-format datasets set
    their names when loaded). A dataset whose files are missing gives a warning and no names.
    """
    from ..data import DatasetCatalog
    from ..data.validation import dataset_class_names

    names = [metadata_dataset] if metadata_dataset is not None else _dataset_names(cfg)
    for load in (False, True):
        for name in names:
            if load and name not in DatasetCatalog:
                continue
            try:
                found = dataset_class_names(name, load=load)
            except (FileNotFoundError, ValueError) as exc:
                logger.warning("no class names from '%s': %s", name, exc)
                continue
            if found is not None:
                return found
    return None


def _plain(value: Any) -> Any:
    """Lists and dicts of str/int (what ``torch.load(weights_only=True)`` reads back)."""
    if isinstance(value, Mapping):
        return {int(k): int(v) for k, v in value.items()}
    return [str(v) for v in value]


def dataset_metadata(cfg: Any) -> dict[str, Any] | None:
    """What a training checkpoint stores of the config's training dataset (else its test dataset).

    Returns:
        ``{"dataset": name, "class_names": [...], <field>: ...}`` with ``class_names`` as
        :func:`mrdetr.data.validation.dataset_class_names` gives them and the fields
        ``thing_classes``, ``thing_dataset_id_to_contiguous_id``, ``stuff_classes`` and
        ``stuff_dataset_id_to_contiguous_id`` the dataset's metadata has; None when no dataset of
        the config has class names (e.g. datasets given as lists of dicts). Datasets are not
        loaded here: call it once the training data is built.
    """
    from ..data import MetadataCatalog
    from ..data.validation import dataset_class_names

    for name in _dataset_names(cfg):
        names = dataset_class_names(name, load=False)
        if names is None:
            continue
        metadata = MetadataCatalog.get(name)
        found = {f: _plain(metadata.get(f)) for f in _CHECKPOINT_FIELDS if metadata.get(f)}
        return {"dataset": name, "class_names": list(names), **found}
    return None


def class_names_from_checkpoint(checkpoint: Any) -> list[str] | None:
    """The class names a checkpoint read with ``torch.load`` carries (None: official or older)."""
    metadata = checkpoint.get(METADATA_KEY) if isinstance(checkpoint, Mapping) else None
    names = metadata.get("class_names") if isinstance(metadata, Mapping) else None
    return [str(n) for n in names] if names is not None else None
