"""Model zoo: names, configs, Hugging Face Hub addresses resolved from a local fake cache (never the
network: ``HF_HUB_OFFLINE=1`` / ``local_files_only``), clear errors, and ``get`` loading weights."""

from __future__ import annotations

import pytest
import torch
from tiny_model import MODEL_CONFIG, TINY_OVERRIDES, tiny_model

from mrdetr import model_zoo
from mrdetr.checkpoint.official import convert_ours_to_official

REVISION = "0123456789abcdef0123456789abcdef01234567"
RELEASED = {
    "MrDETR_deformable_r50_12ep_300q.pth",
    "MrDETR_deformbale_r50_12ep_900q.pth",
    "MrDETR_deformable_r50_24ep_900q.pth",
    "MrDETR_dino_r50_12ep_900q.pth",
    "MrDETR_align_r50_12ep_900q.pth",
    "MrDETR_align_r50_24ep_900q.pth",
    "MrDETR_align_swinL_12ep_900q.pth",
    "MrDETR_align_swinl_12ep_900q_objects365_processed.pth",
    "MrDETR_deformable_r50_12ep_300q_insseg.pth",
    "MrDETR_deformable_r50_24ep_300q_insseg.pth",
}
NAME = "mr_detr_deformable_r50_12ep_300q"


def _fake_hub(cache, files: dict[str, object]) -> None:
    """A Hugging Face cache with ``allencbzhang/Mr.DETR`` at REVISION holding ``files``."""
    repo = cache / "models--allencbzhang--Mr.DETR"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for name, obj in files.items():
        torch.save(obj, snapshot / name)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_every_released_file_is_listed_with_its_config():
    names = model_zoo.list_models()
    assert len(names) == len(RELEASED)
    urls = {model_zoo.get_checkpoint_url(n) for n in names}
    assert urls == {f"hf://allencbzhang/Mr.DETR/{f}" for f in RELEASED}
    assert model_zoo.get_checkpoint_url("mr_detr_deformable_r50_12ep_900q").endswith(
        "deformbale_r50_12ep_900q.pth"
    )
    configs = {model_zoo.model_zoo._entry(n).config for n in names}
    assert all(c.startswith("projects/mr_detr_") and c.endswith(".py") for c in configs)
    assert len(configs) == len(names)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(KeyError, match="mr_detr_align_swinl_12ep_900q"):
        model_zoo.get_config("mr_detr_nonexistent")


def test_missing_config_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MRDETR_CONFIG_ROOT", str(tmp_path))
    with pytest.raises(
        FileNotFoundError,
        match="deformable_detr_r50_two_stage_12ep_plusplus_300q.py.*MRDETR_CONFIG_ROOT",
    ):
        model_zoo.get_config(NAME)


def test_hf_address_resolves_from_the_local_cache_offline(tmp_path, offline):
    _fake_hub(tmp_path, {"MrDETR_dino_r50_12ep_900q.pth": {"model": {}}})
    path = model_zoo.resolve_checkpoint(
        "hf://allencbzhang/Mr.DETR/MrDETR_dino_r50_12ep_900q.pth", cache_dir=tmp_path
    )
    assert path.endswith(f"snapshots/{REVISION}/MrDETR_dino_r50_12ep_900q.pth")
    assert torch.load(path, weights_only=True) == {"model": {}}


def test_missing_hub_file_says_how_to_place_it_by_hand(tmp_path, offline):
    _fake_hub(tmp_path, {})
    with pytest.raises(FileNotFoundError) as err:
        model_zoo.resolve_checkpoint(model_zoo.get_checkpoint_url(NAME), cache_dir=tmp_path)
    message = str(err.value)
    assert "MrDETR_deformable_r50_12ep_300q.pth" in message
    assert str(tmp_path / "models--allencbzhang--Mr.DETR" / "snapshots") in message
    assert "train.init_checkpoint=" in message and "offline" in message


def test_plain_paths_and_bad_addresses(tmp_path):
    f = tmp_path / "w.pth"
    torch.save({}, f)
    assert model_zoo.resolve_checkpoint(f) == str(f)
    with pytest.raises(FileNotFoundError, match="not_here.pth"):
        model_zoo.resolve_checkpoint(tmp_path / "not_here.pth")
    with pytest.raises(ValueError, match="hf://<owner>/<repo>/<file>"):
        model_zoo.resolve_checkpoint("hf://allencbzhang/Mr.DETR")


def test_get_builds_the_model_and_loads_the_released_weights(tmp_path, monkeypatch, offline):
    """``get`` on a zoo entry whose config (in a fake project root) is the tiny model, with an
    official-layout checkpoint in the fake Hub cache."""
    root = tmp_path / "root"
    config = (
        root
        / "projects"
        / "mr_detr_deformable"
        / "configs"
        / ("deformable_detr_r50_two_stage_12ep_plusplus_300q.py")
    )
    config.parent.mkdir(parents=True)
    config.write_text(
        "from mrdetr.config import LazyConfig\n"
        f"model = LazyConfig.apply_overrides(LazyConfig.load({str(MODEL_CONFIG)!r}), {TINY_OVERRIDES!r}).model\n"
        "train = dict(init_checkpoint='')\n"
    )
    monkeypatch.setenv("MRDETR_CONFIG_ROOT", str(root))
    source = tiny_model(seed=5)
    official = convert_ours_to_official(source.state_dict())
    cache = tmp_path / "hub"
    _fake_hub(cache, {"MrDETR_deformable_r50_12ep_300q.pth": {"model": official}})

    cfg = model_zoo.get_config(NAME)
    assert (
        cfg.train.init_checkpoint == "hf://allencbzhang/Mr.DETR/MrDETR_deformable_r50_12ep_300q.pth"
    )
    model = model_zoo.get(NAME, cache_dir=cache)
    assert not model.training
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    fresh = model_zoo.get(NAME, pretrained=False)
    assert not torch.equal(fresh.query_embedding.weight, source.query_embedding.weight)
