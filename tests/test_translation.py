"""The Chinese edition stays in step with the English sources.

The messages are extracted afresh from the current sources (Sphinx's gettext builder, notebooks not
executed: seconds) and compared with the committed catalogs under ``locales/zh_CN``: every message
of every page must be there, translated, not fuzzy, not the English copied through, and keep the
roles, references, inline code and math of its English. The guard itself is tested on planted
defects: a chapter paragraph edited without updating its catalog, a translation that drops a
``{glue:text}``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tutorial_engine.book import translation

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "locales"
CHAPTER = "book/04_prefix_caching"  # the page the planted defects go into


@pytest.fixture(scope="module")
def potdir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gettext")
    return translation.extract(ROOT, tmp / "pot", tmp / "doctrees")


def _toc_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        if "file" in entry:
            pages.append(entry["file"])
        for key in ("parts", "chapters", "sections"):
            pages += _toc_pages(entry.get(key, []))
    return pages


def test_every_page_of_the_book_is_extracted(potdir):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]] + _toc_pages(toc.get("parts", []) + toc.get("chapters", []))
    extracted = {p.relative_to(potdir).with_suffix("").as_posix() for p in potdir.rglob("*.pot")}
    assert not set(pages) - extracted, f"pages without messages: {sorted(set(pages) - extracted)}"


def test_every_message_of_every_page_is_translated(potdir):
    report = translation.check(potdir, LOCALES)
    if report:
        pytest.fail(
            f"{sum(map(len, report.values()))} problems in {len(report)} catalogs under "
            "locales/zh_CN/LC_MESSAGES (after editing a page: `make catalogs`, then translate "
            "the empty and fuzzy messages):\n" + translation.format_report(report),
            pytrace=False,
        )


# --- the guard, on planted defects -------------------------------------------------------------


def test_an_edited_paragraph_without_its_catalog_fails(tmp_path):
    """Edit one paragraph of a chapter (in a copy of the book reduced to that chapter) and leave
    the catalogs alone: the check names the chapter and quotes the new paragraph."""
    for name in ("_config.yml", "intro.md", "_ext", "_templates"):
        src, dst = ROOT / name, tmp_path / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    (tmp_path / "_toc.yml").write_text(
        yaml.safe_dump({"format": "jb-book", "root": "intro", "chapters": [{"file": CHAPTER}]})
    )
    notebook = json.loads((ROOT / f"{CHAPTER}.ipynb").read_text())
    edited = None
    for cell in notebook["cells"]:
        lines = "".join(cell["source"]).split("\n")
        prose = [i for i, line in enumerate(lines) if line[:1].isalpha()]
        if cell["cell_type"] == "markdown" and prose:
            lines[prose[0]] += " This sentence was added."
            cell["source"] = "\n".join(lines)
            edited = lines[prose[0]]
            break
    assert edited, "no prose line found to edit"
    (tmp_path / CHAPTER).parent.mkdir(parents=True)
    (tmp_path / f"{CHAPTER}.ipynb").write_text(json.dumps(notebook))

    report = translation.check(
        translation.extract(tmp_path, tmp_path / "_pot", tmp_path / "_doctrees"), LOCALES
    )
    missing = [p for p in report.get(CHAPTER, []) if p.startswith("not in the catalog")]
    assert any("This sentence was added." in p for p in missing), report.get(CHAPTER)


def _planted(potdir: Path, tmp_path: Path, msgstr) -> tuple[str, dict[str, list[str]]]:
    """A copy of the catalogs in which every message of CHAPTER is 'translated' by msgstr(msgid);
    returns a message with a {glue:text} role and the check's report for CHAPTER."""
    from sphinx_intl import catalog

    locales = tmp_path / "locales"
    shutil.copytree(LOCALES, locales)
    po = locales / translation.LANGUAGE / "LC_MESSAGES" / f"{CHAPTER}.po"
    pot = catalog.load_po(str(potdir / f"{CHAPTER}.pot"))
    for message in pot:
        if message.id:
            message.string = msgstr(message.id)
    catalog.dump_po(str(po), pot, width=0)
    glued = next(m.id for m in pot if "{glue:text}" in m.id)
    page_only = tmp_path / "pot"
    (page_only / CHAPTER).parent.mkdir(parents=True)
    shutil.copy(potdir / f"{CHAPTER}.pot", page_only / f"{CHAPTER}.pot")
    return glued, translation.check(page_only, locales).get(CHAPTER, [])


def test_a_translation_that_drops_a_glue_role_fails(potdir, tmp_path):
    role = None

    def drop_the_first_glue(msgid: str) -> str:
        nonlocal role
        if role is None and "{glue:text}" in msgid:
            role = translation.protected(msgid)[0]
            return "中文：" + msgid.replace(role, "", 1)
        return "中文：" + msgid

    glued, problems = _planted(potdir, tmp_path, drop_the_first_glue)
    # one problem (every other message keeps its roles): it names the role and quotes the message
    assert len(problems) == 1 and problems[0].startswith(f"drops {role}: "), problems
    assert glued[:60] in problems[0], problems


