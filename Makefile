# Set-up and the two jobs the README promises. Every target installs what it needs first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# jupyter-book 1.x has no `python -m jupyter_book`; call its CLI with this interpreter.
JUPYTER_BOOK = $(PYTHON) -c "from jupyter_book.cli.main import main; main()"

.PHONY: install book test demo

# The pinned CPU build of torch first: an unpinned torch pulls gigabytes of CUDA packages.
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[book,test,serve]"

# Main job: build the book, executing its notebooks on the CPU with the built-in tiny model.
book: install
	$(JUPYTER_BOOK) build . -W -n --keep-going
	@echo "Book built: $(CURDIR)/_build/html/index.html"

# The whole test suite: unit tests (tests/test_exercises.py includes the exercise drift check) and
# every book and solution notebook re-executed and compared with its stored outputs (nbval).
test: install
	$(PYTHON) -m pytest -q tests book solutions --nbval --nbval-current-env --nbval-sanitize-with book/sanitize.cfg

# Generate text from stories260K when ../shared is present, else from the built-in tiny model.
demo: install
	$(PYTHON) -m tutorial_engine generate --prompt "Once upon a time" --max-tokens 40 --temperature 0
