"""The fused kernels compile for the H200 (sm_90) on a machine without a GPU.

The interpreter tests (test_fused_kernels.py) check the arithmetic; only a real
compile checks what a GPU build rejects (types, shapes, nested calls). Triton compiles
ahead of time for a named target with its bundled ptxas. It runs in a subprocess:
this test session's kernels were defined in interpreter mode (and importing Triton
here would fix its mode before test_fused_kernels.py sets it).
"""

from __future__ import annotations

import os
import subprocess
import sys

COMPILE = """
import inspect, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tutorial_engine.models import fused

def compile_for_hopper(kernel, types, constexprs):
    names = list(inspect.signature(kernel.fn).parameters)
    signature = {n: types.get(n, "constexpr" if n in constexprs else "i32") for n in names}
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["cubin"]

bf16 = lambda *names: {n: "*bf16" for n in names}
tables = {"positions_ptr": "*i64", "cos_sin_ptr": "*fp32"}
for q_heads, kv_heads in [(16, 8), (8, 4), (1, 1)]:  # Qwen3-0.6B, TP=2, a tiny model
    compile_for_hopper(fused._qk_norm_rope_kernel,
                       {**bf16("q_ptr", "k_ptr", "q_out_ptr", "k_out_ptr", "q_weight_ptr", "k_weight_ptr"),
                        **tables, "eps": "fp32"},
                       dict(HALF=64, Q_HEADS_P=q_heads, KV_HEADS_P=kv_heads))
compile_for_hopper(fused._rope_kernel, {**bf16("x_ptr", "out_ptr"), **tables}, dict(HALF=64, HEADS_P=16))
for residual in (False, True):
    compile_for_hopper(fused._rms_norm_kernel,
                       {**bf16("x_ptr", "residual_ptr", "out_ptr", "new_residual_ptr", "weight_ptr"), "eps": "fp32"},
                       dict(HAS_RESIDUAL=residual, BLOCK=1024))
compile_for_hopper(fused._silu_and_mul_kernel, bf16("x_ptr", "out_ptr"), dict(BLOCK=1024))
print("compiled")
"""


def test_fused_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]
