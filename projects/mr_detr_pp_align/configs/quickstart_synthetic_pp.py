"""Quick start with Mr. DETR++: the synthetic quick-start model plus the route-aware MoE decoder FFN and
the coarse-level encoder MoE (``configs/common/models/mr_detr_pp_r50.py::add_plusplus_moe``)."""

from ....configs.common.models.mr_detr_pp_r50 import add_plusplus_moe
from ...mr_detr_deformable.configs.quickstart_synthetic import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model = add_plusplus_moe(model)
# the route-aware MoE needs the one-to-many routes (the detection quick start trains PRIMARY only)
model.train_routes = ["primary", "instruct", "sep_ffn"]
train.output_dir = "./output/quickstart_synthetic_pp"
