# scaleml-workbook: `make run` executes every notebook, `make test` runs every test.
# Both set up a local virtual environment first when it is missing or out of date (and do nothing otherwise).
#
# GPU users pick their torch build, e.g.  make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# On a CPU-only machine leave it empty: pip takes the CPU build it finds (here, a local wheel in seconds).
# The requirements go in with uv where pip can install it, with pip's own settings (tools/install.py: about 10 s
# instead of 90 s); WORKBOOK_INSTALLER=pip makes it pip throughout.

PYTHON          ?= python3
VENV            ?= .venv
TORCH_INDEX_URL ?=
NB              ?=
CELL_TIMEOUT    ?= 600
J               ?= 2
TEST_WORKERS    ?= 2
INSTRUCTOR      ?= notebooks
LAB             ?= student

BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.setup-done
TORCH  := $(shell grep -E '^torch==' requirements.txt)
INDEX  := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

export PYTHONHASHSEED ?= 0
# pip compiles every module it installs to bytecode (about 50 s of one core for torch and the rest here), although
# a run imports a small part of them. `make setup` installs without that and Python writes the bytecode of what is
# imported, once, on first import; so it must be allowed to (some machines set PYTHONDONTWRITEBYTECODE=1). A grading
# sandbox cannot write it, so `make grade` first imports what sandboxed kernels and workers import (tools.bytecode:
# 15 s the first time, 4 s after that).
unexport PYTHONDONTWRITEBYTECODE
PIP := $(BIN)/pip install --quiet --disable-pip-version-check --no-compile

.PHONY: setup run test unit teeth lab book student grade autograder readme clean help

help:
	@echo "make run      execute every notebook (papermill) into build/executed/, print a timing table"
	@echo "make test     unit tests, then every notebook under nbval, the student edition and its grading"
	@echo "make unit     only the fast tests (no whole-notebook runs)"
	@echo "make teeth    per exercise: the stub and each wrong answer, and which check caught it (NB=one notebook; quick sizes)"
	@echo "make lab      JupyterLab on student/ (LAB=notebooks for the instructor edition)"
	@echo "make book     the executed notebooks of make run as a static HTML site: build/book/_build/html/index.html"
	@echo "make student  write the student edition (solutions removed) to student/ (committed; a test keeps it in step)"
	@echo "make grade NB=path/to/submission.ipynb (or a folder)   grade in a sandbox, J=2 at a time, into build/grades/"
	@echo "           (a report, feedback .md and .xml per submission, and gradebook.csv; up-to-date ones are skipped)"
	@echo "make autograder [NB=01_sgd.ipynb]   Gradescope autograder zips in build/autograder/ (every notebook without NB)"
	@echo "make clean    remove build/ (make clean VENV_TOO=1 also removes .venv)"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml tools/install.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX_URL),$(PIP) $(INDEX) "$(TORCH)")
	$(PY) -m tools.install -r requirements.txt
	$(PY) -m tools.install --no-deps -e .
	$(PY) -m tools.colab --wheelhouse $(VENV)/wheelhouse
	@touch $@

run: $(STAMP)
	$(PY) -m tools.run_notebooks notebooks --out build/executed --summary build/run-summary.json

# The unit tests run on TEST_WORKERS pytest-xdist workers, each test file whole on one worker (its module fixtures
# run once, in its order; no test picks a TCP port another could take: tools.notebooks.ipc_kernel_manager,
# course_utils.distributed.reserved_port), the longest files first (tests/conftest.py); then the notebooks, one at
# a time, alone on the machine (their timings are part of what they show). Many tests grade in sandboxes, which
# cannot write bytecode: tools.bytecode writes it first (12 s on a fresh setup; without it, the workers' hostile
# suite alone took 185 s instead of 95 s, every sandboxed kernel compiling IPython and torch.distributed again).
#
# The unit tests' torch runs on one thread (OMP_NUM_THREADS=1, which the grading sandboxes pass on): two workers,
# each grading two submissions at a time, would otherwise run several two-thread OpenMP pools on two cores, whose
# threads wait at every barrier for a descheduled partner. Measured on a fresh clone: 335 s with them, 287 s without;
# the check of an untouched student edition, 74 s and 39 s (20 s alone). No unit test measures speed. The notebooks
# keep the machine's threads: they measure it, one at a time (run two at a time, 03 and 06 each took over 8 minutes).
test: $(STAMP)
	$(PY) -m tools.bytecode
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -ra -m "not notebooks" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10
	$(PY) -m pytest tests -ra -m notebooks --durations=10

unit: $(STAMP)
	$(PY) -m tools.bytecode
	$(PY) -m pytest tests -ra -m "not notebooks"

teeth: $(STAMP)
	$(PY) -m tools.teeth --quick $(if $(NB),$(NB),notebooks/*.ipynb)

lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB)

book: $(STAMP)
	$(PY) -m tools.book --executed build/executed --out build/book

student: $(STAMP)
	$(PY) -m tools.student notebooks --out student

grade: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make grade NB=path/to/submission.ipynb (or a folder of them)"; exit 2; }
	$(PY) -m tools.bytecode
	$(PY) -m tools.grade $(NB) --instructor $(INSTRUCTOR) --out build/grades --cell-timeout $(CELL_TIMEOUT) -j $(J)

autograder: $(STAMP)
	@for nb in $(if $(NB),$(notdir $(NB)),$(notdir $(wildcard notebooks/*.ipynb))); do \
	    $(PY) -m tools.autograder build $$nb --out build/autograder/$${nb%.ipynb}.zip || exit 1; done

readme: $(STAMP)
	$(PY) -m tools.readme --write

clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	$(if $(VENV_TOO),rm -rf $(VENV),)
