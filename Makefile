# Two commands a new user needs: `make run` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TWISTD := $(VENV)/bin/twistd
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps system-deps venv install test-deps whisper-deps dynamodb-local clean bench vendor-js

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

# shellcheck lints deploy/provision.sh and systemd-analyze verifies the units (tests/deploy); Debian's chromium and
# chromium-driver play the HLS/DASH ladders in a real browser (tests/browser). Under CI a test that would skip for a
# missing tool fails instead (tests/conftest.py), so they are installed here. espeak-ng speaks and
# pocketsphinx-testdata's LibriVox clips are the speech the captions tests transcribe (tests/workerd/transcribe).
test-deps: install dynamodb-local whisper-deps
	@command -v shellcheck >/dev/null && command -v systemd-analyze >/dev/null \
	  || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq shellcheck systemd )
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver )
	@command -v espeak-ng >/dev/null && [ -f /usr/share/pocketsphinx/test/data/librivox/transcription ] \
	  || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq espeak-ng pocketsphinx-testdata )
	$(PIP) install -q -e '.[test]' --config-settings editable_mode=compat

# The whisper extra (faster-whisper, CTranslate2, onnxruntime, PyAV and the Whisper base model: about 600 MB in the
# venv) for the faster-whisper captions engine; `make test` runs its tests, so test-deps installs it.
whisper-deps: install
	$(PIP) install -q -e '.[whisper]' --config-settings editable_mode=compat

# Refreshes the vendored hls.js and dash.js (nommer/feederd/ui/vendor/, committed, so neither the tests nor CI need
# npm for them): `npm pack` the newest release of each major line into a temp dir and copy the dist files and
# licences as they are. Pin with e.g. `make vendor-js HLSJS=hls.js@1.7.4`; then update vendor/README.txt's versions.
HLSJS      ?= hls.js@1
DASHJS     ?= dashjs@4
VENDOR_DIR := nommer/feederd/ui/vendor
vendor-js:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT \
	  && ( cd "$$tmp" && npm pack --silent '$(HLSJS)' '$(DASHJS)' >/dev/null \
	       && mkdir hls dash && tar xzf hls.js-*.tgz -C hls && tar xzf dashjs-*.tgz -C dash ) \
	  && mkdir -p $(VENDOR_DIR) \
	  && cp "$$tmp/hls/package/dist/hls.min.js" $(VENDOR_DIR)/hls.min.js \
	  && cp "$$tmp/hls/package/LICENSE" $(VENDOR_DIR)/hls.js.LICENSE \
	  && cp "$$tmp/dash/package/dist/dash.all.min.js" $(VENDOR_DIR)/dash.all.min.js \
	  && cp "$$tmp/dash/package/dist/dash.all.min.js.LICENSE.txt" $(VENDOR_DIR)/dash.all.min.js.LICENSE.txt \
	  && cp "$$tmp/dash/package/LICENSE.md" $(VENDOR_DIR)/dashjs.LICENSE.md \
	  && for p in hls dash; do node -p "'vendored ' + require('$$tmp/'+'$$p'+'/package/package.json').name + ' ' + require('$$tmp/'+'$$p'+'/package/package.json').version"; done \
	  && echo "now update the versions in $(VENDOR_DIR)/README.txt and run: $(PY) -m pytest tests/browser"

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
