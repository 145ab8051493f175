"""Every graded task, both ways: it passes on the reference, reports a stub as
"not attempted" and fails on known-wrong answers. Plus the grader core and the
``python -m tutorial_engine.book.grade`` command.

A chapter that adds ``grading/chNN.py`` adds its module to ``MODULES`` and at least
one known-wrong implementation per task to ``WRONG``.
"""

from __future__ import annotations

import random
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from tutorial_engine.book import grade
from tutorial_engine.block_manager import KVCacheManager
from tutorial_engine.book.grading import FAILED, RESULTS, Task, ch00, ch01, ch02, describe, values_match
from tutorial_engine.models.rotary import RotaryEmbedding
from tutorial_engine.sampling_params import SamplingParams
from tutorial_engine.scheduler import Scheduler, SchedulerConfig
from tutorial_engine.sequence import Sequence

from grading_both_ways import assert_graded_both_ways

MODULES = [ch00, ch01, ch02]
ALL_TASKS = [task for module in MODULES for task in module.TASKS]


def _pooled_itl(outputs):
    gaps = [gap for out in outputs for gap in out["itl"]]
    return sum(gaps) / len(gaps) if gaps else 0.0


def _rope_interleaved(x, positions, theta):  # GPT-J pairing (2i, 2i+1): not what Llama checkpoints use
    d = x.shape[-1]
    angles = positions[:, None].float() / theta ** (torch.arange(0, d, 2).float() / d)
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)


def _rope_backwards(x, positions, theta):  # rotates the other way
    return ch01.apply_rope(x, -positions, theta)


def _gqa_tiled(q, k, v):  # repeat() tiles KV heads 0,1,0,1 instead of 0,0,1,1
    group = q.shape[1] // k.shape[1]
    return ch01.gqa_attention(q, k.repeat(1, group, 1), v.repeat(1, group, 1))


def _gqa_unmasked(q, k, v):  # sees future tokens
    group = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q.transpose(0, 1), k.repeat_interleave(group, 1).transpose(0, 1),
                                          v.repeat_interleave(group, 1).transpose(0, 1)).transpose(0, 1)


def _admit_skipping(waiting, num_running, max_num_seqs, max_num_batched_tokens, num_free_blocks, block_size):
    """Lets a short request overtake one that does not fit (not first come, first served)."""
    admitted = 0
    for n in waiting:
        blocks = -(-n // block_size)
        if num_running + admitted < max_num_seqs and n <= max_num_batched_tokens and blocks <= num_free_blocks:
            admitted, max_num_batched_tokens, num_free_blocks = admitted + 1, max_num_batched_tokens - n, num_free_blocks - blocks
    return admitted


def _admit_floor_blocks(waiting, num_running, max_num_seqs, max_num_batched_tokens, num_free_blocks, block_size):
    """Rounds the blocks a prompt needs down: a partly filled block is not counted."""
    return ch02.admit(waiting, num_running, max_num_seqs, max_num_batched_tokens, num_free_blocks * block_size, 1)


def _admit_ignoring_memory(waiting, num_running, max_num_seqs, max_num_batched_tokens, num_free_blocks, block_size):
    return ch02.admit(waiting, num_running, max_num_seqs, max_num_batched_tokens, 10**9, block_size)


WRONG = {
    "ch00.throughput": [
        lambda outputs, elapsed_s: len(outputs) / elapsed_s,  # requests per second, not tokens
        lambda outputs, elapsed_s: sum(len(o["itl"]) for o in outputs) / elapsed_s,  # drops first tokens
    ],
    "ch00.tpot": [
        _pooled_itl,  # the mean ITL, which weighs long requests more
        lambda outputs: sum(sum(o["itl"]) / max(1, len(o["itl"])) for o in outputs) / len(outputs),  # counts 1-token requests
    ],
    "ch01.rope": [_rope_interleaved, _rope_backwards],
    "ch01.gqa": [_gqa_tiled, _gqa_unmasked],
    "ch02.admit": [_admit_skipping, _admit_floor_blocks, _admit_ignoring_memory],
    "ch02.kv_bytes": [
        lambda num_layers, num_kv_heads, head_dim, dtype_bytes: num_layers * num_kv_heads * head_dim * dtype_bytes,  # K only
        lambda num_layers, num_kv_heads, head_dim, dtype_bytes: 2 * num_kv_heads * head_dim * dtype_bytes,  # one layer
    ],
    "ch02.max_seqs": [
        lambda gpu_memory_bytes, gpu_memory_utilization, weight_bytes, kv_bytes_per_token, tokens_per_seq:
            (gpu_memory_bytes - weight_bytes) // (kv_bytes_per_token * tokens_per_seq),  # ignores utilization
        lambda gpu_memory_bytes, gpu_memory_utilization, weight_bytes, kv_bytes_per_token, tokens_per_seq:
            int(gpu_memory_bytes * gpu_memory_utilization - weight_bytes) // (kv_bytes_per_token * tokens_per_seq),  # < 0
        lambda gpu_memory_bytes, gpu_memory_utilization, weight_bytes, kv_bytes_per_token, tokens_per_seq:
            int(gpu_memory_bytes * gpu_memory_utilization) // (kv_bytes_per_token * tokens_per_seq),  # forgets weights
    ],
}


def test_every_task_has_known_wrong_answers_and_a_unique_name():
    names = [task.name for task in ALL_TASKS]
    assert len(names) == len(set(names))
    assert set(WRONG) == set(names)


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


# -- the references are the engine's conventions ----------------------------------------


def test_rope_reference_is_the_engines_rotary_embedding():
    x, positions = torch.randn(7, 3, 16), torch.tensor([0, 1, 2, 50, 51, 300, 511])
    rotary = RotaryEmbedding(16, 512, 10000.0)
    assert torch.allclose(ch01.apply_rope(x, positions, 10000.0), rotary(positions, x, x)[0], atol=1e-5)


def test_gqa_reference_is_torch_sdpa_with_gqa():
    q, k, v = torch.randn(9, 8, 16), torch.randn(9, 2, 16), torch.randn(9, 2, 16)
    expected = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                              is_causal=True, enable_gqa=True).transpose(0, 1)
    assert torch.allclose(ch01.gqa_attention(q, k, v), expected, atol=1e-5)


