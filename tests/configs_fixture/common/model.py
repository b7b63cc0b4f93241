"""Base model config: values that must agree are tied by interpolation."""

from types import SimpleNamespace

import torch

from mrdetr.config import LazyCall

model = LazyCall(SimpleNamespace)(
    num_queries=300,
    hidden_dim=8,
    transformer=LazyCall(SimpleNamespace)(
        num_queries="${..num_queries}",
        encoder=LazyCall(torch.nn.Linear)(
            in_features="${...hidden_dim}", out_features="${...hidden_dim}"
        ),
        decoder=LazyCall(SimpleNamespace)(num_layers=6, return_intermediate=True),
    ),
    criterion=LazyCall(SimpleNamespace)(
        num_queries="${model.num_queries}",
        weight_dict={"loss_class": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    ),
    layers=[LazyCall(torch.nn.Identity)(), LazyCall(torch.nn.Identity)()],
)
