"""What the COCO instances and COCO panoptic loaders share: reading the JSON, checking its common
structure (``images``, ``categories``, boxes), and the per-image record."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from .catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "check_images_and_categories",
    "image_record",
    "is_finite_number",
    "is_int_id",
    "is_xywh_box",
    "metadata_path",
    "read_json",
    "register_lazy",
    "validation_error",
]

_REQUIRED_TOP_KEYS = ("images", "annotations", "categories")
_REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
_BOX_LENGTH = 4


def read_json(json_file: str, what: str) -> Any:
    """The parsed content of ``json_file``.

    Args:
        json_file: path of the file.
        what: its kind for the messages, e.g. ``"COCO json"``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not valid JSON (or not UTF-8).
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{what} file '{json_file}' does not exist")
    try:
        with open(json_file, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"'{json_file}' is not a valid JSON file: {e}") from e


def metadata_path(path: str | os.PathLike) -> str | os.PathLike:
    """A plain string, except for paths resolved on use (builtin datasets), which are kept."""
    return path if getattr(path, "resolved_on_use", False) else os.fspath(path)


def validation_error(
    json_file: str, kind: str, error: type[ValueError] = ValueError
) -> Callable[[str], NoReturn]:
    """``fail(what)`` raising ``error("'<json_file>' is not a <kind> file: <what>")``."""

    def fail(what: str) -> NoReturn:
        raise error(f"'{json_file}' is not a {kind} file: {what}")

    return fail


def is_int_id(value: Any) -> bool:
    """Whether ``value`` can be a COCO id (an int; JSON ``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_images_and_categories(
    data: Any, fail: Callable[[str], NoReturn], category_keys: Sequence[str], hint: str = ""
) -> None:
    """Check the structure both formats share: an object with the lists ``images``,
    ``annotations`` and ``categories`` holding objects; images with an int ``id``, a string
    ``file_name`` and positive ``height``/``width``; categories with ``category_keys`` (``hint`` is
    added to that message), an int ``id`` and a string ``name``."""
    if not isinstance(data, dict):
        fail(f"top level is a {type(data).__name__}, expected an object")
    for key in _REQUIRED_TOP_KEYS:
        if not isinstance(data.get(key), list):
            fail(f"missing list '{key}' (found keys: {sorted(data)})")
        for entry in data[key]:
            if not isinstance(entry, dict):
                fail(f"'{key}' holds a {type(entry).__name__} ({entry!r}), expected objects")
    for img in data["images"]:
        missing = [k for k in _REQUIRED_IMAGE_KEYS if k not in img]
        if missing:
            fail(f"image entry {img.get('id', '?')} lacks {missing}")
        if not is_int_id(img["id"]) or not isinstance(img["file_name"], str):
            fail(f"image entry {img['id']!r} needs an int 'id' and a string 'file_name'")
        if not all(is_finite_number(img[k]) and img[k] > 0 for k in ("height", "width")):
            fail(f"image {img['id']} has height/width {img['height']!r}/{img['width']!r}")
    for cat in data["categories"]:
        missing = [k for k in category_keys if k not in cat]
        if missing:
            fail(f"category entry {cat} lacks {missing}{hint}")
        if not is_int_id(cat["id"]) or not isinstance(cat["name"], str):
            fail(f"category entry {cat} needs an int 'id' and a string 'name'")


def is_xywh_box(bbox: Any) -> bool:
    """Whether ``bbox`` is ``[x, y, w, h]``: four finite numbers with ``w, h >= 0``."""
    return (
        isinstance(bbox, list)
        and len(bbox) == _BOX_LENGTH
        and all(is_finite_number(v) for v in bbox)
        and bbox[2] >= 0
        and bbox[3] >= 0
    )


def image_record(img: dict[str, Any], image_root: str) -> dict[str, Any]:
    """``file_name`` (absolute), ``image_id``, ``height`` and ``width`` of a JSON image entry."""
    return {
        "file_name": os.path.abspath(os.path.join(image_root, img["file_name"])),
        "image_id": img["id"],
        "height": int(img["height"]),
        "width": int(img["width"]),
    }


def register_lazy(
    name: str, caller: str, load: Callable[[str], list[dict]], metadata: Mapping[str, Any]
) -> None:
    """Register dataset ``name``, read by ``load(name)`` on first use; set its ``metadata`` now.

    Raises:
        TypeError: ``name`` is not a string (the message starts with ``caller``).
    """
    if not isinstance(name, str):
        raise TypeError(f"{caller}: name must be a str, got {type(name).__name__}")
    DatasetCatalog.register(name, lambda: load(name))
    MetadataCatalog.get(name).set(**metadata)
