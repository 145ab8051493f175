"""GPU checks of the fast attention backends against the torch reference.

Run on a CUDA machine: ``PYTHONPATH=. python3 -m pytest tests/gpu -q``. Every test
skips without CUDA. Kernels run natively here (TRITON_INTERPRET must be unset).

Accuracy: the kernels run in bf16 (fp32 accumulation); the reference runs the torch
backend in float32 on the same bf16 values upcast, so the check is the kernel's own
rounding: relative error ``||out - ref|| / ||ref||`` well under 1e-2 (bf16 has 8
mantissa bits). Engine greedy tokens must be identical in float32.
"""

from __future__ import annotations

import random

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from tutorial_engine import LLM, SamplingParams  # noqa: E402
from tutorial_engine.attention import get_attention_backend, torch_backend  # noqa: E402
from tutorial_engine.attention.testing import random_paged_batch  # noqa: E402

BF16_REL_TOL = 1e-2


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def check_backend(backend_name: str, query_lens: list[int], seq_lens: list[int], num_heads: int, num_kv_heads: int,
                  head_dim: int, block_size: int, seed: int) -> float:
    batch = random_paged_batch(query_lens, seq_lens, num_heads, num_kv_heads, head_dim, block_size,
                               dtype=torch.bfloat16, device="cuda", seed=seed)
    backend = get_attention_backend(backend_name, torch.device("cuda"), block_size, torch.bfloat16)
    k_cache, v_cache = batch.k_cache.clone(), batch.v_cache.clone()
    backend.store_kvcache(batch.key, batch.value, k_cache, v_cache, batch.meta.slot_mapping)
    out = backend.paged_attention(batch.query, k_cache, v_cache, batch.meta, batch.scale)

    k_ref, v_ref = batch.k_cache.float(), batch.v_cache.float()
    torch_backend.store_kvcache(batch.key.float(), batch.value.float(), k_ref, v_ref, batch.meta.slot_mapping)
    assert torch.equal(k_cache.float(), k_ref) and torch.equal(v_cache.float(), v_ref), "KV store differs"
    ref = torch_backend.paged_attention(batch.query.float(), k_ref, v_ref, batch.meta, batch.scale)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    error = relative_error(out, ref)
    assert error < BF16_REL_TOL, f"{backend_name}: relative error {error:.2e} for {query_lens=} {seq_lens=}"
    return error


