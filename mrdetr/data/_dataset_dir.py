"""What the synthetic dataset generators share: output folder, split layout, writing and the CLI.

A generated dataset is ``DIR/annotations/<json per split>`` plus one or more image folders per
split; it is written to a temporary sibling folder that is renamed into place at the end, so an
interrupted run never leaves a half dataset. Image ``i`` of a split is drawn from its own random
generator ``default_rng([seed, split index, i])``, so the output is a function of the seed only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mrdetr.utils.file_io import atomic_path, temporary_sibling
from mrdetr.utils.progress import track

__all__ = [
    "SPLITS",
    "Generation",
    "dataset_paths",
    "ensure_generated",
    "generate_dataset",
    "generator_parser",
    "is_complete",
    "prepare_output",
    "run_generator_cli",
    "write_atomically",
    "write_coco_json",
    "write_image",
]

SPLITS = ("train", "val")
_ANNOTATIONS_DIR = "annotations"


def prepare_output(output: str | os.PathLike, overwrite: bool) -> str:
    """Absolute path of ``output``; refuses an existing non-empty folder unless ``overwrite``."""
    output = os.path.abspath(os.fspath(output))
    if os.path.exists(output) and os.listdir(output) and not overwrite:
        raise FileExistsError(
            f"'{output}' already exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )
    return output


def write_atomically(output: str, overwrite: bool, write: Callable[[str], None]) -> None:
    """Run ``write(tmp)`` on a temporary sibling folder, then rename it to ``output``.

    An interrupted run never leaves a half dataset at ``output``; with ``overwrite`` an existing
    folder is moved aside just before the rename and deleted only after the new one is in place.
    """
    os.makedirs(os.path.dirname(output), exist_ok=True)
    old = temporary_sibling(output) if overwrite and os.path.exists(output) else None
    with atomic_path(output) as tmp:
        os.mkdir(tmp)
        write(tmp)
        if old is not None:
            os.replace(output, old)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def dataset_paths(root: str, json_name: str, folders: Mapping[str, str]) -> dict[str, str]:
    """``root`` and, per split, ``<split>_json`` and ``<split>_<key>`` for each image folder.

    Args:
        root: dataset folder.
        json_name: file name of a split's JSON in ``annotations/``, with ``{split}``.
        folders: key -> folder name with ``{split}`` (``{"images": "{split}"}``).
    """
    out = {"root": root}
    for split in SPLITS:
        out[f"{split}_json"] = os.path.join(root, _ANNOTATIONS_DIR, json_name.format(split=split))
        for key, pattern in folders.items():
            out[f"{split}_{key}"] = os.path.join(root, pattern.format(split=split))
    return out


def is_complete(paths: Mapping[str, str]) -> bool:
    """Whether every JSON and every image folder of :func:`dataset_paths` exists."""
    return all(
        os.path.isfile(path) if key.endswith("_json") else os.path.isdir(path)
        for key, path in paths.items()
        if key != "root"
    )


def ensure_generated(
    root: str | os.PathLike | None,
    folder: str,
    is_complete: Callable[[str], bool],
    generate: Callable[..., Any],
    **kwargs: Any,
) -> str:
    """Return ``<root>/<folder>``, calling ``generate(path, **kwargs)`` first unless it is complete.

    Args:
        root: datasets root (default: ``get_datasets_root()``, i.e. ``$MRDETR_DATASETS``,
            ``$DETECTRON2_DATASETS`` or ``./datasets``).
        folder: the dataset's folder under ``root``.
        is_complete: whether a folder holds a complete dataset.
        generate: the generator, called as ``generate(path, **kwargs)``.

    A concurrent process that finishes the same folder first is not an error.
    """
    from .builtin import get_datasets_root

    path = os.path.abspath(os.path.join(os.fspath(root or get_datasets_root()), folder))
    if is_complete(path):
        return path
    try:
        generate(path, **kwargs)
    except OSError:
        if not is_complete(path):
            raise
    return path


@dataclass(frozen=True)
class Generation:
    """The arguments every generator takes, and what follows from them.

    Args:
        seed: generation seed (same seed -> identical files).
        image_size: longer image side in pixels.
        num_train: number of training images.
        num_val: number of validation images.
        progress: show progress bars (on a terminal only).
    """

    seed: int
    image_size: int
    num_train: int
    num_val: int
    progress: bool = True

    def __post_init__(self) -> None:
        if self.num_train < 0 or self.num_val < 0:
            raise ValueError(f"num_train/num_val must be >= 0, got {self.num_train}/{self.num_val}")

    def info(self, description: str, version: int, **classes: int) -> dict[str, Any]:
        """The ``info`` entry of the JSONs: ``description``, ``version`` and these arguments
        (``classes``, the class counts, listed after ``image_size``)."""
        generator = {"seed": self.seed, "image_size": self.image_size, **classes}
        generator.update(num_train=self.num_train, num_val=self.num_val)
        return {"description": description, "version": version, "generator": generator}

    def images(self, split: str, desc: str) -> Iterator[tuple[int, np.random.Generator]]:
        """``(i, default_rng([seed, split index, i]))`` per image of ``split``, with a progress bar."""
        split_id = SPLITS.index(split)
        count = (self.num_train, self.num_val)[split_id]
        for i in track(range(count), f"{desc} {split}", enabled=self.progress):
            yield i, np.random.default_rng([self.seed, split_id, i])


def generate_dataset(
    output: str | os.PathLike,
    overwrite: bool,
    paths: Callable[[str], dict[str, str]],
    write_split: Callable[[str, str], None],
) -> dict[str, str]:
    """Write a dataset: ``write_split(tmp, split)`` per split into a temporary folder renamed to
    ``output`` (see :func:`write_atomically`); returns ``paths(output)``."""
    output = prepare_output(output, overwrite)

    def write(tmp: str) -> None:
        for split in SPLITS:
            write_split(tmp, split)

    write_atomically(output, overwrite, write)
    return paths(output)


def write_image(path: str, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Encode an RGB uint8 image [H, W, 3] by ``path``'s extension and write it."""
    ok, buf = cv2.imencode(os.path.splitext(path)[1], image[:, :, ::-1], list(params))
    if not ok:
        raise RuntimeError(f"Could not encode synthetic image {path}")
    buf.tofile(path)


