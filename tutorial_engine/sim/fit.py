"""Refit the simulated device's timing model from the recorded H200 run.

``python -m tutorial_engine.sim.fit --write`` replays the recorded workload through this
engine's scheduler (on a simulated device that takes no time) to recover each step's
context length, fits :class:`~tutorial_engine.sim.timing.StepTimeModel` to the recorded
wall times and writes ``h200_step_time.json``. Kept apart from ``timing.py`` because it
drives the whole engine, which the simulated device itself must not import.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path

from .timing import FIT_PATH, REPO_ROOT, SOURCE, ZERO_TIME, StepFeatures, StepTimeModel, fit

def recorded_series(path: str | Path = REPO_ROOT / SOURCE) -> dict:
    """The engine's per-step series and settings from the benchmark JSON."""
    detail = json.loads(Path(path).read_text())["comparison"]["ours_detail"]
    return {"series": detail["engine"]["step_series"], "config": detail["engine"]["config"],
            "kv_cache": detail["engine"]["kv_cache"], "workload": detail["workload"]["name"]}


def replay_features(recorded: dict) -> list[StepFeatures]:
    """Run the recorded workload through this engine's scheduler on a simulated device
    that takes no time, with the recorded settings; return each step's features.

    Raises:
        RuntimeError: the replay's batch sizes or prefill tokens differ from the
            recorded ones (the scheduler changed since the measurement).
    """
    from ..bench.models import architecture_folder
    from ..bench.workloads import make_requests
    from ..config import EngineConfig
    from ..engine import LLMEngine
    from ..loader import decoder_spec, load_hf_config
    from .device import make_simulated_executor

    settings = recorded["config"]
    requests = make_requests(recorded["workload"])
    with tempfile.TemporaryDirectory() as folder:
        config = EngineConfig(model=str(architecture_folder("qwen3-0.6b", folder)), device="cpu",
                              max_num_seqs=settings["max_num_seqs"],
                              max_num_batched_tokens=settings["max_num_batched_tokens"],
                              max_model_len=settings["max_model_len"],
                              kvcache_block_size=settings["kvcache_block_size"],
                              num_kvcache_blocks=recorded["kv_cache"]["num_blocks"],
                              enable_chunked_prefill=settings["enable_chunked_prefill"], overlap_scheduling=True,
                              prefix_caching=settings["prefix_caching"])
        spec = decoder_spec(load_hf_config(config.model))
        executor = make_simulated_executor(config, spec, config.max_model_len, timing=ZERO_TIME)
        engine = LLMEngine(config, executor=executor)
    for prompt, params in zip(requests.prompts, requests.sampling_params()):
        engine.add_sequence(engine.make_sequence(prompt, params))
    prefill_tokens = []
    while engine.has_unfinished():
        before = engine.metrics.num_prefill_tokens
        engine.step()
        prefill_tokens.append(engine.metrics.num_prefill_tokens - before)
    features = [record.features for record in executor.device.steps]
    # The overlapped loop makes one call more than it launches steps: the last only waits.
    replayed = {"num_seqs": [f.num_seqs for f in features] + [0], "prefill_tokens": prefill_tokens}
    for key, values in replayed.items():
        if values != recorded["series"][key]:
            raise RuntimeError(f"the replay's {key} per step differ from {SOURCE}'s: the scheduler no longer "
                               "plans the recorded steps, so their context lengths cannot be reconstructed.")
    return features



def refit(path: str | Path = REPO_ROOT / SOURCE) -> StepTimeModel:
    """Fit the model to the recorded H200 run (replaying it for context lengths)."""
    recorded = recorded_series(path)
    return fit(replay_features(recorded), [ms / 1e3 for ms in recorded["series"]["wall_ms"]])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fit the simulated device's step-time model to " + SOURCE)
    parser.add_argument("--write", action="store_true", help=f"write the fit to {FIT_PATH.name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = refit()
    print(json.dumps(asdict(model), indent=2))
    print(f"prefill throughput {model.prefill_tok_s:,.0f} tok/s; decode step of 256 x 1024 tokens "
          f"{1e3 * model.step_time(StepFeatures(256, 256, 256 * 1024)):.2f} ms")
    if args.write:
        model.save()
        print(f"wrote {FIT_PATH}")


if __name__ == "__main__":
    main()
