"""Bounded fuzzing (hypothesis) of the COCO / COCO-panoptic JSON loaders and of image decoding.

Random mutations of a valid file (truncation, byte edits, a node replaced by another JSON value
or removed) must give either a loaded dataset or one of our own errors naming the file, never
another exception or a hang. The example budget is fixed and the search derandomised, so every run checks
the same cases in a few seconds.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mrdetr.data.coco import load_coco_json
from mrdetr.data.detection_utils import BadImageError, read_image
from mrdetr.data.panoptic import load_coco_panoptic_json, read_panoptic_ids

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

COCO = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "height": 32, "width": 40},
        {"id": 2, "file_name": "b.jpg", "height": 24, "width": 24},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "bbox": [1, 2, 10, 12], "category_id": 3, "iscrowd": 0,
         "area": 120, "segmentation": [[1, 2, 11, 2, 11, 14, 1, 14]]},
        {"id": 2, "image_id": 1, "bbox": [5, 5, 4, 4], "category_id": 7, "iscrowd": 1,
         "area": 16, "segmentation": {"size": [32, 40], "counts": [205, 4, 28, 4, 1039]}},
        {"id": 3, "image_id": 2, "bbox": [0, 0, 24, 24], "category_id": 3, "iscrowd": 0,
         "area": 576},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
}  # fmt: skip

PANOPTIC = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 16, "width": 16}],
    "annotations": [
        {"image_id": 1, "file_name": "a.png", "segments_info": [
            {"id": 5, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 8, 8], "area": 64},
            {"id": 9, "category_id": 2, "iscrowd": 0, "bbox": [8, 8, 8, 8], "area": 64},
        ]},
    ],
    "categories": [
        {"id": 1, "name": "thing", "isthing": 1, "color": [220, 20, 60]},
        {"id": 2, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
    ],
}  # fmt: skip

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indices) to a node of a JSON tree, the root excluded."""
    out = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


@st.composite
def structural_mutation(draw, base: dict) -> str:
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(data)  # NaN/Infinity tokens included: Python's json reads them back


@st.composite
def byte_mutation(draw, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[pos:]
        elif op == "overwrite" and data:
            data[pos] = draw(st.integers(0, 255))
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


def _json_mutations(base: dict):
    return st.one_of(
        structural_mutation(base),
        byte_mutation(json.dumps(base).encode()).map(lambda b: b.decode("latin-1")),
    )


def _assert_ours(exc: BaseException, path: Path, kinds: tuple[type[BaseException], ...]) -> None:
    assert isinstance(exc, kinds), f"{type(exc).__name__}: {exc}"
    assert str(path) in str(exc), f"the message does not name the file: {exc}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images").mkdir()
    (root / "panoptic").mkdir()
    return root


def test_valid_files_load(folder) -> None:
    (folder / "coco.json").write_text(json.dumps(COCO))
    assert len(load_coco_json(folder / "coco.json", folder / "images")) == 2
    (folder / "pan.json").write_text(json.dumps(PANOPTIC))
    dicts = load_coco_panoptic_json(folder / "pan.json", folder / "images", folder / "panoptic")
    assert len(dicts[0]["segments_info"]) == 2


def _load_or_our_error(path: Path, text: str, load) -> None:
    """Write ``text`` to ``path`` and load it: a list of dataset dicts or a ValueError naming it."""
    path.write_text(text, encoding="latin-1")
    try:
        dicts = load(path)
    except Exception as exc:  # noqa: BLE001 - the property under test
        _assert_ours(exc, path, (ValueError,))
    else:
        assert isinstance(dicts, list)


@FUZZ
@given(text=_json_mutations(COCO))
def test_coco_json_mutations(folder, text: str) -> None:
    _load_or_our_error(
        folder / "coco_mutated.json", text, lambda p: load_coco_json(p, folder / "images")
    )


@FUZZ
@given(text=_json_mutations(PANOPTIC))
def test_coco_panoptic_json_mutations(folder, text: str) -> None:
    _load_or_our_error(
        folder / "pan_mutated.json",
        text,
        lambda p: load_coco_panoptic_json(p, folder / "images", folder / "panoptic"),
    )


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@FUZZ
@given(data=st.one_of(byte_mutation(_encoded("PNG")), byte_mutation(_encoded("JPEG"))))
def test_image_decoding_mutations(folder, data: bytes) -> None:
    path = folder / "mutated.img"
    path.write_bytes(data)
    for read in (read_image, read_panoptic_ids):
        try:
            array = read(str(path))
        except Exception as exc:  # noqa: BLE001 - the property under test
            _assert_ours(exc, path, (BadImageError,))
        else:
            assert array.ndim in (2, 3)
