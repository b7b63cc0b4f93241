"""tools/analyze_model: FLOPs from torch.utils.flop_counter against hand-counted multiply-adds."""

from __future__ import annotations

import torch
from tiny_model import TINY_CONFIG, tiny_model
from torch import nn

from mrdetr.ops.msda import MultiScaleDeformableAttention
from mrdetr.tools.analyze_model import count_flops, main, measure_flops


def test_conv_and_linear_give_their_known_count():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2048, 10)
    )
    image = torch.rand(1, 3, 16, 16)
    count = measure_flops(lambda: model(image), model)
    conv = 16 * 16 * 8 * (3 * 3 * 3)  # output pixels x output channels x kernel volume
    linear = 2048 * 10
    assert count.multiply_adds == conv + linear
    assert count.total == 2 * (conv + linear)
    assert count.by_module["0"] == 2 * conv and count.by_module["3"] == 2 * linear
    assert count.deformable_attention == 0
    assert all(p.requires_grad for p in model.parameters())  # restored after the count


def test_deformable_attention_counts_its_projections_and_sampling():
    d, heads, levels, points, queries = 32, 2, 2, 3, 5
    sizes = [(4, 5), (2, 3)]
    tokens = sum(h * w for h, w in sizes)
    attn = MultiScaleDeformableAttention(
        embed_dim=d, num_heads=heads, num_levels=levels, num_points=points, backend="reference"
    )
    query, value = torch.rand(1, queries, d), torch.rand(1, tokens, d)
    reference = torch.rand(1, queries, levels, 2)
    shapes = torch.tensor(sizes)
    starts = torch.tensor([0, sizes[0][0] * sizes[0][1]])
    count = measure_flops(lambda: attn(query, value, reference, shapes, starts), attn)
    samples = heads * levels * points
    sampling = queries * heads * (4 * levels * points) * (d // heads)  # 4 bilinear corners
    projections = (
        tokens * d * d  # value_proj
        + queries * d * (2 * samples)  # sampling_offsets
        + queries * d * samples  # attention_weights
        + queries * d * d  # output_proj
    )
    assert count.deformable_attention == 2 * sampling
    assert count.multiply_adds == projections + sampling
    assert attn.backend == "reference"  # counted on the gather path, the setting restored


def test_tiny_model_count_and_cli(capsys):
    model = tiny_model()
    count = count_flops(model, 64, 80, depth=1)
    assert count.total > 0 and 0 < count.deformable_attention < count.total
    assert count.by_module[""] == count.total
    assert {"backbone", "neck", "transformer"} <= set(count.by_module)
    assert all(k.count(".") == 0 for k in count.by_module)
    assert count.by_module["backbone"] > 0 and count.by_module["transformer"] > 0
    # the same count from the command line, in GFLOPs and multiply-adds
    assert main(["--config-file", str(TINY_CONFIG), "--height", "64", "--width", "80"]) == 0
    out = capsys.readouterr().out
    assert (
        f"{count.total / 1e9:.3f} GFLOPs = {count.multiply_adds / 1e9:.3f} G multiply-adds" in out
    )
