"""How often speculation pays on the book's model, on a CPU (chapter 10).

For prompt lookup (``ngram``, k = 2, 4, 8) and the book's draft model (k = 2, 4), on two
workloads of the book's model (``tiny-qwen3-pydoc``), greedy:

* ``prose``: openings of Python's help topics; the model writes on, rarely repeating;
* ``copy``: a passage of a help topic, then its first words again: the model repeats
  the passage, the case prompt lookup is made for (editing or quoting a text the
  prompt holds).

Each prompt runs alone, so a request's target forward passes are the engine's steps.
Per setting: proposals, acceptances, the acceptance rate (accepted / proposed), the
per-token acceptance ``alpha`` (accepted / proposals actually tested: a proposal after
a rejection is never tested), the mean accepted length per verify step (tokens emitted
per verify row, the target's own included) against the independent-acceptance
prediction ``(1 - alpha^(k+1)) / (1 - alpha)``, and the target passes against plain
decoding's. Wall-clock speed-ups are left to a GPU: on a CPU the 0.9M-parameter model
is not memory-bound, so a verify pass is not nearly free.

Usage: ``python -m tutorial_engine.experiments.spec_decode`` writes
``book/data/spec_decode_cpu.json``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import torch

from .. import LLM, SamplingParams
from ..book import TRAINED_MODEL
from ..book.train_tiny import DRAFT_OUT
from ..spec_decode import expected_accepted_length
from . import write_json

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "book" / "data" / "spec_decode_cpu.json"

PROSE = ["The import statement", "Exceptions are", "A class definition", "The for statement", "Assignment statements",
         "The while statement", "A function definition", "Names refer to objects"]
# The first 40 words of help topics (the book model's training text, header included),
# then the topic's first words again: the model goes on to repeat the passage.
TOPICS = ["exceptions", "for", "while", "if", "class", "import", "assert", "pass"]


def copy_prompts() -> list[str]:
    from pydoc_data.topics import topics

    passages = [" ".join(topics[name].split()[:40]) for name in TOPICS]
    return [passage + "\n\n" + " ".join(passage.split()[:6]) for passage in passages]


SETTINGS = [("ngram", 2), ("ngram", 4), ("ngram", 8), ("draft", 2), ("draft", 4)]
MAX_TOKENS = 48


def speculative_config(method: str, k: int) -> dict:
    if method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_min": 1, "prompt_lookup_max": 4}
    return {"model": str(DRAFT_OUT), "num_speculative_tokens": k}


def run(prompts: list[str], config: dict | None) -> dict:
    """Each prompt alone; the counters summed, and every verify row's (proposed, accepted)."""
    llm = LLM(TRAINED_MODEL, speculative_config=config)
    rows: list[tuple[int, int]] = []
    if config is not None:  # record each verify row as the engine counts it
        stats = llm.engine.scheduler.spec_decode_stats
        record = stats.record

        def logged(num_draft_tokens: int, num_accepted: int) -> None:
            rows.append((num_draft_tokens, num_accepted))
            record(num_draft_tokens, num_accepted)

        stats.record = logged
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    tokens = [llm.generate(p, params, use_tqdm=False)[0]["token_ids"] for p in prompts]
    metrics = llm.get_metrics()
    llm.shutdown()
    return {"tokens": tokens, "num_steps": metrics["num_steps"], "rows": rows, "metrics": metrics}


def summarize(result: dict, plain: dict, k: int) -> dict:
    rows = [(n, a) for n, a in result["rows"] if n > 0]
    proposed = sum(n for n, _ in rows)
    accepted = sum(a for _, a in rows)
    tested = sum(min(a + 1, n) for n, a in rows)  # up to and including the first rejection
    alpha = accepted / tested if tested else float("nan")
    mean_length = 1 + accepted / len(rows) if rows else float("nan")
    full = [(n, a) for n, a in rows if n == k]
    return {
        "outputs_identical": result["tokens"] == plain["tokens"],
        "num_verify_rows": len(rows),
        "num_draft_tokens": proposed,
        "num_accepted_tokens": accepted,
        "mean_proposals_per_row": proposed / len(rows) if rows else float("nan"),
        "acceptance_rate": accepted / proposed if proposed else float("nan"),
        "alpha": alpha,
        "mean_accepted_length": mean_length,
        "predicted_accepted_length": expected_accepted_length(alpha, k) if tested else float("nan"),
        "rows_all_accepted": sum(a == n for n, a in rows) / len(rows) if rows else float("nan"),
        "rows_none_accepted": sum(a == 0 for _, a in rows) / len(rows) if rows else float("nan"),
        "num_full_rows": len(full),
        "target_passes": result["num_steps"],
        "plain_target_passes": plain["num_steps"],
        "pass_reduction": 1 - result["num_steps"] / plain["num_steps"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {
        "command": "python -m tutorial_engine.experiments.spec_decode",
        "date": datetime.date.today().isoformat(),
        "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
                  f"Python {sys.version.split()[0]}",
        "model": TRAINED_MODEL.name, "draft": DRAFT_OUT.name, "max_tokens": MAX_TOKENS,
        "workloads": {"prose": PROSE, "copy": copy_prompts()},
        "results": [],
    }
    for workload, prompts in result["workloads"].items():
        plain = run(prompts, None)
        for method, k in SETTINGS:
            summary = summarize(run(prompts, speculative_config(method, k)), plain, k)
            result["results"].append({"workload": workload, "method": method, "k": k, **summary})
            print(f"{workload:5} {method:5} k={k}: alpha {summary['alpha']:.2f}, accepted length "
                  f"{summary['mean_accepted_length']:.2f} (independent: {summary['predicted_accepted_length']:.2f}), "
                  f"target passes {summary['target_passes']} vs {summary['plain_target_passes']}")
            write_json(result, args.out)


if __name__ == "__main__":
    main()
