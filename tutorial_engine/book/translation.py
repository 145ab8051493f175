"""The Chinese edition: build it, refresh its catalogs, and check that they are complete.

The book is translated through gettext catalogs, as the Python documentation is: Sphinx turns
every paragraph, heading and table cell into a message, and ``locales/zh_CN/LC_MESSAGES/<page>.po``
holds each message's translation. Commands (run from the repository root; ``make book`` and
``make catalogs`` call them)::

    python -m tutorial_engine.book.translation build     # _build/html/zh_CN, after the English build
    python -m tutorial_engine.book.translation catalogs  # extract messages, merge them into the .po files
    python -m tutorial_engine.book.translation check     # list what is missing, fuzzy or damaged

``build`` runs Jupyter Book's Sphinx build with ``language = zh_CN`` and reads the executed
notebooks from the English build's jupyter-cache; it fails if that cache gained a record, i.e.
if a notebook was executed a second time. ``catalogs`` and ``check`` extract the messages with
notebook execution off (stored outputs), so they take seconds.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from .glued_words import ZH_SUFFIX

LANGUAGE = "zh_CN"
# Settings the Chinese edition changes; everything else comes from _config.yml.
ZH_OVERRIDES = {
    "language": LANGUAGE,
    "html_title": "推理引擎：构建与测量",
    "html_theme_options": {"search_bar_text": "搜索本书……"},
    # the book folds only cells' sources (hide-input), so "code" says it all
    "nb_code_prompt_show": "显示代码",
    "nb_code_prompt_hide": "隐藏代码",
}


def sphinx_build(root: Path, builder: str, outdir: Path, doctreedir: Path, overrides: dict,
                 strict: bool = True, quiet: bool = False) -> int:
    """Jupyter Book's own build (its _config.yml and _toc.yml), to any folder, with overrides;
    0 when it succeeded."""
    from jupyter_book.sphinx import build_sphinx

    overrides = {
        # what `jupyter-book build . -n` passes besides the config file
        "external_toc_path": str(root / "_toc.yml"),
        "latex_individualpages": False,
        "nitpicky": True,
        **overrides,
    }
    status = build_sphinx(root, outdir, noconfig=True, path_config=str(root / "_config.yml"),
                          confoverrides=overrides, doctreedir=doctreedir, builder=builder,
                          warningiserror=strict, keep_going=strict, quiet=quiet,
                          really_quiet=quiet)
    return status if isinstance(status, int) else 1  # an exception, already reported


# --- the Chinese edition ---------------------------------------------------------------------


def _cache_records(cache: Path) -> set[tuple[int, str]]:
    from jupyter_cache import get_cache

    return {(r.pk, str(r.created)) for r in get_cache(cache).list_cache_records()}


def build(root: Path) -> int:
    """Build the Chinese edition into _build/html/zh_CN from the English build's executions."""
    cache = root / "_build" / ".jupyter_cache"  # where the English build (myst-nb's default) keeps them
    if not cache.exists():
        print("error: no executed notebooks to reuse: build the English edition first (`make book`)",
              file=sys.stderr)
        return 1
    before = _cache_records(cache)
    # Its own folder, so that myst-nb's jupyter_execute/ and the doctrees stay out of the English
    # site; then copied under it, so that the two editions are one site with relative links.
    work = root / "_build" / LANGUAGE
    status = sphinx_build(root, "html", work / "html", work / ".doctrees",
                          {**ZH_OVERRIDES, "nb_execution_cache_path": str(cache)})
    executed = _cache_records(cache) - before
    if executed:
        print(f"error: the {LANGUAGE} build executed {len(executed)} notebook(s) again; "
              "it must reuse the English build's (run `make book`)", file=sys.stderr)
        return 1
    if status:
        return status
    site = root / "_build" / "html" / LANGUAGE
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(work / "html", site)
    print(f"Chinese edition built: {site / 'index.html'}")
    return 0


# --- catalogs --------------------------------------------------------------------------------


def extract(root: Path, potdir: Path, doctreedir: Path) -> Path:
    """Write one .pot per page into potdir (notebooks not executed: their stored outputs)."""
    status = sphinx_build(root, "gettext", potdir, doctreedir,
                          {"nb_execution_mode": "off"}, strict=False, quiet=True)
    if status:
        raise RuntimeError(f"message extraction failed ({status})")
    return potdir


def update_catalogs(root: Path) -> None:
    """Extract the messages and merge them into locales/zh_CN (new ones empty, changed ones fuzzy)."""
    from sphinx_intl.basic import update

    # A folder of its own: the doctrees and myst-nb's jupyter_execute/ (beside the output) of an
    # extraction from stored outputs must not mix with the book's.
    work = root / "_build" / "gettext"
    potdir = extract(root, work / "pot", work / ".doctrees")
    # sphinx-intl rewrites a catalog only when its set of messages changed, so an unchanged page
    # keeps its file (and its header dates) untouched; line width 0: one line per message; messages
    # a page lost are dropped, not kept as obsolete entries (git keeps them).
    update(str(root / "locales"), str(potdir), (LANGUAGE,), line_width=0, ignore_obsolete=True)


