"""The command that writes each measured file under ``book/data/``.

A chapter that shows how a figure was measured reads the command from here (or from
the file itself, where the benchmark recorded its own command line), so the page, the
"Run it on a GPU" page and the README name the same command.
"""

from __future__ import annotations

from .notebook import load_result

PY = "python -m "

# file name (without .json) -> the command that wrote it, run from the repository root
DATA_COMMANDS: dict[str, str] = {
    "bench_nanovllm_h200": PY + "tutorial_engine bench --output book/data/bench_nanovllm_h200.json",
    "bench_nanovllm_prefusion_h200": PY + "tutorial_engine bench --output book/data/bench_nanovllm_prefusion_h200.json"
    "  # at the commit before the fused kernels",
    "bench_eager_h200": PY + "tutorial_engine.bench.suite --output-dir book/data --only eager",
    "bench_peers4_h200": PY + "tutorial_engine bench --num-seqs 4 --peers hf_generate_batch"
    " --output book/data/bench_peers4_h200.json",
    "bench_vs_nanovllm_h200": PY + "tutorial_engine bench --peers nanovllm --nanovllm-path ../shared/peers/nano-vllm"
    " --output book/data/bench_vs_nanovllm_h200.json",
    "paged_attention_h200": PY + "tutorial_engine.experiments.decode_bandwidth",
    "prefix_caching_ttft": PY + "tutorial_engine.experiments.prefix_ttft",
    "chunked_prefill_h200": PY + "tutorial_engine.experiments.chunked_prefill",
    "cuda_graphs_h200": PY + "tutorial_engine.bench.cuda_graphs --output book/data/cuda_graphs_h200.json",
    "overlap_scheduling_h200": PY + "tutorial_engine.experiments.overlap --out book/data/overlap_scheduling_h200.json",
    "gpu_kernels_h200": PY + "tutorial_engine.experiments.overlap --parts busy --out book/data/gpu_kernels_h200.json",
    "overlap_check_after_tp_h200": PY + "tutorial_engine.experiments.overlap --parts rounds"
    " --out book/data/overlap_check_after_tp_h200.json",
    "serving_h200": PY + "tutorial_engine bench serve --request-rates 8,32,64,96,inf --num-prompts 300"
    " --output book/data/serving_h200.json",
    "qk_norm_rope_h200": PY + "tutorial_engine.experiments.qk_norm_rope",
    "tensor_parallel_h200x2": PY + "tutorial_engine.experiments.tensor_parallel",
    "bench_vs_nanovllm_h100": PY + "tutorial_engine bench --peers nanovllm --nanovllm-path ../shared/peers/nano-vllm"
    " --rounds 3 --output book/data/bench_vs_nanovllm_h100.json",
    "spec_decode_cpu": PY + "tutorial_engine.experiments.spec_decode",
    "serving_split_sim": PY + "tutorial_engine bench serve --compare-engine-core --device sim"
    " --concurrency 8,32,64,128,256 --prompts-per-stream 2 --rounds 2 --output book/data/serving_split_sim.json",
    "routing_sim": PY + "tutorial_engine.cluster.bench_routing",
    "spec_decode_cost_h100": PY + "tutorial_engine.experiments.spec_decode_cost",
    "serving_split_h100": PY + "tutorial_engine bench serve --compare-engine-core --device cuda --num-kvcache-blocks 15000"
    " --concurrency 64,256 --prompts-per-stream 1 --request-rates 32,64 --num-prompts 300 --rounds 2"
    " --output book/data/serving_split_h100.json",
}


def data_command(name: str) -> str:
    """The command that wrote ``book/data/NAME.json``: the one the file recorded, if it
    recorded one, else the one in :data:`DATA_COMMANDS`."""
    try:
        result = load_result(name)
    except FileNotFoundError:
        result = {}
    recorded = result.get("command") or (result.get("environment") or {}).get("command")
    if isinstance(recorded, list):
        recorded = " ".join(recorded)
    return recorded or DATA_COMMANDS[name]
