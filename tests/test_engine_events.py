"""EventStorage semantics and the console / JSON / TensorBoard writers."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from mrdetr.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)


def test_storage_context_history_and_smoothing() -> None:
    with pytest.raises(RuntimeError, match="EventStorage"):
        get_event_storage()
    with EventStorage(start_iter=5) as storage:
        assert get_event_storage() is storage and storage.iter == 5
        for step, value in enumerate([1.0, 100.0, 3.0]):
            storage.iter = 5 + step
            storage.put_scalar("loss", torch.tensor(value))
            storage.put_scalar("lr", value * 10, smoothing_hint=False)
        assert storage.latest()["loss"] == (3.0, 7)
        smoothed = storage.latest_with_smoothing_hint(window_size=3)
        assert smoothed["loss"] == (3.0, 7)  # median of 1, 100, 3
        assert smoothed["lr"] == (30.0, 7)  # not smoothed
        assert storage.latest_with_smoothing_hint(window_size=2)["loss"][0] == pytest.approx(51.5)
        assert [v for v, _ in storage.history("loss").values()] == [1.0, 100.0, 3.0]
        with storage.name_scope("eval"):
            storage.put_scalars(ap=0.5, smoothing_hint=False)
        assert "eval/ap" in storage.latest()
        with pytest.raises(ValueError, match="smoothing_hint"):
            storage.put_scalar("lr", 1.0, smoothing_hint=True)
        with pytest.raises(KeyError, match="nope"):
            storage.history("nope")
    with pytest.raises(RuntimeError):
        get_event_storage()


def test_json_writer_writes_each_iteration_once(tmp_path) -> None:
    path = tmp_path / "out" / "metrics.json"
    writer = JSONWriter(str(path), window_size=1)
    with EventStorage(0) as storage:
        storage.put_scalar("loss", 2.0)
        writer.write()
        storage.iter = 1
        storage.put_scalars(loss=1.0, lr=0.1)
        writer.write()
        writer.write()  # nothing new
    writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"iteration": 0, "loss": 2.0}, {"iteration": 1, "loss": 1.0, "lr": 0.1}]


def test_metric_printer_line(caplog) -> None:
    printer = CommonMetricPrinter(max_iter=100, window_size=2)
    with EventStorage(0) as storage, caplog.at_level(logging.INFO, logger="mrdetr.utils.events"):
        for it in range(3):
            storage.iter = it
            storage.put_scalars(total_loss=1.0 + it, loss_x=0.5, time=0.25, data_time=0.01)
            storage.put_scalar("lr", 2e-4, smoothing_hint=False)
        printer.write()
    line = caplog.records[-1].getMessage()
    for piece in (
        "eta: 0:00:24",
        "iter: 2",
        "total_loss: 2.5",
        "primary_loss: 0.5",
        "time: 0.2500",
        "data_time: 0.0100",
        "lr: 0.0002",
    ):
        assert piece in line, (piece, line)


def test_tensorboard_writer_creates_event_file(tmp_path) -> None:
    writer = TensorboardXWriter(str(tmp_path), window_size=1)
    with EventStorage(0) as storage:
        storage.put_scalar("loss", 1.0)
        writer.write()
    writer.close()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
