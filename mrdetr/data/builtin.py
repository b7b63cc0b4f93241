"""Built-in dataset names: COCO 2017 and the synthetic shapes dataset.

The datasets root is ``$MRDETR_DATASETS``, else ``$DETECTRON2_DATASETS``, else ``./datasets``; it is read
when a dataset is loaded (not at import), so setting the variable after ``import mrdetr`` works.
Expected layout::

    <root>/coco/annotations/instances_{train,val}2017.json   (the folder may also be named coco2017/)
    <root>/coco/{train,val}2017/
    <root>/synthetic/annotations/instances_{train,val}.json  (python -m mrdetr.data.synthetic)
    <root>/synthetic/{train,val}/
    <root>/coco/panoptic_{train,val}2017/ and <root>/coco/annotations/panoptic_{train,val}2017.json
    <root>/synthetic_panoptic/{train,val}/, panoptic_{train,val}/, annotations/panoptic_{train,val}.json
                                                             (python -m mrdetr.data.synthetic_panoptic)

Registration does not touch the disk. The metadata ``json_file`` / ``image_root`` of a builtin are
path-like objects resolved on use (``os.fspath``), so an evaluator can be built before the data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json
from .panoptic import PANOPTIC_EVALUATOR_TYPE, load_coco_panoptic_json, panoptic_metadata

__all__ = [
    "COCO_CATEGORIES",
    "COCO_PANOPTIC_CATEGORIES",
    "get_datasets_root",
    "register_all_builtins",
]

_ENV_VARS = ("MRDETR_DATASETS", "DETECTRON2_DATASETS")
_DEFAULT_ROOT = "datasets"
_COCO_DIRS = ("coco", "coco2017")
SYNTHETIC_DIR = "synthetic"
SYNTHETIC_PANOPTIC_DIR = "synthetic_panoptic"

# (dataset id, name) of the 80 COCO thing classes, in id order.
COCO_CATEGORIES: list[tuple[int, str]] = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"),
    (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"),
    (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"),
    (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
]  # fmt: skip

# (dataset id, name) of the 53 COCO panoptic stuff classes, in id order.
COCO_PANOPTIC_STUFF_CATEGORIES: list[tuple[int, str]] = [
    (92, "banner"), (93, "blanket"), (95, "bridge"), (100, "cardboard"), (107, "counter"),
    (109, "curtain"), (112, "door-stuff"), (118, "floor-wood"), (119, "flower"), (122, "fruit"),
    (125, "gravel"), (128, "house"), (130, "light"), (133, "mirror-stuff"), (138, "net"),
    (141, "pillow"), (144, "platform"), (145, "playingfield"), (147, "railroad"), (148, "river"),
    (149, "road"), (151, "roof"), (154, "sand"), (155, "sea"), (156, "shelf"), (159, "snow"),
    (161, "stairs"), (166, "tent"), (168, "towel"), (171, "wall-brick"), (175, "wall-stone"),
    (176, "wall-tile"), (177, "wall-wood"), (178, "water-other"), (180, "window-blind"),
    (181, "window-other"), (184, "tree-merged"), (185, "fence-merged"), (186, "ceiling-merged"),
    (187, "sky-other-merged"), (188, "cabinet-merged"), (189, "table-merged"),
    (190, "floor-other-merged"), (191, "pavement-merged"), (192, "mountain-merged"),
    (193, "grass-merged"), (194, "dirt-merged"), (195, "paper-merged"),
    (196, "food-other-merged"), (197, "building-other-merged"), (198, "rock-merged"),
    (199, "wall-other-merged"), (200, "rug-merged"),
]  # fmt: skip

# The 133 COCO panoptic categories (80 things, 53 stuff) as in the panoptic JSON's "categories".
COCO_PANOPTIC_CATEGORIES: list[dict[str, Any]] = [
    {"id": cid, "name": name, "isthing": 1} for cid, name in COCO_CATEGORIES
] + [{"id": cid, "name": name, "isthing": 0} for cid, name in COCO_PANOPTIC_STUFF_CATEGORIES]

# name -> (image folder, json file), relative to the dataset folder.
_COCO_SPLITS = {
    "coco_2017_train": ("train2017", "annotations/instances_train2017.json"),
    "coco_2017_val": ("val2017", "annotations/instances_val2017.json"),
}
_SYNTHETIC_SPLITS = {
    "synthetic_train": ("train", "annotations/instances_train.json"),
    "synthetic_val": ("val", "annotations/instances_val.json"),
}

# name -> (image folder, panoptic PNG folder, panoptic json), relative to the dataset folder.
_COCO_PANOPTIC_SPLITS = {
    "coco_2017_train_panoptic": (
        "train2017",
        "panoptic_train2017",
        "annotations/panoptic_train2017.json",
    ),
    "coco_2017_val_panoptic": ("val2017", "panoptic_val2017", "annotations/panoptic_val2017.json"),
}
_SYNTHETIC_PANOPTIC_SPLITS = {
    "synthetic_panoptic_train": ("train", "panoptic_train", "annotations/panoptic_train.json"),
    "synthetic_panoptic_val": ("val", "panoptic_val", "annotations/panoptic_val.json"),
}


def get_datasets_root() -> str:
    """The datasets root: ``$MRDETR_DATASETS``, else ``$DETECTRON2_DATASETS``, else ``./datasets``."""
    for var in _ENV_VARS:
        value = os.environ.get(var)
        if value:
            return os.path.expanduser(value)
    return _DEFAULT_ROOT


def _coco_dir() -> str:
    root = get_datasets_root()
    for name in _COCO_DIRS:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return os.path.join(root, _COCO_DIRS[0])


def _synthetic_dir() -> str:
    return os.path.join(get_datasets_root(), SYNTHETIC_DIR)


def _synthetic_panoptic_dir() -> str:
    return os.path.join(get_datasets_root(), SYNTHETIC_PANOPTIC_DIR)


class BuiltinPath(os.PathLike):
    """A path resolved on each use (``os.fspath``) from the current datasets root.

    Compares equal to a string or path-like that resolves to the same path. ``load_coco_json``
    keeps such paths (``resolved_on_use``) in the metadata instead of a fixed string.
    """

    resolved_on_use = True

    def __init__(self, base: Callable[[], str], relative: str):
        self._base = base
        self._relative = relative

    def __fspath__(self) -> str:
        return os.path.join(self._base(), self._relative)

    def __str__(self) -> str:
        return self.__fspath__()

    def __repr__(self) -> str:
        return f"BuiltinPath('{self.__fspath__()}')"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, os.PathLike)):
            return os.path.normpath(os.fspath(self)) == os.path.normpath(os.fspath(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(os.path.normpath(os.fspath(self)))


def _how_to_fix(folder: str) -> str:
    return (
        f"Set DETECTRON2_DATASETS (or MRDETR_DATASETS) to the folder that holds '{folder}/' "
        f"(now '{get_datasets_root()}'), or generate the synthetic data with "
        f"`python -m mrdetr.data.synthetic --output {os.path.join(get_datasets_root(), SYNTHETIC_DIR)}`, "
        "or register your own data with mrdetr.data.register_coco_instances(name, {}, json_file, image_root)."
    )


def _make_loader(
    name: str, static: dict[str, Any], folder: str
) -> Callable[[], list[dict[str, Any]]]:
    def load() -> list[dict[str, Any]]:
        for path in (static["json_file"], static["image_root"]):
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"Dataset '{name}': '{os.fspath(path)}' does not exist. {_how_to_fix(folder)}"
                )
        if "thing_classes" not in static:
            # Classes come from whichever JSON the root points to now: start from fresh metadata.
            MetadataCatalog.remove(name)
            MetadataCatalog.get(name).set(**static)
        return load_coco_json(static["json_file"], static["image_root"], name)

    return load


def _register(
    splits: dict[str, tuple[str, str]], base: Callable[[], str], folder: str, **metadata: Any
) -> None:
    for name, (image_dir, json_rel) in splits.items():
        if name in DatasetCatalog:
            continue
        static = {
            "json_file": BuiltinPath(base, json_rel),
            "image_root": BuiltinPath(base, image_dir),
            "evaluator_type": "coco",
            **metadata,
        }
        DatasetCatalog.register(name, _make_loader(name, static, folder))
        MetadataCatalog.get(name).set(**static)


def _how_to_fix_panoptic(folder: str) -> str:
    synthetic = os.path.join(get_datasets_root(), SYNTHETIC_PANOPTIC_DIR)
    return (
        f"Set DETECTRON2_DATASETS (or MRDETR_DATASETS) to the folder that holds '{folder}/' "
        f"(now '{get_datasets_root()}'), or generate the synthetic panoptic data with "
        f"`python -m mrdetr.data.synthetic_panoptic --output {synthetic}`, or register your own "
        "data with mrdetr.data.register_coco_panoptic(name, {}, image_root, panoptic_root, panoptic_json)."
    )


def _make_panoptic_loader(
    name: str, static: dict[str, Any], folder: str
) -> Callable[[], list[dict[str, Any]]]:
    def load() -> list[dict[str, Any]]:
        for key in ("panoptic_json", "image_root", "panoptic_root"):
            if not os.path.exists(static[key]):
                raise FileNotFoundError(
                    f"Dataset '{name}': '{os.fspath(static[key])}' does not exist. "
                    f"{_how_to_fix_panoptic(folder)}"
                )
        if "stuff_classes" not in static:
            # Classes come from whichever JSON the root points to now: start from fresh metadata.
            MetadataCatalog.remove(name)
            MetadataCatalog.get(name).set(**static)
        return load_coco_panoptic_json(
            static["panoptic_json"], static["image_root"], static["panoptic_root"], name
        )

    return load


def _register_panoptic(
    splits: dict[str, tuple[str, str, str]],
    base: Callable[[], str],
    folder: str,
    **metadata: Any,
) -> None:
    for name, (image_dir, png_dir, json_rel) in splits.items():
        if name in DatasetCatalog:
            continue
        static = {
            "panoptic_json": BuiltinPath(base, json_rel),
            "panoptic_root": BuiltinPath(base, png_dir),
            "image_root": BuiltinPath(base, image_dir),
            "evaluator_type": PANOPTIC_EVALUATOR_TYPE,
            **metadata,
        }
        DatasetCatalog.register(name, _make_panoptic_loader(name, static, folder))
        MetadataCatalog.get(name).set(**static)


def register_all_builtins() -> None:
    """Register ``coco_2017_{train,val}``, ``synthetic_{train,val}``, their ``*_panoptic``
    counterparts ``coco_2017_{train,val}_panoptic`` and ``synthetic_panoptic_{train,val}``
    (idempotent, no disk access)."""
    coco_meta = {
        "thing_classes": [name for _, name in COCO_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {cid: i for i, (cid, _) in enumerate(COCO_CATEGORIES)},
    }
    _register(_COCO_SPLITS, _coco_dir, _COCO_DIRS[0], **coco_meta)
    _register(_SYNTHETIC_SPLITS, _synthetic_dir, SYNTHETIC_DIR)
    _register_panoptic(
        _COCO_PANOPTIC_SPLITS,
        _coco_dir,
        _COCO_DIRS[0],
        **panoptic_metadata(COCO_PANOPTIC_CATEGORIES),
    )
    _register_panoptic(_SYNTHETIC_PANOPTIC_SPLITS, _synthetic_panoptic_dir, SYNTHETIC_PANOPTIC_DIR)
