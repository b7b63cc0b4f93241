"""mrdetr.data: COCO loading, builtins, transforms, mapper, samplers and loaders (tiny and fast)."""

from __future__ import annotations

import copy
import json
import logging
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from mrdetr.data import (
    BadImageError,
    DatasetCatalog,
    DetrDatasetMapper,
    InferenceSampler,
    MetadataCatalog,
    TrainingSampler,
    build_detection_test_loader,
    build_detection_train_loader,
    build_detr_test_transform,
    build_detr_train_transform,
    generate_synthetic_dataset,
    get_detection_dataset_dicts,
    load_coco_json,
    read_image,
    register_coco_instances,
)
from mrdetr.data.build import seeded_rng
from mrdetr.data.transforms import shortest_edge_size
from mrdetr.structures import Boxes, Instances

# Small version of the official augmentation, so that tests run on tiny images.
SMALL_TRAIN = {
    "min_sizes": (48, 56, 64),
    "max_size": 96,
    "crop_pre_sizes": (40, 50, 60),
    "crop_min_size": 24,
    "crop_max_size": 40,
}


def _write_coco(path, images, annotations, categories):
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 train / 4 val synthetic images of at most 64 px, registered as tiny_{train,val}."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    paths = generate_synthetic_dataset(root, 8, 4, seed=1, image_size=64, progress=False)
    for split in ("train", "val"):
        name = f"tiny_{split}"
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {}, paths[f"{split}_json"], paths[f"{split}_images"])
    yield paths
    for split in ("train", "val"):
        DatasetCatalog.remove(f"tiny_{split}")
        MetadataCatalog.remove(f"tiny_{split}")


# ----------------------------------------------------------------------------- COCO loading


def test_load_coco_json_remaps_ids_and_keeps_empty_images(tmp_path):
    images = [
        {"id": 5, "file_name": "a.jpg", "height": 10, "width": 20},
        {"id": 2, "file_name": "sub/b.jpg", "height": 30, "width": 40},
    ]
    categories = [{"id": 10, "name": "ten"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]
    annotations = [
        {"id": 1, "image_id": 5, "bbox": [1, 2, 3, 4], "category_id": 7, "iscrowd": 0,
         "segmentation": [[1, 2, 4, 2, 4, 6]]},
        {"id": 2, "image_id": 5, "bbox": [0, 0, 5, 5], "category_id": 10, "iscrowd": 1,
         "segmentation": {"size": [10, 20], "counts": [0, 200]}},
    ]  # fmt: skip
    json_file = _write_coco(tmp_path / "x.json", images, annotations, categories)
    dicts = load_coco_json(json_file, tmp_path / "imgs", dataset_name="t_remap")
    try:
        assert [d["image_id"] for d in dicts] == [2, 5]
        empty, full = dicts
        assert empty["annotations"] == []  # kept here, filtered later
        assert empty["file_name"] == os.path.abspath(tmp_path / "imgs" / "sub" / "b.jpg")
        assert (full["height"], full["width"]) == (10, 20)
        a0, a1 = full["annotations"]
        assert a0["category_id"] == 1 and a1["category_id"] == 2  # 3 -> 0, 7 -> 1, 10 -> 2
        assert a0["bbox"] == [1.0, 2.0, 3.0, 4.0] and a0["bbox_mode"] == "XYWH_ABS"
        assert a0["iscrowd"] == 0 and a1["iscrowd"] == 1
        assert a0["segmentation"] == [[1, 2, 4, 2, 4, 6]] and "counts" in a1["segmentation"]
        meta = MetadataCatalog.get("t_remap")
        assert meta.thing_classes == ["three", "seven", "ten"]
        assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 10: 2}
        assert meta.json_file == os.fspath(json_file) and meta.evaluator_type == "coco"
    finally:
        MetadataCatalog.remove("t_remap")


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"images": [], "categories": []}, "missing list 'annotations'"),
        ([1, 2], "top level is a list"),
        (
            {
                "images": [{"id": 1, "file_name": "a", "height": 4, "width": 4}],
                "categories": [{"id": 1, "name": "c"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, -2, 3]}],
            },
            "bad bbox",
        ),
        (
            {
                "images": [{"id": 1, "file_name": "a", "height": 4, "width": 4}],
                "categories": [{"id": 1, "name": "c"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [0, 0, 2, 3]}],
            },
            "unknown category_id 9",
        ),
    ],
)
def test_not_coco_json_raises_one_clear_error(tmp_path, content, expected):
    json_file = tmp_path / "bad.json"
    json_file.write_text(json.dumps(content))
    with pytest.raises(ValueError) as info:
        load_coco_json(json_file, tmp_path)
    assert str(json_file) in str(info.value) and expected in str(info.value)


