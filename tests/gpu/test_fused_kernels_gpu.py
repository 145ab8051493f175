"""Each fused Triton kernel against the unfused PyTorch path, on a real GPU (skipped without CUDA).

Run on the device: ``PYTHONPATH=. python3 -m pytest tests/gpu -q``;
``python -m tutorial_engine.bench.verify_kernels`` runs these per kernel and records the
kernels that pass as GPU-verified (``tutorial_engine/models/verified_kernels.json``).

Each kernel runs as the engine runs it: captured in a CUDA graph and replayed, in bf16
and fp16, on Qwen3-0.6B's shapes (hidden 1024, 16 query / 8 KV heads of 128, MLP 3072)
and odd ones, its output compared with the layer's PyTorch code run eagerly. The whole
engine's greedy tokens with every fused kernel on must equal those with all of them off.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from tutorial_engine import LLM, SamplingParams  # noqa: E402
from tutorial_engine.models.decoder import Attention  # noqa: E402
from tutorial_engine.models.layers import RMSNorm, SiluAndMul  # noqa: E402
from tutorial_engine.models.rotary import RotaryEmbedding  # noqa: E402

DTYPES = [torch.bfloat16, torch.float16]
NUM_TOKENS = [1, 7, 256]  # a decode row, an odd batch, a prefill chunk
PROMPTS = ["Hello world", "The cache is cut into pages", "A", "Requests arrive at any time", "one two"]


def in_graph(fn, *inputs):
    """Capture ``fn(*inputs)`` in a CUDA graph, replay it once, return its outputs."""
    fn(*inputs)  # compile the Triton kernels outside the capture
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn(*inputs)
    graph.replay()
    torch.cuda.synchronize()
    return outputs


def close(actual, expected, dtype):
    """bf16 keeps 8 bits of mantissa, fp16 11: one rounding step of either."""
    tol = 1.6e-2 if dtype == torch.bfloat16 else 2e-3
    for a, e in zip(actual if isinstance(actual, tuple) else (actual,),
                    expected if isinstance(expected, tuple) else (expected,)):
        torch.testing.assert_close(a.float(), e.float(), rtol=tol, atol=tol)


def randn(*shape, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("hidden", [1024, 100])
def test_rms_norm(dtype, num_tokens, hidden):
    x, residual = randn(num_tokens, hidden, dtype=dtype), randn(num_tokens, hidden, dtype=dtype, seed=1)
    norm = RMSNorm(hidden, 1e-6).to("cuda", dtype)
    norm.weight.data = (randn(hidden, dtype=torch.float32, seed=2).abs() + 0.5).to(dtype)
    expected = norm(x), norm(x, residual)
    norm.fused = True
    actual = in_graph(lambda a, r: (norm(a), *norm(a, r)), x, residual)
    close(actual[0], expected[0], dtype)
    close(actual[1:], expected[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("intermediate", [3072, 100])
def test_silu_and_mul(dtype, num_tokens, intermediate):
    x = randn(num_tokens, 2 * intermediate, dtype=dtype)
    act = SiluAndMul()
    expected = act(x)
    act.fused = True
    close(in_graph(act, x), expected, dtype)


def qkv_views(num_tokens, num_heads, num_kv_heads, head_dim, dtype):
    """Strided q and k views of one qkv projection output, as the attention layer has them."""
    qkv = randn(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim, dtype=dtype)
    q, k, _ = qkv.split([num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
    return q.view(num_tokens, num_heads, head_dim), k.view(num_tokens, num_kv_heads, head_dim)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("heads", [(16, 8, 128), (4, 1, 32)])
def test_rotary(dtype, num_tokens, heads):
    num_heads, num_kv_heads, head_dim = heads
    q, k = qkv_views(num_tokens, num_heads, num_kv_heads, head_dim, dtype)
    positions = torch.randint(0, 4096, (num_tokens,), device="cuda")
    rope = RotaryEmbedding(head_dim, 4096, 1_000_000.0).to("cuda")
    expected = rope(positions, q, k)
    rope.fused = True
    close(in_graph(rope, positions, q, k), expected, dtype)


class _Spec:
    """The fields of DecoderSpec an attention layer reads."""

    def __init__(self, num_heads, num_kv_heads, head_dim):
        self.hidden_size, self.head_dim = num_heads * head_dim, head_dim
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.qkv_bias, self.qk_norm, self.rms_norm_eps = False, True, 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
@pytest.mark.parametrize("heads", [(16, 8, 128), (8, 4, 128), (4, 1, 32)])
def test_qk_norm_rope(dtype, num_tokens, heads):
    num_heads, num_kv_heads, head_dim = heads
    q, k = qkv_views(num_tokens, num_heads, num_kv_heads, head_dim, dtype)
    positions = torch.randint(0, 4096, (num_tokens,), device="cuda")
    rope = RotaryEmbedding(head_dim, 4096, 1_000_000.0).to("cuda")
    with torch.device("cuda"):
        torch.set_default_dtype(dtype)
        try:
            attention = Attention(_Spec(num_heads, num_kv_heads, head_dim), rope)
        finally:
            torch.set_default_dtype(torch.float32)
    attention.q_norm.weight.data = (randn(head_dim, dtype=torch.float32, seed=3).abs() + 0.5).to(dtype)
    attention.k_norm.weight.data = (randn(head_dim, dtype=torch.float32, seed=4).abs() + 0.5).to(dtype)
    expected = attention.norm_and_rotate(positions, q, k)  # unfused: norm, then rotate
    attention.fused_qk_norm_rope = True
    close(in_graph(attention.norm_and_rotate, positions, q, k), expected, dtype)


def greedy_ids(llm) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    return [o["token_ids"] for o in llm.generate(PROMPTS, params, use_tqdm=False)]


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_greedy_parity_fused_on_and_off(tiny_checkpoints, arch):
    """float32, CUDA graphs on: every fused kernel on gives the tokens of all of them off."""
    options = dict(dtype="float32", kvcache_block_size=16, max_num_seqs=8, gpu_memory_utilization=0.3)
    results = {}
    for mode in ("none", "all"):
        llm = LLM(tiny_checkpoints[arch], fused_kernels=mode, **options)
        model = llm.engine.executor.runner.model
        assert any(isinstance(m, RMSNorm) and m.fused for m in model.modules()) == (mode == "all")
        assert llm.engine.executor.runner.graphs is not None
        results[mode] = greedy_ids(llm)
        llm.shutdown()
    assert results["all"] == results["none"]
