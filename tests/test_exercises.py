"""The exercise generator: solution regions become stubs, and committed exercises
never drift from their solutions (this file is CI's drift check)."""

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


def test_every_solution_has_a_region_and_its_exercise_reveals_none():
    solutions = sorted((ROOT / "solutions").glob("ch[0-9][0-9]_*.ipynb"))
    assert solutions, "no solution notebooks found"
    for path in solutions:
        assert exercises.CODE_BEGIN in path.read_text(), f"{path} has no {exercises.CODE_BEGIN} region"
        sources = "\n".join(c.source for c in nbformat.read(ROOT / "exercises" / path.name, as_version=4).cells)
        assert "BEGIN SOLUTION" not in sources and "END SOLUTION" not in sources
        assert CODE_STUB in sources


def test_region_becomes_stub_at_its_indentation():
    source = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\nprint(f)"
    assert strip_code(source, "nb, cell 0") == f"def f(x):\n    y = 1\n    {CODE_STUB}\n\nprint(f)"


def test_two_regions_in_one_cell():
    source = "### BEGIN SOLUTION\na = 1\n### END SOLUTION\nb = 2\n### BEGIN SOLUTION\nc = 3\n### END SOLUTION"
    assert strip_code(source, "x") == f"{CODE_STUB}\nb = 2\n{CODE_STUB}"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "without a ### BEGIN SOLUTION"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside another region"),
])
def test_unbalanced_markers_raise_naming_the_cell(source, message):
    with pytest.raises(ValueError, match=message) as info:
        strip_code(source, "ch09_x.ipynb, cell 4")
    assert "ch09_x.ipynb, cell 4" in str(info.value)


def _solution_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"),
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
                                  execution_count=3, outputs=[nbformat.v4.new_output("stream", text="1\n")]),
    ]
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    return nb


def test_exercise_drops_outputs_answers_and_machine_metadata():
    exercise = exercise_from_solution(_solution_notebook(), "ch01_x.ipynb")
    assert exercise.cells[0].source == f"Why?\n{MARKDOWN_STUB}"
    assert exercise.cells[1].outputs == [] and exercise.cells[1].execution_count is None
    assert [c.id for c in exercise.cells] == ["c0", "c1"]
    assert exercise.metadata["language_info"] == {"name": "python"}


def test_check_names_stale_missing_and_orphan_exercises(tmp_path):
    solutions, target = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "ch01_a.ipynb")
    nbformat.write(_solution_notebook(), solutions / "ch02_b.ipynb")
    assert [p.name for p in build(solutions, target)] == ["ch01_a.ipynb", "ch02_b.ipynb"]
    assert check(solutions, target) == []
    assert build(solutions, target) and check(solutions, target) == []  # a rebuild is byte-identical

    stale = target / "ch01_a.ipynb"
    stale.write_text(stale.read_text().replace("NotImplementedError", "NotImplemented"))
    (target / "ch02_b.ipynb").unlink()
    nbformat.write(_solution_notebook(), target / "ch03_orphan.ipynb")
    problems = check(solutions, target)
    assert len(problems) == 3
    assert "ch01_a.ipynb differs" in problems[0]
    assert "ch02_b.ipynb is missing" in problems[1]
    assert "ch03_orphan.ipynb has no solution notebook" in problems[2]


def test_check_command_exits_nonzero_and_names_the_file(tmp_path, capsys):
    solutions, target = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "ch01_a.ipynb")
    args = ["--solutions", str(solutions), "--exercises", str(target)]
    assert exercises.main(["build", *args]) == 0
    assert exercises.main(["check", *args]) == 0
    (target / "ch01_a.ipynb").write_text("{}")
    assert exercises.main(["check", *args]) == 1
    err = capsys.readouterr().err
    assert "ch01_a.ipynb" in err and "python -m tutorial_engine.book.exercises build" in err


def test_missing_solutions_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="--solutions"):
        exercises.main(["check", "--solutions", str(tmp_path / "nope")])
