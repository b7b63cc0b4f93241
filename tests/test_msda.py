"""Multi-scale deformable attention: reference op, gather backend, dispatcher and module."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import mrdetr.ops.msda.gather as gather_module
from mrdetr.ops import MultiScaleDeformableAttention, multi_scale_deformable_attention
from mrdetr.ops.msda import msda_gather, msda_reference, resolve_msda_backend

# (level sizes, batch, heads, head dim, queries, points)
CASES = {
    "odd_3_levels": ([(3, 5), (2, 2), (1, 3)], 2, 2, 6, 5, 3),
    "one_level": ([(4, 7)], 1, 1, 8, 6, 2),
    "five_levels": ([(5, 6), (3, 3), (2, 2), (1, 2), (1, 1)], 2, 3, 5, 9, 2),
    "many_queries": ([(7, 9), (4, 5)], 2, 4, 8, 40, 4),
}


def _level_tensors(sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = torch.tensor(sizes, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    return shapes, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def _inputs(
    case: str,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    low: float = -0.3,
    high: float = 1.3,
):
    """Random op inputs; locations spread beyond [0, 1] so some points read the zero padding."""
    sizes, b, m, d, q, p = CASES[case]
    g = torch.Generator().manual_seed(seed)
    shapes, starts = _level_tensors(sizes)
    s, num_levels = int(shapes.prod(1).sum()), len(sizes)
    value = torch.randn(b, s, m, d, generator=g, dtype=dtype)
    locations = torch.rand(b, q, m, num_levels, p, 2, generator=g, dtype=dtype) * (high - low) + low
    weights = torch.rand(b, q, m, num_levels, p, generator=g, dtype=dtype)
    return value, shapes, starts, locations, weights


def _run(op, value, shapes, starts, locations, weights, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = op(leaves[0], shapes, starts, leaves[1], leaves[2])
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in leaves]


def test_reference_gradcheck():
    value, shapes, starts, locations, weights = _inputs("odd_3_levels")
    value, locations, weights = value[:1], locations[:1, :3], weights[:1, :3]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: msda_reference(v, shapes, starts, loc, w),
        (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_()),
    )


def test_gather_gradcheck():
    value, shapes, starts, locations, weights = _inputs("five_levels", seed=1)
    value, locations, weights = value[:1], locations[:1, :3], weights[:1, :3]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: msda_gather(v, shapes, starts, loc, w),
        (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_()),
    )


def test_reference_matches_per_point_bilinear_formula():
    """The reference against an explicit loop over points and corners (zero padding outside)."""
    value, shapes, starts, locations, weights = _inputs("odd_3_levels")
    out = msda_reference(value, shapes, starts, locations, weights)
    b, q, m = 1, 3, 1
    expected = torch.zeros(value.shape[-1], dtype=value.dtype)
    for level, (h, w) in enumerate(shapes.tolist()):
        for point in range(locations.shape[4]):
            x = locations[b, q, m, level, point, 0].item() * w - 0.5
            y = locations[b, q, m, level, point, 1].item() * h - 0.5
            x0, y0 = math.floor(x), math.floor(y)
            for yi, xi in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                if 0 <= xi < w and 0 <= yi < h:
                    bilinear = (1 - abs(x - xi)) * (1 - abs(y - yi))
                    row = int(starts[level]) + yi * w + xi
                    expected += weights[b, q, m, level, point] * bilinear * value[b, row, m]
    d = value.shape[-1]
    torch.testing.assert_close(out[b, q, m * d : (m + 1) * d], expected)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("value_grad_path", ["sort", "scatter"])
def test_gather_equals_reference(case, dtype, value_grad_path, monkeypatch):
    # Force each of the two value-gradient strategies of the gather backend.
    threshold = 0.0 if value_grad_path == "sort" else math.inf
    monkeypatch.setattr(gather_module, "_SORT_MIN_CORNERS_PER_ROW", threshold)
    inputs = _inputs(case, dtype=dtype)
    b, q, m, d = inputs[3].shape[0], inputs[3].shape[1], inputs[0].shape[2], inputs[0].shape[3]
    grad_out = torch.randn(b, q, m * d, dtype=dtype, generator=torch.Generator().manual_seed(5))
    expected = _run(msda_reference, *inputs, grad_out)
    got = _run(msda_gather, *inputs, grad_out)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for name, a, e in zip(
        ("output", "grad value", "grad locations", "grad weights"), got, expected
    ):
        # location gradients scale with the map size: compare relative to their magnitude
        scale = e.abs().max().clamp(min=1) if name == "grad locations" else 1
        torch.testing.assert_close(
            a / scale, e / scale, **tol, msg=lambda msg, n=name: f"{n}: {msg}"
        )


def test_gather_extreme_locations():
    """Far outside, on the border ring, NaN: zeros and zero gradients like grid_sample."""
    value, shapes, starts, locations, weights = _inputs("one_level")
    locations = locations.clone()
    locations[0, 0, 0, 0, 0] = torch.tensor([-50.0, 0.5], dtype=locations.dtype)
    locations[0, 1, 0, 0, 0] = torch.tensor([1e9, 1e9], dtype=locations.dtype)
    x_at_width = 1.0 + 0.5 / 7  # pixel coordinate x == w exactly: outside, zero gradient
    locations[0, 2, 0, 0, 0] = torch.tensor([x_at_width, 0.5], dtype=locations.dtype)
    grad_out = torch.ones(1, locations.shape[1], value.shape[2] * value.shape[3], dtype=value.dtype)
    expected = _run(msda_reference, value, shapes, starts, locations, weights, grad_out)
    got = _run(msda_gather, value, shapes, starts, locations, weights, grad_out)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e)
    # A NaN location gives NaN in its own (query, head) only, as in the reference.
    locations[0, 3, 0, 0, 0, 0] = float("nan")
    nan_out = msda_gather(value, shapes, starts, locations, weights)
    assert nan_out[0, 3].isnan().all() and not nan_out[0, :3].isnan().any()
    reference = msda_reference(value, shapes, starts, locations, weights)
    torch.testing.assert_close(nan_out, reference, equal_nan=True)


@pytest.mark.parametrize("op", [msda_reference, msda_gather, multi_scale_deformable_attention])
@pytest.mark.parametrize("empty", ["batch", "queries"])
def test_empty_batch_or_queries(op, empty):
    value, shapes, starts, locations, weights = _inputs("odd_3_levels")
    if empty == "batch":
        value, locations, weights = value[:0], locations[:0], weights[:0]
    else:
        locations, weights = locations[:, :0], weights[:, :0]
    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
    out = op(leaves[0], shapes, starts, leaves[1], leaves[2])
    assert out.shape == (locations.shape[0], locations.shape[1], value.shape[2] * value.shape[3])
    out.sum().backward()
    for leaf in leaves:
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape and not leaf.grad.any()


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_non_contiguous_inputs(backend):
    value, shapes, starts, locations, weights = _inputs("many_queries")
    expected = multi_scale_deformable_attention(
        value, shapes, starts, locations, weights, backend=backend
    )
    value_nc = (
        value.transpose(1, 2).contiguous().transpose(1, 2)
    )  # [B, S, M, D] view of [B, M, S, D]
    locations_nc = torch.stack([locations, locations], dim=-1)[..., 0]  # stride 2 in the last dim
    weights_nc = weights.permute(4, 0, 1, 2, 3).contiguous().permute(1, 2, 3, 4, 0)
    assert not (
        value_nc.is_contiguous() or locations_nc.is_contiguous() or weights_nc.is_contiguous()
    )
    got = multi_scale_deformable_attention(
        value_nc, shapes, starts, locations_nc, weights_nc, backend=backend
    )
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("op", [msda_reference, msda_gather, multi_scale_deformable_attention])
def test_bad_inputs_give_clear_errors(op):
    value, shapes, starts, locations, weights = _inputs("odd_3_levels")
    with pytest.raises(ValueError, match="`value` must be"):
        op(value[0], shapes, starts, locations, weights)
    with pytest.raises(ValueError, match="`spatial_shapes` must have an integer dtype"):
        op(value, shapes.float(), starts, locations, weights)
    with pytest.raises(ValueError, match=r"sum\(h \* w\)"):
        op(value, shapes + 1, starts, locations, weights)
    with pytest.raises(ValueError, match="`level_start_index`"):
        op(value, shapes, starts.flip(0), locations, weights)
    with pytest.raises(ValueError, match="`sampling_locations` must be"):
        op(value, shapes, starts, locations[:, :, :, :2], weights)
    with pytest.raises(ValueError, match="`attention_weights` must be"):
        op(value, shapes, starts, locations, weights[..., :1])


def test_dispatcher_backends(monkeypatch):
    value, shapes, starts, locations, weights = _inputs("odd_3_levels", dtype=torch.float32)
    assert resolve_msda_backend("auto", value, locations, weights) == "cpu"
    reference = multi_scale_deformable_attention(
        value, shapes, starts, locations, weights, backend="reference"
    )
    for backend in ("auto", "cpu"):
        out = multi_scale_deformable_attention(
            value, shapes, starts, locations, weights, backend=backend
        )
        torch.testing.assert_close(out, reference)
    with pytest.raises(ValueError, match="backend must be one of"):
        multi_scale_deformable_attention(value, shapes, starts, locations, weights, backend="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="backend='triton' cannot run"):
        multi_scale_deformable_attention(
            value, shapes, starts, locations, weights, backend="triton"
        )


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_dispatcher_mixed_and_half_dtypes(backend):
    value, shapes, starts, locations, weights = _inputs("many_queries", dtype=torch.float32)
    expected = msda_reference(value.double(), shapes, starts, locations.double(), weights.double())
    mixed = multi_scale_deformable_attention(
        value, shapes, starts, locations.double(), weights, backend=backend
    )
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed.double(), expected, rtol=1e-5, atol=1e-5)
    half = multi_scale_deformable_attention(
        value.bfloat16(), shapes, starts, locations, weights, backend=backend
    )
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), expected, rtol=2e-2, atol=5e-2)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python list:torch.jit.TracerWarning")
def test_tracing_uses_reference_path():
    value, shapes, starts, locations, weights = _inputs("odd_3_levels", dtype=torch.float32)

    def fn(v, loc, w):
        return multi_scale_deformable_attention(v, shapes, starts, loc, w, backend="cpu")

    traced = torch.jit.trace(fn, (value, locations, weights), check_trace=False)
    graph = str(traced.graph)
    assert "grid_sampler" in graph and "embedding_bag" not in graph
    torch.testing.assert_close(traced(value, locations, weights), fn(value, locations, weights))


def test_module_init_and_names():
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention(embed_dim=32, num_heads=8, num_levels=2, num_points=3)
    names = [n for n, _ in layer.named_parameters()]
    assert names == [
        f"{module}.{p}"
        for module in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
        for p in ("weight", "bias")
    ]
    assert layer.sampling_offsets.weight.shape == (8 * 2 * 3 * 2, 32)
    assert not layer.sampling_offsets.weight.any()
    # Head h points along angle 2*pi*h/8, scaled so the larger |component| is 1, times (point + 1).
    directions = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]]
    )
    expected = directions[:, None, None, :] * torch.arange(1, 4).view(1, 1, 3, 1)
    expected = expected.expand(8, 2, 3, 2).float()
    torch.testing.assert_close(
        layer.sampling_offsets.bias.view(8, 2, 3, 2), expected, atol=1e-5, rtol=0
    )
    assert not layer.attention_weights.weight.any() and not layer.attention_weights.bias.any()
    bound = math.sqrt(6.0 / (32 + 32))  # xavier-uniform
    for proj in (layer.value_proj, layer.output_proj):
        assert not proj.bias.any()
        assert proj.weight.abs().max() <= bound and proj.weight.std() > bound / 3
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDeformableAttention(embed_dim=30, num_heads=8)
    with pytest.raises(ValueError, match="backend"):
        MultiScaleDeformableAttention(embed_dim=32, backend="gpu")


def _identity_layer(num_levels: int, num_points: int, offset_xy: tuple[float, float]):
    """A layer whose points all sit at reference + offset, with uniform attention and identity projections."""
    dim, heads = 4, 2
    layer = MultiScaleDeformableAttention(
        embed_dim=dim, num_heads=heads, num_levels=num_levels, num_points=num_points
    )
    with torch.no_grad():
        layer.sampling_offsets.bias.copy_(
            torch.tensor(offset_xy).repeat(heads * num_levels * num_points)
        )
        for proj in (layer.value_proj, layer.output_proj):
            proj.weight.copy_(torch.eye(dim))
    return layer


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_module_forward_2d_reference_points(backend):
    sizes = [(3, 4), (2, 2)]
    shapes, starts = _level_tensors(sizes)
    layer = _identity_layer(
        num_levels=2, num_points=2, offset_xy=(1.0, 0.0)
    )  # one pixel to the right
    layer.backend = backend
    value = torch.randn(1, 16, 4)
    # Reference point at the centre of pixel (row 1, col 1) of level 0 and (row 0, col 0) of level 1.
    reference = torch.tensor([[[[1.5 / 4, 1.5 / 3], [0.5 / 2, 0.5 / 2]]]])
    out = layer(torch.zeros(1, 1, 4), value, reference, shapes, starts)
    # Offsets are in pixels of each level: the samples are pixel (1, 2) of level 0 and (0, 1) of level 1.
    expected = 0.5 * (value[0, 1 * 4 + 2] + value[0, 12 + 0 * 2 + 1])
    torch.testing.assert_close(out[0, 0], expected)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_module_forward_4d_reference_boxes(backend):
    sizes = [(4, 4)]
    shapes, starts = _level_tensors(sizes)
    layer = _identity_layer(num_levels=1, num_points=2, offset_xy=(1.0, 0.0))
    layer.backend = backend
    value = torch.randn(1, 16, 4)
    # Box centred on pixel (row 2, col 1) with width 2 / 4: an offset of 1 moves x by
    # 1 / P * w * 0.5 = 1 / 2 * 2 / 4 * 0.5 = 1 / 8, half a pixel: halfway between columns 1 and 2.
    boxes = torch.tensor([[[[1.5 / 4, 2.5 / 4, 2 / 4, 1.0]]]])
    out = layer(torch.zeros(1, 1, 4), value, boxes, shapes, starts)
    expected = 0.5 * (value[0, 2 * 4 + 1] + value[0, 2 * 4 + 2])
    torch.testing.assert_close(out[0, 0], expected)
    with pytest.raises(ValueError, match="reference_points"):
        layer(torch.zeros(1, 1, 4), value, boxes[..., :3], shapes, starts)


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_sampling_locations_follow_the_formula_per_point(ref_dim, monkeypatch):
    """Every (batch, query, head, level, point) location is ref + offset / (w, h) per level, or
    for boxes centre + offset / P * (w, h) / 2, whatever the memory layout the module computes in
    (checked element by element on odd level sizes, 2 images, 3 heads, 3 points)."""
    import mrdetr.ops.msda.module as module

    torch.manual_seed(0)
    sizes = [(5, 7), (3, 2)]
    shapes, starts = _level_tensors(sizes)
    heads, levels, points, dim = 3, 2, 3, 6
    layer = MultiScaleDeformableAttention(
        embed_dim=dim, num_heads=heads, num_levels=levels, num_points=points
    )
    with torch.no_grad():
        layer.sampling_offsets.weight.normal_()
    captured = {}

    def capture(value, spatial_shapes, level_start_index, locations, weights, backend):
        captured["locations"] = locations
        return torch.zeros(value.shape[0], locations.shape[1], dim)

    monkeypatch.setattr(module, "multi_scale_deformable_attention", capture)
    query = torch.randn(2, 4, dim)
    reference = torch.rand(2, 4, levels, ref_dim)
    layer(query, torch.randn(2, 5 * 7 + 3 * 2, dim), reference, shapes, starts)
    offsets = layer.sampling_offsets(query).view(2, 4, heads, levels, points, 2)
    locations = captured["locations"]
    assert locations.shape == (2, 4, heads, levels, points, 2)
    for b, q, m, lvl, p in itertools.product(
        range(2), range(4), range(heads), range(levels), range(points)
    ):
        h, w = sizes[lvl]
        ref, off = reference[b, q, lvl], offsets[b, q, m, lvl, p]
        if ref_dim == 2:
            expected = ref + off / torch.tensor([w, h])
        else:
            expected = ref[:2] + off / points * ref[2:] * 0.5
        torch.testing.assert_close(locations[b, q, m, lvl, p], expected, rtol=1e-6, atol=1e-7)


def test_module_padding_mask_and_backend_switch():
    torch.manual_seed(0)
    sizes = [(4, 5), (2, 3)]
    shapes, starts = _level_tensors(sizes)
    layer = MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=2, num_points=3)
    with torch.no_grad():  # non-trivial offsets and attention
        for p in (layer.sampling_offsets.weight, layer.attention_weights.weight):
            p.normal_(std=0.5)
    query, value = torch.randn(2, 7, 16), torch.randn(2, 26, 16)
    reference = torch.rand(2, 7, 2, 2)
    mask = torch.zeros(2, 26, dtype=torch.bool)
    mask[1, 15:] = True
    layer.backend = "reference"
    expected = layer(query, value, reference, shapes, starts, mask)
    changed = value.clone()
    changed[1, 15:] = 1e3
    torch.testing.assert_close(layer(query, changed, reference, shapes, starts, mask), expected)
    layer.backend = "cpu"
    torch.testing.assert_close(layer(query, changed, reference, shapes, starts, mask), expected)
    # the module output is the projected sample only (no residual): zero output_proj -> zero output
    with torch.no_grad():
        layer.output_proj.weight.zero_()
    assert not layer(query, value, reference, shapes, starts).any()


def test_module_gradients_reach_every_parameter():
    torch.manual_seed(0)
    shapes, starts = _level_tensors([(3, 3), (2, 2)])
    layer = MultiScaleDeformableAttention(
        embed_dim=8, num_heads=2, num_levels=2, num_points=2, backend="cpu"
    )
    out = layer(torch.randn(1, 5, 8), torch.randn(1, 13, 8), torch.rand(1, 5, 2, 4), shapes, starts)
    out.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reference_matches_grid_sample_identity():
    """Locations at pixel centres reproduce the value map exactly (align_corners=False convention)."""
    h, w = 3, 4
    shapes, starts = _level_tensors([(h, w)])
    value = torch.randn(1, h * w, 1, 2, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = (
        torch.stack([(xs + 0.5) / w, (ys + 0.5) / h], dim=-1).view(1, h * w, 1, 1, 1, 2).double()
    )
    weights = torch.ones(1, h * w, 1, 1, 1, dtype=torch.float64)
    for op in (msda_reference, msda_gather):
        out = op(value, shapes, starts, centres, weights)
        torch.testing.assert_close(out, value.view(1, h * w, 2))
    # and the reference agrees with a direct grid_sample call
    grid = (2 * centres - 1).view(1, h * w, 1, 2)
    direct = F.grid_sample(value.view(1, h, w, 2).permute(0, 3, 1, 2), grid, align_corners=False)
    torch.testing.assert_close(direct[0, :, :, 0].t(), value[0, :, 0])


def test_gather_partial_requires_grad():
    """Only the locations (or only the value) need a gradient: the other branch is skipped."""
    value, shapes, starts, locations, weights = _inputs("many_queries", seed=3)
    grad_out = torch.randn(
        value.shape[0], locations.shape[1], value.shape[2] * value.shape[3], dtype=value.dtype
    )
    expected = _run(msda_reference, value, shapes, starts, locations, weights, grad_out)
    loc = locations.clone().requires_grad_()
    msda_gather(value, shapes, starts, loc, weights).backward(grad_out)
    torch.testing.assert_close(loc.grad, expected[2])
    val = value.clone().requires_grad_()
    msda_gather(val, shapes, starts, locations, weights).backward(grad_out)
    torch.testing.assert_close(val.grad, expected[1])


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_module_under_cpu_autocast(backend):
    torch.manual_seed(0)
    shapes, starts = _level_tensors([(4, 5), (2, 3)])
    layer = MultiScaleDeformableAttention(
        embed_dim=16, num_heads=2, num_levels=2, num_points=2, backend=backend
    )
    query, value, reference = torch.randn(1, 6, 16), torch.randn(1, 26, 16), torch.rand(1, 6, 2, 2)
    expected = layer(query, value, reference, shapes, starts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(query, value, reference, shapes, starts)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=5e-2, atol=5e-2)
