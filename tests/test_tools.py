"""Model mean, visualize_json_results and plot_logs: results, errors, CLIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest
import torch
from tiny_model import REPO, tiny_model

from mrdetr.checkpoint.official import load_official
from mrdetr.tools._cli import run_cli
from mrdetr.tools.model_mean import main as mean_main
from mrdetr.tools.plot_logs import main as plot_main
from mrdetr.tools.plot_logs import route_totals
from mrdetr.tools.visualize_json_results import main as vis_main


def _run(script: str, args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})  # fmt: skip


def _cli(main, argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = run_cli(main, argv)
    return rc, capsys.readouterr().err


# ----------------------------------------------------------------------------------- model mean
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    sds = {}
    for seed, it in zip((0, 1, 2), (89999, 29999, 59999)):
        sd = tiny_model(seed=seed).state_dict()
        sd["counter"] = torch.tensor([it, 7], dtype=torch.int64)  # an integer buffer
        sds[it] = sd
        metadata = {"dataset": "d", "class_names": [f"run{it}"]}  # which file it came from
        torch.save({"model": sd, "ema": {"decay": 0.9, "state": sd}, "iteration": it,
                    "metadata": metadata}, folder / f"model_{it:07d}.pth")  # fmt: skip
    return folder, sds


def test_model_mean_is_the_weighted_sum_and_keeps_integer_buffers(run_dir):
    folder, sds = run_dir
    proc = _run("projects/modelmean_12ep.py", ["-n", str(folder)])
    assert proc.returncode == 0, proc.stderr
    written = torch.load(folder / "meanmodel.pth", weights_only=True)
    assert written["metadata"]["class_names"] == ["run89999"]  # the newest file's class names
    mean = written["model"]
    assert mean.keys() == sds[89999].keys()
    for key, value in mean.items():
        if key == "counter":
            assert value.dtype == torch.int64 and value.tolist() == [89999, 7]
            continue
        if not value.is_floating_point():
            assert torch.equal(value, sds[89999][key])
            continue
        expected = 0.8 * sds[89999][key] + 0.15 * sds[29999][key] + 0.05 * sds[59999][key]
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6, msg=key)
    model = tiny_model()
    mean.pop("counter")
    torch.save({"model": mean}, folder / "loadable.pth")
    keys = load_official(model, folder / "loadable.pth")
    assert keys.missing_keys == [] and keys.unexpected_keys == []


def test_model_mean_ema_and_custom_weights(run_dir, capsys):
    folder, sds = run_dir
    argv = ["--folder", str(folder), "--iters", "29999,59999", "--weights", "0.5,0.5", "--ema",
            "--output", "ema_mean.pth"]  # fmt: skip
    assert _cli(mean_main, argv, capsys)[0] == 0
    mean = torch.load(folder / "ema_mean.pth", weights_only=True)["model"]
    key = "query_embedding.weight"
    torch.testing.assert_close(mean[key], 0.5 * sds[29999][key] + 0.5 * sds[59999][key])


def test_model_mean_errors(run_dir, tmp_path, capsys):
    folder, sds = run_dir
    rc, err = _cli(
        mean_main, ["-n", str(folder), "--iters", "89999,1", "--weights", "0.5,0.5"], capsys
    )
    assert rc == 1 and "model_0000001.pth" in err and len(err.strip().splitlines()) == 1
    rc, err = _cli(
        mean_main, ["-n", str(folder), "--iters", "89999,29999", "--weights", "0.5,0.6"], capsys
    )
    assert rc == 1 and "sum to 1" in err
    bad = dict(sds[29999])
    bad["query_embedding.weight"] = torch.zeros(3, 3)
    torch.save({"model": bad}, tmp_path / "model_0000005.pth")
    torch.save({"model": sds[89999]}, tmp_path / "model_0000009.pth")
    rc, err = _cli(
        mean_main, ["-n", str(tmp_path), "--iters", "9,5", "--weights", "0.5,0.5"], capsys
    )
    assert rc == 1 and "query_embedding.weight" in err
    assert (
        not (tmp_path / "meanmodel.pth").exists() and not (tmp_path / "meanmodel.pth.tmp").exists()
    )


# ------------------------------------------------------------------------ visualize_json_results
@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    from mrdetr.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("datasets")
    paths = generate_synthetic_dataset(root / "synthetic", num_train=0, num_val=3, image_size=64,
                                       num_classes=3, progress=False)  # fmt: skip
    with open(paths["val_json"]) as f:
        coco = json.load(f)
    return root, coco


def test_visualize_json_results_side_by_side(dataset_root, tmp_path):
    root, coco = dataset_root
    cat_ids = [c["id"] for c in coco["categories"]]
    results = [
        {"image_id": img["id"], "category_id": cat_ids[i % len(cat_ids)], "score": 0.9,
         "bbox": [5.0, 5.0, 20.0, 15.0]}
        for i, img in enumerate(coco["images"][:2])
    ]  # fmt: skip
    results.append({**results[0], "score": 0.1})  # below the threshold
    res_file = tmp_path / "results.json"
    res_file.write_text(json.dumps(results))
    out = tmp_path / "vis"
    proc = _run("tools/visualize_json_results.py", ["--input", str(res_file), "--output", str(out),
                "--dataset", "synthetic_val", "--conf-threshold", "0.5"], MRDETR_DATASETS=str(root))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(
        os.path.basename(i["file_name"]) for i in coco["images"]
    )
    for img in coco["images"]:
        vis = cv2.imread(str(out / os.path.basename(img["file_name"])))
        assert vis.shape[0] == img["height"] and vis.shape[1] > 2 * img["width"]
        src = cv2.imread(str(root / "synthetic" / "val" / img["file_name"]))
        # the top edge of the predicted box (y=5, x=5..25) differs from the source only if drawn
        # (a small difference remains from JPEG re-encoding)
        edge = abs(vis[5, 8:22].astype(int) - src[5, 8:22]).mean()
        drawn = edge > 30
        assert drawn == (img["id"] in {r["image_id"] for r in results[:2]})


def test_visualize_json_results_unknown_image_ids(dataset_root, tmp_path, capsys, monkeypatch):
    root, coco = dataset_root
    monkeypatch.setenv("MRDETR_DATASETS", str(root))
    res_file = tmp_path / "results.json"
    res_file.write_text(
        json.dumps([{"image_id": 123456, "category_id": 1, "score": 0.9, "bbox": [0, 0, 1, 1]}])
    )
    out = tmp_path / "vis"
    rc, err = _cli(
        vis_main,
        ["--input", str(res_file), "--output", str(out), "--dataset", "synthetic_val"],
        capsys,
    )
    assert rc == 1 and "123456" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ------------------------------------------------------------------------------------ plot_logs
def test_plot_logs_writes_a_png(tmp_path, capsys):
    rows = [
        {"iteration": i, "total_loss": 10.0 - i, "loss_class": 1.0, "loss_bbox_group_0": 0.5,
         "loss_giou_sep_1": 0.25, "loss_class_enc": 0.1}
        for i in range(5)
    ] + [{"iteration": 4, "bbox/AP": 1.5}]  # fmt: skip
    assert route_totals(rows[0]) == {"primary": 1.1, "instruct": 0.5, "sep_ffn": 0.25}
    metrics = tmp_path / "run" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    png = tmp_path / "curves.png"
    assert _cli(plot_main, [str(metrics), str(metrics), "--output", str(png)], capsys)[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, err = _cli(
        plot_main, [str(tmp_path / "none.json"), "--output", str(tmp_path / "x.png")], capsys
    )
    assert rc == 1 and "none.json" in err and not (tmp_path / "x.png").exists()
