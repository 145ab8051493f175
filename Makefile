# Set-up and the two jobs the README promises. Every target installs what it needs first,
# once: `make install` runs pip and leaves a stamp file; it runs again only when
# pyproject.toml changes (or after `make clean`).
#
# Python: an activated virtual environment's `python3`, or any python3 that may pip-install
# (a pyenv or conda one, as in CI). Debian/Ubuntu's system Python refuses (PEP 668,
# "externally-managed-environment"): create a venv first, see the README.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# jupyter-book 1.x has no `python -m jupyter_book`; call its CLI with this interpreter.
JUPYTER_BOOK = $(PYTHON) -c "from jupyter_book.cli.main import main; main()"
STAMP = _build/.installed
# The package's sources: when one changes, cached notebook executions are stale (the translation
# tooling, which no notebook imports, excepted).
PACKAGE_SOURCES = $(filter-out tutorial_engine/book/translation.py,\
  $(shell find tutorial_engine -name '*.py' -o -name '*.json' 2>/dev/null))
TRANSLATION = $(PYTHON) -m tutorial_engine.book.translation

.PHONY: install book test demo clean catalogs

install: $(STAMP)

# The pinned CPU build of torch first: an unpinned torch pulls gigabytes of CUDA packages.
$(STAMP): pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[book,test,serve,cluster]"
	@mkdir -p $(dir $@) && touch $@

# Jupyter Book caches executed notebooks (execute_notebooks: cache in _config.yml) and
# re-runs a notebook whose code changed; this stamp also drops the cache when the
# package changes, since notebook outputs depend on it, and Sphinx's saved environment,
# which would otherwise keep the pages of notebooks whose own file did not change.
_build/.package-stamp: $(PACKAGE_SOURCES) | $(STAMP)
	rm -rf _build/.jupyter_cache _build/.doctrees _build/zh_CN/.doctrees
	@mkdir -p $(dir $@) && touch $@

# Main job: build the book, executing its notebooks on the CPU with the package's small model,
# then its Chinese edition into _build/html/zh_CN from the same executions (none run twice).
book: $(STAMP) _build/.package-stamp
	$(JUPYTER_BOOK) build . -W -n --keep-going
	@echo "Book built: $(CURDIR)/_build/html/index.html"
	$(TRANSLATION) build

# The whole test suite: unit tests (tests/test_exercises.py includes the exercise drift check) and
# every book and solution notebook re-executed and compared with its stored outputs (nbval).
test: $(STAMP)
	$(PYTHON) -m pytest -q tests book solutions --nbval --nbval-current-env --nbval-sanitize-with book/sanitize.cfg

# Generate text from stories260K when ../shared is present, else from the package's small model.
demo: $(STAMP)
	$(PYTHON) -m tutorial_engine generate --prompt "Once upon a time" --max-tokens 40 --temperature 0

# Translation catalogs: extract every page's messages (notebooks not executed: seconds), then
# merge them into locales/zh_CN/LC_MESSAGES/*.po; new or changed paragraphs come back empty or fuzzy.
# Then translate the empty and fuzzy messages (`$(TRANSLATION) check` lists them).
catalogs: $(STAMP)
	$(TRANSLATION) catalogs

clean:
	rm -rf _build
