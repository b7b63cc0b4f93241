"""Official checkpoints load into our modules: key conversion both ways, zero missing/unexpected keys,
parameter counts equal to the official layouts (``../shared/reference/*.layout.json``)."""

from __future__ import annotations

import pytest
import torch
from reference_data import layout
from tiny_model import MODEL_CONFIG

from mrdetr.checkpoint.official import (
    convert_official_to_ours,
    convert_ours_to_official,
    load_official,
)
from mrdetr.config import LazyConfig, instantiate

VARIANTS = {
    "mrdetr_deformable_r50_300q": ["model.num_queries=300"],
    "mrdetr_deformable_r50_900q": ["model.num_queries=900"],
}


class Custom:
    """A class that ``torch.load(weights_only=True)`` refuses to unpickle."""


def _r50(overrides):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(MODEL_CONFIG)), overrides)
    return instantiate(cfg.model)


def _fake_official_state_dict(info: dict) -> dict[str, torch.Tensor]:
    """A state dict in the official layout whose values identify their key (aliases share tensors)."""
    state = {}
    for i, (key, shape, dtype) in enumerate(info["state_dict"]):
        if key in info["aliased_keys"]:
            state[key] = state[info["aliased_keys"][key]]
        else:
            state[key] = torch.full(shape, float(i), dtype=getattr(torch, dtype))
    return state


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    info = layout(request.param)
    return request.param, info, _r50(VARIANTS[request.param])


def test_official_layout_loads_with_no_missing_or_unexpected_keys(variant):
    _, info, model = variant
    official = _fake_official_state_dict(info)
    keys = load_official(model, official)
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    # every tensor landed where it belongs (values encode the official key index)
    ours = model.state_dict()
    for key, value in convert_official_to_ours(official).items():
        assert torch.equal(ours[key], value), key


def test_parameter_counts_match_the_official_layout(variant):
    _, info, model = variant
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == info["total_parameters"]
    assert sum(p.numel() for p in params if p.requires_grad) == info["trainable_parameters"]
    buffers = sum(b.numel() for n, b in model.named_buffers() if n in model.state_dict())
    assert buffers == info["buffer_elements"]


def test_conversion_round_trips_to_the_official_keys(variant):
    _, info, model = variant
    official = convert_ours_to_official(model.state_dict())
    assert sorted(official) == sorted(k for k, _, _ in info["state_dict"])
    for key, shape, _ in info["state_dict"]:
        assert list(official[key].shape) == shape, key
    for alias, target in info["aliased_keys"].items():
        assert official[alias] is official[target]


def test_shape_mismatch_names_every_key(variant):
    _, info, model = variant
    official = _fake_official_state_dict(info)
    official["query_embedding.weight"] = torch.zeros(7, 256)
    with pytest.raises(ValueError, match=r"query_embedding.weight: checkpoint \(7, 256\) vs model"):
        load_official(model, official)


def test_disagreeing_aliases_are_rejected(variant):
    _, info, model = variant
    official = _fake_official_state_dict(info)
    official["class_embed.0.bias"] = official["class_embed.0.bias"] + 1
    with pytest.raises(ValueError, match="aliased checkpoint entries disagree"):
        load_official(model, official)


def test_checkpoint_files_load_with_weights_only(tmp_path, variant):
    _, info, model = variant
    path = tmp_path / "official.pth"
    torch.save({"model": _fake_official_state_dict(info), "iteration": 5}, path)
    keys = load_official(model, path)
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    with pytest.raises(FileNotFoundError, match="not_here.pth"):
        load_official(model, tmp_path / "not_here.pth")


def test_untrusted_pickle_is_refused_with_an_opt_in(tmp_path, variant):
    _, info, model = variant
    path = tmp_path / "pickled.pth"
    torch.save({"model": _fake_official_state_dict(info), "extra": Custom()}, path)
    with pytest.raises(RuntimeError, match="trusted=True"):
        load_official(model, path)
