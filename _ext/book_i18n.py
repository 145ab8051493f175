"""What the translation catalogs hold, and how a translated page gets it (a local Sphinx extension).

Sphinx's gettext machinery turns every paragraph, heading and table cell into a message; three
things in this book need a nudge:

- Cell outputs are program output (tables, notes, numbers measured on this machine): they stay as
  they are in every edition, and keeping them out of the catalogs keeps a re-executed notebook
  from churning its page's catalog.
- Anything inside an element of class `notranslate` (the glossary's zh-en term table, which is
  bilingual in both editions) stays as written.
- Display math (`$$ ... $$`) is notation, the same in every language.
- Glossary headwords stay English, because `{term}` references name them in English and Sphinx
  would otherwise file each term under its translated text; each definition names the Chinese term.
- The sidebar's captions and the explicit titles of `_toc.yml` belong to toctrees that
  sphinx-external-toc inserts after Sphinx's own translation step has run, so they are extracted
  and translated here.

And a `{glue:text}` inside a translated paragraph is parsed in a fresh document that lacks the
notebook's glue data; the glue roles here lend it the page's (the English paragraph has the same
role), so the Chinese edition pastes the same measured figures as the English one.
"""

from __future__ import annotations

from os import path

from docutils import nodes
from myst_nb.ext.glue.domain import NbGlueDomain
from sphinx import addnodes
from sphinx.locale import init as init_locale
from sphinx.transforms import SphinxTransform
from sphinx.util.i18n import docname_to_domain

_RENDERER = "nb_renderer"  # where myst-nb keeps a notebook's outputs and glue data on the document


class KeepOutputsUntranslated(SphinxTransform):
    """Mark program output, `notranslate` elements, display math and glossary headwords
    untranslatable (so: not extracted either)."""

    default_priority = 5  # before Sphinx's Locale transform (20) reads the page

    def apply(self, **kwargs) -> None:
        for element in self.document.findall(nodes.Element):
            if element.get("nb_element") == "cell_code_output" or "notranslate" in element["classes"]:
                for node in element.findall(nodes.Element):
                    node["translatable"] = False
        for node in (*self.document.findall(nodes.term), *self.document.findall(nodes.math_block)):
            node["translatable"] = False


def _lending(role_class):
    """A glue role that remembers the page's notebook renderer (myst-nb keeps it on the document
    only while parsing the page) and lends it to the translated paragraphs parsed later."""

    class Role(role_class):
        def run(self):
            remembered = self.document.settings.env.temp_data  # cleared for every page
            if _RENDERER in self.document:
                remembered[_RENDERER] = self.document[_RENDERER]
                return super().run()
            if _RENDERER not in remembered:
                return super().run()
            # Lent for this role only: the translated nodes keep a reference to their document,
            # which must stay picklable.
            self.document[_RENDERER] = remembered[_RENDERER]
            try:
                return super().run()
            finally:
                del self.document[_RENDERER]

    Role.__name__ = role_class.__name__
    return Role


class GlueDomain(NbGlueDomain):
    roles = {name: _lending(type(role))() for name, role in NbGlueDomain.roles.items()}


class TranslateToctrees(SphinxTransform):
    """Extract and translate toctree captions and explicit entry titles."""

    default_priority = 101  # after sphinx-external-toc's InsertToctrees (100)

    def apply(self, **kwargs) -> None:
        toctrees = list(self.document.findall(addnodes.toctree))
        for toctree in toctrees:
            # Sphinx extracts `rawentries` (titles written in the toc) with the caption.
            toctree["rawentries"] = [title for title, _ in toctree["entries"] if title]
        if not toctrees or not self.config.language or self.config.language == "en":
            return
        dirs = [path.join(self.env.srcdir, d) for d in self.config.locale_dirs]
        domain = docname_to_domain(self.env.docname, self.config.gettext_compact)
        catalog, found = init_locale(dirs, self.config.language, domain)
        if not found:
            return
        for toctree in toctrees:
            for message in toctree.extract_original_messages():
                translated = catalog.gettext(message)
                if translated and translated != message:
                    toctree.apply_translated_message(message, translated)


def setup(app):
    app.add_transform(KeepOutputsUntranslated)
    app.add_transform(TranslateToctrees)
    app.add_domain(GlueDomain, override=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
