"""Gather-based multi-scale deformable attention: the fast portable (CPU) backend.

Instead of one ``grid_sample`` per level, all levels are sampled at once from a value table whose
levels are padded by one zero pixel on every side, so a bilinear corner outside its map reads zero
and needs no mask (points further out are clamped to the border ring, where every corner reads zero):

- forward: each sampling point gives 4 corner rows of the padded table [B*S'*M, D] with weights
  ``attention * bilinear``; one ``F.embedding_bag(mode="sum")`` gathers and sums the B*Q*M bags of
  4*L*P rows without materialising the sampled values;
- backward (hand written; only the inputs are saved and the geometry is recomputed, nothing of
  size B*Q*M*L*P*D is kept): chunked gathers of the corner rows give the dot products
  <grad_out, corner value> for the location and attention gradients; the value gradient is the
  transposed gather, either (many points per value row, e.g. the encoder) 4 ``embedding_bag`` sums
  over the points sorted by cell (one sort of B*Q*M*L*P keys) and a shifted sum of the 4 corner
  planes, or (few points, e.g. the decoder) a chunked ``index_add_`` of every corner's share.

Pixel coordinates are computed op for op as the CPU ``grid_sample`` computes them, so the result
equals the reference to float rounding, including which cell a point on a pixel centre falls in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .checks import check_msda_inputs, empty_msda_output

__all__ = ["msda_gather"]

# Elements of the [chunk, 4*K, D] buffer of the chunked backward gather/scatter (64 MB in
# float32): large enough that few parallel regions run (each can stall for a scheduler time slice
# when the CPU is shared), small enough to bound the memory.
_BACKWARD_CHUNK_ELEMENTS = 1 << 24
_INT32_MAX = 2**31 - 1
# The value gradient sorts the points by cell when there are at least this many corners per cell
# row (large query counts, e.g. the encoder); below it a chunked index_add_ is cheaper.
_SORT_MIN_CORNERS_PER_ROW = 2.0
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class _Layout:
    """Per-call constants. Points are handled per bag (batch, query, head), K = L*P points a bag,
    in planar layouts: [N, 2 (x, y), K] for coordinates and [N, 4 (corner), K] for corners, so
    every elementwise op runs over contiguous rows of K.

    The padded table holds each level as (h+2) x (w+2) rows (one zero ring); the cell table indexes
    cells by their top-left corner, (h+1) x (w+1) per level. A row of either table is
    ``((b * tokens + level_start + y * width + x) * M + m)``.
    """

    def __init__(
        self, sizes: list[tuple[int, int]], batch: int, heads: int, points: int, like: Tensor
    ):
        device, dtype = like.device, like.dtype
        self.sizes = sizes
        self.batch, self.heads, self.points = batch, heads, points
        padded = [(h + 2) * (w + 2) for h, w in sizes]
        cells = [(h + 1) * (w + 1) for h, w in sizes]
        self.padded_tokens, self.cell_tokens = sum(padded), sum(cells)
        largest = batch * max(self.padded_tokens, self.cell_tokens) * heads
        idx = torch.int32 if largest <= _INT32_MAX else torch.int64
        self.index_dtype = idx

        def per_point(rows: list[list[int]] | list[int], dtype_: torch.dtype) -> Tensor:
            # per-level values [L] or [R, L] -> [K] or [R, K] (every point of a level repeats it)
            t = torch.tensor(rows, dtype=dtype_, device=device)
            return t.repeat_interleave(points, dim=-1).contiguous()

        self.size_xy = per_point([[w for _, w in sizes], [h for h, _ in sizes]], dtype)  # [2, K]
        self.half_size_xy = self.size_xy * 0.5
        self.last_xy = self.size_xy - 1
        self.padded_row_stride = per_point([(w + 2) * heads for _, w in sizes], idx)  # [K]
        self.cell_row_stride = per_point([(w + 1) * heads for _, w in sizes], idx)
        # [4, K]: corner c = 2 * dy + dx relative to the top-left corner in the padded table
        self.corner_offsets = per_point(
            [
                [dy * (w + 2) * heads + dx * heads for _, w in sizes]
                for dy in (0, 1)
                for dx in (0, 1)
            ],
            idx,
        )
        self.padded_base = self._base(padded, device)
        self.cell_base = self._base(cells, device)

    def _base(self, level_rows: list[int], device: torch.device) -> Tensor:
        """[B, 1, M, K] first table row of every (batch, head, level) block."""
        starts = torch.tensor([sum(level_rows[:i]) for i in range(len(level_rows))], device=device)
        b = torch.arange(self.batch, device=device).view(-1, 1, 1) * sum(level_rows)
        m = torch.arange(self.heads, device=device).view(1, -1, 1)
        base = ((b + starts.view(1, 1, -1)) * self.heads + m).repeat_interleave(self.points, dim=-1)
        return base.to(self.index_dtype).unsqueeze(1).contiguous()


def _geometry(
    locations: Tensor, layout: _Layout, with_inside: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Bilinear cells of all points.

    Args:
        locations: [B, Q, M, L, P, 2] normalised (x, y).

    Returns:
        cell: [N, 2, K] (x, y) of the top-left corner + 1, in [0, w] x [0, h] (index dtype).
        frac: [N, 2, K] position inside the cell.
        inside: [N, 2, K] 1 where the pixel coordinate was not clamped (its gradient flows), or None.
    """
    num_points = layout.size_xy.shape[-1]
    planar = locations.reshape(-1, num_points, 2).transpose(1, 2)
    # The grid_sample grid (2 * loc - 1) and its unnormalisation, op for op, in place.
    pixel = torch.mul(planar, 2, out=planar.new_empty(planar.shape))
    pixel.sub_(1).add_(1).mul_(layout.half_size_xy).sub_(0.5)
    inside = None
    if with_inside:
        inside = ((pixel >= -1) & (pixel < layout.size_xy)).to(pixel.dtype)
    pixel.clamp_(min=-1)
    torch.minimum(pixel, layout.size_xy, out=pixel)
    floor = pixel.floor()
    torch.minimum(floor, layout.last_xy, out=floor)
    frac = pixel.sub_(floor)  # NaN at NaN locations, which makes the output NaN like grid_sample
    cell = floor.nan_to_num_(nan=-1.0).add_(1).to(layout.index_dtype)
    return cell, frac, inside


