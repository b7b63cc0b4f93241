"""Multi-scale deformable attention: functional op, backends and the nn.Module.

- :func:`multi_scale_deformable_attention`: the op, dispatching to a backend;
- :func:`msda_reference` (per-level ``grid_sample``, the ground truth), :func:`msda_gather` (fast
  portable/CPU path), :func:`msda_triton` (Triton kernels; needs CUDA or ``TRITON_INTERPRET=1``);
- :class:`MultiScaleDeformableAttention`: the layer with the official parameter names and init.
"""

from .checks import check_msda_inputs
from .dispatch import MSDA_BACKENDS, multi_scale_deformable_attention, resolve_msda_backend
from .gather import msda_gather
from .module import MultiScaleDeformableAttention
from .reference import msda_reference
from .triton_kernels import msda_triton, triton_unavailable_reason

__all__ = [
    "MSDA_BACKENDS",
    "MultiScaleDeformableAttention",
    "check_msda_inputs",
    "msda_gather",
    "msda_reference",
    "msda_triton",
    "multi_scale_deformable_attention",
    "resolve_msda_backend",
    "triton_unavailable_reason",
]
