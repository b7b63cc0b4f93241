"""Early checks of the model config against the data: a wrong class count, a mask model without
masks and all-degenerate boxes fail before iteration 0 with a message naming the key to change."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from synthetic_coco import registered_coco_folder
from tiny_model import REPO

from mrdetr.data import MetadataCatalog, register_coco_instances
from mrdetr.data.validation import check_data_against_model, summarize_dataset
from mrdetr.engine import default_argument_parser
from mrdetr.engine.runner import main

QUICKSTART = REPO / "projects/mr_detr_deformable/configs/quickstart_synthetic.py"


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """A 3-class COCO-format dataset on disk, registered as ``<name>_train`` / ``<name>_val``."""
    with registered_coco_folder(tmp_path_factory.mktemp("data") / "shapes3") as name:
        yield name


def _run(name: str, output, *opts: str):
    args = default_argument_parser().parse_args(
        [
            "--config-file",
            str(QUICKSTART),
            f"dataloader.train.dataset={name}_train",
            f"dataloader.test.dataset={name}_val",
            f"train.output_dir={output}",
            "dataloader.train.num_workers=0",
            "dataloader.train.total_batch_size=2",
            "train.eval_at_start=False",
            *opts,
        ]
    )
    return main(args)


@pytest.mark.parametrize("num_classes", [6, 2])
def test_wrong_class_count_fails_before_iteration_0(three_classes, tmp_path, num_classes):
    out = tmp_path / "run"
    with pytest.raises(ValueError) as err:
        _run(three_classes, out, f"model.num_classes={num_classes}")
    message = str(err.value)
    assert f"model.num_classes={num_classes}" in message
    assert f"'{three_classes}_train'" in message and "dataloader.train.dataset" in message
    assert "has 3 classes" in message and "set model.num_classes=3" in message
    assert not (out / "metrics.json").exists()  # nothing was trained
    assert not list(out.glob("model_*.pth"))


def test_registering_the_same_files_twice_is_a_no_op(three_classes):
    meta = MetadataCatalog.get(f"{three_classes}_train")
    register_coco_instances(f"{three_classes}_train", {}, meta.json_file, meta.image_root)
    with pytest.raises(KeyError, match="already registered"):
        register_coco_instances(f"{three_classes}_train", {}, meta.json_file, "elsewhere")


def _dicts(boxes, segmentation: bool = False):
    annotations = [
        {"bbox": box, "bbox_mode": "XYWH_ABS", "category_id": i % 2, "iscrowd": 0}
        | ({"segmentation": [[0, 0, 4, 0, 4, 4]]} if segmentation else {})
        for i, box in enumerate(boxes)
    ]
    return [{"file_name": "a.jpg", "height": 20, "width": 20, "annotations": annotations}]


def _cfg(**model):
    return OmegaConf.create(
        {"model": dict(num_classes=2, **model), "dataloader": {"train": {"dataset": []}}}
    )


def test_degenerate_boxes_are_counted_and_an_all_degenerate_dataset_fails(caplog):
    summary = summarize_dataset(_dicts([[1, 1, 5, 5], [2, 2, 0, 3], [3, 3, 4, 0]]))
    assert (summary.num_boxes, summary.num_degenerate, summary.max_category_id) == (3, 2, 1)
    with caplog.at_level("WARNING"):
        check_data_against_model(_cfg(), _dicts([[1, 1, 5, 5], [2, 2, 0, 3]]))
    assert "1 of 2 boxes have zero width or height" in caplog.text
    with pytest.raises(ValueError, match="every one of the 2 boxes .* zero width or height"):
        check_data_against_model(_cfg(), _dicts([[1, 1, 0, 5], [2, 2, 3, 0]]))


def test_labels_beyond_num_classes_fail_naming_the_key():
    cfg = _cfg()
    cfg.model.num_classes = 1
    with pytest.raises(
        ValueError, match="model.num_classes=1 .* class id 1: set model.num_classes"
    ):
        check_data_against_model(cfg, _dicts([[1, 1, 5, 5], [2, 2, 3, 3]]))


def test_mask_model_needs_mask_on_and_masks():
    cfg = _cfg(mask_head={"_target_": "x"})
    with pytest.raises(ValueError, match="dataloader.train.mapper.mask_on is False"):
        check_data_against_model(cfg, _dicts([[1, 1, 5, 5]], segmentation=True))
    cfg.dataloader.train.mapper = {"mask_on": True}
    with pytest.raises(ValueError, match="model.mask_head is set.*no annotation .* 'segmentation'"):
        check_data_against_model(cfg, _dicts([[1, 1, 5, 5]]))
    assert check_data_against_model(cfg, _dicts([[1, 1, 5, 5]], segmentation=True)).num_boxes == 1
