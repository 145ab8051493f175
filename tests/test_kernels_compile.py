"""Every fused and attention kernel compiles for the GPUs readers own, on a machine without one.

The interpreter tests (test_fused_kernels.py, test_triton_attention.py) check the
arithmetic; only a real compile checks what a GPU build rejects (types, shapes, nested
calls, tile sizes). Triton compiles ahead of time for a named target with its bundled
ptxas, for sm_80 (A100), sm_86 (A10, RTX 30xx), sm_89 (L4, RTX 40xx) and sm_90
(H100/H200). It runs in a subprocess: this test session's kernels were defined in
interpreter mode (and importing Triton here would fix its mode for other tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ARCHITECTURES = (80, 86, 89, 90)

COMPILE = r"""
import inspect, json, sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tutorial_engine.models import fused
from tutorial_engine.attention import triton_decode, triton_prefill, triton_store

arch, overrides = int(sys.argv[1]), json.loads(sys.argv[2])

def compile_for(kernel, types, constexprs):
    constexprs = {**constexprs, **overrides.get(kernel.fn.__name__, {})}
    names = list(inspect.signature(kernel.fn).parameters)
    signature = {n: types.get(n, "constexpr" if n in constexprs else "i32") for n in names}
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(names.index(k),): v for k, v in constexprs.items()})
    triton.compile(source, target=GPUTarget("cuda", arch, 32))

ptrs = lambda dtype, *names: {n: f"*{dtype}" for n in names}
tables = {"positions_ptr": "*i64", "cos_sin_ptr": "*fp32"}
for dtype in ("bf16", "fp16"):
    for q_heads, kv_heads in [(16, 8), (8, 4), (1, 1)]:  # Qwen3-0.6B, TP=2, a tiny model
        compile_for(fused._qk_norm_rope_kernel,
                    {**ptrs(dtype, "q_ptr", "k_ptr", "q_out_ptr", "k_out_ptr", "q_weight_ptr", "k_weight_ptr"),
                     **tables, "eps": "fp32"},
                    dict(HALF=64, Q_HEADS_P=q_heads, KV_HEADS_P=kv_heads))
    compile_for(fused._rope_kernel, {**ptrs(dtype, "x_ptr", "out_ptr"), **tables}, dict(HALF=64, HEADS_P=16))
    for residual in (False, True):
        compile_for(fused._rms_norm_kernel,
                    {**ptrs(dtype, "x_ptr", "residual_ptr", "out_ptr", "new_residual_ptr", "weight_ptr"), "eps": "fp32"},
                    dict(HAS_RESIDUAL=residual, BLOCK=1024))
    compile_for(fused._silu_and_mul_kernel, ptrs(dtype, "x_ptr", "out_ptr"), dict(BLOCK=1024))
    compile_for(triton_store._store_kvcache_kernel,
                {**ptrs(dtype, "key_ptr", "value_ptr", "k_cache_ptr", "v_cache_ptr"), "slot_mapping_ptr": "*i64"},
                dict(NUM_KV_HEADS=8, HEAD_DIM=128, HEADS_P=8, DIM_P=128))
    attention = {**ptrs(dtype, "out_ptr", "q_ptr", "k_cache_ptr", "v_cache_ptr"),
                 "block_tables_ptr": "*i32", "seq_lens_ptr": "*i32", "scale_log2": "fp32"}
    for splits in (1, 4):  # split-K partials are float32
        compile_for(triton_decode._paged_decode_kernel,
                    {**attention, "part_out_ptr": "*fp32", "part_lse_ptr": "*fp32"},
                    dict(GROUP=2, GROUP_P=16, HEAD_DIM=128, DIM_P=128, BLOCK_SIZE=256, BLOCK_N=64,
                         NUM_SPLITS=splits, DOT_PRECISION="tf32"))
    compile_for(triton_decode._merge_splits_kernel,
                {"out_ptr": f"*{dtype}", "part_out_ptr": "*fp32", "part_lse_ptr": "*fp32"},
                dict(NUM_HEADS=16, HEAD_DIM=128, DIM_P=128, NUM_SPLITS=4))
    compile_for(triton_prefill._paged_prefill_kernel, {**attention, "query_start_ptr": "*i32"},
                dict(GROUP=2, HEAD_DIM=128, DIM_P=128, BLOCK_SIZE=256, BLOCK_Q=64, BLOCK_M=128, BLOCK_N=32,
                     DOT_PRECISION="tf32"))
print(f"compiled for sm_{arch}")
"""


def compile_kernels(arch: int, overrides: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", COMPILE, str(arch), json.dumps(overrides or {})],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_kernel_compiles_for(arch):
    done = compile_kernels(arch)
    assert done.returncode == 0 and f"compiled for sm_{arch}" in done.stdout, done.stderr[-3000:]


def test_compile_check_catches_a_non_power_of_two_tile():
    """A planted defect (a 1000-wide tile: tl.arange needs a power of two) fails the build."""
    done = compile_kernels(90, {"_silu_and_mul_kernel": {"BLOCK": 1000}})
    assert done.returncode != 0
    assert "power of 2" in done.stderr, done.stderr[-3000:]
