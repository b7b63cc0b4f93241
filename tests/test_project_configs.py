"""Every shipped config loads, has the five sections the trainer needs, and keeps the official keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrdetr.config import LazyConfig, get_dotted

REPO = Path(__file__).resolve().parents[1]
PROJECT_CONFIGS = sorted((REPO / "projects").glob("*/configs/**/*.py"))


def test_the_official_config_paths_exist():
    names = {p.relative_to(REPO).as_posix() for p in PROJECT_CONFIGS}
    for official in (
        "projects/mr_detr_deformable/configs/deformable_detr_r50_two_stage_12ep_plusplus.py",
        "projects/mr_detr_deformable/configs/deformable_detr_r50_two_stage_12ep_plusplus_300q.py",
        "projects/mr_detr_pp_align/configs/dino-swin/dino_swin_large_384_4scale_12ep.py",
    ):
        assert official in names


@pytest.mark.parametrize(
    "path", PROJECT_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "projects"))
)
def test_config_loads_with_all_sections(path):
    cfg = LazyConfig.load(str(path))
    assert {"model", "train", "optimizer", "lr_multiplier", "dataloader"} <= set(cfg)
    # official key names users type on the command line
    for key in ("model.num_queries", "model.select_box_nums_for_evaluation", "train.max_iter"):
        LazyConfig.apply_overrides(cfg, [f"{key}={get_dotted(cfg, key)}"])
    assert cfg.model.transformer.proposals.num_queries == cfg.model.num_queries
    assert cfg.lr_multiplier.scheduler.milestones[-1] >= 1


def test_variants_are_small_deltas():
    """A variant imports its base and changes a few values: no copied model blocks."""
    for path in PROJECT_CONFIGS:
        text = path.read_text()
        assert "L(MrDETR)" not in text and "LazyCall(MrDETR)" not in text, path
        assert len(text.splitlines()) < 120, path


def test_300q_is_the_900q_config_with_300_queries():
    base = LazyConfig.load(
        str(
            REPO
            / "projects/mr_detr_deformable/configs/deformable_detr_r50_two_stage_12ep_plusplus.py"
        )
    )
    q300 = LazyConfig.load(
        str(
            REPO
            / "projects/mr_detr_deformable/configs/deformable_detr_r50_two_stage_12ep_plusplus_300q.py"
        )
    )
    assert (base.model.num_queries, q300.model.num_queries) == (900, 300)
    assert base.lr_multiplier.scheduler.milestones == [82500, 90000]
    assert (
        q300.model.transformer.encoder.num_layers == base.model.transformer.encoder.num_layers == 6
    )
