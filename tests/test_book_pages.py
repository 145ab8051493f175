"""The reference pages agree with the code: every measured file has its command, and the
"Run it on a GPU" page shows each one as the chapters do."""

from __future__ import annotations

from pathlib import Path

from tutorial_engine.book.data_commands import DATA_COMMANDS, data_command

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_has_its_command():
    for path in sorted((ROOT / "book" / "data").glob("*.json")):
        assert path.stem in DATA_COMMANDS, f"book/data/{path.name}: add the command that writes it to DATA_COMMANDS"
        assert data_command(path.stem).startswith("python -m ")


def test_gpu_page_lists_every_command():
    page = (ROOT / "gpu.md").read_text()
    for name, command in DATA_COMMANDS.items():
        assert f"`{name}.json`" in page, f"gpu.md lacks book/data/{name}.json"
        assert f"`{command}`" in page, f"gpu.md shows another command for {name}.json than the chapters: {command}"


def gpu_page_entries(page: str) -> dict[str, str]:
    """``name -> its line`` for each ``- `name.json` (...)`` entry of gpu.md's list."""
    return {line.split("`")[1][:-len(".json")]: line for line in page.splitlines()
            if line.startswith("- `") and line.split("`")[1].endswith(".json")}


def misstated_files(page: str) -> list[str]:
    """gpu.md entries whose "not measured yet" disagrees with book/data."""
    return [name for name, line in gpu_page_entries(page).items()
            if (ROOT / "book" / "data" / f"{name}.json").is_file() == ("not measured yet" in line)]


def test_gpu_page_says_which_files_are_not_measured_yet():
    assert misstated_files((ROOT / "gpu.md").read_text()) == [], \
        "add 'not measured yet' to the line of a file absent from book/data, drop it from a present one"


def test_planted_misstatements_fail():
    page = (ROOT / "gpu.md").read_text()
    assert misstated_files(page.replace("; not measured yet: chapter 8 shows its prediction", "")) == ["tensor_parallel_h200x2"]
    planted = page.replace("- `routing_sim.json` (chapter 11;", "- `routing_sim.json` (chapter 11; not measured yet;")
    assert misstated_files(planted) == ["routing_sim"]


def test_reference_pages_are_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for page in ("claims", "gpu", "glossary", "notation"):
        assert f"file: {page}" in toc, page
