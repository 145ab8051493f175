"""``python -m tutorial_engine serve``: the OpenAI-compatible server on the command line.

    python -m tutorial_engine serve --model /path/to/Qwen3-0.6B --port 8000 --api-key KEY

then point any OpenAI client at ``http://127.0.0.1:8000/v1``. Binds to loopback unless
``--host`` says otherwise (``--host 0.0.0.0`` serves the network: set ``--api-key``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..default_model import default_model
from .limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_STOP_LENGTH, DEFAULT_MAX_STOP_STRINGS, ServerLimits

ENGINE_CORES = ("process", "inproc")

# EngineConfig fields settable from the command line: (flag, type, help). Unset flags
# keep EngineConfig's defaults.
ENGINE_FLAGS = (
    ("--max-model-len", int, "longest prompt + output (default: the model's limit)"),
    ("--max-num-seqs", int, "most requests in the running batch"),
    ("--max-num-batched-tokens", int, "token budget of one step"),
    ("--gpu-memory-utilization", float, "fraction of GPU memory for weights + KV cache"),
    ("--num-kvcache-blocks", int, "KV-cache pages (default: sized from memory)"),
    ("--attention-backend", str, "auto, torch, triton or flash_attn"),
    ("--prefix-caching", str, "none, hash or radix"),
    ("--scheduling-policy", str, "fcfs (first come first served) or sjf (shortest prompt first)"),
    ("--tensor-parallel-size", int, "GPUs to split the model over"),
    ("--distributed-executor-backend", str, "mp (worker processes on this machine) or ray (Ray actors; RAY_ADDRESS)"),
    ("--device", str, "auto, cpu, cuda, cuda:N, or sim (a simulated H200 that runs no model: host costs on a CPU)"),
    ("--dtype", str, "auto, float32, float16 or bfloat16"),
    ("--load-format", str, "auto, or dummy (random weights, for speed measurements)"),
    ("--speculative-config", str, 'speculative decoding as JSON, e.g. \'{"method": "ngram", "num_speculative_tokens": 4}\''),
)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="checkpoint folder (default: stories260K if ../shared is beside the checkout, "
                        "else the package's small trained model; the same as `generate`)")
    for flag, kind, text in ENGINE_FLAGS:
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--enforce-eager", action="store_true", help="CUDA graphs off")
    p.add_argument("--no-chunked-prefill", action="store_true")
    p.add_argument("--no-overlap", action="store_true", help="the plain loop (overlap scheduling off)")


def engine_options(args: argparse.Namespace) -> dict:
    """``LLMEngine``'s EngineConfig keyword arguments from the parsed flags."""
    options = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _, _ in ENGINE_FLAGS}
    options = {name: value for name, value in options.items() if value is not None}
    if args.enforce_eager:
        options["enforce_eager"] = True
    if args.no_chunked_prefill:
        options["enable_chunked_prefill"] = False
    if args.no_overlap:
        options["overlap_scheduling"] = False
    elif args.device == "sim":  # the simulated device stands for a GPU, where overlap scheduling is the default
        options["overlap_scheduling"] = True
    return options


def engine_argv(args: argparse.Namespace) -> list[str]:
    """The engine flags of ``args`` as command-line words, to start a server with them."""
    argv = ["--model", args.model] if args.model else []
    for flag, _, _ in ENGINE_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            argv += [flag, str(value)]
    switches = {"--enforce-eager": args.enforce_eager, "--no-chunked-prefill": args.no_chunked_prefill,
                "--no-overlap": args.no_overlap}
    return argv + [flag for flag, on in switches.items() if on]


def add_serve_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the OpenAI completions and chat APIs over HTTP")
    add_engine_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health and /metrics")
    p.add_argument("--chat-template", default=None,
                   help="a Jinja chat template file, for a checkpoint whose tokenizer has none")
    p.add_argument("--served-model-name", default=None, help="the model's name in the API (default: folder name)")
    p.add_argument("--max-queued-requests", type=int, default=None,
                   help="answer 503 while this many requests wait for admission (default: no limit)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help="largest request body, else 413 (default: 4 MiB)")
    p.add_argument("--max-stop-strings", type=int, default=DEFAULT_MAX_STOP_STRINGS,
                   help="most stop strings per request, else 400 (default: 16; OpenAI allows 4)")
    p.add_argument("--max-stop-length", type=int, default=DEFAULT_MAX_STOP_LENGTH,
                   help="longest stop string in characters, else 400 (default: 256)")
    p.add_argument("--engine-core", choices=ENGINE_CORES, default="process",
                   help="process: the engine loop in its own process, over ZeroMQ (default); inproc: in a thread "
                        "of the server's process (the single-process server, for comparison)")
    p.add_argument("--data-parallel-size", type=int, default=1,
                   help="engine replicas on Ray Serve behind this endpoint, each with its own KV and prefix cache "
                        "(needs the cluster extra; joins RAY_ADDRESS if set, else starts a local Ray instance)")
    p.add_argument("--router", choices=("prefix_affinity", "power_of_two"), default="prefix_affinity",
                   help="with --data-parallel-size > 1: send each request to the replica caching the longest "
                        "prefix of it (SGLang's rule), or Ray Serve's default power-of-two choices")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run_serve)


def make_app(args: argparse.Namespace):
    """The engine and the app the flags describe (the model loads here)."""
    from .. import engine as engine_module
    from ..config import EngineConfig
    from .api import build_app
    from .async_engine import AsyncEngine
    from .async_llm import AsyncLLM

    model = args.model or default_model()
    if args.max_queued_requests is not None and args.max_queued_requests < 1:
        raise ValueError(f"--max-queued-requests={args.max_queued_requests} must be >= 1.")
    limits = ServerLimits(args.max_body_bytes, args.max_stop_strings, args.max_stop_length)
    template = Path(args.chat_template).read_text() if args.chat_template else None
    config = EngineConfig(model=model, **engine_options(args))
    if args.data_parallel_size > 1:
        engine = replica_set(args, config)
    elif args.engine_core == "process":
        engine = AsyncLLM(config, args.max_queued_requests)
    else:
        engine = AsyncEngine(engine_module.LLMEngine(config), args.max_queued_requests)
    if template is not None:
        engine.tokenizer.chat_template = template
    name = args.served_model_name or Path(model).name
    app = build_app(engine, name, args.api_key, limits=limits)
    return app, name


def replica_set(args: argparse.Namespace, config):
    """``--data-parallel-size`` replicas on Ray Serve, and the front end's handle on them."""
    from ..cluster.replica_set import ReplicaSet, deploy

    if args.max_queued_requests is not None:
        raise ValueError("--max-queued-requests bounds one engine's queue; with --data-parallel-size each replica "
                         "queues on its own: drop --max-queued-requests.")
    handle = deploy(config, args.data_parallel_size, args.router)
    return ReplicaSet(handle, config)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app, name = make_app(args)
    print(f"serving {name} at http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
