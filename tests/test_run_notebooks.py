"""The notebook runner that proves the chapters on another machine and model."""

from __future__ import annotations

import json
import os

import nbformat
import pytest

from tutorial_engine.book.notebook import MODEL_ENV
from tutorial_engine.book.run_notebooks import ROOT, kernel_env, main, run_notebook


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, path)
    return path


def test_a_failing_cell_is_reported_and_the_notebook_left_as_it_was(tmp_path):
    path = write_notebook(tmp_path / "broken.ipynb", "x = 1", "raise ValueError('boom')", "y = 2")
    before = path.read_text()
    result = run_notebook(path, timeout_s=60, save_to=tmp_path / "executed")
    assert result["ok"] is False and result["failed_cell"] == 1
    assert result["error"] == "ValueError: boom"
    assert path.read_text() == before
    executed = nbformat.read(tmp_path / "executed" / "broken.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["ename"] == "ValueError"


def test_a_dead_kernel_is_reported_with_its_cell(tmp_path):
    path = write_notebook(tmp_path / "dies.ipynb", "x = 1", "import os\nos._exit(1)", "y = 2")
    result = run_notebook(path, timeout_s=60)
    assert result["ok"] is False and result["failed_cell"] == 1
    assert result["error"].startswith("DeadKernelError")


def test_the_notebooks_see_the_chosen_model(tmp_path, tiny_checkpoints, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    model = tiny_checkpoints["qwen3"]
    path = write_notebook(tmp_path / "ch.ipynb", "from tutorial_engine.book.notebook import model_path",
                          f"assert model_path() == {str(model.resolve())!r}, model_path()")
    out = tmp_path / "report.json"
    assert main(["--model", str(model), "--out", str(out), str(path)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == str(model.resolve())
    assert report["environment"]["gpu"] is None and report["environment"]["torch"]  # what it ran on
    assert MODEL_ENV not in os.environ  # set for the kernels only, not for this process
    assert [(r["notebook"], r["ok"]) for r in report["notebooks"]] == [("ch.ipynb", True)]


def test_bad_arguments_are_refused_before_running(tmp_path):
    with pytest.raises(SystemExit, match="no config.json"):
        main(["--model", str(tmp_path)])
    with pytest.raises(SystemExit, match="no such notebook"):
        main([str(tmp_path / "missing.ipynb")])


def test_kernels_import_this_checkout_first(monkeypatch):
    """A relative PYTHONPATH (``PYTHONPATH=.`` from the repository root) would resolve
    against the notebook's folder in the kernel: the checkout goes first, absolute."""
    monkeypatch.setenv("PYTHONPATH", ".")
    env = kernel_env({MODEL_ENV: "/models/qwen3"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "."]
    assert env[MODEL_ENV] == "/models/qwen3"
    assert (ROOT / "tutorial_engine" / "__init__.py").is_file()
