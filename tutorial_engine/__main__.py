"""Command line: ``python -m tutorial_engine generate --model PATH --prompt TEXT``."""

from __future__ import annotations

import argparse
import sys
from .bench.cli import add_bench_parser
from .default_model import default_model
from .serving.cli import add_serve_parser

def add_generate_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate text for one or more prompts")
    p.add_argument("--model", default=None, help="checkpoint folder (default: stories260K if present, else the built-in trained model)")
    p.add_argument("--prompt", action="append", required=True, help="prompt text; repeat for a batch")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--seed", type=int, default=None, help="per-request sampling seed")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--attention-backend", default="auto")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from . import LLM, SamplingParams

    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            max_tokens=args.max_tokens, seed=args.seed, ignore_eos=args.ignore_eos)
    model = args.model or default_model()
    llm = LLM(model, device=args.device, dtype=args.dtype, attention_backend=args.attention_backend)
    print(f"# model: {model}", file=sys.stderr)
    for prompt, out in zip(args.prompt, llm.generate(args.prompt, params, use_tqdm=False)):
        print(prompt + out["text"])  # the text keeps its leading space: see detokenizer.py
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tutorial_engine", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(subparsers)
    add_bench_parser(subparsers)
    add_serve_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