def _engine_admits(waiting, num_running, max_num_seqs, max_num_batched_tokens, num_free_blocks, block_size, model):
    """Requests the engine's own Scheduler (chunked prefill off) admits in one step."""
    config = SchedulerConfig(max_num_seqs, max_num_batched_tokens, max_model_len=4096, enable_chunked_prefill=False)
    scheduler = Scheduler(config, KVCacheManager(max(1, num_free_blocks), block_size), set())
    if num_free_blocks == 0:  # a manager needs one block; hold it so that none is free
        scheduler.kv_cache.allocator.allocate()
    scheduler.running = [Sequence(10_000 + i, [0], SamplingParams()) for i in range(num_running)]
    for i, n in enumerate(waiting):
        scheduler.add(Sequence(i, [0] * n, SamplingParams()))
    return sum(item.seq.seq_id < 10_000 for item in scheduler.schedule().scheduled)


def test_admit_reference_is_the_engines_admission_rule(tmp_path):
    (tmp_path / "model").mkdir()
    for case in ch02.admission.cases():
        assert ch02.admit(**case) == _engine_admits(**case, model=tmp_path / "model"), case


def test_max_seqs_accepts_float_arithmetic():
    def with_floats(gpu_memory_bytes, gpu_memory_utilization, weight_bytes, kv_bytes_per_token, tokens_per_seq):
        return max(0.0, (gpu_memory_bytes * gpu_memory_utilization - weight_bytes) // (kv_bytes_per_token * tokens_per_seq))

    assert ch02.max_seqs.run(with_floats).passed


# -- the core ------------------------------------------------------------------------


def _sum_task(**overrides) -> Task:
    def reference(xs: list[int]) -> int:
        return sum(xs)

    def make_case(rng: random.Random) -> dict:
        return {"xs": [rng.randint(-9, 9) for _ in range(rng.randint(0, 6))]}

    return Task("test.sum", reference, make_case, "add them up", **{"edge_cases": [{"xs": [1, 2, 3]}], **overrides})


def test_check_prints_the_verdict_and_records_it(capsys):
    task = _sum_task()
    task.check(lambda xs: sum(xs))
    assert capsys.readouterr().out.startswith("✅ test.sum: correct (31 cases")
    assert RESULTS["test.sum"].passed
    task.check(lambda xs: sum(xs) + 1)
    out = capsys.readouterr().out
    assert out.startswith("❌ test.sum: wrong answer on case 1.")
    assert "arguments: xs=[1, 2, 3]" in out and "expected:  6" in out and "got:       7" in out
    assert RESULTS["test.sum"].status == FAILED
    task.hint()
    assert "add them up" in capsys.readouterr().out


def test_an_exception_is_a_failure_naming_the_case():
    result = _sum_task(edge_cases=[{"xs": [4]}, {"xs": []}]).run(lambda xs: xs[0])
    assert result.status == FAILED and result.num_cases == 2
    assert "case 2 raised IndexError" in result.message and "xs=[]" in result.message


def test_a_non_function_is_a_failure():
    result = _sum_task().run(6)
    assert result.status == FAILED and "without ()" in result.message


def test_a_mutating_answer_cannot_corrupt_later_cases():
    task = _sum_task()

    def destroys_input(xs):
        total = sum(xs)
        xs.clear()
        return total

    assert task.run(destroys_input).passed
    assert task.edge_cases == [{"xs": [1, 2, 3]}]
    assert task.run(task.reference).passed


def test_cases_are_seeded():
    assert list(_sum_task().cases()) == list(_sum_task().cases())
    assert list(_sum_task().cases()) != list(_sum_task(seed=1).cases())


@pytest.mark.parametrize("got, expected, same", [
    (1.0 + 1e-9, 1.0, True),
    (1.01, 1.0, False),
    (3, 3.0, True),
    (True, 1, True),
    (1, True, False),
    ([1, 2.0], (1, 2), True),
    ([1, 2], [1, 2, 3], False),
    ({"a": 1.0}, {"a": 1.0000001}, True),
    ({"a": 1}, {"b": 1}, False),
    (torch.ones(2, 3), torch.ones(2, 3) + 1e-7, True),
    (torch.ones(2, 3), torch.ones(3, 2), False),
    (torch.ones(2), torch.tensor([1.0, 1.1]), False),
    ([1, 2], torch.ones(2), False),
    ("a", "a", True),
])
def test_values_match(got, expected, same):
    assert values_match(got, expected) is same


def test_describe_is_short():
    assert describe(torch.zeros(2, 3)) == "tensor(shape=(2, 3), dtype=float32)"
    assert len(describe(list(range(1000)))) == 160


# -- the grade command -----------------------------------------------------------------


def _exercise(path: Path, throughput_body: str, tpot_body: str) -> Path:
    cells = [
        "from tutorial_engine.book.grading import ch00",
        f"def output_throughput(outputs, elapsed_s):\n    {throughput_body}",
        "ch00.throughput.check(output_throughput)",
        "raise RuntimeError('a broken cell does not stop grading')",
        f"def mean_tpot(outputs):\n    {tpot_body}",
        "ch00.tpot.check(mean_tpot)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(nb, path)
    return path


def test_grade_scores_a_notebook_and_keeps_going_after_errors(tmp_path, capsys):
    path = _exercise(tmp_path / "ch00_try.ipynb",
                     'return sum(len(o["token_ids"]) for o in outputs) / elapsed_s',
                     "raise NotImplementedError")
    assert grade.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert str(path) in out
    row = next(line for line in out.splitlines() if line.startswith(str(path)))
    assert " 1/2 " in row and "ch00.tpot (not attempted)" in row
    assert "first error: cell 3: RuntimeError" in row
    assert any(line.split() == ["total", "1/2"] for line in out.splitlines())
    assert "ch00.tpot: not attempted yet" in out.split("Why tasks did not pass")[1]


def test_grade_prints_the_first_failing_case(tmp_path, capsys):
    _exercise(tmp_path / "ch00_try.ipynb", "return 1.0", "return 0.0")
    assert grade.main([str(tmp_path)]) == 1
    why = capsys.readouterr().out.split("Why tasks did not pass")[1]
    assert "ch00.throughput: wrong answer on case 1" in why and "expected:" in why and "got:       1.0" in why


def test_grade_counts_tasks_whose_check_never_ran():
    score = grade.NotebookScore(Path("exercises/ch00_first_steps.ipynb"),
                                {name: grade.NOT_RUN for name in grade.expected_tasks(Path("ch00_x.ipynb"))})
    assert score.num_tasks == len(ch00.TASKS) and score.num_passed == 0
    assert "ch00.tpot (not run)" in grade.format_table([score])
    assert "check cell never ran" in grade.format_table([score])


def test_grade_rejects_paths_that_are_not_notebooks(tmp_path, capsys):
    assert grade.main([str(tmp_path)]) == 2
    assert "no chNN_*.ipynb" in capsys.readouterr().err
    assert grade.main([str(tmp_path / "missing.ipynb")]) == 2


def test_grade_reports_an_empty_written_answer_as_not_attempted(tmp_path, capfd):
    path = _exercise(tmp_path / "ch00_try.ipynb", 'return sum(len(o["token_ids"]) for o in outputs) / elapsed_s',
                     'return 0.0')
    nb = nbformat.read(path, as_version=4)
    for source in ("*Your answer here.*", "", "My answer: the CPU waits."):
        cell = nbformat.v4.new_markdown_cell(source)
        cell.metadata["tags"] = ["exercise"]
        nb.cells.append(cell)
    nbformat.write(nb, path)
    assert grade.written_answers_left_empty(nb) == [6, 7]
    assert grade.main([str(path)]) == 1
    out = capfd.readouterr()
    assert "written answer in cell 6 (not attempted)" in out.out and "cell 7 (not attempted)" in out.out
    assert "cell 8" not in out.out
    assert "without encryption" not in out.err + out.out  # the kernel's own log stays quiet
