"""nano-vLLM as a peer, measured in the same run on the same GPU.

The H200 machines' CPU speed varies from one to the next, which moves both engines'
absolute throughput by 10-20%; only a ratio measured on one machine is a result. So
``python -m tutorial_engine bench --peers nanovllm`` runs each engine in its own
process, in alternating rounds (nano-vLLM first, once unrecorded to fill its
``torch.compile`` cache, then ours, nano-vLLM, ours, ...), and reports each engine's
median and spread and the ratio of medians.

Both load the same checkpoint folder, written here: the Qwen3-0.6B architecture with
random bf16 weights (transformers' initialisation, saved by ``save_pretrained``) and
a word-level tokenizer over the model's vocabulary (nano-vLLM needs one; the
workload's prompts are token ids). nano-vLLM runs its own ``bench.py`` settings
(``enforce_eager=False, max_model_len=4096``, its defaults otherwise) on the same
requests, drawn by :func:`~tutorial_engine.bench.workloads.make_requests`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_NANOVLLM = Path(__file__).resolve().parents[3] / "shared" / "peers" / "nano-vllm"
RESULT_TAG = "nanovllm-result:"


def write_random_checkpoint(folder: Path, config: dict, seed: int = 0) -> Path:
    """A complete checkpoint folder for ``config``: random bf16 weights and a tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.bfloat16)
    model.save_pretrained(folder)
    vocab = {f"<t{i}>": i for i in range(config["vocab_size"])}
    eos = f"<t{config['eos_token_id']}>"
    words = Tokenizer(models.WordLevel(vocab, unk_token="<t0>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<t0>", eos_token=eos).save_pretrained(folder)
    return folder


def _last_tagged_json(output: str, tag: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith(tag)]
    if not lines:
        raise RuntimeError(f"no result line in the output:\n{output[-3000:]}")
    return json.loads(lines[-1][len(tag):])


def run_nanovllm(model: Path, nanovllm: Path, timeout: float) -> dict:
    """One nano-vLLM process over the workload; its output tok/s and wall time."""
    command = [sys.executable, "-m", "tutorial_engine.bench.nanovllm", "--worker", "--model", str(model),
               "--nanovllm", str(nanovllm)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"nano-vLLM failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return _last_tagged_json(done.stdout, RESULT_TAG)


def run_ours(model: Path, engine_flags: list[str], timeout: float) -> dict:
    """One process of this engine's benchmark command over the workload."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ours.json"
        command = [sys.executable, "-m", "tutorial_engine", "bench", "--model", str(model), "--output", str(out),
                   *engine_flags]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"our engine failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def compare(model: Path, nanovllm: Path, rounds: int, engine_flags: list[str], save=lambda result: None,
            timeout: float = 300) -> dict:
    """Alternating rounds; returns (and saves after each run) the comparison."""
    result: dict = {"rounds": rounds, "engine_flags": engine_flags, "nanovllm_path": str(nanovllm),
                    "nanovllm": [], "ours": [], "ours_detail": None}
    start = time.perf_counter()
    result["nanovllm_cold"] = run_nanovllm(model, nanovllm, timeout)  # fills the torch.compile cache
    print(f"  nano-vLLM (cold compile cache): {result['nanovllm_cold']['output_tok_s']:,.0f} tok/s", flush=True)
    for _ in range(rounds):
        ours = run_ours(model, engine_flags, timeout)
        result["ours"].append(ours["engine"]["output_tok_s"])
        result["ours_detail"] = ours
        peer = run_nanovllm(model, nanovllm, timeout)
        result["nanovllm"].append(peer["output_tok_s"])
        print(f"  round: ours {result['ours'][-1]:,.0f} tok/s, nano-vLLM {peer['output_tok_s']:,.0f} tok/s", flush=True)
        result["ours_summary"], result["nanovllm_summary"] = summarize(result["ours"]), summarize(result["nanovllm"])
        result["ratio_of_medians"] = result["ours_summary"]["median"] / result["nanovllm_summary"]["median"]
        save(result)
    result["wall_s"] = time.perf_counter() - start
    print(f"  median: ours {result['ours_summary']['median']:,.0f}, nano-vLLM {result['nanovllm_summary']['median']:,.0f}"
          f" tok/s: {result['ratio_of_medians']:.2f}x", flush=True)
    return result


def worker(model: Path, nanovllm: Path) -> None:
    """Inside the nano-vLLM process: its ``bench.py``, on our drawing of the same requests."""
    sys.path.insert(0, str(nanovllm))
    from nanovllm import LLM, SamplingParams

    from .workloads import make_requests

    requests = make_requests("nanovllm")
    llm = LLM(str(model), enforce_eager=False, max_model_len=4096)
    params = [SamplingParams(temperature=requests.workload.temperature, ignore_eos=True, max_tokens=n)
              for n in requests.max_tokens]
    llm.generate(["Benchmark: "], SamplingParams())
    start = time.time()
    llm.generate(requests.prompts, params, use_tqdm=False)
    elapsed = time.time() - start
    print(RESULT_TAG + json.dumps({"time_s": elapsed, "output_tok_s": requests.num_output_tokens / elapsed,
                                   "output_tokens": requests.num_output_tokens}), flush=True)
    os._exit(0)  # nano-vLLM's atexit handler can hang on a torn-down process group


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="nano-vLLM worker process (used by `bench --peers nanovllm`)")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--nanovllm", type=Path, required=True)
    args = parser.parse_args(argv)
    worker(args.model, args.nanovllm)


if __name__ == "__main__":
    main()
