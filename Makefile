# Two commands a new user needs: `make run` and `make test`.
#
#   make run        installs what running needs (sipreg, its core compiled by mypyc,
#                   and its runtime dependencies, uvloop among them) into .venv and
#                   runs `sipreg serve $(ARGS)`
#   make test       ruff check, ruff format --check, mypy --strict, then pytest: every
#                   test, the interop group (SIPp, Net::SIP, sipsak, svwar, JsSIP in
#                   Chromium) included, twice: on the compiled core that `make run`
#                   installs (.venv), and on the pure-Python fallback (.venv-pure).
#                   As root it first apt-installs the Debian packages those need, and
#                   redis-server for the Redis store tests
#                   (scripts/install-system-deps.sh), and npm-installs the browser
#                   phone's packages (tests/browser, pinned in package-lock.json).
#   make interop    only the interop tests
#   PYTEST_ARGS=... extra pytest arguments, e.g. PYTEST_ARGS="-x -k sipp"
#
# pytest's exit code is make's: a failure, an error or "no tests collected" (5) fails.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The same suite on the pure-Python core (SIPREG_PURE=1, editable), the fallback install.
PURE := .venv-pure
# What is installed: the runtime alone (make run), or with the test and lint tools too.
# Both come from one wheel, built once from the sources with the core compiled by mypyc.
WHEEL_STAMP := $(VENV)/.built-wheel
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PURE_STAMP := $(PURE)/.installed-dev
SOURCES := pyproject.toml setup.py $(shell find src -name '*.py' -o -name '*.lua' -o -name '*.html')
ARGS ?=
PYTEST_ARGS ?=
# What ruff and mypy check.
CODE := src tests setup.py $(wildcard bench)

BROWSER := tests/browser
BROWSER_STAMP := $(BROWSER)/node_modules/.built

.PHONY: run test lint typecheck pytest pytest-pure interop system-deps browser-deps bench clean

$(WHEEL_STAMP): $(SOURCES)
	PYTHON=$(PYTHON) sh scripts/install-system-deps.sh python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	rm -rf $(VENV)/wheel
	$(BIN)/pip wheel -q --no-deps -w $(VENV)/wheel .
	touch $(WHEEL_STAMP)

# --force-reinstall: the version stays 0.1.0 while the sources change.
$(RUN_STAMP): $(WHEEL_STAMP)
	$(BIN)/pip install -q $(VENV)/wheel/sipreg-*.whl
	$(BIN)/pip install -q --force-reinstall --no-deps $(VENV)/wheel/sipreg-*.whl
	$(BIN)/sipreg --version
	touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q "$$(echo $(VENV)/wheel/sipreg-*.whl)[dev]"
	touch $(DEV_STAMP)

$(PURE_STAMP): $(SOURCES)
	$(PYTHON) -m venv $(PURE)
	$(PURE)/bin/pip install -q --upgrade pip
	SIPREG_PURE=1 $(PURE)/bin/pip install -q -e '.[dev]'
	touch $(PURE_STAMP)

# The admin listener (status page, metrics) on loopback; ARGS="--admin HOST:PORT" moves it.
run: $(RUN_STAMP)
	$(BIN)/sipreg serve --admin 127.0.0.1:8080 $(ARGS)

system-deps:
	sh scripts/install-system-deps.sh interop services

# JsSIP, esbuild and playwright-core from the npm registry, as the lock file pins them,
# and the phone bundled for the page.  Without npm the browser test skips (fails in CI).
browser-deps: $(BROWSER_STAMP)

$(BROWSER_STAMP): $(BROWSER)/package-lock.json $(BROWSER)/phone.js
	@if command -v npm >/dev/null 2>&1; then \
		cd $(BROWSER) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build \
			&& touch node_modules/.built; \
	else echo "browser-deps: no npm; the browser test will say so"; fi

lint: $(DEV_STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

typecheck: $(DEV_STAMP)
	$(BIN)/mypy --strict $(CODE)

# Each pass first checks that its venv holds the core it is meant to test (a core that did
# not compile is a warning outside CI: no compiler, say).
pytest: $(DEV_STAMP) system-deps browser-deps
	@$(BIN)/sipreg --version | grep -q 'core: mypyc' || { \
		echo "pytest: the core in $(VENV) did not compile (see the build output)"; \
		[ "$$CI" != true ] || exit 1; }
	$(BIN)/pytest $(PYTEST_ARGS)

pytest-pure: $(PURE_STAMP) system-deps browser-deps
	@$(PURE)/bin/sipreg --version | grep -q 'core: pure Python' \
		|| { echo "pytest-pure: $(PURE) does not hold the pure-Python core"; exit 1; }
	$(PURE)/bin/pytest $(PYTEST_ARGS)

interop: $(DEV_STAMP) system-deps browser-deps
	$(BIN)/pytest -m interop $(PYTEST_ARGS)

test: lint typecheck pytest pytest-pure

# sipreg against Kamailio over loopback (bench/run.py; as root it apt-installs kamailio,
# redis-server and libssl-dev when missing).  ARGS="--quick" for a short run, ARGS="--only
# redis" for the Redis rows and those they are compared with.  matplotlib draws the chart: a
# benchmark tool, not a dependency of sipreg, so it is installed here only.
bench: $(RUN_STAMP)
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install -q matplotlib
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) $(PURE) build .mypy_cache .pytest_cache .ruff_cache $(BROWSER)/node_modules $(BROWSER)/build \
		bench/build
