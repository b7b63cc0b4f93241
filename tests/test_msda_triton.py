"""Triton MSDA kernels against the reference.

Without a GPU the kernels run in the Triton interpreter (``TRITON_INTERPRET=1``) on CPU tensors.
The interpreter is chosen when a kernel is defined, i.e. when ``mrdetr.ops.msda.triton_kernels`` is
first imported, which other tests in the same pytest process do earlier; so this module runs the
kernels in one subprocess (this file run as a script) that saves outputs and gradients, and the tests
compare them with the reference computed here. With CUDA the kernels are also checked on the GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrdetr.ops.msda import msda_reference

# name: (level sizes, batch, heads, head dim, queries, points, value/locations/weights dtypes)
F32 = (torch.float32,) * 3
CASES = {
    "odd_sizes_3_levels": ([(3, 5), (2, 2), (1, 3)], 2, 2, 6, 5, 3, F32),
    "one_level": ([(4, 7)], 1, 1, 8, 4, 2, F32),
    "five_levels": ([(5, 6), (3, 3), (2, 2), (1, 2), (1, 1)], 1, 2, 5, 3, 2, F32),
    "head_dim_32": ([(3, 4), (2, 2)], 1, 2, 32, 3, 2, F32),
    "bf16": ([(3, 5), (2, 2)], 1, 2, 8, 4, 2, (torch.bfloat16,) * 3),
    "fp16_value_fp32_points": (
        [(3, 5), (2, 2)],
        1,
        2,
        8,
        4,
        2,
        (torch.float16, torch.float32, torch.float32),
    ),
    "no_queries": ([(3, 5)], 1, 2, 8, 0, 2, F32),
}
TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def make_inputs(case: str, device: str = "cpu"):
    """Deterministic inputs of a case; locations reach outside [0, 1] (zero padding)."""
    sizes, b, m, d, q, p, dtypes = CASES[case]
    g = torch.Generator().manual_seed(len(case))
    shapes = torch.tensor(sizes, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_levels = len(sizes)
    value = torch.randn(b, int(areas.sum()), m, d, generator=g)
    locations = torch.rand(b, q, m, num_levels, p, 2, generator=g) * 1.6 - 0.3
    weights = torch.rand(b, q, m, num_levels, p, generator=g)
    grad_out = torch.randn(b, q, m * d, generator=g)
    value, locations, weights = (t.to(dt) for t, dt in zip((value, locations, weights), dtypes))
    return [
        t.to(device) for t in (value, shapes, starts, locations, weights, grad_out.to(dtypes[0]))
    ]


def run_op(op, value, shapes, starts, locations, weights, grad_out) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = op(leaves[0], shapes, starts, leaves[1], leaves[2])
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in leaves]


def reference_results(case: str, device: str = "cpu") -> list[torch.Tensor]:
    """float64 reference on the same (rounded) inputs."""
    value, shapes, starts, locations, weights, grad_out = make_inputs(case, device)
    inputs = [t.double() for t in (value, locations, weights, grad_out)]
    return run_op(msda_reference, inputs[0], shapes, starts, inputs[1], inputs[2], inputs[3])


def assert_matches_reference(
    got: list[torch.Tensor], expected: list[torch.Tensor], case: str
) -> None:
    dtypes = CASES[case][-1]
    for name, a, e, dtype in zip(
        ("output", "grad value", "grad locations", "grad weights"),
        got,
        expected,
        (dtypes[0], *dtypes),
    ):
        assert a.dtype == dtype, f"{case} {name}: dtype {a.dtype}, expected {dtype}"
        assert a.shape == e.shape, (
            f"{case} {name}: shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        )
        # Compare relative to each tensor's magnitude (location gradients scale with the map size).
        scale = e.abs().max().clamp(min=1).item() if e.numel() else 1.0
        tol = max(TOLERANCE[dtype], TOLERANCE[dtypes[0]])
        torch.testing.assert_close(
            a.double() / scale,
            e / scale,
            rtol=tol,
            atol=tol,
            msg=lambda msg, n=name: f"{case} {n}: {msg}",
        )


def _interpreter_worker(output_path: str) -> None:
    """Run every case through the Triton kernels under the interpreter and save the results."""
    os.environ["TRITON_INTERPRET"] = "1"
    from mrdetr.ops.msda import msda_triton, multi_scale_deformable_attention

    results = {case: run_op(msda_triton, *make_inputs(case)) for case in CASES}
    results["dispatcher"] = run_op(
        lambda *a: multi_scale_deformable_attention(*a, backend="triton"),
        *make_inputs("odd_sizes_3_levels"),
    )
    torch.save(results, output_path)


@pytest.fixture(scope="module")
def interpreter_results(tmp_path_factory) -> dict[str, list[torch.Tensor]]:
    pytest.importorskip("triton", reason="the Triton kernels need triton installed")
    output = tmp_path_factory.mktemp("msda_triton") / "results.pt"
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stdout}\n{proc.stderr}"
    return torch.load(output, weights_only=True)


@pytest.mark.parametrize("case", list(CASES))
def test_triton_interpreter_matches_reference(case, interpreter_results):
    assert_matches_reference(interpreter_results[case], reference_results(case), case)


def test_triton_interpreter_through_dispatcher(interpreter_results):
    case = "odd_sizes_3_levels"
    assert_matches_reference(interpreter_results["dispatcher"], reference_results(case), case)


def test_import_without_triton_and_clear_errors(monkeypatch):
    import mrdetr.ops.msda.triton_kernels as kernels

    monkeypatch.setattr(kernels, "triton", None)
    monkeypatch.setattr(kernels, "_TRITON_IMPORT_ERROR", ImportError("No module named 'triton'"))
    value, shapes, starts, locations, weights, _ = make_inputs("one_level")
    assert "not importable" in kernels.triton_unavailable_reason(value)
    with pytest.raises(RuntimeError, match="not importable"):
        kernels.msda_triton(value, shapes, starts, locations, weights)
    # the module still imports in a process where triton cannot be imported at all
    code = (
        "import sys; sys.modules['triton'] = None; import mrdetr.ops as o; print(o.MSDA_BACKENDS)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "triton" in proc.stdout, proc.stderr


def test_validation_happens_before_launch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # allow CPU tensors past the device check
    from mrdetr.ops.msda import msda_triton

    value, shapes, starts, locations, weights, _ = make_inputs("odd_sizes_3_levels")
    with pytest.raises(ValueError, match="level_start_index"):
        msda_triton(value, shapes, starts + 1, locations, weights)
    with pytest.raises(ValueError, match=r"sum\(h \* w\)"):
        msda_triton(value[:, :-1], shapes, starts, locations, weights)
    with pytest.raises(RuntimeError, match="dtype torch.float64"):
        msda_triton(value.double(), shapes, starts, locations, weights)


@pytest.mark.parametrize("kernel_name", ["_msda_forward_kernel", "_msda_backward_kernel"])
def test_kernels_compile_for_gpu(kernel_name):
    """The interpreter accepts more Python than the compiler: compile both kernels to a cubin for
    sm_90 (done on the host, no GPU needed), with mixed input dtypes."""
    triton = pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as error:  # a Triton without this (3.x) compile API
        pytest.skip(f"triton {triton.__version__} has no ASTSource/GPUTarget: {error}")
    import mrdetr.ops.msda.triton_kernels as kernels

    kernel = getattr(kernels, kernel_name)
    pointer_types = {
        "value_ptr": "*bf16",
        "loc_ptr": "*fp32",
        "attn_ptr": "*fp16",
        "grad_out_ptr": "*bf16",
    }
    signature = {}
    for name in kernel.arg_names:
        if name in ("BLOCK_Q", "BLOCK_D"):
            signature[name] = "constexpr"
        elif name in ("shapes_ptr", "starts_ptr"):
            signature[name] = "*i64"
        elif name.endswith("_ptr"):
            signature[name] = pointer_types.get(name, "*fp32")
        else:
            signature[name] = "i32"
    source = ASTSource(kernel, signature, constexprs={"BLOCK_Q": 32, "BLOCK_D": 32})
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    except RuntimeError as error:
        if "ptxas" in str(error).lower() or "cuda" in str(error).lower():
            pytest.skip(f"no CUDA toolchain for host compilation: {error}")
        raise
    assert "cubin" in compiled.asm and len(compiled.asm["cubin"]) > 0
    if kernel_name == "_msda_backward_kernel":
        assert "atomic" in compiled.asm["ttir"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", [c for c in CASES if c != "no_queries"])
def test_triton_cuda_matches_reference(case):
    from mrdetr.ops.msda import msda_gather, msda_triton

    inputs = make_inputs(case, "cuda")
    expected = reference_results(case, "cuda")
    assert_matches_reference(run_op(msda_triton, *inputs), expected, case)
    if CASES[case][-1] == F32:
        assert_matches_reference(run_op(msda_gather, *inputs), expected, case)


if __name__ == "__main__":
    _interpreter_worker(sys.argv[1])
