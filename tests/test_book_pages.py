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


def test_reference_pages_are_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for page in ("claims", "gpu", "glossary", "notation"):
        assert f"file: {page}" in toc, page
