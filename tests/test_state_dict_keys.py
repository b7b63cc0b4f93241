"""State-dict keys are stable: tiny models of every R50 model config have exactly the keys recorded at
commit e6fc3de (``tests/state_dict_keys_e6fc3de.json``), so checkpoints saved before a refactor load with
no missing or unexpected keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_insseg import TINY_SEG
from test_panoptic_model import TINY_QUERY_HEAD
from tiny_model import REPO, TINY_OVERRIDES

from mrdetr.config import LazyConfig, instantiate

RECORDED = json.loads((Path(__file__).parent / "state_dict_keys_e6fc3de.json").read_text())
EXTRA = {
    "mr_detr_insseg_r50.py": TINY_SEG,
    "mr_detr_panoptic_r50.py": TINY_QUERY_HEAD + ["model.thing_class_ids=[0,1,2]"],
}


def _recorded_keys(name: str) -> list[str]:
    base = RECORDED["base_keys"]
    if name == RECORDED["base_config"]:
        return base
    delta = RECORDED["variants"][name]
    removed = set(delta["removed"])
    return [k for k in base if k not in removed] + delta["added"]


@pytest.mark.parametrize("name", [RECORDED["base_config"], *RECORDED["variants"]])
def test_state_dict_keys_match_the_recorded_layout(name):
    cfg = LazyConfig.load(str(REPO / "configs" / "common" / "models" / name))
    cfg = LazyConfig.apply_overrides(cfg, TINY_OVERRIDES + EXTRA.get(name, []))
    with torch.device("meta"):
        model = instantiate(cfg.model)
    keys = list(model.state_dict().keys())
    expected = _recorded_keys(name)
    assert sorted(keys) == sorted(expected), (
        f"missing {sorted(set(expected) - set(keys))}, unexpected {sorted(set(keys) - set(expected))}"
    )
    assert len(keys) == len(expected)
