"""Chapter 4 tasks: a radix tree by hand, matching against it, and predicted hit rates.

A tree is written as nested dicts: each key is an edge (a tuple of token ids, a
whole number of blocks), its value the subtree below it; the outer dict is the root.
``radix_insert`` builds it the way ``tutorial_engine.prefix_cache.RadixTree.insert``
does (block-aligned keys, a split where a new key leaves an edge half-way), so
``tests/test_grading_ch04.py`` checks the references against the engine's tree and
the engine's prefix caches.
"""

from __future__ import annotations

import random

from .task import Task


def radix_insert(sequences: list[list[int]], block_size: int) -> dict:
    """The tree after inserting each sequence's whole blocks, in order."""
    root: dict = {}
    for seq in sequences:
        key = tuple(seq[: len(seq) // block_size * block_size])  # a partial last block is not cached
        node = root
        while key:
            edge = next((e for e in node if e[:block_size] == key[:block_size]), None)
            if edge is None:  # nothing shares the first block: the rest becomes one new leaf
                node[key] = {}
                break
            n = 0  # tokens shared with the edge, in whole blocks
            while n < min(len(edge), len(key)) and edge[n : n + block_size] == key[n : n + block_size]:
                n += block_size
            if n < len(edge):  # the key leaves the edge half-way (or ends inside it): split
                node[edge[:n]] = {edge[n:]: node.pop(edge)}
                edge = edge[:n]
            node, key = node[edge], key[n:]
    return root


def radix_match(tree: dict, query: list[int], block_size: int) -> int:
    """Tokens of ``query`` the tree holds: its longest cached prefix, in whole blocks."""
    node, matched = tree, 0
    while True:
        block = tuple(query[matched : matched + block_size])
        edge = next((e for e in node if e[:block_size] == block), None) if len(block) == block_size else None
        if edge is None:
            return matched
        n = 0
        while n < len(edge) and tuple(query[matched + n : matched + n + block_size]) == edge[n : n + block_size]:
            n += block_size
        matched += n
        if n < len(edge):  # the query leaves this edge inside it
            return matched
        node = node[edge]


def cached_tokens(prompts: list[list[int]], block_size: int) -> dict[str, list[int]]:
    """Prompt tokens each request gets from the cache, requests sent one after another
    (each generating one token, so only prompts are cached; nothing is evicted):
    ``"hash"`` with ``block_size``-token blocks, ``"radix"`` token-granular (block size 1)."""
    hits: dict[str, list[int]] = {"hash": [], "radix": []}
    for i, prompt in enumerate(prompts):
        shared = 0
        for earlier in prompts[:i]:
            n = 0
            while n < min(len(prompt), len(earlier)) and prompt[n] == earlier[n]:
                n += 1
            shared = max(shared, n)
        shared = min(shared, len(prompt) - 1)  # the last token is always computed
        hits["radix"].append(shared)
        hits["hash"].append(shared // block_size * block_size)  # whole blocks only
    return hits


def _sequences(rng: random.Random, num: int, alphabet: int = 3) -> list[list[int]]:
    """Sequences that share prefixes: cuts of a few base sequences plus short tails."""
    bases = [[rng.randrange(alphabet) for _ in range(16)] for _ in range(2)]
    return [rng.choice(bases)[: rng.randint(0, 16)] + [rng.randrange(alphabet) for _ in range(rng.randint(0, 4))]
            for _ in range(num)]


def _insert_case(rng: random.Random) -> dict:
    return {"sequences": _sequences(rng, rng.randint(1, 6)), "block_size": rng.choice([1, 2, 3, 4])}


def _match_case(rng: random.Random) -> dict:
    case = _insert_case(rng)
    query = _sequences(rng, 1)[0] if rng.random() < 0.3 else list(rng.choice(case["sequences"]))
    query = query[: rng.randint(0, len(query))] + [rng.randrange(3) for _ in range(rng.randint(0, 3))]
    return {"tree": radix_insert(**case), "query": query, "block_size": case["block_size"]}


def _hits_case(rng: random.Random) -> dict:
    prompts = [p for p in _sequences(rng, rng.randint(1, 6), alphabet=4) if p] or [[0]]
    return {"prompts": prompts, "block_size": rng.choice([2, 4, 8])}


insert = Task(
    "ch04.insert", radix_insert, _insert_case,
    hint_text="Walk down from the root. At each node, look for the child edge that starts with the key's first "
              "block. None: the rest of the key becomes one new leaf. Otherwise count the tokens the edge and the "
              "key share, a whole block at a time; if that is less than the edge, split it: the shared part becomes "
              "a new edge whose only child is the old remainder. Then continue below with the rest of the key.",
    edge_cases=[
        {"sequences": [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 7, 8]], "block_size": 2},  # split after two blocks
        {"sequences": [[1, 2, 3, 4, 5, 6], [1, 2, 3, 9, 9, 9]], "block_size": 2},  # diverges inside a block
        {"sequences": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7]], "block_size": 4},  # partial blocks are dropped
        {"sequences": [[5, 6, 7, 8], [5, 6]], "block_size": 1},  # a key that ends inside an edge splits it
    ],
)

match = Task(
    "ch04.match", radix_match, _match_case,
    hint_text="Compare the query a block at a time. At a node, pick the child whose edge starts with the query's "
              "next block (no such child, or fewer than block_size tokens left: stop). Count the blocks of the edge "
              "the query agrees with; if it leaves the edge inside it, stop there, else go down to that child.",
    edge_cases=[
        {"tree": radix_insert([[1, 2, 3, 4, 5, 6]], 2), "query": [1, 2, 3, 4, 5, 7], "block_size": 2},
        {"tree": radix_insert([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 7, 8]], 2), "query": [1, 2, 3, 4, 7, 8, 9],
         "block_size": 2},
        {"tree": radix_insert([[1, 2, 3]], 1), "query": [], "block_size": 1},
    ],
)

hits = Task(
    "ch04.hits", cached_tokens, _hits_case,
    hint_text="For each prompt, find its longest common prefix with any earlier prompt (the cache holds every "
              "earlier prompt). Then cap it at len(prompt) - 1: the last token always runs. Radix at block size 1 "
              "serves exactly that; hashing serves it rounded down to whole blocks.",
    edge_cases=[
        {"prompts": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]], "block_size": 4},
        {"prompts": [[1, 2, 3, 4], [1, 2, 3, 4]], "block_size": 2},  # a full repeat still computes one token
        {"prompts": [[1, 2, 3, 4, 5, 6], [1, 2, 9], [1, 2, 3, 4, 5, 7]], "block_size": 4},  # best match is not the last
    ],
)

TASKS = [insert, match, hits]
