"""Words the chapters glue into their prose, with their Chinese twins.

A glued number reads the same in both editions; a glued word does not. The Chinese edition
reuses the English build's executed notebooks, so a chapter that glues a word (a verdict such as
"met", a sentence built from a data file) also glues its Chinese under the key with ``_zh``
appended, and the Chinese catalogs name that key where the English names the plain one (the
translation check accepts ``KEY_zh`` in place of ``KEY`` and refuses ``KEY`` where a twin exists).
"""

from __future__ import annotations

from collections.abc import Mapping

ZH_SUFFIX = "_zh"

# The verdict words the chapters compute, in Chinese.
ZH: dict[str, str] = {
    "met": "达到", "not met": "未达到", "pending": "待测", "yes": "是", "no": "否",
    "reproduced": "已复现", "not reproduced": "未复现",
}


def glue_words(words: Mapping[str, str], zh: Mapping[str, str] | None = None) -> None:
    """Glue each English ``words[key]`` under ``key`` and its Chinese under ``key + "_zh"``.

    Args:
        words: glue key -> English word or phrase.
        zh: glue key -> Chinese, for phrases built from data (a machine's description);
            any other word is looked up in :data:`ZH`.

    Raises:
        KeyError: a word with no Chinese in ``zh`` or :data:`ZH` (add it to ``ZH``).
    """
    from myst_nb import glue

    zh = dict(zh or {})
    for key, word in words.items():  # all checked before any is glued
        if key not in zh and word not in ZH:
            raise KeyError(f"glued word {word!r} ({key}) has no Chinese: add it to "
                           "tutorial_engine.book.glued_words.ZH or pass it in zh=")
    for key, word in words.items():
        glue(key, word, display=False)
        glue(key + ZH_SUFFIX, zh.get(key, ZH.get(word)), display=False)
