"""SamplingParams refuses every bad value at construction, and cannot change afterwards."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.sampler import Sampler, SamplingBatch


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(seed="abc"), TypeError, "seed='abc' has type str"),
        (dict(seed=1.5), TypeError, "seed=1.5 has type float"),
        (dict(seed=True), TypeError, "seed=True has type bool"),
        (dict(seed=2**70), ValueError, "seed=1180591620717411303424 is outside"),
        (dict(seed=-1), ValueError, "seed=-1 is outside"),
        (dict(top_k=2**63, temperature=0.8), ValueError, "top_k=9223372036854775808 is invalid"),
        (dict(top_k=2.0), TypeError, "top_k=2.0 has type float"),
        (dict(top_k=-2), ValueError, "top_k=-2"),
        (dict(max_tokens=2.5), TypeError, "max_tokens=2.5 has type float"),
        (dict(max_tokens=True), TypeError, "max_tokens=True has type bool"),
        (dict(max_tokens=0), ValueError, "max_tokens=0"),
        (dict(temperature=math.nan), ValueError, "temperature=nan is not a finite number"),
        (dict(temperature=math.inf), ValueError, "temperature=inf is not a finite number"),
        (dict(temperature="0.7"), TypeError, "temperature='0.7' has type str"),
        (dict(temperature=-0.1), ValueError, "temperature=-0.1"),
        (dict(top_p=math.nan), ValueError, "top_p=nan is not a finite number"),
        (dict(top_p=0.0), ValueError, "top_p=0.0"),
        (dict(top_p=1.5), ValueError, "top_p=1.5"),
        (dict(stop_token_ids="ab"), TypeError, "stop_token_ids='ab' has type str"),
        (dict(stop_token_ids=7), TypeError, "stop_token_ids=7 has type int"),
        (dict(stop_token_ids=[1, 2.0]), TypeError, r"stop_token_ids\[1\]=2.0 has type float"),
        (dict(stop_token_ids=[False]), TypeError, r"stop_token_ids\[0\]=False has type bool"),
        (dict(stop_token_ids=[-3]), ValueError, "negative id"),
        (dict(ignore_eos="yes"), TypeError, "ignore_eos='yes' has type str; ignore_eos must be True or False"),
    ],
)
def test_bad_values_are_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        SamplingParams(**kwargs)


def test_values_are_normalized():
    params = SamplingParams(temperature=np.float32(0.5), top_k=np.int64(5), max_tokens=np.int32(3),
                            stop_token_ids=[np.int64(7), 8], seed=np.uint64(2**63 - 1), ignore_eos=np.bool_(True))
    assert params == SamplingParams(temperature=0.5, top_k=5, max_tokens=3, stop_token_ids=(7, 8),
                                    seed=2**63 - 1, ignore_eos=True)
    assert [type(v) for v in (params.temperature, params.top_k, params.max_tokens, params.seed, params.ignore_eos)] \
        == [float, int, int, int, bool]
    assert params.stop_token_ids == (7, 8) and all(type(t) is int for t in params.stop_token_ids)
    assert SamplingParams(top_k=2**31 - 1).top_k == 2**31 - 1
    hash(params)  # frozen with tuple fields: usable as a dict key


def test_frozen_after_validation_and_replace_revalidates():
    params = SamplingParams(temperature=0.8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.temperature = math.nan
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.stop_token_ids = ["a"]
    assert dataclasses.replace(params, max_tokens=4).max_tokens == 4
    with pytest.raises(TypeError, match="max_tokens=2.5"):
        dataclasses.replace(params, max_tokens=2.5)


def test_tiny_temperature_is_greedy(tiny_checkpoints):
    """Below SAMPLING_EPS (1e-5) a temperature samples greedily; it used to overflow to NaN
    and give a stream of token 0."""
    assert SamplingParams(temperature=1e-39).greedy and SamplingParams(temperature=0).greedy
    assert not SamplingParams(temperature=1e-5).greedy
    llm = LLM(tiny_checkpoints["qwen3"], num_kvcache_blocks=16)
    prompt = [1, 17, 42, 99]
    greedy = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), use_tqdm=False)
    tiny = llm.generate(prompt, SamplingParams(temperature=1e-39, max_tokens=6, ignore_eos=True), use_tqdm=False)
    small = llm.generate(prompt, SamplingParams(temperature=1e-5, max_tokens=6, ignore_eos=True, seed=0),
                         use_tqdm=False)
    assert tiny[0]["token_ids"] == greedy[0]["token_ids"] == small[0]["token_ids"]
    assert set(greedy[0]["token_ids"]) != {0}


def test_tiny_top_p_keeps_the_most_likely_token():
    """A top_p that rounds to 0 in float32 (1e-50) still keeps the top token; it used to
    keep none and sample token 0."""
    sampler = Sampler(torch.device("cpu"), seed=0)
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    batch = SamplingBatch.from_params([0, 1, 2], [SamplingParams(top_p=1e-50)] * 3)
    assert sampler(logits, batch).tolist() == logits.argmax(-1).tolist()