def _table_rows(cell: Tensor, base: Tensor, row_stride: Tensor, layout: _Layout) -> Tensor:
    """[N, K] table row of every point's top-left corner."""
    rows = cell[:, 1] * row_stride
    rows.add_(cell[:, 0], alpha=layout.heads)
    rows.view(layout.batch, -1, layout.heads, rows.shape[-1]).add_(base)
    return rows


def _padded_values(value: Tensor, layout: _Layout) -> Tensor:
    """[B, S', M, D] value with every level surrounded by one zero pixel."""
    batch, _, heads, head_dim = value.shape
    padded = value.new_zeros(batch, layout.padded_tokens, heads, head_dim)
    start = padded_start = 0
    for h, w in layout.sizes:
        target = padded[:, padded_start : padded_start + (h + 2) * (w + 2)]
        target = target.view(batch, h + 2, w + 2, heads, head_dim)
        target[:, 1:-1, 1:-1] = value[:, start : start + h * w].view(batch, h, w, heads, head_dim)
        start += h * w
        padded_start += (h + 2) * (w + 2)
    return padded


def _corner_weights(frac: Tensor, attention: Tensor) -> list[Tensor]:
    """4 x [N, K] attention * bilinear weight of corner c = 2 * dy + dx."""
    fx, fy = frac[:, 0], frac[:, 1]
    wy1 = fy * attention
    wy0 = (1 - fy) * attention
    wx0 = 1 - fx
    return [wy0 * wx0, wy0 * fx, wy1 * wx0, wy1 * fx]


def _value_grad(
    keys: Tensor, weights: list[Tensor], grad_bags: Tensor, layout: _Layout, tokens: int
) -> Tensor:
    """Transposed gather: [B, S, M, D] value gradient from the points sorted by their cell."""
    batch, heads, head_dim = layout.batch, layout.heads, grad_bags.shape[1]
    flat_keys = keys.view(-1)
    _, order = torch.sort(flat_keys, stable=True)
    bags = torch.div(order, keys.shape[1], rounding_mode="floor")
    counts = torch.bincount(flat_keys, minlength=batch * layout.cell_tokens * heads)
    offsets = torch.cumsum(counts, 0) - counts
    planes = [
        F.embedding_bag(
            bags,
            grad_bags,
            offsets,
            per_sample_weights=w.view(-1).index_select(0, order),
            mode="sum",
        ).view(batch, layout.cell_tokens, heads, head_dim)
        for w in weights
    ]
    grad = grad_bags.new_empty(batch, tokens, heads, head_dim)
    start = cell_start = 0
    for h, w in layout.sizes:
        out = grad[:, start : start + h * w].view(batch, h, w, heads, head_dim)
        grids = [
            p[:, cell_start : cell_start + (h + 1) * (w + 1)].view(
                batch, h + 1, w + 1, heads, head_dim
            )
            for p in planes
        ]
        # Cell (y + 1 - dy, x + 1 - dx) reaches pixel (y, x) through its corner (dy, dx).
        torch.add(grids[0][:, 1:, 1:], grids[1][:, 1:, :-1], out=out)
        out.add_(grids[2][:, :-1, 1:]).add_(grids[3][:, :-1, :-1])
        start += h * w
        cell_start += (h + 1) * (w + 1)
    return grad


