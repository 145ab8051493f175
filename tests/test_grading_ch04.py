"""Chapter 4's graded tasks, both ways (the reference passes; a stub is "not attempted";
known-wrong answers fail), and the references agree with the engine: trees with
``RadixTree``, matches with ``RadixTree.match_prefix``, hit counts with the engine's
scheduler and prefix caches."""

from __future__ import annotations

import itertools
import random

import pytest

from tutorial_engine import SamplingParams
from tutorial_engine.experiments.prefix_hits import StandInEngine
from tutorial_engine.book.grading import ch04
from tutorial_engine.prefix_cache import RadixTree

from grading_both_ways import assert_graded_both_ways


def _never_splits(sequences, block_size):
    """Descends only through edges matched whole; otherwise adds the rest as a sibling."""
    root = {}
    for seq in sequences:
        key = tuple(seq[: len(seq) // block_size * block_size])
        node = root
        while key:
            edge = next((e for e in node if key[: len(e)] == e), None)
            if edge is None:
                node[key] = {}
                break
            node, key = node[edge], key[len(edge):]
    return root


def _splits_at_any_token(sequences, block_size):
    """Block-aligned keys, but splits wherever the tokens differ."""
    return ch04.radix_insert([s[: len(s) // block_size * block_size] for s in sequences], 1)


def _keeps_partial_pages(sequences, block_size):
    return ch04.radix_insert([s + [0] * (-len(s) % block_size) for s in sequences], block_size)


def _token_level_match(tree, query, block_size):
    """Counts matching tokens, not whole blocks."""
    return ch04.radix_match(ch04.radix_insert(_paths(tree), 1), query, 1)


def _whole_edge(tree, query, block_size):
    """Counts the whole edge once its first block matches."""
    node, matched = tree, 0
    while len(query) - matched >= block_size:
        edge = next((e for e in node if e[:block_size] == tuple(query[matched:matched + block_size])), None)
        if edge is None:
            break
        matched, node = matched + len(edge), node[edge]
    return matched


def _first_level_only(tree, query, block_size):
    return ch04.radix_match({e: {} for e in tree}, query, block_size)


def _paths(tree, prefix=()):
    """Every root-to-leaf token sequence of a nested-dict tree."""
    if not tree:
        return [list(prefix)] if prefix else []
    return [p for edge, sub in tree.items() for p in _paths(sub, prefix + edge)]


def _no_last_token(prompts, block_size):
    """Forgets that a prompt's last token is always computed."""
    hits = ch04.cached_tokens([p + [-1] for p in prompts], block_size)
    return {k: [min(h, len(p)) for h, p in zip(v, prompts)] for k, v in hits.items()}


def _previous_prompt_only(prompts, block_size):
    hits = {"hash": [], "radix": []}
    for i, prompt in enumerate(prompts):
        shared = 0 if i == 0 else ch04.cached_tokens([prompts[i - 1], prompt], 1)["radix"][1]
        hits["radix"].append(shared)
        hits["hash"].append(shared // block_size * block_size)
    return hits


def _radix_in_blocks(prompts, block_size):
    hits = ch04.cached_tokens(prompts, block_size)
    return {"hash": hits["hash"], "radix": hits["hash"]}


WRONG = {
    "ch04.insert": [_never_splits, _splits_at_any_token, _keeps_partial_pages],
    "ch04.match": [_token_level_match, _whole_edge, _first_level_only],
    "ch04.hits": [_no_last_token, _previous_prompt_only, _radix_in_blocks],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch04.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch04.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def engine_tree(tree: RadixTree) -> dict:
    def below(node):
        return {tuple(child.key): below(child) for child in node.children.values()}
    return below(tree.root)


def test_insert_and_match_agree_with_the_engine_radix_tree():
    rng = random.Random(4)
    for _ in range(200):
        case = ch04.insert.make_case(rng)
        tree, blocks = RadixTree(case["block_size"]), itertools.count()
        for seq in case["sequences"]:
            key = seq[: len(seq) // case["block_size"] * case["block_size"]]
            tree.insert(key, [next(blocks) for _ in range(len(key) // case["block_size"])])
        assert engine_tree(tree) == ch04.radix_insert(**case), case
        query = ch04.match.make_case(rng)["query"]
        matched, _ = tree.match_prefix(query)
        assert len(matched) * case["block_size"] == ch04.radix_match(ch04.radix_insert(**case), query,
                                                                     case["block_size"]), (case, query)


def test_hits_agree_with_the_engine_caches():
    rng = random.Random(6)
    one_token = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    for _ in range(40):
        case = ch04.hits.make_case(rng)
        expected = ch04.cached_tokens(**case)
        for mode, block_size in (("hash", case["block_size"]), ("radix", 1)):
            engine = StandInEngine(mode, block_size)
            got = [engine.generate([p], [one_token])[0]["num_cached_tokens"] for p in case["prompts"]]
            assert got == expected[mode], (mode, case)