@pytest.mark.parametrize("backend", ["triton", "auto"])
@pytest.mark.parametrize("group", [1, 2, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("block_size", [16, 256])
def test_decode_matches_torch(backend, group, head_dim, block_size):
    rng = random.Random(group * 1000 + head_dim + block_size)
    seq_lens = [1, 2, 255, 256, 257, 8192] + [rng.randint(1, 8192) for _ in range(10)]
    check_backend(backend, [1] * len(seq_lens), seq_lens, 2 * group, 2, head_dim, block_size, seed=group)


@pytest.mark.parametrize("backend", ["triton", "auto"])
@pytest.mark.parametrize("group", [1, 2, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("block_size", [16, 256])
def test_mixed_prefill_extend_decode_matches_torch(backend, group, head_dim, block_size):
    """Prompts (no cache), extends (cached prefix + chunk) and decodes in one batch."""
    rng = random.Random(7 * group + head_dim + block_size)
    query_lens, seq_lens = [], []
    for _ in range(12):
        kind = rng.choice(["prompt", "extend", "decode"])
        seq_len = rng.randint(1, 8192 if kind == "decode" else 3000)
        query_len = {"prompt": seq_len, "extend": rng.randint(1, seq_len), "decode": 1}[kind]
        query_lens.append(query_len)
        seq_lens.append(seq_len)
    check_backend(backend, query_lens, seq_lens, 2 * group, 2, head_dim, block_size, seed=group + 1)


@pytest.mark.parametrize("num_splits", [1, 2, 4, 16])
def test_decode_split_counts_agree(num_splits):
    from tutorial_engine.attention.triton_decode import paged_decode

    batch = random_paged_batch([1] * 4, [1, 700, 4096, 8000], 16, 8, 128, 16, dtype=torch.bfloat16, device="cuda")
    ref = torch_backend.paged_attention(batch.query.float(), batch.k_cache.float(), batch.v_cache.float(),
                                        batch.meta, batch.scale)
    out = paged_decode(batch.query, batch.k_cache, batch.v_cache, batch.meta.block_tables, batch.meta.seq_lens,
                       batch.scale, num_splits=num_splits)
    assert relative_error(out, ref) < BF16_REL_TOL


def test_flash_attn_backend_when_installed():
    pytest.importorskip("flash_attn", reason="flash-attn is not installed on this machine: its backend is untested")
    check_backend("flash_attn", [1, 300, 1], [4000, 900, 20], 16, 8, 128, 256, seed=3)
    cuda = torch.device("cuda")
    assert get_attention_backend("auto", cuda, 256, torch.bfloat16).name == "flash_attn"
    assert get_attention_backend("auto", cuda, 16, torch.bfloat16).name == "triton"  # pages too small for FA2
    assert get_attention_backend("auto", cuda, 256, torch.float32).name == "triton"  # FA2 has no float32
    with pytest.raises(ValueError, match="kvcache_block_size=256"):
        get_attention_backend("flash_attn", cuda, 16, torch.bfloat16)


def test_flash_attn_engine_matches_triton_bf16(tiny_qwen3):
    """Through the engine (CUDA graphs, chunked prefill, pages of 256): the
    flash_attn backend's greedy tokens equal the Triton backend's in bfloat16 on
    most rows (bf16 rounding may flip a near-tie), and its graphs are captured."""
    pytest.importorskip("flash_attn", reason="flash-attn is not installed on this machine")
    rng = random.Random(2)
    prompts = [[rng.randrange(3, 400) for _ in range(rng.randint(1, 300))] for _ in range(8)]
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    outs = {}
    for backend in ("flash_attn", "triton"):
        with LLM(tiny_qwen3, attention_backend=backend, dtype="bfloat16", kvcache_block_size=256,
                 max_num_batched_tokens=128, num_kvcache_blocks=64) as llm:
            assert llm.engine.executor.runner.backend.name == backend
            assert llm.engine.executor.runner.graphs is not None
            outs[backend] = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    same = sum(a[:8] == b[:8] for a, b in zip(outs["flash_attn"], outs["triton"]))
    assert same >= 6, (outs["flash_attn"], outs["triton"])


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    from tutorial_engine.book.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen3", "qwen3")


@pytest.mark.parametrize("enforce_eager", [True, False])
def test_greedy_tokens_identical_across_backends(tiny_qwen3, enforce_eager):
    """float32: the same tokens from torch, triton and auto, with chunked prefill, mixed
    batches and long decodes (CUDA-graph replay when enforce_eager is False)."""
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 400) for _ in range(rng.randint(1, 200))] for _ in range(12)]
    params = SamplingParams(temperature=0.0, max_tokens=150, ignore_eos=True)
    outs = {}
    for backend in ("torch", "triton", "auto"):
        llm = LLM(tiny_qwen3, attention_backend=backend, dtype="float32", max_num_batched_tokens=256,
                  max_num_seqs=16, num_kvcache_blocks=1024, enforce_eager=enforce_eager or backend == "torch")
        outs[backend] = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    assert outs["triton"] == outs["torch"]
    assert outs["auto"] == outs["torch"]


def test_chunked_prefill_on_and_off_give_the_same_tokens(tiny_qwen3):
    """float32, Triton kernels: prompts longer than the token budget, split over several
    steps beside running decodes, give the tokens of whole-prompt prefill."""
    rng = random.Random(1)
    prompts = [[rng.randrange(3, 400) for _ in range(rng.randint(100, 300))] for _ in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    outs = {}
    for chunked, budget in ((True, 64), (False, 512)):
        llm = LLM(tiny_qwen3, attention_backend="triton", dtype="float32", max_model_len=512,
                  enable_chunked_prefill=chunked, max_num_batched_tokens=budget, num_kvcache_blocks=1024)
        outs[chunked] = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
        if chunked:
            assert llm.get_metrics()["num_chunked_prefill_steps"] > 0
    assert outs[True] == outs[False]
