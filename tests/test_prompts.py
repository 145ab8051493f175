"""Every prompt form vLLM accepts gives the same tokens; every other value is refused
before any work, naming the value and the fix, and the engine is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.inputs import normalize_batch

IDS = [1, 17, 42, 99]
GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)


def make_llm(tiny_checkpoints) -> LLM:
    return LLM(tiny_checkpoints["qwen3"], max_model_len=64, num_kvcache_blocks=8, kvcache_block_size=4)


@pytest.fixture(scope="module")
def llm(tiny_checkpoints):
    return make_llm(tiny_checkpoints)


@pytest.fixture(scope="module")
def expected(tiny_checkpoints) -> list[int]:
    """The tokens a fresh engine gives for IDS."""
    return make_llm(tiny_checkpoints).generate(IDS, GREEDY, use_tqdm=False)[0]["token_ids"]


def generate(llm, prompts, params=GREEDY):
    return [out["token_ids"] for out in llm.generate(prompts, params, use_tqdm=False)]


@pytest.mark.parametrize(
    "prompt",
    [
        IDS,
        tuple(IDS),
        [np.int64(t) for t in IDS],
        [np.uint16(t) for t in IDS],
        [torch.tensor(t) for t in IDS],
        np.array(IDS, dtype=np.int32),
        torch.tensor(IDS),
        {"prompt_token_ids": IDS},
        {"prompt_token_ids": np.array(IDS)},
    ],
    ids=["list", "tuple", "numpy-ints", "numpy-uint16", "torch-scalars", "numpy-array", "tensor", "dict", "dict-array"],
)
def test_token_id_forms_give_the_same_tokens(llm, expected, prompt):
    assert generate(llm, prompt) == [expected]  # one prompt -> one output
    assert generate(llm, [prompt, prompt]) == [expected, expected]  # a list of them -> a batch


def test_text_dict_is_the_text(llm):
    assert generate(llm, {"prompt": "a cache"}) == generate(llm, "a cache")


def test_one_prompt_or_a_batch():
    ok = SamplingParams()
    assert normalize_batch([], None) == ([], [])
    assert normalize_batch([], [])[0] == []
    for one in ("text", [1, 2], (1, 2), np.array([1, 2]), torch.tensor([1, 2]), {"prompt": "x"}, [True], [1.5]):
        prompts, params = normalize_batch(one, ok)
        assert len(prompts) == 1 and prompts[0] is one and params == [ok]
    batch = ["text", [1, 2], np.array([3]), {"prompt_token_ids": [4]}]
    assert normalize_batch(batch, ok)[0] == batch
    assert normalize_batch([[1, 2], [3]], [ok, ok])[0] == [[1, 2], [3]]


def test_empty_list_generates_nothing(llm):
    assert llm.generate([], use_tqdm=False) == []


@pytest.mark.parametrize(
    "prompts, params, error, match",
    [
        (b"hello", GREEDY, TypeError, "prompt b'hello' is bytes; decode it to str"),
        ([b"hi", "ok"], GREEDY, TypeError, "prompt b'hi' is bytes"),
        ([True, False], GREEDY, TypeError, r"token id True at position 0 has type bool \(True is not token 1\)"),
        ([1, np.bool_(True)], GREEDY, TypeError, r"token id np.True_ at position 1 has type bool \(True is not token 1\)"),
        ([1.0, 2.0], GREEDY, TypeError, "token id 1.0 at position 0 has type float; token ids must be ints"),
        ([[1, [2]]], GREEDY, TypeError, r"token id \[2\] at position 1 has type list"),
        (np.array([[1, 2], [3, 4]]), GREEDY, ValueError, r"shape \(2, 2\); pass a 1-D array"),
        (np.array(5), GREEDY, ValueError, r"shape \(\); pass a 1-D array"),
        (torch.tensor([1.0, 2.0]), GREEDY, TypeError, "dtype torch.float32; token ids must be integers"),
        (np.array([True]), GREEDY, TypeError, "dtype bool; token ids must be integers"),
        ([torch.tensor(1.0)], GREEDY, TypeError, "token id tensor"),
        ({"prompt": "x", "extra": 1}, GREEDY, ValueError, r"keys \['extra', 'prompt'\] is not supported"),
        ({"text": "x"}, GREEDY, ValueError, r"keys \['text'\] is not supported"),
        ({"prompt": [1, 2]}, GREEDY, TypeError, "needs a str; for token ids use"),
        ({"prompt_token_ids": "abc"}, GREEDY, TypeError, "needs a list of int token ids"),
        (5, GREEDY, TypeError, "prompt 5 has type int; a prompt is a str"),
        (None, GREEDY, TypeError, "prompt None has type NoneType"),
        ([np.int64(10**6)], GREEDY, ValueError, r"token ids \[1000000\] are outside the vocabulary"),
        ([-1], GREEDY, ValueError, r"token ids \[-1\] are outside the vocabulary"),
        (["fine", ""], GREEDY, ValueError, "empty"),
        ({"prompt_token_ids": []}, GREEDY, ValueError, "empty"),
        ([1] * 65, GREEDY, ValueError, "max_model_len=64"),
        ([[1] * 30], SamplingParams(max_tokens=10), ValueError, "cannot fit the KV cache of 8 blocks"),
        (["a"], {"temperature": 0}, TypeError, "sampling_params=.* has type dict"),
        (["a", "b"], [GREEDY, "x"], TypeError, "sampling_params='x' has type str"),
        (["a"], [GREEDY, GREEDY], ValueError, "2 sampling_params for 1 prompts"),
    ],
)
def test_bad_requests_fail_before_work(llm, prompts, params, error, match):
    steps = llm.get_metrics()["num_steps"]
    with pytest.raises(error, match=match):
        llm.generate(prompts, params, use_tqdm=False)
    assert not llm.engine.has_unfinished()
    assert llm.engine.kv_cache.allocator.num_free_blocks == llm.engine.num_kvcache_blocks  # no pages held
    assert llm.get_metrics()["num_steps"] == steps


def test_after_rejections_the_engine_matches_a_fresh_one(llm, expected):
    for bad in (b"x", [True], np.zeros((2, 2), dtype=int), {"prompt_token_ids": [10**6]}):
        with pytest.raises((TypeError, ValueError)):
            llm.generate(["good prompt", bad], GREEDY, use_tqdm=False)
    assert generate(llm, IDS) == [expected]


def test_lone_surrogate_in_a_text_prompt_is_refused_before_tokenizing(tiny_checkpoints):
    with LLM(str(tiny_checkpoints["qwen3"]), num_kvcache_blocks=8) as llm:
        with pytest.raises(ValueError, match="lone surrogate at index 3"):
            llm.generate(["abc\ud800"], use_tqdm=False)
        assert llm.generate(["abc"], use_tqdm=False)[0]["finish_reason"] in ("stop", "length")
