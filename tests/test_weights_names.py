"""One way to name weights: a path, ``hf://owner/repo/file`` or a model-zoo name, accepted alike by
``Checkpointer.load_weights`` (``train.init_checkpoint``), ``load_official``, ``Predictor(...,
weights=...)`` and ``Predictor("<zoo name>")``. The Hub is a cache laid out by hand in tmp (found
through ``HF_HUB_CACHE``), never the network."""

from __future__ import annotations

import time

import pytest
import torch
from tiny_model import MODEL_CONFIG, TINY_OVERRIDES, tiny_model

from mrdetr import model_zoo
from mrdetr.checkpoint.checkpointer import Checkpointer, CheckpointError
from mrdetr.checkpoint.official import convert_ours_to_official
from mrdetr.engine.predictor import Predictor

REVISION = "fedcba9876543210fedcba9876543210fedcba98"
NAME = "mr_detr_deformable_r50_12ep_300q"
FILE = "MrDETR_deformable_r50_12ep_300q.pth"
URL = f"hf://allencbzhang/Mr.DETR/{FILE}"
ZOO_CONFIG = (
    "projects/mr_detr_deformable/configs/deformable_detr_r50_two_stage_12ep_plusplus_300q.py"
)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Offline Hub cache (``$HF_HUB_CACHE``) holding the tiny model as NAME's released file, and a
    config root where NAME's config is the tiny model. Returns the source model."""
    source = tiny_model(seed=11)
    repo = tmp_path / "hub" / "models--allencbzhang--Mr.DETR"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "snapshots" / REVISION).mkdir(parents=True)
    official = convert_ours_to_official(source.state_dict())
    torch.save({"model": official}, repo / "snapshots" / REVISION / FILE)
    config = tmp_path / "root" / ZOO_CONFIG
    config.parent.mkdir(parents=True)
    config.write_text(
        "from mrdetr.config import LazyConfig\n"
        f"model = LazyConfig.apply_overrides(LazyConfig.load({str(MODEL_CONFIG)!r}), "
        f"{TINY_OVERRIDES!r}).model\n"
        "train = dict(init_checkpoint='', device='cpu', amp=dict(enabled=False))\n"
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MRDETR_CONFIG_ROOT", str(tmp_path / "root"))
    return source


def _assert_weights_of(model: torch.nn.Module, source: torch.nn.Module) -> None:
    own = model.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(own[key].cpu(), value), key


@pytest.mark.parametrize("address", [URL, NAME])
def test_init_checkpoint_accepts_hub_addresses_and_zoo_names(hub, address):
    model = tiny_model(seed=0)
    start = Checkpointer(model, save_to_disk=False).resume_or_load(address, resume=False)
    assert start == 0
    _assert_weights_of(model, hub)


def test_predictor_accepts_hub_weights_and_a_zoo_name(hub):
    cfg = model_zoo.get_config(NAME)
    _assert_weights_of(Predictor(cfg, weights=URL, device="cpu").model, hub)
    _assert_weights_of(Predictor(cfg, device="cpu").model, hub)  # train.init_checkpoint = URL
    by_name = Predictor(NAME, device="cpu")
    assert by_name.cfg.train.init_checkpoint == URL
    _assert_weights_of(by_name.model, hub)


def test_load_official_is_exported_by_the_package(hub):
    from mrdetr.checkpoint import Checkpointer as Exported
    from mrdetr.checkpoint import load_official

    assert Exported is Checkpointer
    model = tiny_model(seed=0)
    keys = load_official(model, NAME)
    assert not keys.missing_keys and not keys.unexpected_keys
    _assert_weights_of(model, hub)


def test_offline_missing_file_fails_at_once_naming_the_file_and_where_to_put_it(hub, tmp_path):
    missing = "hf://allencbzhang/Mr.DETR/MrDETR_align_r50_12ep_900q.pth"
    model = tiny_model(seed=0)
    start = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        Checkpointer(model, save_to_disk=False).load_weights(missing)
    assert time.monotonic() - start < 5.0  # no network retries when HF_HUB_OFFLINE=1
    message = str(err.value)
    assert "MrDETR_align_r50_12ep_900q.pth" in message and "offline" in message
    assert str(tmp_path / "hub" / "models--allencbzhang--Mr.DETR" / "snapshots") in message
    with pytest.raises(FileNotFoundError, match="MrDETR_align_r50_12ep_900q.pth"):
        Predictor(model_zoo.get_config(NAME), weights=missing, device="cpu")
    with pytest.raises(CheckpointError, match="nowhere.pth"):
        Checkpointer(model, save_to_disk=False).load_weights(str(tmp_path / "nowhere.pth"))
