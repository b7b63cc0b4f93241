"""A trained checkpoint carries its dataset's class names: the Predictor names its detections with
them where the dataset is not registered; a checkpoint without them falls back to the config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from synthetic_coco import registered_coco_folder
from tiny_model import REPO

from mrdetr.data import DatasetCatalog, MetadataCatalog
from mrdetr.engine import default_argument_parser
from mrdetr.engine.predictor import Predictor
from mrdetr.engine.runner import main

CONFIG = REPO / "tests" / "configs" / "tiny_synthetic_train.py"
SIZES = {"min_size_test": 64, "max_size_test": 96}


def _opts(name: str) -> list[str]:
    """The overrides that make the tiny training config a 3-class model on dataset ``name``."""
    return [
        f"dataloader.train.dataset={name}_train",
        f"dataloader.test.dataset={name}_val",
        "model.num_classes=3",
        "train.device=cpu",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset name, its metadata, model_final.pth) of 2 iterations on a 3-class dataset."""
    out = tmp_path_factory.mktemp("run")
    with registered_coco_folder(tmp_path_factory.mktemp("data") / "shapes3") as name:
        args = default_argument_parser().parse_args(
            [
                "--config-file",
                str(CONFIG),
                *_opts(name),
                f"train.output_dir={out}",
                "train.max_iter=2",
                "train.checkpointer.period=100",
            ]  # fmt: skip
        )
        main(args)
        meta = MetadataCatalog.get(f"{name}_train")
        expected = {
            "classes": list(meta.thing_classes),
            "ids": dict(meta.thing_dataset_id_to_contiguous_id),
        }
        yield name, expected, out / "model_final.pth"


def test_checkpoint_stores_the_training_datasets_metadata(trained):
    name, expected, ckpt = trained
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert data["metadata"]["dataset"] == f"{name}_train"
    assert data["metadata"]["class_names"] == expected["classes"]
    assert data["metadata"]["thing_classes"] == expected["classes"]
    assert data["metadata"]["thing_dataset_id_to_contiguous_id"] == expected["ids"]
    assert len(expected["classes"]) == 3


def test_fresh_process_names_detections_from_the_checkpoint(trained):
    """In a new process, where the training dataset is not registered."""
    name, expected, ckpt = trained
    script = f"""
import json, numpy as np
from mrdetr.data import DatasetCatalog
from mrdetr.engine.predictor import Predictor
assert "{name}_train" not in DatasetCatalog
p = Predictor({str(CONFIG)!r}, weights={str(ckpt)!r}, device="cpu", opts={_opts(name)!r},
              min_size_test=64, max_size_test=96)
image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
dets = p(image, threshold=0.0)
print(json.dumps({{"names": p.class_names, "det_names": dets.class_names,
                   "classes": dets.classes.tolist()}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["names"] == expected["classes"]
    assert len(got["classes"]) > 0
    assert got["det_names"] == [expected["classes"][c] for c in got["classes"]]
    assert "no class names" not in proc.stderr + proc.stdout  # the config was not needed


def test_checkpoint_without_metadata_falls_back_to_the_config(trained, tmp_path):
    name, expected, ckpt = trained
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    plain = tmp_path / "official_like.pth"
    torch.save({"model": data["model"]}, plain)  # what a released checkpoint holds
    other = "ckpt_meta_other_names"
    DatasetCatalog.register(other, lambda: [])
    MetadataCatalog.get(other).set(thing_classes=["x", "y", "z"])
    try:
        # the config's training dataset is registered under another name with other classes
        p = Predictor(CONFIG, weights=plain, device="cpu", opts=_opts("unused") + [
            f"dataloader.train.dataset={other}"], **SIZES)  # fmt: skip
        assert p.class_names == ["x", "y", "z"]
        # with the metadata in the checkpoint, the checkpoint's names win over the config's
        p = Predictor(CONFIG, weights=ckpt, device="cpu", opts=_opts("unused") + [
            f"dataloader.train.dataset={other}"], **SIZES)  # fmt: skip
        assert p.class_names == expected["classes"]
        # an explicit metadata_dataset wins over both
        p = Predictor(CONFIG, weights=ckpt, device="cpu", opts=_opts("unused"),
                      metadata_dataset=other, **SIZES)  # fmt: skip
        assert p.class_names == ["x", "y", "z"]
        image = np.zeros((64, 64, 3), dtype=np.uint8)
        assert set(p(image, threshold=0.0).class_names) <= {"x", "y", "z"}
    finally:
        DatasetCatalog.remove(other)
        MetadataCatalog.remove(other)
