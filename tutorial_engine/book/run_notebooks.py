"""Execute the book's notebooks top to bottom against a chosen checkpoint, and report.

The stored outputs come from the CPU build with the package's small model; this
command proves the chapters on another machine and model (a GPU box with a
Qwen3-0.6B-shaped checkpoint), without touching those outputs: each notebook runs
from a copy, and the report says, per notebook, its wall time and the first cell that
failed with its error.

    python -m tutorial_engine.book.run_notebooks --random-qwen3 /tmp/qwen3 --out run.json

``--random-qwen3 DIR`` writes a Qwen3-0.6B-shaped checkpoint with random bf16 weights
and a tokenizer into DIR first (no download); ``--model PATH`` uses a real one. Both
set ``TUTORIAL_ENGINE_MODEL`` for the notebooks (see ``book.notebook.model_path``).
Needs ``nbclient`` and ``ipykernel`` (the ``book`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .notebook import MODEL_ENV

ROOT = Path(__file__).resolve().parents[2]
BOOK_DIR = ROOT / "book"


# The kernel's own log goes to this process's stderr; at its default level it warns on every start
# that it listens on localhost TCP without encryption, which says nothing to a learner.
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a notebook's kernel: this process's, plus ``extra``, with this
    checkout first on PYTHONPATH. The kernel runs in the notebook's folder, so it would
    otherwise miss a package that is not pip-installed (``PYTHONPATH=.`` on a GPU box
    resolves against the notebook's folder there)."""
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **(extra or {}), "PYTHONPATH": pythonpath}


def run_notebook(path: Path, model: Path | None = None, timeout_s: int = 1800, save_to: Path | None = None) -> dict:
    """Execute the notebook at ``path`` in its own folder (so relative paths resolve),
    its kernel seeing ``model`` as ``$TUTORIAL_ENGINE_MODEL`` (when given); the file
    itself is not modified. Returns ``{"notebook", "ok", "wall_s", "failed_cell",
    "error"}``; ``failed_cell`` is the index of the cell that raised, timed out or was
    running when the kernel died (else None).
    ``save_to``: a folder to write the executed copy into."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    current = {"cell": None}  # the cell being executed, for errors that leave no output (a dead kernel)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3", extra_arguments=QUIET_KERNEL,
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_execute=lambda cell, cell_index: current.update(cell=cell_index))
    env = kernel_env({MODEL_ENV: str(model.resolve())} if model is not None else None)
    start = time.perf_counter()
    failed_cell, error = None, None
    try:
        client.execute(env=env)
    except Exception as exc:  # a cell's error, a timeout, or the kernel dying (e.g. out of memory)
        failed_cell = current["cell"]
        exc = _nbclient_error(exc)
        error = f"{exc.ename}: {exc.evalue}" if hasattr(exc, "ename") else f"{type(exc).__name__}: {exc}"
    wall = time.perf_counter() - start
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_to / path.name)
    return {"notebook": path.name, "ok": error is None, "wall_s": round(wall, 1),
            "failed_cell": failed_cell, "error": error}


def _environment() -> dict:
    """The card, commit and versions the notebooks ran with (the first GPU's, if any)."""
    import torch

    from ..bench.environment import environment

    return environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _nbclient_error(exc: BaseException) -> BaseException:
    """nbclient's own exception in ``exc``'s chain: after a dead kernel, its clean-up
    raises again, and that error, not the death, is what reaches us."""
    chain = [exc]
    while chain[-1].__context__ is not None:
        chain.append(chain[-1].__context__)
    return next((e for e in chain if type(e).__module__.startswith("nbclient")), exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_engine.book.run_notebooks",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, help="checkpoint folder the notebooks load")
    model.add_argument("--random-qwen3", type=Path, metavar="DIR",
                       help="write a random-weight Qwen3-0.6B-shaped checkpoint here and use it")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter in book/")
    parser.add_argument("--out", type=Path, default=None, help="write the report (JSON) here")
    parser.add_argument("--save-dir", type=Path, default=None, help="keep the executed copies here")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.model is not None and not (args.model / "config.json").is_file():
        raise SystemExit(f"--model {args.model}: no config.json there; pass a checkpoint folder")
    if args.random_qwen3 is not None:
        from ..bench.models import QWEN3_0_6B_CONFIG
        from ..bench.nanovllm import write_random_checkpoint

        args.model = write_random_checkpoint(args.random_qwen3, QWEN3_0_6B_CONFIG)
    notebooks = args.notebooks or sorted(BOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    model_name = str(args.model.resolve()) if args.model else os.environ.get(MODEL_ENV, "the package's small model")
    report = {"model": model_name, "environment": _environment(), "notebooks": []}
    for path in notebooks:
        result = run_notebook(path, args.model, args.timeout, args.save_dir)
        report["notebooks"].append(result)
        status = "ok" if result["ok"] else f"FAILED at cell {result['failed_cell']}: {result['error']}"
        print(f"{result['wall_s']:8.1f} s  {path.name}: {status}", flush=True)
        if args.out is not None:  # after every notebook, so a run cut short keeps what it did
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if all(r["ok"] for r in report["notebooks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
