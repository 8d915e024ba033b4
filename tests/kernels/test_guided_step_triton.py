"""The Triton kernel, run by Triton's interpreter on CPU tensors (exact for the maths tested)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import torch
    from instructedit.kernels import guided_step_triton

    ULP = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}
    failures = []
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        # 2·4·37·29 = 8584 elements: not a multiple of the block, so the mask is exercised.
        for weights, c in (([7.5, -6.0, -0.5], 0.3), ([7.5, -6.5], 0.0), ([1.0], 0.8)):
            k = len(weights)
            branches = torch.randn(k * 2, 4, 37, 29, generator=gen).to(dtype)
            sample = (torch.randn(2, 4, 37, 29, generator=gen) * 3).to(dtype)
            noise = torch.randn(2, 4, 37, 29, generator=gen).to(dtype)
            a, b = 0.97, -0.41
            out = guided_step_triton(branches, weights, sample, a, b, c, noise if c else None)
            parts = branches.double().chunk(k)
            exact = a * sample.double() + b * sum(w * p for w, p in zip(weights, parts)) + c * noise.double()
            ulp = ULP[dtype]
            bound = exact.abs() * ulp + (1e-5 if dtype == torch.float32 else ulp * 1e-2)
            error = ((out.double() - exact).abs() - bound).max().item()
            if out.dtype != dtype or out.shape != sample.shape or error > 0:
                failures.append((str(dtype), k, c, error))
    print("FAILURES", failures)
    """
)


@pytest.mark.slow
def test_triton_kernel_equals_reference_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FAILURES []" in result.stdout, result.stdout
