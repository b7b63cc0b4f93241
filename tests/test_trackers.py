"""W&B (offline) and MLflow (local store) writers on a real 5-iteration tiny training run.

The run goes through ``projects/train_net.py``; the tests read what the trackers wrote back from
their own files (the W&B offline transaction log, the MLflow store through ``MlflowClient``) and
compare it with ``metrics.json``, written by the JSON writer from the same event storage.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mrdetr.config import LazyConfig
from mrdetr.data.synthetic import generate_synthetic_dataset
from mrdetr.engine.trackers import build_tracker_writers

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "configs" / "tiny_synthetic.py"
MAX_ITER = 5
HAVE = {name: importlib.util.find_spec(name) is not None for name in ("wandb", "mlflow")}
# W&B offline log: a 7-byte file header, then LevelDB-log records in 32 KiB blocks, each chunk
# with a 7-byte header (crc32, length, type); type 1 = whole record, 2/3/4 = first/middle/last
_WANDB_FILE_HEADER = 7
_BLOCK, _CHUNK_HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    if not any(HAVE.values()):
        pytest.skip("neither wandb nor mlflow is installed (pip install 'mrdetr[wandb,mlflow]')")
    root = tmp_path_factory.mktemp("trackers")
    generate_synthetic_dataset(
        root / "datasets" / "synthetic", num_train=8, num_val=3, seed=1, image_size=96,
        progress=False,
    )  # fmt: skip
    out = root / "run"
    env = dict(
        os.environ,
        MRDETR_DATASETS=str(root / "datasets"),
        WANDB_MODE="offline",  # never logs in, never reaches the network
        WANDB_SILENT="true",
        PYTHONUNBUFFERED="1",
    )
    cmd = [sys.executable, str(REPO / "projects" / "train_net.py"), "--config-file", str(CONFIG)]
    cmd += [f"train.output_dir={out}", f"train.max_iter={MAX_ITER}", "train.mlflow.run_name=tiny"]
    cmd += [f"train.wandb.enabled={HAVE['wandb']}", f"train.mlflow.enabled={HAVE['mlflow']}"]
    cmd += ["train.wandb.name=tiny", "+train.wandb.tags=['tiny','ci']"]  # the extra key: wandb.init
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _metrics_json(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]


def _expected(run: Path) -> tuple[dict[int, float], dict[str, float]]:
    """``total_loss`` per iteration and the final ``bbox/*`` results, from metrics.json."""
    records = _metrics_json(run)
    losses = {r["iteration"]: r["total_loss"] for r in records if "total_loss" in r}
    final = [r for r in records if "bbox/AP" in r][-1]
    return losses, {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("bbox/")}


def _same(a: float | None, b: float) -> bool:
    """Equal numbers; JSON tables write NaN (e.g. APl without large objects) as null."""
    nan = float("nan")
    return (nan if a is None else a) == pytest.approx(b, rel=1e-9, nan_ok=True)


def _wandb_records(path: str):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = _WANDB_FILE_HEADER, b""
    while pos + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _CHUNK_HEADER])
        chunk = data[pos + _CHUNK_HEADER : pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.slow  # one 5-iteration training run shared by the two tracker tests (~1 min)
@pytest.mark.skipif(
    not HAVE["wandb"], reason="wandb is not installed (pip install 'mrdetr[wandb]')"
)
def test_wandb_offline_run_holds_scalars_config_and_ap_table(tracked_run) -> None:
    (log_file,) = glob.glob(str(tracked_run / "wandb" / "offline-run-*" / "run-*.wandb"))
    history, config = [], {}
    for record in _wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "run":
            config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            names_and_tags = (record.run.display_name, list(record.run.tags))
    losses, final = _expected(tracked_run)
    logged = {h["iteration"]: h["total_loss"] for h in history if "total_loss" in h}
    assert sorted(logged) == list(range(MAX_ITER)) == sorted(losses)
    assert all(_same(logged[i], losses[i]) for i in logged)
    (ap_row,) = [h for h in history if "bbox/AP" in h]
    assert ap_row["iteration"] == MAX_ITER and _same(ap_row["bbox/AP"], final["AP"])
    assert config["train"]["max_iter"] == MAX_ITER and config["model"]["num_classes"] == 6
    assert names_and_tags == ("tiny", ["tiny", "ci"])

    (table_row,) = [h for h in history if "eval_tables/bbox/path" in h]
    table_file = Path(log_file).parent / "files" / table_row["eval_tables/bbox/path"]
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["metric", "value"]
    rows = dict(table["data"])
    assert rows.keys() == final.keys() and all(_same(rows[k], final[k]) for k in final)


@pytest.mark.slow
@pytest.mark.skipif(
    not HAVE["mlflow"], reason="mlflow is not installed (pip install 'mrdetr[mlflow]')"
)
def test_mlflow_store_holds_scalars_config_and_ap_table(tracked_run, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mrdetr")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    losses, final = _expected(tracked_run)
    history = client.get_metric_history(run.info.run_id, "total_loss")
    assert sorted(m.step for m in history) == list(range(MAX_ITER))
    assert all(_same(m.value, losses[m.step]) for m in history)
    (ap,) = client.get_metric_history(run.info.run_id, "bbox/AP")
    assert ap.step == MAX_ITER and _same(ap.value, final["AP"])
    assert run.data.params["train.max_iter"] == str(MAX_ITER)
    assert run.data.params["model.num_classes"] == "6"

    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert LazyConfig.load(config).train.max_iter == MAX_ITER
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "eval_tables/bbox.json", str(tmp_path)))
        .read_text()
    )  # fmt: skip
    assert table["columns"] == ["iteration", "metric", "value"]
    assert {row[0] for row in table["data"]} == {MAX_ITER}
    rows = {metric: value for _, metric, value in table["data"]}
    assert rows.keys() == final.keys() and all(_same(rows[k], final[k]) for k in final)


def _tracker_cfg(tmp_path: Path, *overrides: str):
    cfg = LazyConfig.load(str(REPO / "configs" / "common" / "train.py"))
    return LazyConfig.apply_overrides(cfg, [f"train.output_dir={tmp_path}", *overrides])


@pytest.mark.parametrize("package", ["wandb", "mlflow"])
def test_missing_package_is_one_line_naming_the_extra(package, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # makes `import <package>` fail
    cfg = _tracker_cfg(tmp_path, f"train.{package}.enabled=True")
    with pytest.raises(ImportError) as info:
        build_tracker_writers(cfg)
    message = str(info.value)
    assert "\n" not in message and f"pip install 'mrdetr[{package}]'" in message
    assert f"train.{package}.enabled=True" in message


def test_trackers_off_by_default_and_unknown_mlflow_key(tmp_path) -> None:
    assert build_tracker_writers(_tracker_cfg(tmp_path)) == []
    cfg = _tracker_cfg(tmp_path, "train.mlflow.enabled=True", "+train.mlflow.experimnt=x")
    with pytest.raises(ValueError, match=r"train.mlflow: unknown key\(s\) \['experimnt'\]"):
        build_tracker_writers(cfg)