def test_invalid_json_and_missing_file(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid JSON"):
        load_coco_json(tmp_path / "x.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_json(tmp_path / "nope.json", tmp_path)


def test_register_coco_instances_is_lazy(tmp_path):
    register_coco_instances("t_lazy", {"extra": 1}, tmp_path / "later.json", tmp_path)
    try:
        meta = MetadataCatalog.get("t_lazy")
        assert meta.extra == 1 and meta.json_file == str(tmp_path / "later.json")
        with pytest.raises(FileNotFoundError, match="later.json"):
            DatasetCatalog.get("t_lazy")
    finally:
        DatasetCatalog.remove("t_lazy")
        MetadataCatalog.remove("t_lazy")


# ----------------------------------------------------------------------------- builtins


def test_builtins_registered_on_import():
    names = DatasetCatalog.list()
    for name in ("coco_2017_train", "coco_2017_val", "synthetic_train", "synthetic_val"):
        assert name in names and MetadataCatalog.get(name).evaluator_type == "coco"


def test_missing_builtin_dataset_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path / "root"))
    for name in ("coco_2017_val", "synthetic_train"):
        with pytest.raises(FileNotFoundError) as info:
            DatasetCatalog.get(name)
        msg = str(info.value)
        assert "\n" not in msg and str(tmp_path / "root") in msg
        for hint in (
            "DETECTRON2_DATASETS",
            "python -m mrdetr.data.synthetic",
            "register_coco_instances",
        ):
            assert hint in msg


