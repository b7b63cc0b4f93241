"""Param groups from name rules, LR schedules (official 12ep/24ep) and the optimizer config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler
from test_engine_common import ToyDetector

from mrdetr.solver import (
    LRMultiplier,
    WarmupParamScheduler,
    get_param_groups,
    step_decay_multiplier,
)

REPO = Path(__file__).resolve().parents[1]
BASE_LR = 2e-4


def _groups_by_name(groups: list[dict]) -> dict[str, dict]:
    return {name: group for group in groups for name in group["param_names"]}


def test_default_rules_reproduce_official_groups() -> None:
    model = ToyDetector()
    model.backbone.bias.requires_grad_(False)  # frozen: skipped
    groups = get_param_groups(model, base_lr=BASE_LR, weight_decay=1e-4)
    by_name = _groups_by_name(groups)
    assert "backbone.bias" not in by_name
    assert by_name["backbone.weight"]["lr"] == pytest.approx(BASE_LR * 0.1)
    assert by_name["sampling_offsets.weight"]["lr"] == pytest.approx(BASE_LR * 0.1)
    assert by_name["head.weight"]["lr"] == pytest.approx(BASE_LR)
    assert by_name["norm.weight"]["weight_decay"] == pytest.approx(1e-4)  # official: decay on norms
    # equal (lr, wd) merge: backbone and sampling_offsets share the 0.1x group
    assert len(groups) == 2
    all_names = [n for g in groups for n in g["param_names"]]
    assert len(all_names) == len(set(all_names)) == sum(p.requires_grad for p in model.parameters())
    optimizer = torch.optim.AdamW(groups, lr=BASE_LR)
    assert [len(g["param_names"]) for g in optimizer.param_groups] == [
        len(g["params"]) for g in optimizer.param_groups
    ]


def test_first_matching_rule_wins_and_norm_embed_decay() -> None:
    model = torch.nn.ModuleDict(
        {
            "backbone": torch.nn.Linear(2, 2),
            "backbone_norm": torch.nn.LayerNorm(2),
            "embed": torch.nn.Embedding(3, 2),
        }
    )
    rules = [
        {"pattern": "backbone_norm", "lr_factor": 0.5, "weight_decay": 0.3},
        {"pattern": "backbone", "lr_factor": 0.1},
    ]
    groups = get_param_groups(
        model,
        base_lr=1.0,
        weight_decay=0.05,
        rules=rules,
        weight_decay_norm=0.0,
        weight_decay_embed=0.0,
    )
    by_name = _groups_by_name(groups)
    assert by_name["backbone_norm.weight"]["lr"] == pytest.approx(0.5)
    assert by_name["backbone_norm.weight"]["weight_decay"] == pytest.approx(0.3)  # rule beats norm
    assert by_name["backbone.weight"]["lr"] == pytest.approx(0.1)
    assert by_name["backbone.weight"]["weight_decay"] == pytest.approx(0.05)
    assert by_name["embed.weight"]["weight_decay"] == 0.0
    assert by_name["embed.weight"]["lr"] == pytest.approx(1.0)


def test_bad_rules_and_frozen_model_raise() -> None:
    model = ToyDetector()
    with pytest.raises(ValueError, match="rules\\[0\\]"):
        get_param_groups(model, base_lr=1.0, weight_decay=0.0, rules=[{"lr_factor": 0.1}])
    with pytest.raises(ValueError, match="unknown keys"):
        get_param_groups(model, base_lr=1.0, weight_decay=0.0, rules=[{"pattern": "a", "lr": 1}])
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        get_param_groups(model, base_lr=1.0, weight_decay=0.0)


def _lrs_at(multiplier, max_iter: int, iters: list[int], base_lrs=(1.0, 0.1)) -> dict[int, list]:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    optimizer = torch.optim.SGD(
        [{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)], lr=base_lrs[0]
    )
    scheduler = LRMultiplier(optimizer, multiplier, max_iter)
    wanted, seen = set(iters), {}
    for it in range(max(iters) + 1):
        if it in wanted:
            seen[it] = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    return seen


def test_official_12ep_schedule_values() -> None:
    """12ep: 90k iterations, x0.1 from 82,500 (11 epochs of 7,500); group factors kept."""
    multiplier = step_decay_multiplier(max_iter=90000, decay_iters=[82500])
    for it, expected in [(0, 1.0), (82499, 1.0), (82500, 0.1), (89999, 0.1)]:
        assert multiplier(it / 90000) == pytest.approx(expected)
    # step the real scheduler through a proportionally shrunk schedule (12 of the 90k steps)
    seen = _lrs_at(step_decay_multiplier(max_iter=12, decay_iters=[11]), 12, [0, 10, 11])
    assert seen[0] == pytest.approx([1.0, 0.1])
    assert seen[10] == pytest.approx([1.0, 0.1])
    assert seen[11] == pytest.approx([0.1, 0.01])


def test_scheduler_state_round_trip_and_warmup() -> None:
    base = MultiStepParamScheduler(values=[1.0, 0.1], milestones=[8, 10])
    warm = WarmupParamScheduler(
        base, warmup_factor=0.001, warmup_length=0.2, warmup_method="linear"
    )
    assert warm(0.0) == pytest.approx(0.001)
    assert warm(0.1) == pytest.approx(0.5005)
    assert warm(0.5) == pytest.approx(1.0)
    assert warm(0.85) == pytest.approx(0.1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    scheduler = LRMultiplier(optimizer, warm, 10)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh_opt = torch.optim.SGD([param], lr=2.0)
    fresh = LRMultiplier(fresh_opt, warm, 10)
    fresh.load_state_dict(state)
    fresh_opt.load_state_dict(optimizer.state_dict())
    assert fresh.last_epoch == 3
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
    with pytest.raises(ValueError, match="warmup_method"):
        WarmupParamScheduler(base, warmup_factor=0.1, warmup_length=0.1, warmup_method="cos")


def test_common_configs_build_the_official_recipe() -> None:
    from mrdetr.config import LazyConfig, instantiate

    sched = LazyConfig.load(str(REPO / "configs/common/coco_schedule.py"))
    m12, m24 = instantiate(sched.lr_multiplier_12ep), instantiate(sched.lr_multiplier_24ep)
    assert m12(82499 / 90000) == pytest.approx(1.0)
    assert m12(82500 / 90000) == pytest.approx(0.1)
    assert m24(149999 / 180000) == pytest.approx(1.0)
    assert m24(150000 / 180000) == pytest.approx(0.1)

    cfg = LazyConfig.load(str(REPO / "configs/common/optim.py"))
    cfg.optimizer.params.model = ToyDetector()
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    lrs = sorted(g["lr"] for g in optimizer.param_groups)
    assert lrs == pytest.approx([2e-5, 2e-4])
    assert all(g["weight_decay"] == pytest.approx(1e-4) for g in optimizer.param_groups)
    assert tuple(optimizer.param_groups[0]["betas"]) == (0.9, 0.999)

    train = LazyConfig.load(str(REPO / "configs/common/train.py")).train
    assert train.clip_grad.params.max_norm == 0.1 and train.max_iter == 90000
