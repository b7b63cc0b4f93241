"""Multi-scale deformable attention: functional op, backends and the nn.Module.

- :func:`multi_scale_deformable_attention`: the op, dispatching to a backend;
- :func:`msda_reference` (per-level ``grid_sample``, the ground truth), :func:`msda_gather` (fast
  portable/CPU path), :func:`msda_triton` (Triton kernels; needs CUDA or ``TRITON_INTERPRET=1``),
  checked against the reference on first use per device and dtypes (:func:`triton_self_check`);
- :class:`MultiScaleDeformableAttention`: the layer with the official parameter names and init.
"""

from .checks import check_msda_inputs
from .dispatch import MSDA_BACKENDS, multi_scale_deformable_attention, resolve_msda_backend
from .gather import msda_gather
from .module import MultiScaleDeformableAttention
from .reference import msda_reference
from .selfcheck import clear_triton_self_check_cache, triton_self_check
from .triton_kernels import msda_triton, triton_unavailable_reason

__all__ = [
    "MSDA_BACKENDS",
    "MultiScaleDeformableAttention",
    "check_msda_inputs",
    "clear_triton_self_check_cache",
    "msda_gather",
    "msda_reference",
    "msda_triton",
    "multi_scale_deformable_attention",
    "resolve_msda_backend",
    "triton_self_check",
    "triton_unavailable_reason",
]
