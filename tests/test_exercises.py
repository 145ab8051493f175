"""The exercise generator: cells tagged ``solution`` become stubs, a learner's answers
never break the drift check nor get overwritten, and committed exercises never drift
from their solutions (this file is CI's drift check)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tutorial_engine.book import exercises
from tutorial_engine.book.exercises import CODE_STUB, MARKDOWN_STUB, build, check, exercise_from_solution, strip_code

ROOT = Path(__file__).resolve().parents[1]


def test_committed_exercises_match_a_fresh_build():
    problems = check(ROOT / "solutions", ROOT / "exercises")
    assert problems == [], "\n".join(problems) + "\nrun: python -m tutorial_engine.book.exercises build"


def test_every_solution_has_a_tagged_cell_and_its_exercise_reveals_none():
    solutions = sorted((ROOT / "solutions").glob("ch[0-9][0-9]_*.ipynb"))
    assert solutions, "no solution notebooks found"
    for path in solutions:
        cells = nbformat.read(path, as_version=4).cells
        answers = [c for c in cells if exercises.SOLUTION_TAG in c.metadata.get("tags", [])]
        assert answers, f"{path} has no cell tagged {exercises.SOLUTION_TAG!r}"
        assert not any("BEGIN SOLUTION" in c.source for c in cells), f"{path} shows solution markers"
        given = nbformat.read(ROOT / "exercises" / path.name, as_version=4).cells
        stubs = [c for c in given if exercises.EXERCISE_TAG in c.metadata.get("tags", [])]
        assert len(stubs) == len(answers)
        assert all(stub.source != answer.source for answer, stub in zip(answers, stubs))
        assert CODE_STUB in "\n".join(c.source for c in stubs)


def test_function_body_becomes_stub_after_its_docstring():
    source = 'import math\n\n\ndef f(x: int,\n      y: int) -> int:\n    """Sum."""\n    z = x + y\n    return z\n\n\nf(1, 2)'
    expected = f'import math\n\n\ndef f(x: int,\n      y: int) -> int:\n    """Sum."""\n    {CODE_STUB}\n\n\nf(1, 2)'
    assert strip_code(source, "nb, cell 0") == expected


def test_two_functions_in_one_cell_and_no_docstring():
    source = "def a():\n    return 1\n\ndef b():\n    'B.'\n    return 2"
    assert strip_code(source, "x") == f"def a():\n    {CODE_STUB}\n\ndef b():\n    'B.'\n    {CODE_STUB}"


@pytest.mark.parametrize("source, message", [
    ("x = 1", "must define a function"),
    ("def f(:\n    pass", "valid Python"),
    ("def f(): return 1", "own lines"),
])
def test_bad_solution_cells_raise_naming_the_cell(source, message):
    with pytest.raises(ValueError, match=message) as info:
        strip_code(source, "ch09_x.ipynb, cell 4")
    assert "ch09_x.ipynb, cell 4" in str(info.value)


def _solution_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("Because."),
        nbformat.v4.new_code_cell("def f():\n    return 1",
                                  execution_count=3, outputs=[nbformat.v4.new_output("stream", text="1\n")]),
        nbformat.v4.new_code_cell("print(f())"),
    ]
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    nb.cells[0].metadata["tags"] = ["solution"]
    nb.cells[1].metadata["tags"] = ["solution", "hide-output"]
    return nb


def test_exercise_drops_outputs_answers_and_machine_metadata():
    exercise = exercise_from_solution(_solution_notebook(), "ch01_x.ipynb")
    assert exercise.cells[0].source == MARKDOWN_STUB
    assert exercise.cells[1].source == f"def f():\n    {CODE_STUB}"
    assert exercise.cells[1].metadata["tags"] == ["exercise", "hide-output"]
    assert exercise.cells[1].outputs == [] and exercise.cells[1].execution_count is None
    assert [c.id for c in exercise.cells] == ["c0", "c1", "c2"]
    assert exercise.metadata["language_info"] == {"name": "python"}


def _answer(path: Path) -> None:
    """What a learner does: fill in the stub, run the notebook, add a scratch cell, save."""
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source = "def f():\n    return 1"
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells[2].execution_count = 2
    scratch = nbformat.v4.new_code_cell("f() + 1")
    scratch.id = "mine"
    nb.cells.append(scratch)
    nb.metadata["language_info"] = {"name": "python", "version": "3.12.1"}
    nbformat.write(nb, path)


def test_a_learners_answers_keep_check_green_and_build_keeps_them(tmp_path):
    solutions, target = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "ch01_a.ipynb")
    build(solutions, target)
    _answer(target / "ch01_a.ipynb")
    assert check(solutions, target) == []
    written, kept = build(solutions, target)
    assert written == [] and kept == [target / "ch01_a.ipynb"]
    assert "return 1" in nbformat.read(target / "ch01_a.ipynb", as_version=4).cells[1].source
    written, kept = build(solutions, target, force=True)
    assert kept == [] and CODE_STUB in nbformat.read(target / "ch01_a.ipynb", as_version=4).cells[1].source


def test_check_names_stale_missing_and_orphan_exercises(tmp_path):
    solutions, target = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "ch01_a.ipynb")
    nbformat.write(_solution_notebook(), solutions / "ch02_b.ipynb")
    written, kept = build(solutions, target)
    assert [p.name for p in written] == ["ch01_a.ipynb", "ch02_b.ipynb"] and kept == []
    assert check(solutions, target) == []
    text = (target / "ch01_a.ipynb").read_text()
    assert build(solutions, target)[0] and (target / "ch01_a.ipynb").read_text() == text  # byte-identical

    changed = nbformat.read(solutions / "ch01_a.ipynb", as_version=4)
    changed.cells[2].source = "print(f(), 'changed')"  # a given cell edited in the solution, not rebuilt
    nbformat.write(changed, solutions / "ch01_a.ipynb")
    (target / "ch02_b.ipynb").unlink()
    nbformat.write(_solution_notebook(), target / "ch03_orphan.ipynb")
    problems = check(solutions, target)
    assert len(problems) == 3
    assert "ch01_a.ipynb differs" in problems[0] and "cell c2" in problems[0]
    assert "ch02_b.ipynb is missing" in problems[1]
    assert "ch03_orphan.ipynb has no solution notebook" in problems[2]


def test_check_command_exits_nonzero_and_names_the_file(tmp_path, capsys):
    solutions, target = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "ch01_a.ipynb")
    args = ["--solutions", str(solutions), "--exercises", str(target)]
    assert exercises.main(["build", *args]) == 0
    assert exercises.main(["check", *args]) == 0
    nb = nbformat.read(target / "ch01_a.ipynb", as_version=4)
    del nb.cells[2]
    nbformat.write(nb, target / "ch01_a.ipynb")
    assert exercises.main(["check", *args]) == 1
    err = capsys.readouterr().err
    assert "ch01_a.ipynb" in err and "cell c2 is missing" in err
    assert "python -m tutorial_engine.book.exercises build" in err


def test_build_command_says_which_notebooks_it_kept(tmp_path, capsys):
    solutions, target = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "ch01_a.ipynb")
    args = ["--solutions", str(solutions), "--exercises", str(target)]
    assert exercises.main(["build", *args]) == 0
    _answer(target / "ch01_a.ipynb")
    capsys.readouterr()
    assert exercises.main(["build", *args]) == 0
    out = capsys.readouterr().out
    assert "kept" in out and "--force" in out


def test_missing_solutions_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="--solutions"):
        exercises.main(["check", "--solutions", str(tmp_path / "nope")])


def test_every_exercise_notebook_says_how_the_exercises_work():
    """The same paragraph, in the first cell of every exercise notebook."""
    import json
    from pathlib import Path

    paragraphs = set()
    for path in sorted((Path(__file__).resolve().parents[1] / "exercises").glob("ch[0-9][0-9]_*.ipynb")):
        first = "".join(json.loads(path.read_text())["cells"][0]["source"])
        found = [p for p in first.split("\n\n") if p.startswith("How these exercises work:")]
        assert len(found) == 1, f"{path.name}: no 'How these exercises work' paragraph"
        paragraphs.add(found[0])
    assert len(paragraphs) == 1, "the paragraph differs between exercise notebooks"
