# Two commands a new user needs: `make run` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TWISTD := $(VENV)/bin/twistd
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps system-deps venv install test-deps clean bench

# ffmpeg/ffprobe from Debian when missing (also python3-venv, which Debian ships separately).
system-deps:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null \
	  || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg python3-venv )

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# A compat-mode editable install keeps twisted/plugins visible to twistd (PEP 660's default hides it).
install: system-deps $(PY)
	$(PIP) install -q -e . --config-settings editable_mode=compat

test-deps: install
	$(PIP) install -q -e '.[test]' --config-settings editable_mode=compat

# Starts feederd with the embedded default (SQLite store, local queue, local workers) in the foreground.
run: install
	$(TWISTD) --pidfile= -n feederd

test: test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp .pytest_cache