def write_coco_json(
    path: str, info: dict[str, Any], images: list, annotations: list, categories: list
) -> None:
    """Write a COCO-style JSON (``info``, ``licenses``, ``images``, ``annotations``, ``categories``)."""
    data = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def generator_parser(
    prog: str, doc: str, *, num_train: int, num_val: int, image_size: int
) -> argparse.ArgumentParser:
    """The arguments every generator takes; the caller adds its class arguments."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--output", required=True, help="dataset folder to create")
    parser.add_argument("--num-train", type=int, default=num_train)
    parser.add_argument("--num-val", type=int, default=num_val)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=image_size, help="longer image side")
    return parser


def run_generator_cli(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    *,
    label: str,
    is_complete: Callable[[str], bool],
    generate: Callable[..., dict[str, str]],
    extra: Callable[[argparse.Namespace], dict[str, Any]],
) -> dict[str, str]:
    """Parse ``argv``, generate (unless ``--if-missing`` finds a complete dataset), print the paths.

    Args:
        parser: from :func:`generator_parser`, with the generator's own arguments added.
        argv: command line (None: ``sys.argv``).
        label: what is generated, for the "already present" line.
        is_complete: whether a folder holds a complete dataset.
        generate: the generator function.
        extra: the generator's own keyword arguments from the parsed arguments.
    """
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when a complete dataset already exists at --output",
    )
    args = parser.parse_args(argv)
    if args.if_missing and not args.overwrite and is_complete(os.path.abspath(args.output)):
        print(f"{label} already present at {args.output}; nothing to do")
        return {}
    paths = generate(
        args.output,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed,
        image_size=args.image_size,
        overwrite=args.overwrite,
        progress=not args.quiet,
        **extra(args),
    )
    for key, value in paths.items():
        print(f"{key}: {value}")
    return paths