# --- the check -------------------------------------------------------------------------------

# What a translation must carry over unchanged. A role with an explicit target keeps its target
# and may translate its text ({ref}`Text <label>`); any other role, inline code and math verbatim.
# One left-to-right scan, so that braces inside inline code never start a role.
_ROLE_OR_CODE = re.compile(r"(\{[A-Za-z][\w:.+-]*\})?(`+)(.+?)\2", re.S)
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$\s](?:[^$]*?[^$\s])?\$", re.S)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_URL = re.compile(r"(?<![(<\w])https?://[^\s)>\]]+")
_TARGET = re.compile(r"^(.*?)\s*<([^<>]+)>$", re.S)
# A glue role and its target: ``{glue:text}`book/x.ipynb::key:.1f``` (notebook and format optional).
_GLUE_ROLE = re.compile(r"(\{glue(?::\w+)?\}`)([^`]+)`")
# Words a message may keep in English when nothing else in it is English: names of systems and
# the field's terms that Chinese engineers write in English (the glossary's term table).
KEEP_ENGLISH = {
    w.lower() for w in """vLLM SGLang nano-vLLM mini-SGLang Ray Serve Triton PyTorch FlashAttention
    transformers Hugging Face HF PagedAttention KV Cache Radix Chunked Prefill Decode CUDA Graph Graphs
    Tensor Parallelism token tokens logits kernel batch GPU CPU TTFT TPOT ITL E2EL RoPE GQA RMSNorm
    MLP softmax roofline NCCL NVLink OpenAI API HTTP SSE H100 H200 Qwen3 Llama Qwen2 Orca Sarathi
    Serve all-reduce n-gram ms tok s GiB GB MB x NVIDIA HBM""".split()
}


def protected(text: str) -> list[str]:
    """The pieces of a message its translation must keep: roles, code, math, link targets."""
    found = []

    def role_or_code(match):
        name, body = match.group(1), match.group(3)
        target = _TARGET.match(body) if name else None
        found.append(f"{name}…<{target.group(2)}>" if target else match.group(0))
        return " "

    rest = _ROLE_OR_CODE.sub(role_or_code, text)
    found += _MATH.findall(rest) + [f"({u})" for u in _LINK.findall(rest)] + _URL.findall(rest)
    return found


def _kept(piece: str, translation: str) -> bool:
    if "…<" in piece:  # a role whose text may be translated: same role, same target
        name, target = piece.split("…", 1)
        return re.search(re.escape(name) + r"`+[^`]*?\s*" + re.escape(target) + "`", translation) is not None
    return piece in translation


def _prose_words(text: str) -> list[str]:
    """English words outside roles, code, math and links, minus names that stay English."""
    rest = _URL.sub(" ", _LINK.sub("] ", _MATH.sub(" ", _ROLE_OR_CODE.sub(" ", text))))
    words = re.findall(r"[A-Za-z][A-Za-z'-]*[A-Za-z]", rest)
    return [w for w in words if w.lower() not in KEEP_ENGLISH]


def _emphasis(text: str) -> tuple[int, int]:
    """Bold and italic spans as Markdown renders them. A marker glued to Chinese punctuation on the
    wrong side (`**“出处”**指`) stays literal asterisks, so counting rendered spans catches it."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").renderInline(text)
    return html.count("<strong>"), html.count("<em>")


def _glue_target(target: str) -> tuple[str, str, str]:
    """``"book/x.ipynb::key:.1f"`` -> ``("book/x.ipynb", "key", ":.1f")``; parts left out are ``""``."""
    where, _, rest = target.rpartition("::")
    key, colon, fmt = rest.partition(":")
    return where, key, colon + fmt


def _as_english_key(role: re.Match) -> str:
    """A glue role with its key's ``_zh`` suffix (a Chinese twin's) removed."""
    where, key, fmt = _glue_target(role.group(2))
    key = key.removesuffix(ZH_SUFFIX)
    return f"{role.group(1)}{where + '::' if where else ''}{key}{fmt}`"


def message_problems(msgid: str, msgstr: str, fuzzy: bool) -> list[str]:
    """What is wrong with one translated message (nothing: an empty list)."""
    if not msgstr:
        return ["untranslated"]
    problems = ["fuzzy (its English changed: check the translation, then drop the flag)"] if fuzzy else []
    if msgstr == msgid and _prose_words(msgid):
        problems.append("the English copied through")
    pieces = protected(msgid)
    msgstr = _GLUE_ROLE.sub(_as_english_key, msgstr)  # a glued word's Chinese twin stands for the word
    for piece in dict.fromkeys(pieces):
        if "…<" in piece:
            lost = not _kept(piece, msgstr)
        else:
            lost = msgstr.count(piece) < pieces.count(piece)
        if lost:
            problems.append(f"drops {piece}")
    if re.match(r"\d+\. ", msgstr):  # Markdown reads "4. ..." as a list item, and Sphinx drops a
        # translated heading that does not parse as a heading: the page keeps its English title
        problems.append("starts a numbered list: write the heading's number as 4\\. (escaped)")
    if _emphasis(msgstr) != _emphasis(msgid):
        problems.append("bold or italic lost or broken (check the ** and * markers)")
    return problems


def check(potdir: Path, locale_dir: Path) -> dict[str, list[str]]:
    """For each page, its problems: messages missing from its catalog, untranslated, fuzzy,
    copied through, or that lost a role, a reference, inline code, math or emphasis of the English."""
    from babel.messages.pofile import read_po

    report = {}
    for pot in sorted(potdir.rglob("*.pot")):
        page = pot.relative_to(potdir).with_suffix("").as_posix()
        po = locale_dir / LANGUAGE / "LC_MESSAGES" / f"{page}.po"
        with pot.open("rb") as f:
            template = read_po(f)
        if not po.exists():
            report[page] = [f"no catalog {po.relative_to(locale_dir.parent)} (run `make catalogs`)"]
            continue
        with po.open("rb") as f:
            catalog = read_po(f)
        problems = []
        for message in template:
            if not message.id:
                continue
            entry = catalog.get(message.id)
            quoted = message.id if len(message.id) < 160 else message.id[:157] + "..."
            if entry is None:
                problems.append(f"not in the catalog (run `make catalogs`): {quoted!r}")
                continue
            for problem in message_problems(message.id, entry.string or "", entry.fuzzy):
                problems.append(f"{problem}: {quoted!r}")
        if problems:
            report[page] = problems
    return report


def _glued_text(notebook: Path) -> dict[str, str]:
    """Glue key -> the text glued, from a notebook's stored outputs (Markdown glues excluded)."""
    import nbformat

    glued = {}
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            data = output.get("data", {})
            if name and "application/papermill.record/text/markdown" not in data:
                glued[name] = str(data.get("application/papermill.record/text/plain", ""))
    return glued


