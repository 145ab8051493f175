"""The book's steppers record the real engine objects and render in both forms."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from tutorial_engine.book import steppers  # noqa: E402


def test_scheduler_frames_follow_the_queues():
    stepper = steppers.record_scheduler([6, 9, 4], [2, 3, 1], max_num_seqs=2)
    first, last = stepper.frames[0].data, stepper.frames[-1].data
    assert first["waiting"] == [0, 1, 2] and first["running"] == []
    assert sorted(last["finished"]) == [0, 1, 2] and last["waiting"] == [] and last["running"] == []
    assert all(len(f.data["running"]) <= 2 for f in stepper.frames)


def test_pages_frames_show_block_tables_and_freed_pages():
    stepper = steppers.record_pages(6, 4, [("grow", 0, 6), ("grow", 1, 3), ("free", 0, 0), ("grow", 2, 20)])
    tables = [f.data["tables"] for f in stepper.frames]
    assert tables[1] == {0: [0, 1]} and tables[3] == {1: [2]}
    assert {0, 1} <= set(tables[4][2]) and len(tables[4][2]) == 5  # it reuses the freed pages
    assert stepper.frames[-1].data["free"] == 0


def test_radix_frames_split_and_evict_and_render():
    stepper = steppers.record_radix(2, [("insert", [1, 2, 3, 4]), ("insert", [1, 2, 5, 6]), ("evict", 1)])
    after_split = stepper.frames[2].data["children"][0]
    assert after_split["label"] == "1 2" and len(after_split["children"]) == 2
    assert len(stepper.frames[3].data["children"][0]["children"]) == 1
    html = stepper.animation(dpi=40).data
    assert html.count("data:image/png;base64") == len(stepper.frames)  # one rendered picture per frame


def test_speculation_frames_follow_the_verify_steps_and_roll_back():
    from tutorial_engine import LLM, SamplingParams
    from tutorial_engine.book import TRAINED_MODEL
    from tutorial_engine.book.train_tiny import DRAFT_OUT

    llm = LLM(str(TRAINED_MODEL), kvcache_block_size=4,
              speculative_config={"model": str(DRAFT_OUT), "num_speculative_tokens": 4})
    stepper = steppers.record_speculation(llm, "The for statement", SamplingParams(temperature=0, max_tokens=12))
    llm.shutdown()
    assert stepper.frames
    for frame in stepper.frames:
        d = frame.data
        assert 0 <= d["accepted"] <= len(d["proposals"]) <= 4
        if not d["finished"]:  # the rollback keeps the last known token and the accepted proposals
            assert d["computed_after"] == d["computed_before"] - len(d["proposals"]) + d["accepted"]
            assert d["pages_after"] == -(-d["computed_after"] // 4)
    assert any(f.data["accepted"] < len(f.data["proposals"]) for f in stepper.frames)
    html = stepper.animation(dpi=30).data
    assert html.count("data:image/png;base64") == len(stepper.frames)


def test_chunked_prefill_frames_spend_the_budget_decodes_first():
    stepper = steppers.record_chunked_prefill([10, 30], [3, 2], max_num_batched_tokens=8)
    frames = stepper.frames[1:]
    assert all(sum(n for _, n, _ in f.data["items"]) <= 8 for f in frames)
    kinds = [kind for f in frames for _, _, kind in f.data["items"]]
    assert "partial chunk" in kinds and "last chunk" in kinds and "decode" in kinds
    for f in frames:  # within a step, decodes come before prompt chunks
        order = [kind == "decode" for _, _, kind in f.data["items"]]
        assert order == sorted(order, reverse=True)
    assert all(state == "finished" for state in stepper.frames[-1].data["state"].values())
    assert stepper.animation(dpi=30).data.count("data:image/png;base64") == len(stepper.frames)
