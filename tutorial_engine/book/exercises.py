"""Generate ``exercises/`` from ``solutions/``: one source, two notebooks.

A solution notebook marks the learner's part with the cell tag ``solution`` (no
markers in the code, so the solution pages read as plain code):

* a tagged **code** cell keeps its imports, signatures and docstrings, and each
  top-level function's body after the docstring becomes::

      raise NotImplementedError("replace this line with your code")

  (other top-level statements, such as a call that tries the function, stay);
* a tagged **markdown** cell (a written answer) becomes a prompt, ``*Your answer here.*``.

The page title in the first cell, ``# Chapter N solutions: ...``, becomes ``# Chapter N
exercises: ...``. The generated cells carry the tag ``exercise``: they are the learner's. Exercises lose
all outputs and execution counts and keep only the kernel metadata, so the generated
files depend on the solutions' sources alone.

Learners fill in ``exercises/`` in place. So that their work never breaks the tests
nor gets overwritten:

* ``check`` compares only what the solutions determine: the cells' order, ids, types
  and the sources of the cells that are not ``exercise`` cells. Answers, outputs,
  notebook metadata and scratch cells a learner adds are ignored.
* ``build`` leaves a notebook alone when its ``exercise`` cells differ from the stubs
  (someone has started answering) and says so; ``--force`` overwrites it anyway.

Commands (run from the repository root)::

    python -m tutorial_engine.book.exercises build   # write exercises/chNN_*.ipynb
    python -m tutorial_engine.book.exercises check   # exit 1, naming the files, if exercises/ is stale
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
SOLUTION_TAG, EXERCISE_TAG = "solution", "exercise"
CODE_STUB = 'raise NotImplementedError("replace this line with your code")'
MARKDOWN_STUB = "*Your answer here.*"
NOTEBOOK_GLOB = "ch[0-9][0-9]_*.ipynb"


def strip_code(source: str, where: str) -> str:
    """The exercise version of a ``solution`` code cell: every top-level function keeps
    its signature and docstring, and the rest of its body becomes the stub.

    Raises:
        ValueError: a cell that does not parse or defines no function, naming ``where``.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ValueError(f"{where}: a solution cell must be valid Python ({error}).") from error
    functions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not functions:
        raise ValueError(f"{where}: a cell tagged {SOLUTION_TAG!r} must define a function; "
                         "the learner writes its body.")
    lines = source.split("\n")
    out: list[str] = []
    done = 0  # lines[:done] are handled
    for fn in functions:
        body = fn.body
        has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str)
        code = body[1:] if has_doc else body
        if not code:
            raise ValueError(f"{where}: function {fn.name!r} has no body to replace.")
        first = code[0]
        if first.lineno == fn.lineno:
            raise ValueError(f"{where}: write the body of {fn.name!r} on its own lines.")
        keep_to = body[0].end_lineno if has_doc else first.lineno - 1
        out += lines[done:keep_to]
        indent = lines[first.lineno - 1][: first.col_offset]
        out.append(indent + CODE_STUB)
        done = fn.end_lineno
    out += lines[done:]
    return "\n".join(out)


def strip_markdown(source: str, where: str) -> str:
    """The exercise version of a ``solution`` markdown cell: a prompt for the answer."""
    return MARKDOWN_STUB


