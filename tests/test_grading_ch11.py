"""Chapter 11's graded tasks, both ways, and the hit-rate formula against sampled requests."""

from __future__ import annotations

import math
import random

import pytest

from tutorial_engine.book.grading import ch11

from grading_both_ways import assert_graded_both_ways


def _suffix_cached_too(probs, prefix_len, suffix_len, num_replicas, cache_prefixes):
    blind, affinity = ch11.expected_hit_rates(probs, prefix_len, 0, num_replicas, cache_prefixes)
    return blind, affinity


def _unsorted(probs, prefix_len, suffix_len, num_replicas, cache_prefixes):  # the first C, not the top C
    share = prefix_len / (prefix_len + suffix_len)
    return share * sum(probs[:cache_prefixes]), share * sum(probs[:num_replicas * cache_prefixes])


def _affinity_no_better(probs, prefix_len, suffix_len, num_replicas, cache_prefixes):
    blind, _ = ch11.expected_hit_rates(probs, prefix_len, suffix_len, num_replicas, cache_prefixes)
    return blind, blind


def _blind_sees_whole_cluster(probs, prefix_len, suffix_len, num_replicas, cache_prefixes):
    _, affinity = ch11.expected_hit_rates(probs, prefix_len, suffix_len, num_replicas, cache_prefixes)
    return affinity, affinity


def _offered_not_achieved(runs, ttft_p99_bound_ms, target_rate):
    return ch11.replicas_needed([(o, o, p) for o, _, p in runs], ttft_p99_bound_ms, target_rate)


def _ignores_the_bound(runs, ttft_p99_bound_ms, target_rate):
    return ch11.replicas_needed(runs, math.inf, target_rate)


def _rounds_down(runs, ttft_p99_bound_ms, target_rate):
    within = [a for _, a, p in runs if p <= ttft_p99_bound_ms]
    return max(1, int(target_rate / max(within))) if within else None


def _always_longest_match(matched, loads, abs_threshold, rel_threshold):
    return ch11.route(matched, loads, math.inf, rel_threshold)


def _absolute_test_only(matched, loads, abs_threshold, rel_threshold):
    return ch11.route(matched, loads, abs_threshold, 0.0)


def _always_least_loaded(matched, loads, abs_threshold, rel_threshold):
    return ch11.route(matched, loads, -1, 0.0)


WRONG = {
    "ch11.hit_rates": [_suffix_cached_too, _unsorted, _affinity_no_better, _blind_sees_whole_cluster],
    "ch11.replicas": [_offered_not_achieved, _ignores_the_bound, _rounds_down],
    "ch11.fallback": [_always_longest_match, _absolute_test_only, _always_least_loaded],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch11.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch11.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def test_hit_rate_formula_matches_sampled_requests():
    """Route sampled requests randomly or by a partition over replicas whose caches keep
    their C most requested prefixes; the measured hit rates match the formula."""
    rng = random.Random(0)
    probs = [0.3, 0.05, 0.2, 0.1, 0.15, 0.08, 0.07, 0.05]
    prefix_len, suffix_len, num_replicas, cache = 300, 100, 2, 2
    blind, affinity = ch11.expected_hit_rates(probs, prefix_len, suffix_len, num_replicas, cache)
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    owner = {p: i % num_replicas for i, p in enumerate(ranked)}  # a partition: top prefixes spread
    kept_blind = set(ranked[:cache])
    kept = {r: {p for p in ranked if owner[p] == r}.intersection(ranked[:num_replicas * cache])
            for r in range(num_replicas)}
    assert all(len(k) <= cache for k in kept.values())
    n, hits_blind, hits_affinity = 200_000, 0, 0
    for p in rng.choices(range(len(probs)), probs, k=n):
        hits_blind += p in kept_blind
        hits_affinity += p in kept[owner[p]]
    share = prefix_len / (prefix_len + suffix_len)
    assert share * hits_blind / n == pytest.approx(blind, abs=0.005)
    assert share * hits_affinity / n == pytest.approx(affinity, abs=0.005)
