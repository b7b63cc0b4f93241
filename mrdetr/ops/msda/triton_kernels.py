"""Triton kernels for multi-scale deformable attention (forward and backward).

One program handles a block of queries for one (batch, head) pair and all D channels of that head:
it walks the L levels and P points, computes the 4 bilinear corners exactly as ``grid_sample``
(zero padding, ``align_corners=False``), loads the corner rows of the [B, S, M, D] value and
accumulates in float32 registers. The backward recomputes the corners and

- scatters ``attention * bilinear * grad_out`` into a float32 value gradient with atomic adds,
- writes the attention and location gradients of its points directly (a program owns all channels
  of its points, so no atomics are needed there).

Inputs may be float32, float16 or bfloat16 (each tensor its own dtype); accumulation is float32 and
the output has ``value.dtype``. Head dims that are not a power of two are padded with masks.
Importing this module never requires Triton; :func:`triton_unavailable_reason` says why the
kernels cannot run. Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (slowly), which is
how the tests check them without a GPU.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .checks import check_msda_inputs, empty_msda_output

try:  # Triton is optional: everything else in mrdetr.ops works without it.
    import triton
    import triton.language as tl
except Exception as error:  # ImportError, or a broken install raising at import
    triton = None
    tl = None
    _TRITON_IMPORT_ERROR: Exception | None = error
else:
    _TRITON_IMPORT_ERROR = None

__all__ = ["msda_triton", "triton_unavailable_reason"]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 1024
# Elements of the [BLOCK_Q, BLOCK_D] register tile of one program.
_TILE_ELEMENTS = 2048
_MIN_BLOCK_Q = 16
_MAX_BLOCK_Q = 64


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reason(
    value: Tensor, sampling_locations: Tensor | None = None, attention_weights: Tensor | None = None
) -> str | None:
    """Why the Triton kernels cannot run these inputs, or None when they can."""
    if triton is None:
        return f"triton is not importable ({_TRITON_IMPORT_ERROR!r})"
    if value.device.type != "cuda" and not _interpreting():
        return f"tensors are on {value.device.type}, the kernels need CUDA tensors (or TRITON_INTERPRET=1)"
    for name, tensor in (
        ("value", value),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if tensor is not None and tensor.dtype not in SUPPORTED_DTYPES:
            return f"`{name}` has dtype {tensor.dtype}; the kernels support {SUPPORTED_DTYPES}"
        if tensor is not None and tensor.device != value.device:
            return f"`{name}` is on {tensor.device} but `value` is on {value.device}"
    if value.dim() == 4 and value.shape[-1] > MAX_HEAD_DIM:
        return f"head dim {value.shape[-1]} exceeds the supported maximum {MAX_HEAD_DIM}"
    return None


if triton is not None:

    @triton.jit
    def _corner(row0, xi, yi, h, w, heads, head_dim, d, q_mask, d_mask):
        """[BLOCK_Q, BLOCK_D] element offsets (from the head's first channel) and mask of one
        bilinear corner; corners outside the map are masked (zero padding)."""
        valid = q_mask & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        row = (row0 + (yi * w + xi).to(tl.int64)) * heads
        return row[:, None] * head_dim + d[None, :], valid[:, None] & d_mask[None, :]

    @triton.jit
    def _cell(loc, size):
        """Top-left corner (int) and position inside the cell of a location in [0, 1]: the
        ``grid_sample`` unnormalisation (align_corners=False). Far-away points are clamped so the
        int conversion stays in range (their corners are all masked); NaN stays in the fraction,
        so a NaN location gives NaN as in ``grid_sample``, and reads no memory."""
        x = ((2.0 * loc - 1.0) + 1.0) * (size * 0.5) - 0.5
        is_number = x == x
        x = tl.where(is_number, tl.minimum(tl.maximum(x, -2.0), size + 1.0), -2.0)
        x0 = tl.floor(x)
        frac = tl.where(is_number, x - x0, float("nan"))
        return x0.to(tl.int32), frac

    @triton.jit
    def _msda_forward_kernel(
        value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
        tokens, queries, heads, head_dim, levels, points,
        BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        bm = tl.program_id(1)
        b = bm // heads
        m = bm % heads
        d = tl.arange(0, BLOCK_D)
        q_mask = q < queries
        d_mask = d < head_dim
        bag = (b * queries + q).to(tl.int64) * heads + m  # [BLOCK_Q] (batch, query, head)
        value_base = value_ptr + m * head_dim
        acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
        for level in range(levels):
            h = tl.load(shapes_ptr + 2 * level).to(tl.int32)
            w = tl.load(shapes_ptr + 2 * level + 1).to(tl.int32)
            row0 = b.to(tl.int64) * tokens + tl.load(starts_ptr + level).to(tl.int64)
            for point in range(points):
                sample = bag * (levels * points) + level * points + point
                lx = tl.load(loc_ptr + 2 * sample, mask=q_mask, other=0.0).to(tl.float32)
                ly = tl.load(loc_ptr + 2 * sample + 1, mask=q_mask, other=0.0).to(tl.float32)
                a = tl.load(attn_ptr + sample, mask=q_mask, other=0.0).to(tl.float32)
                x0, fx = _cell(lx, w.to(tl.float32))
                y0, fy = _cell(ly, h.to(tl.float32))
                for dy in tl.static_range(2):
                    for dx in tl.static_range(2):
                        wy = (1 - dy) + (
                            2 * dy - 1
                        ) * fy  # 1 - fy for the upper corner, fy for the lower
                        wx = (1 - dx) + (2 * dx - 1) * fx
                        offsets, mask = _corner(
                            row0, x0 + dx, y0 + dy, h, w, heads, head_dim, d, q_mask, d_mask
                        )
                        v = tl.load(value_base + offsets, mask=mask, other=0.0).to(tl.float32)
                        acc += (a * wy * wx)[:, None] * v
        out_ptrs = out_ptr + bag[:, None] * head_dim + d[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask[None, :])

    @triton.jit
    def _msda_backward_kernel(
        value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
        grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
        tokens, queries, heads, head_dim, levels, points,
        BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        bm = tl.program_id(1)
        b = bm // heads
        m = bm % heads
        d = tl.arange(0, BLOCK_D)
        q_mask = q < queries
        d_mask = d < head_dim
        bag = (b * queries + q).to(tl.int64) * heads + m
        tile_mask = q_mask[:, None] & d_mask[None, :]
        g = tl.load(grad_out_ptr + bag[:, None] * head_dim + d[None, :], mask=tile_mask, other=0.0)
        g = g.to(tl.float32)
        value_base = value_ptr + m * head_dim
        grad_value_base = grad_value_ptr + m * head_dim
        for level in range(levels):
            h = tl.load(shapes_ptr + 2 * level).to(tl.int32)
            w = tl.load(shapes_ptr + 2 * level + 1).to(tl.int32)
            hf = h.to(tl.float32)
            wf = w.to(tl.float32)
            row0 = b.to(tl.int64) * tokens + tl.load(starts_ptr + level).to(tl.int64)
            for point in range(points):
                sample = bag * (levels * points) + level * points + point
                lx = tl.load(loc_ptr + 2 * sample, mask=q_mask, other=0.0).to(tl.float32)
                ly = tl.load(loc_ptr + 2 * sample + 1, mask=q_mask, other=0.0).to(tl.float32)
                a = tl.load(attn_ptr + sample, mask=q_mask, other=0.0).to(tl.float32)
                x0, fx = _cell(lx, wf)
                y0, fy = _cell(ly, hf)
                grad_a = tl.zeros([BLOCK_Q], dtype=tl.float32)
                grad_fx = tl.zeros([BLOCK_Q], dtype=tl.float32)
                grad_fy = tl.zeros([BLOCK_Q], dtype=tl.float32)
                for dy in tl.static_range(2):
                    for dx in tl.static_range(2):
                        wy = (1 - dy) + (2 * dy - 1) * fy
                        wx = (1 - dx) + (2 * dx - 1) * fx
                        offsets, mask = _corner(
                            row0, x0 + dx, y0 + dy, h, w, heads, head_dim, d, q_mask, d_mask
                        )
                        v = tl.load(value_base + offsets, mask=mask, other=0.0).to(tl.float32)
                        dot = tl.sum(v * g, axis=1)
                        grad_a += wy * wx * dot
                        grad_fx += (2 * dx - 1) * wy * dot  # d(wx)/d(fx) = -1 or +1
                        grad_fy += (2 * dy - 1) * wx * dot
                        tl.atomic_add(
                            grad_value_base + offsets, (a * wy * wx)[:, None] * g, mask=mask
                        )
                tl.store(grad_attn_ptr + sample, grad_a, mask=q_mask)
                tl.store(grad_loc_ptr + 2 * sample, grad_fx * a * wf, mask=q_mask)
                tl.store(grad_loc_ptr + 2 * sample + 1, grad_fy * a * hf, mask=q_mask)


def _launch_config(queries: int, programs_per_block: int, head_dim: int, device: torch.device):
    block_d = triton.next_power_of_2(head_dim)
    block_q = max(1, min(_MAX_BLOCK_Q, _TILE_ELEMENTS // block_d))
    if device.type == "cuda":
        # Small query counts (decoder) need smaller blocks to fill the GPU.
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        while (
            block_q > _MIN_BLOCK_Q and triton.cdiv(queries, block_q) * programs_per_block < 4 * sms
        ):
            block_q //= 2
    num_warps = 4 if block_q * block_d >= 1024 else 2
    grid = (triton.cdiv(queries, block_q), programs_per_block)
    return grid, block_q, block_d, num_warps


class _TritonMSDA(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    ):
        batch, tokens, heads, head_dim = value.shape
        _, queries, _, levels, points, _ = sampling_locations.shape
        out = value.new_empty(batch, queries, heads * head_dim)
        grid, block_q, block_d, num_warps = _launch_config(
            queries, batch * heads, head_dim, value.device
        )
        _msda_forward_kernel[grid](
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, out,
            tokens, queries, heads, head_dim, levels, points,
            BLOCK_Q=block_q, BLOCK_D=block_d, num_warps=num_warps,
        )  # fmt: skip
        ctx.save_for_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = (
            ctx.saved_tensors
        )
        batch, tokens, heads, head_dim = value.shape
        _, queries, _, levels, points, _ = sampling_locations.shape
        grad_output = grad_output.contiguous()
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_loc = torch.empty(sampling_locations.shape, dtype=torch.float32, device=value.device)
        grad_attn = torch.empty(attention_weights.shape, dtype=torch.float32, device=value.device)
        grid, block_q, block_d, num_warps = _launch_config(
            queries, batch * heads, head_dim, value.device
        )
        _msda_backward_kernel[grid](
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output,
            grad_value, grad_loc, grad_attn,
            tokens, queries, heads, head_dim, levels, points,
            BLOCK_Q=block_q, BLOCK_D=block_d, num_warps=num_warps,
        )  # fmt: skip
        return (
            grad_value.to(value.dtype),
            None,
            None,
            grad_loc.to(sampling_locations.dtype),
            grad_attn.to(attention_weights.dtype),
        )


def msda_triton(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with the Triton kernels (same contract as the reference).

    Args:
        value: [B, S, M, D] float32/float16/bfloat16.
        spatial_shapes: [L, 2] int64 (h, w).
        level_start_index: [L] int64.
        sampling_locations: [B, Q, M, L, P, 2] normalised (x, y), any supported float dtype.
        attention_weights: [B, Q, M, L, P], any supported float dtype.

    Returns:
        [B, Q, M*D] in ``value.dtype``; differentiable once in value, locations and weights.

    Raises:
        ValueError: inconsistent shapes, dtypes or level sizes (checked before any launch).
        RuntimeError: Triton cannot run these inputs (not importable, CPU tensors without the
            interpreter, unsupported dtype or head dim).
    """
    shapes = check_msda_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    reason = triton_unavailable_reason(value, sampling_locations, attention_weights)
    if reason is not None:
        raise RuntimeError(f"msda_triton cannot run: {reason}")
    if shapes.batch == 0 or shapes.queries == 0:
        return empty_msda_output(value, sampling_locations, attention_weights)
    device = value.device
    return _TritonMSDA.apply(
        value.contiguous(),
        spatial_shapes.to(device=device, dtype=torch.int64).contiguous(),
        level_start_index.to(device=device, dtype=torch.int64).contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
    )
