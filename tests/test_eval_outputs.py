"""Evaluation outputs of a run: the EMA results go to ``inference_ema/`` beside ``inference/``, every
AP (before training, periodic, final, EMA, eval-only) lands in ``metrics.json`` at detectron2's
iterations (after step k: k; after training: max_iter; before training: -1)."""

from __future__ import annotations

import json

import pytest
from synthetic_coco import registered_coco_folder
from tiny_model import REPO

from mrdetr.engine import default_argument_parser
from mrdetr.engine.runner import main

QUICKSTART = REPO / "projects/mr_detr_deformable/configs/quickstart_synthetic.py"
RESULTS = "coco_instances_results.json"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    with registered_coco_folder(tmp_path_factory.mktemp("data") / "shapes3") as name:
        yield name


def _main(dataset: str, output, *extra: str):
    argv = ["--config-file", str(QUICKSTART), *extra]
    argv += [
        f"dataloader.train.dataset={dataset}_train",
        f"dataloader.test.dataset={dataset}_val",
        f"train.output_dir={output}",
        "model.num_classes=3",
        "dataloader.train.num_workers=0",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.mapper.augmentation.min_sizes=[64]",
        "dataloader.train.mapper.augmentation.max_size=64",
        "dataloader.train.mapper.augmentation.crop_prob=0.0",
        "dataloader.test.mapper.augmentation.min_size=64",
        "dataloader.test.mapper.augmentation.max_size=64",
        "train.model_ema.enabled=True",
        "train.max_iter=2",
        "train.eval_period=1",
        "train.log_period=1",
        "train.checkpointer.period=2",
        "train.eval_at_start=True",
    ]
    return main(default_argument_parser().parse_args(argv))


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_ap_lands_in_metrics_json_and_ema_results_do_not_overwrite(dataset, tmp_path):
    out = tmp_path / "run"
    _main(dataset, out)
    regular = (out / "inference" / RESULTS).read_text()
    ema = (out / "inference_ema" / RESULTS).read_text()
    assert json.loads(regular) and json.loads(ema) and regular != ema
    records = _records(out / "metrics.json")
    assert [r["iteration"] for r in records if "total_loss" in r] == [0, 1]
    for key in ("bbox/AP", "bbox_ema/AP"):
        assert [r["iteration"] for r in records if key in r] == [-1, 0, 2], key

    final = out / "model_final.pth"
    results = _main(dataset, out, "--eval-only", f"train.init_checkpoint={final}")
    (last,) = [r for r in _records(out / "metrics.json") if r.get("eval_only")]
    assert last["iteration"] == 1 and last["checkpoint"] == str(final)
    assert last["bbox/AP"] == pytest.approx(results["bbox"]["AP"])


def test_every_unsmoothed_value_between_two_writes_is_written(tmp_path):
    from mrdetr.utils.events import EventStorage, JSONWriter

    writer = JSONWriter(tmp_path / "metrics.json")
    with EventStorage(0) as storage:
        storage.put_scalars(**{"bbox/AP": 1.0}, smoothing_hint=False, cur_iter=-1)
        for it in range(4):
            storage.iter = it
            storage.put_scalar("total_loss", float(it))
            if it in (0, 1):
                storage.put_scalars(**{"bbox/AP": 10.0 + it}, smoothing_hint=False)
        writer.write()
    writer.close()
    records = _records(tmp_path / "metrics.json")
    assert [(r["iteration"], r["bbox/AP"]) for r in records if "bbox/AP" in r] == [
        (-1, 1.0),
        (0, 10.0),
        (1, 11.0),
    ]
    assert [r["iteration"] for r in records if "total_loss" in r] == [3]
