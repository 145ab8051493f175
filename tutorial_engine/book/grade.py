"""Grade exercise notebooks from the command line and print a score table.

    python -m tutorial_engine.book.grade exercises/                        # every chNN_*.ipynb in it
    python -m tutorial_engine.book.grade exercises/ch02_kv_cache_continuous_batching.ipynb

Each notebook runs top to bottom in a fresh kernel, in its own folder, with nbclient.
A cell that raises does not stop the run, so later check cells still report. Then
the grader reads the kernel's ``tutorial_engine.book.grading.RESULTS``. A notebook's tasks
are those listed in ``tutorial_engine.book.grading.chNN.TASKS`` for its ``chNN`` prefix;
a task whose check never ran counts as "not run". A written answer (a markdown cell the
exercise asks you to fill in) is not graded, but one left empty, or still holding the
prompt, is reported as "not attempted". Exit status: 0 when every task passed and every
written answer was attempted, 1 otherwise; 2 for a path that is not a notebook or folder
of them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .exercises import MARKDOWN_STUB
from .grading import PASSED
from .run_notebooks import QUIET_KERNEL, ROOT, kernel_env

SENTINEL = "tutorial-engine-grade:"
COLLECT_SOURCE = (
    "import json\n"
    "from tutorial_engine.book.grading import RESULTS\n"
    f"print({SENTINEL!r} + json.dumps({{name: [r.status, r.message] for name, r in RESULTS.items()}}))"
)
NOT_RUN = "not run"
NOT_ATTEMPTED = "not attempted"


@dataclass
class NotebookScore:
    """Per-task statuses of one graded notebook, why each task that did not pass
    failed (the check's message: the first failing case), and the first cell error."""

    path: Path
    statuses: dict[str, str]
    first_error: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    unanswered: list[int] = field(default_factory=list)  # written-answer cells left empty

    @property
    def num_passed(self) -> int:
        return sum(status == PASSED for status in self.statuses.values())

    @property
    def num_tasks(self) -> int:
        return len(self.statuses)


def expected_tasks(path: Path) -> list[str]:
    """Task names of the grading module matching the notebook's ``chNN`` prefix ([] if none)."""
    try:
        module = importlib.import_module(f"tutorial_engine.book.grading.{path.name[:4]}")
    except ImportError:
        return []
    return [task.name for task in getattr(module, "TASKS", [])]


def grade_notebook(path: Path, timeout: int = 600) -> NotebookScore:
    """Execute ``path`` (never written back) and collect its check verdicts."""
    notebook = nbformat.read(path, as_version=4)
    unanswered = written_answers_left_empty(notebook)
    notebook.cells.append(nbformat.v4.new_code_cell(COLLECT_SOURCE))
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                            extra_arguments=QUIET_KERNEL,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=kernel_env())
    reported: dict[str, list[str]] = {}
    for output in notebook.cells[-1].outputs:
        for line in output.get("text", "").splitlines():
            if line.startswith(SENTINEL):
                reported = json.loads(line[len(SENTINEL):])
    statuses = {name: NOT_RUN for name in expected_tasks(path)}
    statuses.update({name: status for name, (status, _) in reported.items()})
    reasons = {name: message for name, (status, message) in reported.items() if status != PASSED}
    return NotebookScore(path, statuses, _first_error(notebook), reasons, unanswered)


def written_answers_left_empty(notebook: nbformat.NotebookNode) -> list[int]:
    """Indices of the written-answer cells (markdown cells tagged ``exercise``) that are
    empty or still hold the prompt."""
    return [index for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "markdown" and "exercise" in cell.get("metadata", {}).get("tags", [])
            and cell.source.strip() in ("", MARKDOWN_STUB)]


def _first_error(notebook: nbformat.NotebookNode) -> str | None:
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                return f"cell {index}: {output.ename}: {output.evalue}"
    return None


def notebooks_in(paths: list[Path]) -> list[Path]:
    """The notebooks named, or the ``chNN_*.ipynb`` inside named folders.

    Raises:
        FileNotFoundError: a path that is neither a notebook nor a folder with some.
    """
    found = []
    for path in paths:
        if path.is_dir():
            inside = sorted(path.glob("ch[0-9][0-9]_*.ipynb"))
            if not inside:
                raise FileNotFoundError(f"{path} holds no chNN_*.ipynb notebooks; pass exercises/ or a notebook.")
            found.extend(inside)
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} is not a notebook or a folder of notebooks.")
    return found


def format_table(scores: list[NotebookScore]) -> str:
    """The score table (one row per notebook, then the total), then why each task
    that did not pass failed: its check's message, with the first failing case."""
    rows = [("notebook", "score", "not passed")]
    for score in scores:
        missed = [f"{name} ({status})" for name, status in score.statuses.items() if status != PASSED]
        missed += [f"written answer in cell {index} ({NOT_ATTEMPTED})" for index in score.unanswered]
        if score.first_error:
            missed.append(f"[first error: {score.first_error}]")
        rows.append((str(score.path), f"{score.num_passed}/{score.num_tasks}", ", ".join(missed) or "-"))
    passed, total = sum(s.num_passed for s in scores), sum(s.num_tasks for s in scores)
    rows.append(("total", f"{passed}/{total}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    table = "\n".join(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}".rstrip() for a, b, c in rows)
    why = [f"{score.path}: {_reason(score, name)}".replace("\n", "\n    ")
           for score in scores for name, status in score.statuses.items() if status != PASSED]
    why += [f"{score.path}: the written answer in cell {index} is empty; write it in place of the prompt."
            for score in scores for index in score.unanswered]
    return table + ("\n\nWhy tasks did not pass (the first failing case of each):\n" + "\n".join(why) if why else "")


def _reason(score: NotebookScore, name: str) -> str:
    if name in score.reasons:
        return score.reasons[name]
    return f"{name}: its check cell never ran (a cell above it failed, or the cell was deleted)."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_engine.book.grade", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "exercises"],
                        help="exercise notebooks or folders of them (default: exercises/)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    try:
        notebooks = notebooks_in(args.paths)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scores = []
    for path in notebooks:
        print(f"grading {path} ...", file=sys.stderr, flush=True)
        scores.append(grade_notebook(path, args.timeout))
    print(format_table(scores))
    return 0 if all(s.num_passed == s.num_tasks and not s.unanswered for s in scores) else 1


if __name__ == "__main__":
    sys.exit(main())