def glued_word_problems(root: Path, locale_dir: Path) -> dict[str, list[str]]:
    """Glued English words the Chinese edition would show: a word glued without its ``_zh``
    twin (``tutorial_engine.book.glued_words``), or a Chinese message naming the English key
    where the twin exists. Pages are keyed as in :func:`check`."""
    from babel.messages.pofile import read_po

    english = {}  # notebook page -> keys whose glued text has English words
    report: dict[str, list[str]] = {}
    for notebook in sorted((root / "book").glob("*.ipynb")):
        page = notebook.relative_to(root).with_suffix("").as_posix()
        glued = _glued_text(notebook)
        english[page] = {key for key, text in glued.items() if not key.endswith(ZH_SUFFIX) and _prose_words(text)}
        for key in sorted(english[page] - {k.removesuffix(ZH_SUFFIX) for k in glued if k.endswith(ZH_SUFFIX)}):
            report.setdefault(page, []).append(f"the notebook glues the English {glued[key]} as {key} with no "
                                               "Chinese twin: use glued_words.glue_words")
    for po in sorted((locale_dir / LANGUAGE / "LC_MESSAGES").rglob("*.po")):
        page = po.relative_to(locale_dir / LANGUAGE / "LC_MESSAGES").with_suffix("").as_posix()
        with po.open("rb") as f:
            messages = [m.string for m in read_po(f) if m.id and m.string]
        for text in messages:
            for role in _GLUE_ROLE.finditer(text):
                where, key, _ = _glue_target(role.group(2))
                if key in english.get(where.removesuffix(".ipynb") or page, set()):
                    report.setdefault(page, []).append(f"glues the English word {key}: name {key}{ZH_SUFFIX}")
    return report


def format_report(report: dict[str, list[str]]) -> str:
    return "\n".join(f"{page}.po: {p}" for page, problems in report.items() for p in problems)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_engine.book.translation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "catalogs", "check"])
    args = parser.parse_args(argv)
    root = Path.cwd()
    if args.command == "build":
        return build(root)
    if args.command == "catalogs":
        update_catalogs(root)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        report = check(extract(root, Path(tmp) / "pot", Path(tmp) / "doctrees"), root / "locales")
    for page, problems in glued_word_problems(root, root / "locales").items():
        report.setdefault(page, []).extend(problems)
    print(format_report(report) or "every message of every page is translated")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
