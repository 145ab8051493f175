"""The Triton attention kernels against the torch reference backend.

Without a GPU they run under Triton's CPU interpreter (``TRITON_INTERPRET=1``, set
here before Triton is imported, since ``triton.jit`` reads it when a kernel is
defined), on small shapes. Triton is in the ``test`` extra: a missing Triton is an
import error here, never a silent skip. The cases are float32: the interpreter's
``tl.dot`` on bf16 operands returns garbage (seen with Triton 3.9), so bf16 is checked
on the GPU, with real sizes, in tests/gpu/test_attention_gpu.py.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402,F401  (fails loudly when the test extra is not installed)

from tutorial_engine import LLM, SamplingParams  # noqa: E402
from tutorial_engine.attention import get_attention_backend, torch_backend  # noqa: E402
from tutorial_engine.attention import triton_backend  # noqa: E402
from tutorial_engine.attention.testing import random_paged_batch  # noqa: E402
from tutorial_engine.attention.triton_decode import paged_decode  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(batch):
    """Store with the torch backend into copies of the caches, then attend."""
    k_cache, v_cache = batch.k_cache.clone(), batch.v_cache.clone()
    torch_backend.store_kvcache(batch.key, batch.value, k_cache, v_cache, batch.meta.slot_mapping)
    return torch_backend.paged_attention(batch.query, k_cache, v_cache, batch.meta, batch.scale), k_cache, v_cache


def test_store_kvcache_matches_torch_and_skips_padding_rows():
    batch = random_paged_batch([3, 1, 5], [7, 12, 5], 4, 2, 16, block_size=4, device=DEVICE)
    batch.meta.slot_mapping[[1, 4]] = -1  # padding rows, as a CUDA-graph batch has
    _, k_ref, v_ref = reference(batch)
    k_cache, v_cache = batch.k_cache.clone(), batch.v_cache.clone()
    triton_backend.store_kvcache(batch.key, batch.value, k_cache, v_cache, batch.meta.slot_mapping)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)
    assert not torch.equal(k_cache, batch.k_cache)  # something was stored


DECODE_CASES = [  # (num_heads, num_kv_heads, head_dim, block_size, seq_lens, num_splits)
    (4, 4, 16, 16, [1, 17, 40], 1),  # MHA; a context of 1 token
    (4, 2, 16, 16, [5, 40, 17], 4),  # GQA 2, more splits than some contexts have tiles
    (8, 2, 32, 4, [100, 3], 8),  # GQA 4, tiny pages
    (8, 1, 16, 1, [33], 2),  # GQA 8 (multi-query), one-token pages
    (4, 2, 64, 256, [300, 2], 2),  # 256-token pages, context spans two of them
]


@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim,block_size,seq_lens,num_splits", DECODE_CASES)
def test_decode_kernel_matches_torch(num_heads, num_kv_heads, head_dim, block_size, seq_lens, num_splits):
    batch = random_paged_batch([1] * len(seq_lens), seq_lens, num_heads, num_kv_heads, head_dim, block_size,
                               device=DEVICE, seed=len(seq_lens) * 7 + num_splits)
    expected, k_cache, v_cache = reference(batch)
    out = paged_decode(batch.query, k_cache, v_cache, batch.meta.block_tables, batch.meta.seq_lens, batch.scale,
                       num_splits=num_splits, block_n=16)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_decode_kernel_zero_length_row_gives_zeros_not_nan():
    """A CUDA-graph padding row may carry seq_len 0: its output must stay finite."""
    batch = random_paged_batch([1, 1], [9, 20], 4, 2, 16, 4, device=DEVICE)
    expected, k_cache, v_cache = reference(batch)
    seq_lens = batch.meta.seq_lens.clone()
    seq_lens[0] = 0
    for splits in (1, 4):
        out = paged_decode(batch.query, k_cache, v_cache, batch.meta.block_tables, seq_lens, batch.scale,
                           num_splits=splits, block_n=16)
        assert torch.equal(out[0], torch.zeros_like(out[0]))
        torch.testing.assert_close(out[1], expected[1], rtol=1e-5, atol=1e-5)


def test_decode_rejects_bad_num_splits():
    batch = random_paged_batch([1], [4], 2, 1, 16, 4, device=DEVICE)
    with pytest.raises(ValueError, match="num_splits=3"):
        paged_decode(batch.query, batch.k_cache, batch.v_cache, batch.meta.block_tables, batch.meta.seq_lens,
                     batch.scale, num_splits=3)


PREFILL_CASES = [  # (num_heads, num_kv_heads, head_dim, block_size, query_lens, seq_lens)
    (4, 4, 16, 16, [20], [20]),  # one plain prompt
    (4, 2, 16, 8, [7, 1, 20], [30, 9, 20]),  # extend over a cached prefix + decode + prompt (mixed batch)
    (6, 2, 16, 16, [5, 33], [40, 33]),  # GQA 3: a group size that does not divide the tile
    (8, 1, 32, 4, [1, 3, 70], [50, 3, 90]),  # multi-query, small pages, several query tiles
    (4, 2, 64, 256, [40, 2], [300, 2]),  # 256-token pages
]


@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim,block_size,query_lens,seq_lens", PREFILL_CASES)
def test_paged_attention_matches_torch_on_mixed_batches(num_heads, num_kv_heads, head_dim, block_size,
                                                        query_lens, seq_lens):
    batch = random_paged_batch(query_lens, seq_lens, num_heads, num_kv_heads, head_dim, block_size,
                               device=DEVICE, seed=sum(query_lens))
    expected, _, _ = reference(batch)
    k_cache, v_cache = batch.k_cache.clone(), batch.v_cache.clone()
    triton_backend.store_kvcache(batch.key, batch.value, k_cache, v_cache, batch.meta.slot_mapping)
    out = triton_backend.paged_attention(batch.query, k_cache, v_cache, batch.meta, batch.scale)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_randomized_shapes_match_torch():
    """Seeded random batches: any mix of decode, extend and prompt rows."""
    rng = random.Random(0)
    for trial in range(6):
        num_kv_heads = rng.choice([1, 2])
        group = rng.choice([1, 2, 4])
        seq_lens = [rng.randint(1, 70) for _ in range(rng.randint(1, 4))]
        query_lens = [rng.choice([1, rng.randint(1, s)]) for s in seq_lens]
        batch = random_paged_batch(query_lens, seq_lens, num_kv_heads * group, num_kv_heads, rng.choice([16, 32]),
                                   rng.choice([1, 4, 16, 64]), device=DEVICE, seed=trial)
        expected, k_cache, v_cache = reference(batch)
        out = triton_backend.paged_attention(batch.query, k_cache, v_cache, batch.meta, batch.scale)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{query_lens=} {seq_lens=}: {m}")


def test_num_kv_splits_is_a_bounded_power_of_two():
    cpu = torch.device("cpu")
    for seqs in (1, 3, 256):
        for max_len in (1, 300, 8192, 10**6):
            splits = triton_backend.num_kv_splits(seqs, 8, max_len, cpu)
            assert 1 <= splits <= triton_backend.MAX_SPLITS and splits & (splits - 1) == 0
    assert triton_backend.num_kv_splits(1, 1, 100, cpu) == 1  # too short to be worth splitting


def test_backend_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert get_attention_backend("auto", cpu).name == "torch"
    if DEVICE == "cpu":
        assert get_attention_backend("triton", cpu).name == "triton"  # the interpreter is on in this module
    with pytest.raises(ValueError, match="flash_attn"):
        get_attention_backend("flash_attn", cpu)
    with pytest.raises(ValueError, match="unknown"):
        get_attention_backend("xformers", cpu)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        get_attention_backend("triton", cpu)


def test_seq_start_loc_is_built_once_per_step():
    """FlashAttention's cu_seqlens_k: prefix sums of the context lengths, shared by every layer."""
    meta = random_paged_batch([3, 1, 4], [5, 9, 4], num_heads=2, num_kv_heads=1, head_dim=8,
                              block_size=4, device=DEVICE).meta
    assert meta.seq_start_loc.tolist() == [0, 5, 14, 18]
    assert meta.seq_start_loc.dtype == torch.int32
    assert meta.seq_start_loc is meta.seq_start_loc


def test_flash_attn_backend_skips_without_the_package():
    pytest.importorskip("flash_attn", reason="flash-attn is not installed (a CUDA-only build): its backend is untested here")
    assert get_attention_backend("auto", torch.device("cuda"), 256, torch.bfloat16).name == "flash_attn"


def test_engine_greedy_tokens_identical_with_triton_backend(tiny_checkpoints):
    """float32 greedy tokens of a tiny Qwen3 equal the torch backend's, with chunked
    prefill (small token budget) so prefill, extend and mixed batches all occur."""
    prompts = [[1] + [(7 * i + 3 * j) % 400 + 3 for j in range(n)] for i, n in enumerate([5, 23, 30])]
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    outs = {}
    for backend in ("torch", "triton"):
        llm = LLM(tiny_checkpoints["qwen3"], attention_backend=backend, kvcache_block_size=4,
                  max_num_batched_tokens=16, device=DEVICE, dtype="float32")
        outs[backend] = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    assert outs["triton"] == outs["torch"]
