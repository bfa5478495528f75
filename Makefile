# Two commands a new user needs: `make run` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TWISTD := $(VENV)/bin/twistd
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps system-deps venv install test-deps dynamodb-local clean bench

# ffmpeg/ffprobe from Debian when missing (also python3-venv, which Debian ships separately), and
# bubblewrap: every ffmpeg/ffprobe a worker starts runs in its sandbox (FFMPEG_SANDBOX = "bwrap").
system-deps:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && command -v bwrap >/dev/null \
	  && $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null \
	  || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg python3-venv bubblewrap )

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# A compat-mode editable install keeps twisted/plugins visible to twistd (PEP 660's default hides it).
install: system-deps $(PY)
	$(PIP) install -q -e . --config-settings editable_mode=compat

# DynamoDB Local (AWS's own DynamoDB engine, offline) for the DynamoDB store tests: its jar ships in the npm
# package amplify-dynamodb-simulator and runs on Java 17 (installed only when `java` is missing).
DDB_LOCAL_DIR := .cache/dynamodb-local
DDB_LOCAL_JAR := $(DDB_LOCAL_DIR)/node_modules/amplify-dynamodb-simulator/emulator/DynamoDBLocal.jar
dynamodb-local:
	@command -v java >/dev/null \
	  || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jre-headless )
	@[ -f $(DDB_LOCAL_JAR) ] || npm install --no-save --no-audit --no-fund --prefix $(DDB_LOCAL_DIR) amplify-dynamodb-simulator

# shellcheck lints deploy/provision.sh and systemd-analyze verifies the units (tests/deploy); under CI a
# test that would skip for a missing tool fails instead (tests/conftest.py), so they are installed here.
test-deps: install dynamodb-local
	@command -v shellcheck >/dev/null && command -v systemd-analyze >/dev/null \
	  || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq shellcheck systemd )
	$(PIP) install -q -e '.[test]' --config-settings editable_mode=compat

# Starts feederd with the embedded default (SQLite store, local queue, local workers) in the foreground.
run: install
	$(TWISTD) --pidfile= -n feederd

test: test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Runs every bench/*.py (each with a time limit, BENCH_TIMEOUT_S) and appends a dated section to BENCHMARKS.md:
# the machine, every figure, target met or not (bench/_report.py). moto[server] (the test extra) serves SQS.
# Benchmarks print figures and append them to BENCHMARKS.md; they never gate the tests.
bench: install
	$(PIP) install -q -e '.[test]' --config-settings editable_mode=compat
	@command -v wrk >/dev/null || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk )
	$(PY) bench/_report.py run

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp .pytest_cache
