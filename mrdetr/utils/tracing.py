"""Whether the code runs under a tracer or exporter, and sizes that stay symbolic there.

While ``torch.onnx.export`` (TorchScript exporter) or ``torch.jit.trace`` records a graph,
``tensor.shape[i]`` is a 0-dim int64 tensor computed from the input's shape; arithmetic on it is
recorded too. Converting it with ``int()``/``.tolist()`` or building a tensor from it with
``torch.as_tensor`` bakes the export-time value into the graph as a constant. The helpers here keep
such sizes symbolic in that mode and return plain Python ints otherwise (eager numerics unchanged).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["is_exporting", "sizes_tensor"]


def is_exporting() -> bool:
    """True inside ``torch.jit.trace``, ``torch.onnx.export`` or ``torch.export``."""
    onnx_export = getattr(torch.onnx, "is_in_onnx_export", None)
    exporting = getattr(torch.compiler, "is_exporting", None)
    return (
        torch.jit.is_tracing()
        or bool(onnx_export is not None and onnx_export())
        or bool(exporting is not None and exporting())
    )


def sizes_tensor(sizes: list[tuple[int | Tensor, int | Tensor]], device: torch.device) -> Tensor:
    """``[(h, w)]`` per level -> [L, 2] int64 tensor.

    Eager sizes are Python ints (``torch.as_tensor``); traced sizes are 0-dim tensors, stacked so
    that the result is computed in the graph from the input's shape instead of being a constant.
    """
    if sizes and isinstance(sizes[0][0], Tensor):
        rows = [torch.stack(list(row)) for row in sizes]
        return torch.stack(rows).to(device=device, dtype=torch.long)
    return torch.as_tensor(sizes, dtype=torch.long, device=device)