def exercise_from_solution(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The exercise version of a solution notebook (a new notebook; the input is untouched)."""
    cells = []
    for index, cell in enumerate(solution.cells):
        if index == 0 and cell.cell_type == "markdown" and cell.source.startswith("# "):
            # The page title: "# Chapter 2 solutions: ..." becomes "# Chapter 2 exercises: ...".
            title, _, rest = cell.source.partition("\n")
            cell = nbformat.from_dict({**cell, "source": title.replace(" solutions", " exercises", 1) + _ + rest})
        where = f"{name}, cell {index}"
        tags = list(cell.metadata.get("tags", []))
        learner = SOLUTION_TAG in tags
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(strip_code(cell.source, where) if learner else cell.source)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(strip_markdown(cell.source, where) if learner else cell.source)
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        new.id = cell.get("id") or f"cell-{index}"  # stable ids: a rebuild must be byte-identical
        tags = [EXERCISE_TAG if tag == SOLUTION_TAG else tag for tag in tags]
        if tags:
            new.metadata["tags"] = tags
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


def _cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str, bool, str]]:
    """(id, type, is an exercise cell, source) of each cell: what ``check`` compares."""
    return [(cell.get("id", ""), cell.cell_type, EXERCISE_TAG in cell.metadata.get("tags", []), cell.source)
            for cell in notebook.cells]


def learner_edits(fresh: nbformat.NotebookNode, current: nbformat.NotebookNode) -> list[str]:
    """Ids of the ``exercise`` cells of ``current`` whose source is no longer the stub,
    plus cells a learner added: the work ``build`` must not overwrite."""
    stubs = {cid: src for cid, _, learner, src in _cells(fresh) if learner}
    edits = []
    for cid, _, learner, src in _cells(current):
        if (learner and src != stubs.get(cid, src)) or cid not in {c[0] for c in _cells(fresh)}:
            edits.append(cid)
    return edits


def differences(fresh: nbformat.NotebookNode, current: nbformat.NotebookNode) -> list[str]:
    """Why ``current`` is not what the solutions generate, ignoring a learner's work:
    answers in ``exercise`` cells, outputs, metadata and cells they added."""
    given = {cid: (kind, learner, src) for cid, kind, learner, src in _cells(current)}
    problems = []
    for cid, kind, learner, src in _cells(fresh):
        if cid not in given:
            problems.append(f"cell {cid} is missing")
        elif given[cid][:2] != (kind, learner):
            problems.append(f"cell {cid} changed type or tag")
        elif not learner and given[cid][2] != src:
            problems.append(f"cell {cid} differs (it is not an answer cell)")
    order = [cid for cid, *_ in _cells(current) if cid in {c[0] for c in _cells(fresh)}]
    if not problems and order != [cid for cid, *_ in _cells(fresh)]:
        problems.append("cells are in a different order")
    return problems


def build(solutions: Path = ROOT / "solutions", exercises: Path = ROOT / "exercises",
          force: bool = False) -> tuple[list[Path], list[Path]]:
    """Write one exercise per solution notebook. Returns (written, kept): a notebook
    with a learner's answers in it is kept unless ``force``."""
    exercises.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for solution_path in sorted(solutions.glob(NOTEBOOK_GLOB)):
        target = exercises / solution_path.name
        text = render(solution_path)
        if target.is_file() and not force:
            current = nbformat.read(target, as_version=4)
            if learner_edits(nbformat.reads(text, as_version=4), current):
                kept.append(target)
                continue
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written, kept


def check(solutions: Path = ROOT / "solutions", exercises: Path = ROOT / "exercises") -> list[str]:
    """Problems that make exercises differ from a fresh build (empty when in sync);
    a learner's answers, outputs and added cells are not problems."""
    problems = []
    expected = {p.name: p for p in sorted(solutions.glob(NOTEBOOK_GLOB))}
    for name, solution_path in expected.items():
        target = exercises / name
        if not target.is_file():
            problems.append(f"{target} is missing")
            continue
        fresh = nbformat.reads(render(solution_path), as_version=4)
        found = differences(fresh, nbformat.read(target, as_version=4))
        if found:
            problems.append(f"{target} differs from what {solution_path} generates: {'; '.join(found)}")
    for target in sorted(exercises.glob(NOTEBOOK_GLOB)):
        if target.name not in expected:
            problems.append(f"{target} has no solution notebook {solutions / target.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_engine.book.exercises", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "check"])
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    parser.add_argument("--exercises", type=Path, default=ROOT / "exercises")
    parser.add_argument("--force", action="store_true",
                        help="build: overwrite notebooks that hold a learner's answers too")
    args = parser.parse_args(argv)
    if not args.solutions.is_dir():
        raise FileNotFoundError(f"{args.solutions} is not a folder of solution notebooks; pass --solutions PATH.")
    if args.command == "build":
        written, kept = build(args.solutions, args.exercises, force=args.force)
        for path in written:
            print(f"wrote {path}")
        for path in kept:
            print(f"kept {path}: it holds your answers (--force overwrites it)")
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
