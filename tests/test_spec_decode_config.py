"""speculative_config: vLLM's dict form parsed, every mistake named before any work."""

from __future__ import annotations

import json

import pytest

from tutorial_engine.book.train_tiny import DEFAULT_OUT, DRAFT_OUT
from tutorial_engine.loader import load_hf_config
from tutorial_engine.spec_decode import SpeculativeConfig, check_draft_compatible, parse_speculative_config


def test_ngram_form_is_parsed():
    config = SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 4,
                                          "prompt_lookup_min": 2, "prompt_lookup_max": 5})
    assert (config.method, config.num_speculative_tokens, config.model) == ("ngram", 4, None)
    assert (config.prompt_lookup_min, config.prompt_lookup_max) == (2, 5)


def test_ngram_bounds_default_and_a_single_bound_stands_for_both():
    assert SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 2}).prompt_lookup_min == 1
    only_max = SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3})
    assert (only_max.prompt_lookup_min, only_max.prompt_lookup_max) == (3, 3)
    only_min = SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 2})
    assert (only_min.prompt_lookup_min, only_min.prompt_lookup_max) == (2, 2)


def test_draft_model_form_implies_the_method():
    config = SpeculativeConfig.from_dict({"model": str(DRAFT_OUT), "num_speculative_tokens": 3})
    assert (config.method, config.model, config.prompt_lookup_min) == ("draft_model", str(DRAFT_OUT), None)
    config.check_draft(load_hf_config(DEFAULT_OUT))  # the shipped draft fits the shipped model


def test_json_text_and_none_are_accepted():
    assert parse_speculative_config(None) is None
    parsed = parse_speculative_config(json.dumps({"method": "ngram", "num_speculative_tokens": 4}))
    assert parsed == SpeculativeConfig("ngram", 4, prompt_lookup_min=1, prompt_lookup_max=4)
    assert parse_speculative_config(parsed) is parsed
    with pytest.raises(ValueError, match=r"is not valid JSON .*'\{\"method\": \"ngram\""):
        parse_speculative_config("{method: ngram}")


@pytest.mark.parametrize("config, error, message", [
    ({"method": "ngram", "num_speculative_tokens": 0}, ValueError, r"num_speculative_tokens=0 must be >= 1"),
    ({"method": "ngram", "num_speculative_tokens": -2}, ValueError, r"num_speculative_tokens=-2 must be >= 1"),
    ({"method": "ngram", "num_speculative_tokens": 2.0}, TypeError,
     r"num_speculative_tokens=2\.0 has type float; num_speculative_tokens must be an int"),
    ({"method": "ngram", "num_speculative_tokens": True}, TypeError, r"num_speculative_tokens=True has type bool"),
    ({"method": "ngram"}, ValueError, r"needs 'num_speculative_tokens'"),
    ({"num_speculative_tokens": 2}, ValueError, r"needs 'method' \('ngram'\) or 'model'"),
    ({"method": "lookahead", "num_speculative_tokens": 2}, ValueError,
     r"method='lookahead' is unknown; choose one of \('ngram', 'draft_model'\)"),
    ({"method": "eagle", "num_speculative_tokens": 2}, ValueError, r"method='eagle' is not built in this engine"),
    ({"method": "ngram", "num_speculative_tokens": 2, "num_lookahead": 3}, ValueError,
     r"unknown key\(s\) \['num_lookahead'\]; the keys are \('method', 'model'"),
    ({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 4, "prompt_lookup_max": 2}, ValueError,
     r"prompt_lookup_min=4 > prompt_lookup_max=2; .* swap them"),
    ({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 0, "prompt_lookup_max": 2}, ValueError,
     r"prompt_lookup_min=0 must be >= 1"),
    ({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": "4"}, TypeError,
     r"prompt_lookup_max='4' has type str"),
    ({"method": "ngram", "model": "/x", "num_speculative_tokens": 2}, ValueError,
     r"model='/x' does not apply to method='ngram'"),
    ({"method": "draft_model", "num_speculative_tokens": 2}, ValueError, r"method='draft_model' needs 'model'"),
    ({"model": "/nonexistent/draft", "num_speculative_tokens": 2}, FileNotFoundError,
     r"model='/nonexistent/draft' is not a folder; pass the path of a draft checkpoint"),
    ({"model": 3, "num_speculative_tokens": 2}, TypeError, r"model=3 has type int; pass the draft checkpoint folder"),
    ({"model": str(DRAFT_OUT), "num_speculative_tokens": 2, "prompt_lookup_max": 3}, ValueError,
     r"prompt_lookup_max applies to method='ngram' only"),
])
def test_each_mistake_names_the_field_and_the_fix(config, error, message):
    with pytest.raises(error, match=message):
        SpeculativeConfig.from_dict(config)


def test_a_non_dict_is_refused():
    with pytest.raises(TypeError, match=r"speculative_config=\[4\] has type list; pass a dict"):
        SpeculativeConfig.from_dict([4])


def test_a_draft_with_another_vocabulary_is_refused(tmp_path):
    target = load_hf_config(DEFAULT_OUT)
    other = load_hf_config(DRAFT_OUT)
    other.vocab_size = target.vocab_size + 1
    with pytest.raises(ValueError, match=r"vocab_size=1025 but the target has vocab_size=1024; a draft must share"):
        check_draft_compatible(other, target, "d")
    other.save_pretrained(tmp_path)  # the same check through the config's own path
    config = SpeculativeConfig.from_dict({"model": str(tmp_path), "num_speculative_tokens": 2})
    with pytest.raises(ValueError, match=rf"draft model {tmp_path} has vocab_size=1025"):
        config.check_draft(target)


def test_a_draft_folder_without_config_is_refused(tmp_path):
    config = SpeculativeConfig.from_dict({"model": str(tmp_path), "num_speculative_tokens": 2})
    with pytest.raises(FileNotFoundError, match=r"has no config.json"):
        config.check_draft(load_hf_config(DEFAULT_OUT))
