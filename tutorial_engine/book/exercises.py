"""Generate ``exercises/`` from ``solutions/``: one source, two notebooks.

In a solution notebook's code cells, the learner's part sits between two marker lines::

    def kv_cache_bytes_per_token(num_layers, num_kv_heads, head_dim, dtype_bytes):
        ### BEGIN SOLUTION
        return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes
        ### END SOLUTION

and the exercise gets, at the indentation of ``### BEGIN SOLUTION``::

        raise NotImplementedError("replace this line with your code")

Markdown cells may hide a written answer between ``<!-- BEGIN SOLUTION -->`` and
``<!-- END SOLUTION -->``; the exercise shows a prompt instead. Exercises lose all
outputs and execution counts, and keep only the kernel metadata, so the generated
files depend on the solutions' sources alone (nbgrader's markers, a smaller tool).

Commands (run from the repository root)::

    python -m tutorial_engine.book.exercises build   # write exercises/chNN_*.ipynb
    python -m tutorial_engine.book.exercises check   # exit 1, naming the files, if exercises/ is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
CODE_BEGIN, CODE_END = "### BEGIN SOLUTION", "### END SOLUTION"
MARKDOWN_BEGIN, MARKDOWN_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
CODE_STUB = 'raise NotImplementedError("replace this line with your code")'
MARKDOWN_STUB = "*Your answer here.*"
NOTEBOOK_GLOB = "ch[0-9][0-9]_*.ipynb"


def strip_code(source: str, where: str) -> str:
    """Replace each ``### BEGIN/END SOLUTION`` region of a code cell with the stub.

    Raises:
        ValueError: unbalanced or nested markers, naming ``where`` (file and cell).
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == CODE_BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {CODE_BEGIN} inside another region; close it first.")
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + CODE_STUB)
        elif marker == CODE_END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {CODE_END} without a {CODE_BEGIN} before it.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {CODE_BEGIN} is never closed; add a {CODE_END} line.")
    return "\n".join(out)


def strip_markdown(source: str, where: str) -> str:
    """Replace each ``<!-- BEGIN/END SOLUTION -->`` region of a markdown cell with a prompt.

    Raises:
        ValueError: when the markers do not pair up, naming ``where``.
    """
    pattern = re.compile(re.escape(MARKDOWN_BEGIN) + r".*?" + re.escape(MARKDOWN_END), re.DOTALL)
    stripped = pattern.sub(MARKDOWN_STUB, source)
    if MARKDOWN_BEGIN in stripped or MARKDOWN_END in stripped:
        raise ValueError(f"{where}: unpaired {MARKDOWN_BEGIN} / {MARKDOWN_END}; every region needs both.")
    return stripped


def exercise_from_solution(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The exercise version of a solution notebook (a new notebook; the input is untouched)."""
    cells = []
    for index, cell in enumerate(solution.cells):
        where = f"{name}, cell {index}"
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(strip_code(cell.source, where))
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(strip_markdown(cell.source, where))
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        new.id = cell.get("id") or f"cell-{index}"  # stable ids: a rebuild must be byte-identical
        if cell.metadata.get("tags"):
            new.metadata["tags"] = list(cell.metadata["tags"])
        cells.append(new)
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return notebook


def render(solution_path: Path) -> str:
    """The exact text of the exercise generated from ``solution_path``."""
    solution = nbformat.read(solution_path, as_version=4)
    return nbformat.writes(exercise_from_solution(solution, solution_path.name)) + "\n"


def build(solutions: Path = ROOT / "solutions", exercises: Path = ROOT / "exercises") -> list[Path]:
    """Write one exercise per solution notebook; returns the paths written."""
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for solution_path in sorted(solutions.glob(NOTEBOOK_GLOB)):
        target = exercises / solution_path.name
        target.write_text(render(solution_path), encoding="utf-8")
        written.append(target)
    return written


def check(solutions: Path = ROOT / "solutions", exercises: Path = ROOT / "exercises") -> list[str]:
    """Problems that make committed exercises differ from a fresh build (empty when in sync)."""
    problems = []
    expected = {p.name: p for p in sorted(solutions.glob(NOTEBOOK_GLOB))}
    for name, solution_path in expected.items():
        target = exercises / name
        if not target.is_file():
            problems.append(f"{target} is missing")
        elif target.read_text(encoding="utf-8") != render(solution_path):
            problems.append(f"{target} differs from what {solution_path} generates")
    for target in sorted(exercises.glob(NOTEBOOK_GLOB)):
        if target.name not in expected:
            problems.append(f"{target} has no solution notebook {solutions / target.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_engine.book.exercises", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "check"])
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    parser.add_argument("--exercises", type=Path, default=ROOT / "exercises")
    args = parser.parse_args(argv)
    if not args.solutions.is_dir():
        raise FileNotFoundError(f"{args.solutions} is not a folder of solution notebooks; pass --solutions PATH.")
    if args.command == "build":
        for path in build(args.solutions, args.exercises):
            print(f"wrote {path}")
        return 0
    problems = check(args.solutions, args.exercises)
    for problem in problems:
        print(f"stale exercise: {problem}", file=sys.stderr)
    if problems:
        print("Regenerate them with: python -m tutorial_engine.book.exercises build", file=sys.stderr)
        return 1
    print(f"exercises are up to date with {args.solutions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