def test_builtin_paths_follow_env_and_coco2017_folder(tmp_path, monkeypatch):
    meta = MetadataCatalog.get("coco_2017_val")
    assert len(meta.thing_classes) == 80 and meta.thing_dataset_id_to_contiguous_id[90] == 79
    monkeypatch.delenv("MRDETR_DATASETS", raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    expected = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    assert os.fspath(meta.json_file) == str(expected)
    (tmp_path / "coco2017").mkdir()
    assert os.fspath(meta.json_file) == str(
        tmp_path / "coco2017/annotations/instances_val2017.json"
    )
    assert os.fspath(meta.image_root) == str(tmp_path / "coco2017" / "val2017")


def test_builtin_synthetic_loads_from_the_current_root(tmp_path, monkeypatch):
    for i, num_classes in enumerate((3, 2)):  # two roots, different classes: no metadata clash
        root = tmp_path / str(i)
        generate_synthetic_dataset(
            root / "synthetic", 3, 2, image_size=32, num_classes=num_classes, progress=False
        )
        monkeypatch.setenv("MRDETR_DATASETS", str(root))
        dicts = DatasetCatalog.get("synthetic_val")
        assert len(dicts) == 2 and all(os.path.isfile(d["file_name"]) for d in dicts)
        meta = MetadataCatalog.get("synthetic_val")
        assert len(meta.thing_classes) == num_classes and meta.thing_classes[0] == "red_rectangle"
        assert os.fspath(meta.json_file) == str(root / "synthetic/annotations/instances_val.json")
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere") in os.fspath(MetadataCatalog.get("synthetic_val").json_file)


# ----------------------------------------------------------------------------- transforms


def _red_rectangle_sample(h=60, w=80, box=(20, 15, 50, 45)):
    image = torch.full((3, h, w), 90, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = torch.tensor([230, 20, 20], dtype=torch.uint8)[:, None, None]
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[0, y1:y2, x1:x2] = True
    return {
        "image": tv_tensors.Image(image),
        "boxes": tv_tensors.BoundingBoxes(torch.tensor([box], dtype=torch.float32), format="XYXY", canvas_size=(h, w)),
        "labels": torch.tensor([4]),
        "masks": tv_tensors.Mask(mask),
    }  # fmt: skip


def _red_pixels(image):
    r, g, b = image.int()
    return (r > g + 100) & (r > b + 100)


def test_train_transform_keeps_boxes_on_their_objects():
    transform = build_detr_train_transform(**SMALL_TRAIN)
    sizes, kept = set(), 0
    for seed in range(40):
        with seeded_rng(seed):
            out = transform(_red_rectangle_sample())
        image, boxes = out["image"], out["boxes"]
        h, w = image.shape[1:]
        sizes.add((h, w))
        assert min(h, w) in SMALL_TRAIN["min_sizes"] or max(h, w) == SMALL_TRAIN["max_size"]
        assert len(boxes) == len(out["labels"]) == len(out["masks"])
        red = _red_pixels(image)
        if len(boxes) == 0:  # object cropped away
            assert red.sum() <= 2
            continue
        kept += 1
        x1, y1, x2, y2 = boxes[0].tolist()
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and out["labels"].tolist() == [4]
        ys, xs = torch.nonzero(red, as_tuple=True)
        tol = 1.0  # interpolation blurs one pixel at most
        assert xs.min() >= x1 - tol and xs.max() + 1 <= x2 + tol
        assert ys.min() >= y1 - tol and ys.max() + 1 <= y2 + tol
        inside = red[int(y1 + 1) : int(y2 - 1), int(x1 + 1) : int(x2 - 1)]
        assert inside.float().mean() > 0.9
        mask = out["masks"][0]
        assert (mask & red).sum() / (mask | red).sum() > 0.7
    assert kept >= 30 and len(sizes) >= 5  # both branches and several scales were exercised


def test_flip_moves_box_with_object():
    transform = build_detr_train_transform(**{**SMALL_TRAIN, "crop_prob": 0.0, "min_sizes": (60,)})
    flipped = 0
    for seed in range(10):
        with seeded_rng(seed):
            out = transform(_red_rectangle_sample())
        x1, _, x2, _ = out["boxes"][0].tolist()
        # original object spans x in [20, 50) of 80: centred left; flipped: centred right
        centre = (x1 + x2) / 2 / out["image"].shape[2]
        flipped += centre > 0.5
        xs = torch.nonzero(_red_pixels(out["image"]), as_tuple=True)[1].float()
        assert abs(xs.mean() + 0.5 - (x1 + x2) / 2) < 1.0
    assert 0 < flipped < 10


def test_boxes_are_clipped_and_empty_boxes_removed():
    sample = _red_rectangle_sample()
    sample["boxes"] = tv_tensors.BoundingBoxes(
        torch.tensor([[-10.0, -5.0, 30.0, 20.0], [70.0, 10.0, 95.0, 30.0], [90.0, 0.0, 99.0, 10.0]]),
        format="XYXY", canvas_size=(60, 80),
    )  # fmt: skip
    sample["labels"] = torch.tensor([1, 2, 3])
    sample["masks"] = tv_tensors.Mask(torch.zeros(3, 60, 80, dtype=torch.bool))
    out = build_detr_test_transform(min_size=60, max_size=100)(sample)
    assert out["labels"].tolist() == [1, 2]  # the box outside the image is gone, with its mask
    assert out["masks"].shape[0] == 2
    assert torch.equal(
        out["boxes"], torch.tensor([[0.0, 0.0, 30.0, 20.0], [70.0, 10.0, 80.0, 30.0]])
    )


def test_shortest_edge_size_and_test_transform():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)
    assert shortest_edge_size(300, 200, 600, None) == (900, 600)
    out = build_detr_test_transform(min_size=40, max_size=100)(_red_rectangle_sample())
    assert tuple(out["image"].shape[1:]) == (40, 53)
    assert torch.allclose(
        out["boxes"], torch.tensor([[20.0, 15.0, 50.0, 45.0]]) * (40 / 60), atol=0.5
    )


def test_seeded_augmentation_is_reproducible_and_restores_rng():
    transform = build_detr_train_transform(**SMALL_TRAIN)
    torch.manual_seed(123)
    np.random.seed(4)
    random.seed(5)
    before = (torch.rand(1), np.random.rand(), random.random())
    torch.manual_seed(123)
    np.random.seed(4)
    random.seed(5)
    outs = []
    for _ in range(2):
        with seeded_rng(7):
            outs.append(transform(_red_rectangle_sample()))
    assert torch.equal(outs[0]["image"], outs[1]["image"])
    assert torch.equal(outs[0]["boxes"], outs[1]["boxes"])
    assert (torch.rand(1), np.random.rand(), random.random()) == before  # caller RNG untouched


# ----------------------------------------------------------------------------- mapper


def test_mapper_output_format(tiny):
    dicts = get_detection_dataset_dicts("tiny_train")
    d = copy.deepcopy(dicts[0])
    d["annotations"].append({**d["annotations"][0], "iscrowd": 1})
    n = len(d["annotations"]) - 1
    mapper = DetrDatasetMapper(
        is_train=True,
        augmentation=build_detr_test_transform(min_size=48, max_size=96),
        mask_on=True,
    )
    out = mapper(d)
    assert d["annotations"][-1]["iscrowd"] == 1  # input not modified
    img = out["image"]
    assert (
        img.dtype == torch.uint8
        and img.dim() == 3
        and img.shape[0] == 3
        and min(img.shape[1:]) == 48
    )
    assert (out["height"], out["width"], out["image_id"]) == (
        d["height"],
        d["width"],
        d["image_id"],
    )
    assert out["file_name"] == d["file_name"]
    inst = out["instances"]
    assert isinstance(inst, Instances) and inst.image_size == tuple(img.shape[1:])
    assert isinstance(inst.gt_boxes, Boxes) and inst.gt_boxes.tensor.dtype == torch.float32
    assert inst.gt_classes.dtype == torch.int64 and len(inst) == n  # crowd dropped
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (n, *img.shape[1:])
    tol = 1.5  # nearest-neighbour mask resizing moves edges by up to a pixel
    for box, mask in zip(inst.gt_boxes.tensor, inst.gt_masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert xs.min() >= box[0] - tol and xs.max() + 1 <= box[2] + tol
        assert ys.min() >= box[1] - tol and ys.max() + 1 <= box[3] + tol

    test_mapper = DetrDatasetMapper(
        is_train=False, augmentation=build_detr_test_transform(min_size=48, max_size=96)
    )
    test_out = test_mapper(d)
    assert "instances" not in test_out and torch.equal(test_out["image"], img)
    bgr = DetrDatasetMapper(
        is_train=False,
        augmentation=build_detr_test_transform(min_size=48, max_size=96),
        img_format="BGR",
    )(d)
    assert torch.equal(bgr["image"], img.flip(0))


def test_mapper_bad_image_skip_and_raise(tiny, tmp_path, caplog):
    good = get_detection_dataset_dicts("tiny_train")[0]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 definitely not a jpeg")
    resized = tmp_path / "resized.png"
    Image.new("RGB", (good["width"] + 1, good["height"])).save(resized)
    aug = build_detr_test_transform(min_size=48, max_size=96)
    for path in (tmp_path / "missing.jpg", corrupt, resized):
        d = {**good, "file_name": str(path)}
        skip = DetrDatasetMapper(is_train=True, augmentation=aug)
        with caplog.at_level(logging.WARNING, logger="mrdetr.data.mapper"):
            caplog.clear()
            assert skip(d) is None and skip(d) is None
        warnings = [r for r in caplog.records if str(path) in r.getMessage()]
        assert len(warnings) == 1  # one warning per file
        with pytest.raises(BadImageError, match=str(path)):
            DetrDatasetMapper(is_train=True, augmentation=aug, on_bad_image="raise")(d)


def test_read_image_applies_exif_orientation(tmp_path):
    array = np.zeros((2, 4, 3), dtype=np.uint8)
    array[0, 0] = (255, 0, 0)  # top-left pixel red in the stored (landscape) orientation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.png"
    Image.fromarray(array).save(path, exif=exif)
    image = read_image(str(path))
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 4, 2)
    assert image[:, 0, 1].tolist() == [255, 0, 0]  # stored top-left ends up top-right


# ----------------------------------------------------------------------------- samplers


def test_training_sampler_is_seeded_and_sharded():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(TrainingSampler(5, seed=3, rank=0, world_size=1), 20)
    assert full == take(TrainingSampler(5, seed=3, rank=0, world_size=1), 20)
    assert full != take(TrainingSampler(5, seed=4, rank=0, world_size=1), 20)
    for epoch in range(4):
        assert sorted(full[5 * epoch : 5 * epoch + 5]) == list(range(5))
    shards = [take(TrainingSampler(5, seed=3, rank=r, world_size=2), 10) for r in range(2)]
    assert shards[0] == full[0::2] and shards[1] == full[1::2]
    assert take(TrainingSampler(3, shuffle=False, rank=0, world_size=1), 7) == [0, 1, 2, 0, 1, 2, 0]
    positions = list(
        zip(range(3), TrainingSampler(5, seed=3, rank=1, world_size=2).iter_with_positions())
    )
    assert [p for _, (p, _) in positions] == [1, 3, 5]


def test_inference_sampler_contiguous_shards():
    shards = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert len(InferenceSampler(2, rank=2, world_size=3)) == 0
    with pytest.raises(ValueError, match="rank"):
        InferenceSampler(4, rank=3, world_size=3)


# ----------------------------------------------------------------------------- loaders


def _train_loader(dataset, **kw):
    mapper = DetrDatasetMapper(
        is_train=True, augmentation=build_detr_train_transform(**SMALL_TRAIN)
    )
    return build_detection_train_loader(dataset=dataset, mapper=mapper, total_batch_size=2, **kw)


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _same_batches(a, b):
    for ba, bb in zip(a, b, strict=True):
        assert [x["image_id"] for x in ba] == [x["image_id"] for x in bb]
        for xa, xb in zip(ba, bb):
            assert torch.equal(xa["image"], xb["image"])
            assert torch.equal(xa["instances"].gt_boxes.tensor, xb["instances"].gt_boxes.tensor)


def test_train_loader_batches_and_aspect_grouping(tiny):
    dicts = get_detection_dataset_dicts("tiny_train")
    landscape = {d["image_id"]: d["width"] > d["height"] for d in dicts}
    assert len(set(landscape.values())) == 2  # both groups exist in the fixture
    batches = _take(_train_loader("tiny_train", seed=0), 6)
    for batch in batches:
        assert len(batch) == 2
        assert len({landscape[x["image_id"]] for x in batch}) == 1


def test_train_loader_exact_resume_and_worker_invariance(tiny):
    full = _take(_train_loader("tiny_train", seed=5), 5)
    resumed = _take(_train_loader("tiny_train", seed=5, start_iter=3), 2)
    _same_batches(full[3:], resumed)
    loader = _train_loader("tiny_train", seed=5)
    loader.set_start_iter(2)
    _same_batches(full[2:4], _take(loader, 2))
    _same_batches(full[:3], _take(_train_loader("tiny_train", seed=5, num_workers=2), 3))
    other = _take(_train_loader("tiny_train", seed=6), 5)
    assert any(
        not torch.equal(a["image"], b["image"]) or a["image_id"] != b["image_id"]
        for ba, bb in zip(full, other)
        for a, b in zip(ba, bb)
    )


def test_train_loader_leaves_global_rng_alone(tiny):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _take(_train_loader("tiny_train", seed=1), 2)
    assert torch.equal(torch.rand(3), expected)


def test_train_loader_skips_bad_images(tiny, tmp_path):
    dicts = get_detection_dataset_dicts("tiny_train")
    dicts[0] = {**dicts[0], "file_name": str(tmp_path / "missing.jpg")}
    loader = _train_loader(dicts, seed=0, aspect_ratio_grouping=False)
    batches = _take(loader, 8)
    bad_id = dicts[0]["image_id"]
    assert all(bad_id not in [x["image_id"] for x in b] for b in batches)
    assert loader.num_skipped >= 1 and sum(2 - len(b) for b in batches) == loader.num_skipped
    seed_none = _train_loader(dicts, seed=None)
    assert isinstance(seed_none.seed, int)


def test_test_loader_is_finite_and_ordered(tiny):
    mapper = DetrDatasetMapper(
        is_train=False, augmentation=build_detr_test_transform(min_size=48, max_size=96)
    )
    dicts = DatasetCatalog.get("tiny_val")
    loader = build_detection_test_loader(dataset="tiny_val", mapper=mapper, batch_size=3)
    batches = list(loader)
    assert len(loader) == 2 and [len(b) for b in batches] == [3, 1]
    assert [x["image_id"] for b in batches for x in b] == [d["image_id"] for d in dicts]
    assert len(dicts) == 4  # empty images are kept for evaluation
