# Set-up and the two jobs the README promises. Every target installs what it needs first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install book test demo

# The pinned CPU build of torch first: an unpinned torch pulls gigabytes of CUDA packages.
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[book,test,serve]"

# Main job: build the book, executing its notebooks on the CPU with the built-in tiny model.
book: install
	$(PYTHON) -m jupyter_book build . -W -n --keep-going
	@echo "Book built: $(CURDIR)/_build/html/index.html"

# The whole test suite: unit tests, notebook re-execution (nbval), exercise drift check.
test: install
	$(PYTHON) -m pytest -q

# Generate text from stories260K when ../shared is present, else from the built-in tiny model.
demo: install
	$(PYTHON) -m tutorial_engine generate --prompt "Once upon a time" --max-tokens 40 --temperature 0