def test_a_translation_that_keeps_every_role_passes(potdir, tmp_path):
    _, problems = _planted(potdir, tmp_path, lambda msgid: "中文：" + msgid)
    assert problems == []


# --- the rules, one message at a time -----------------------------------------------------------


@pytest.mark.parametrize(
    ("msgid", "msgstr", "fuzzy", "expected"),
    [
        ("Summary", "", False, ["untranslated"]),
        ("Summary", "小结", True, ["fuzzy"]),
        ("Summary", "Summary", False, ["the English copied through"]),
        ("`LLM.generate`", "`LLM.generate`", False, []),  # code only: may stay as it is
        ("HF 50 / vLLM 2,000 tok/s", "HF 50 / vLLM 2,000 tok/s", False, []),  # names and units
        ("See {ref}`chapter 2 <verdict-cb>`.", "见 {ref}`第 2 章 <verdict-cb>`。", False, []),
        ("See {ref}`chapter 2 <verdict-cb>`.", "见 {ref}`第 2 章 <verdict-x>`。", False, ["drops {ref}"]),
        ("A {term}`KV cache` page.", "一个 KV Cache 页。", False, ["drops {term}`KV cache`"]),
        ("It is {glue:text}`x:.1f` ms.", "它是 ms。", False, ["drops {glue:text}`x:.1f`"]),
        ("It {glue:text}`verdict`.", "结果{glue:text}`verdict_zh`。", False, []),  # a glued word's twin
        ("It {glue:text}`a.ipynb::v:s`.", "结果{glue:text}`a.ipynb::v_zh:s`。", False, []),
        ("It {glue:text}`verdict`.", "结果{glue:text}`other_zh`。", False, ["drops {glue:text}`verdict`"]),
        ("Call `f(x)` once.", "调用 f(x) 一次。", False, ["drops `f(x)`"]),
        ("Here $y = x W^\\top$ holds.", "此处成立。", False, ["drops $y = x W^\\top$"]),
        ("An [index](#anchor) entry.", "一个[索引](#other)条目。", False, ["drops (#anchor)"]),
        ("Two `a` and `a` again.", "两个 `a`。", False, ["drops `a`"]),
        ("One `data: {...}` line.", "一行 `data: {...}`。", False, []),  # braces in code: no role
        ("**Chapters** run.", "**章节**（左侧）运行。", False, []),
        ("The **source** is it.", "**“出处”**指它。", False, ["bold or italic"]),  # stays literal **
        ("*widely repeated* marks", "广泛流传 表示", False, ["bold or italic"]),
        ("4. Prefix caching", "4. 前缀缓存", False, ["starts a numbered list"]),  # the heading stays English
        ("4. Prefix caching", "4\\. 前缀缓存", False, []),
    ],
)
def test_message_rules(msgid, msgstr, fuzzy, expected):
    problems = translation.message_problems(msgid, msgstr, fuzzy)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert problem.startswith(start), problems


def test_chinese_pages_glue_chinese_words():
    report = translation.glued_word_problems(ROOT, LOCALES)
    assert not report, translation.format_report(report)


def _copy_for_twins(tmp_path: Path, chapter: str) -> Path:
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / f"{chapter}.ipynb", tmp_path / f"{chapter}.ipynb")
    shutil.copytree(LOCALES, tmp_path / "locales")
    return tmp_path


def test_planted_english_glue_in_a_chinese_page_fails(tmp_path):
    chapter = "book/11_beyond_one_machine"
    root = _copy_for_twins(tmp_path, chapter)
    po = root / "locales/zh_CN/LC_MESSAGES" / f"{chapter}.po"
    po.write_text(po.read_text().replace("`m_goal_hot_zh`", "`m_goal_hot`"))
    assert translation.glued_word_problems(root, root / "locales") == {
        chapter: ["glues the English word m_goal_hot: name m_goal_hot_zh"] * 2}


def test_planted_english_word_without_a_twin_fails(tmp_path):
    chapter = "book/11_beyond_one_machine"
    root = _copy_for_twins(tmp_path, chapter)
    notebook = root / f"{chapter}.ipynb"
    notebook.write_text(notebook.read_text().replace('"name": "m_verdict_zh"', '"name": "m_verdict_gone"'))
    report = translation.glued_word_problems(root, root / "locales")
    assert list(report) == [chapter] and "as m_verdict with no Chinese twin" in report[chapter][0]


def test_a_word_without_chinese_is_refused_before_anything_is_glued():
    from tutorial_engine.book.glued_words import glue_words

    with pytest.raises(KeyError, match="'maybe' \\(m_x\\) has no Chinese"):
        glue_words({"m_x": "maybe"})
