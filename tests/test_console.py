"""A calm console and readable files: one short log line per period with per-route loss sums (every
term still in metrics.json), the model printout at DEBUG, config.yaml readable by others (0644)."""

from __future__ import annotations

import json
import logging
import os
import stat

from mrdetr.config import LazyConfig
from mrdetr.utils.events import CommonMetricPrinter, EventStorage, JSONWriter
from mrdetr.utils.route_losses import route_totals

TERMS = {
    "loss_class": 1.0,
    "loss_bbox_0": 0.5,
    "loss_giou_enc": 0.25,
    "loss_class_group_0": 2.0,
    "loss_bbox_enc_o2m": 1.0,
    "loss_giou_sep_1": 4.0,
}


def test_one_short_line_with_route_totals_and_every_term_in_metrics_json(tmp_path, caplog):
    printer = CommonMetricPrinter(max_iter=10, window_size=1)
    writer = JSONWriter(tmp_path / "metrics.json", window_size=1)
    with EventStorage(0) as storage, caplog.at_level(logging.INFO, logger="mrdetr.utils.events"):
        storage.put_scalars(total_loss=sum(TERMS.values()), time=0.5, **TERMS)
        printer.write()
        writer.write()
    writer.close()
    line = caplog.records[-1].getMessage()
    for piece in ("total_loss: 8.75", "primary_loss: 1.75", "instruct_loss: 3", "sep_ffn_loss: 4"):
        assert piece in line, (piece, line)
    assert "loss_class" not in line and len(line) < 200
    (record,) = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert {k: record[k] for k in TERMS} == TERMS
    assert route_totals(record) == {"primary": 1.75, "instruct": 3.0, "sep_ffn": 4.0}


def test_config_dump_is_readable_by_others(tmp_path):
    path = tmp_path / "config.yaml"
    old = os.umask(0o022)  # the usual umask: new files are 0644
    try:
        LazyConfig.save(_tiny_cfg(), str(path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _tiny_cfg():
    from omegaconf import OmegaConf

    return OmegaConf.create({"train": {"output_dir": "x", "max_iter": 3}})


def test_model_printout_is_debug_only(caplog):
    import torch

    from mrdetr.engine import runner

    cfg = _tiny_cfg()
    cfg.train.device = "cpu"
    cfg.model = {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 3}
    with caplog.at_level(logging.INFO, logger="mrdetr"):
        model = runner.build_model(cfg)
    assert isinstance(model, torch.nn.Linear)
    assert "Linear(in_features=2" not in caplog.text
    with caplog.at_level(logging.DEBUG, logger="mrdetr"):
        runner.build_model(cfg)
    assert "Linear(in_features=2" in caplog.text


def test_environment_dump_knows_the_pycocotools_version():
    import importlib.metadata

    from mrdetr.utils.env import collect_env_info

    row = [line for line in collect_env_info().splitlines() if line.startswith("pycocotools")]
    assert row and row[0].split()[-1] == importlib.metadata.version("pycocotools")


def test_debug_lines_go_to_the_log_file_not_the_console(tmp_path, capsys):
    from mrdetr.utils.logger import setup_logger

    logger = setup_logger(str(tmp_path), name="mrdetr_console_test")
    try:
        logger.debug("Model:\nLinear(in_features=2)")
        logger.info("an info line")
        for handler in logger.handlers:
            handler.flush()
        out = capsys.readouterr().out
        assert "an info line" in out and "Linear(in_features=2" not in out
        log = (tmp_path / "log.txt").read_text()
        assert "an info line" in log and "Linear(in_features=2" in log
    finally:
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)