def _chunk_bags(corners: int, head_dim: int) -> int:
    return max(1, _BACKWARD_CHUNK_ELEMENTS // (corners * head_dim))


def _value_grad_scatter(
    rows: Tensor, weights: Tensor, grad_bags: Tensor, layout: _Layout, tokens: int
) -> Tensor:
    """Value gradient by chunked ``index_add_`` of every corner's contribution (few points)."""
    batch, heads, head_dim = layout.batch, layout.heads, grad_bags.shape[1]
    padded = grad_bags.new_zeros(batch * layout.padded_tokens * heads, head_dim)
    bags, corners = rows.shape
    chunk = min(bags, _chunk_bags(corners, head_dim))
    buffer = grad_bags.new_empty(chunk, corners, head_dim)  # reused: no page faults per chunk
    for start in range(0, bags, chunk):
        end = min(bags, start + chunk)
        contribution = buffer[: end - start]
        torch.mul(weights[start:end, :, None], grad_bags[start:end, None, :], out=contribution)
        padded.index_add_(0, rows[start:end].reshape(-1), contribution.view(-1, head_dim))
    padded = padded.view(batch, layout.padded_tokens, heads, head_dim)
    grad = grad_bags.new_empty(batch, tokens, heads, head_dim)
    start = padded_start = 0
    for h, w in layout.sizes:
        source = padded[:, padded_start : padded_start + (h + 2) * (w + 2)]
        source = source.view(batch, h + 2, w + 2, heads, head_dim)
        grad[:, start : start + h * w].view(batch, h, w, heads, head_dim).copy_(
            source[:, 1:-1, 1:-1]
        )
        start += h * w
        padded_start += (h + 2) * (w + 2)
    return grad


def _corner_dots(table: Tensor, rows: Tensor, grad_bags: Tensor) -> Tensor:
    """[N, 4*K] dot products <grad_out of the bag, value row> for every corner row [N, 4*K]."""
    bags, corners = rows.shape
    head_dim = grad_bags.shape[1]
    dots = grad_bags.new_empty(bags, corners)
    chunk = min(bags, _chunk_bags(corners, head_dim))
    buffer = table.new_empty(chunk * corners, head_dim)  # reused: no page faults per chunk
    for start in range(0, bags, chunk):
        end = min(bags, start + chunk)
        gathered = buffer[: (end - start) * corners]
        torch.index_select(table, 0, rows[start:end].reshape(-1), out=gathered)
        gathered = gathered.view(end - start, corners, head_dim)
        torch.bmm(gathered, grad_bags[start:end, :, None], out=dots[start:end, :, None])
    return dots


def _sample(
    value: Tensor, sizes: list[tuple[int, int]], locations: Tensor, attention: Tensor
) -> tuple[Tensor, Tensor]:
    """Forward gather: the padded value table and the [B, Q, M*D] output.

    The point geometry and corner weights are computed in ``locations.dtype``; the table, the
    per-sample weights and the output are in ``value.dtype`` (``embedding_bag`` accumulates a
    bag's sum in float32 for float16/bfloat16 tables, so a low-precision table is only rounded once,
    at the output).
    """
    batch, _, heads, head_dim = value.shape
    queries, points = locations.shape[1], locations.shape[4]
    layout = _Layout(sizes, batch, heads, points, locations)
    bags = batch * queries * heads
    cell, frac, _ = _geometry(locations, layout, with_inside=False)
    top_left = _table_rows(cell, layout.padded_base, layout.padded_row_stride, layout)
    rows = top_left[:, None, :] + layout.corner_offsets  # [N, 4, K]
    weights = torch.stack(_corner_weights(frac, attention.reshape(bags, -1)), dim=1)
    padded = _padded_values(value, layout)
    out = F.embedding_bag(
        rows.view(bags, -1),
        padded.view(-1, head_dim),
        per_sample_weights=weights.view(bags, -1).to(value.dtype),
        mode="sum",
    )
    return padded, out.view(batch, queries, heads * head_dim)


class _GatherMSDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, sizes, sampling_locations, attention_weights):
        tokens = value.shape[1]
        padded, out = _sample(value, sizes, sampling_locations, attention_weights)
        ctx.sizes, ctx.tokens = sizes, tokens
        # The padded table (a few % larger on big maps) replaces the value: no rebuild in backward.
        ctx.save_for_backward(padded, sampling_locations, attention_weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        padded, sampling_locations, attention_weights = ctx.saved_tensors
        batch, _, heads, head_dim = padded.shape
        tokens, points = ctx.tokens, sampling_locations.shape[4]
        # The geometry and the value gradient's sums are in the locations' dtype (float32 for a
        # bf16 table); the corner dots read the table in its own dtype.
        layout = _Layout(ctx.sizes, batch, heads, points, sampling_locations)
        bags = grad_output.numel() // head_dim
        attention = attention_weights.reshape(bags, -1)
        cell, frac, inside = _geometry(sampling_locations, layout, with_inside=True)
        top_left = _table_rows(cell, layout.padded_base, layout.padded_row_stride, layout)
        rows = (top_left[:, None, :] + layout.corner_offsets).view(bags, -1)  # [N, 4*K]
        grad_bags = grad_output.reshape(bags, head_dim).to(sampling_locations.dtype)

        grad_value = None
        if ctx.needs_input_grad[0]:
            weights = _corner_weights(frac, attention)
            if (
                rows.numel()
                >= _SORT_MIN_CORNERS_PER_ROW * layout.batch * layout.cell_tokens * heads
            ):
                keys = _table_rows(cell, layout.cell_base, layout.cell_row_stride, layout)
                grad_value = _value_grad(keys, weights, grad_bags, layout, tokens)
            else:
                weights = torch.stack(weights, dim=1).view(bags, -1)
                grad_value = _value_grad_scatter(rows, weights, grad_bags, layout, tokens)
            grad_value = grad_value.to(padded.dtype)
        if not (ctx.needs_input_grad[2] or ctx.needs_input_grad[3]):
            return grad_value, None, None, None

        dots = _corner_dots(padded.view(-1, head_dim), rows, grad_bags.to(padded.dtype))
        d00, d01, d10, d11 = dots.view(bags, 4, -1).unbind(1)
        fx, fy = frac[:, 0], frac[:, 1]
        wx0, wy0 = 1 - fx, 1 - fy
        along_x0 = torch.addcmul(d00 * wy0, d10, fy)  # corners with dx = 0, interpolated along y
        along_x1 = torch.addcmul(d01 * wy0, d11, fy)
        along_y0 = torch.addcmul(d00 * wx0, d01, fx)  # corners with dy = 0, interpolated along x
        along_y1 = torch.addcmul(d10 * wx0, d11, fx)
        grad_attention = torch.addcmul(along_x0 * wx0, along_x1, fx)
        grad_planar = torch.stack(
            (along_x1 - along_x0, along_y1 - along_y0), dim=1
        )  # d out / d frac
        grad_planar.mul_(attention[:, None]).mul_(layout.size_xy).mul_(inside)
        grad_locations = grad_planar.transpose(1, 2).reshape(sampling_locations.shape)
        return grad_value, None, grad_locations, grad_attention.view(attention_weights.shape)


def _records_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def msda_gather(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention by one gather for all levels (same contract as the reference).

    A float16/bfloat16 ``value`` that autograd does not track (inference) stays in its storage dtype:
    the point geometry and bilinear weights are computed in float32 (from the locations, whatever
    their dtype), the gather reads the low-precision table and sums in float32, and the output is
    rounded once to ``value.dtype``. When a gradient is recorded, a bfloat16 table is kept too (its
    corner dot products with the output gradient are bf16 matrix-vector products with float32
    accumulation; the geometry and the value gradient's sums are float32, the value gradient is
    rounded once to bf16), and float16 inputs are computed in float32 (as the official kernel does),
    the output cast back to ``value.dtype``.

    Args:
        value: [B, S, M, D].
        spatial_shapes: [L, 2] int64 (h, w).
        level_start_index: [L] int64.
        sampling_locations: [B, Q, M, L, P, 2] normalised (x, y).
        attention_weights: [B, Q, M, L, P].

    Returns:
        [B, Q, M*D], equal to :func:`msda_reference` to float rounding; differentiable in value,
        sampling_locations and attention_weights (once: no double backward).

    Raises:
        ValueError: for inconsistent shapes, dtypes or level sizes.
    """
    shapes = check_msda_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    if shapes.batch == 0 or shapes.queries == 0:
        return empty_msda_output(value, sampling_locations, attention_weights)
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    dtype = torch.promote_types(dtype, attention_weights.dtype)
    if dtype in _LOW_PRECISION:
        dtype = torch.float32
    if value.dtype in _LOW_PRECISION and not _records_grad(
        value, sampling_locations, attention_weights
    ):
        # Inference: the table stays in its low-precision storage (half the bytes gathered).
        _, out = _sample(
            value.contiguous(),
            shapes.level_sizes,
            sampling_locations.to(dtype),
            attention_weights.to(dtype),
        )
        return out
    # Training keeps a bf16 table (float32 range); float16 is computed in float32, since its corner
    # dots with a loss-scaled gradient could overflow; other inputs in their promoted dtype.
    table = torch.bfloat16 if value.dtype == torch.bfloat16 else dtype
    out = _GatherMSDA.apply(
        value.to(table).contiguous(),
        shapes.level_sizes,
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
    )
    return out.to(value.dtype)
