# The README's commands live here. `make demo` runs the main job; `make test` runs the tests.
# Both bootstrap their own tools: only Python 3.11 and the package registries are needed.

PYTHON ?= python3
UV_VERSION ?= 0.13.9
UV := .uv/bin/uv
RUN := $(UV) run --frozen --no-sync
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv
# LightGBM's OpenMP threads otherwise spin while waiting: on a busy 2-core machine (tests in
# parallel, a server beside a training job) that made training up to 7x slower.
export OMP_WAIT_POLICY ?= PASSIVE

WORLD ?= data/world-medium
SIZE ?= medium
SEED ?= 7

PG_INITDB := $(wildcard /usr/lib/postgresql/*/bin/initdb)
CHROMIUM := $(wildcard /usr/bin/chromium)

.PHONY: setup postgres-deps browser-deps demo demo-batch demo-keys world validate train-no-show promote-no-show score-no-show train-uplift promote-uplift train-ranker promote-ranker recommend store export serve test test-fast lint format bench bento clean help

help:
	@echo "make demo   - set up; generate a $(SIZE) world into $(WORLD) and validate it; train, promote and use the no-show model and the specialist ranker; serve both on 127.0.0.1:$(PORT) (a rerun reuses all that; REBUILD=1 redoes it)"
	@echo "make test   - set up and run the whole test suite (what CI runs; installs PostgreSQL and Chromium as root)"
	@echo "make lint   - ruff lint + format check, mypy"
	@echo "make bench  - every benchmark against its anchor (generator, training, ranking, compiled trees, HTTP, service memory): benchmarks/results/<date>.json and .md"

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

setup: .venv/.synced

# The main job: a world, both models trained, promoted and used, the store loaded, then both
# models served (Ctrl-C stops it). A rerun reuses what exists (the world, the trained and
# promoted models, the loaded store: stamps in $(STAMPS)) and is serving in about half a minute;
# `make demo REBUILD=1` builds everything again. A new world retrains; a deleted mlflow.db or
# referral.db redoes what depended on it.
STAMPS := $(WORLD)/.demo
REBUILD ?=

demo: demo-batch serve

# The same without the server at the end (for scripts).
demo-batch: setup
ifneq ($(REBUILD),)
	rm -rf $(STAMPS) $(WORLD)/manifest.json
endif
	@test -f mlflow.db || rm -f $(STAMPS)/no-show $(STAMPS)/ranker
	@test -f referral.db || rm -f $(STAMPS)/store
	@$(MAKE) --no-print-directory $(STAMPS)/no-show $(STAMPS)/uplift $(STAMPS)/ranker

$(WORLD)/manifest.json: | .venv/.synced
	$(RUN) referral-ml generate --size $(SIZE) --seed $(SEED) --out $(WORLD)
	$(RUN) referral-ml validate $(WORLD)

$(STAMPS)/no-show: $(WORLD)/manifest.json
	$(RUN) referral-ml train no-show --data $(WORLD) --metrics-out $(WORLD)/no_show_metrics.json
	$(RUN) referral-ml promote no-show
	$(RUN) referral-ml score no-show --data $(WORLD) --upcoming-only --out $(WORLD)/no_show_scores.csv
	@mkdir -p $(STAMPS) && touch $@

# Who an outreach call helps, ranked against the no-show champion's risk (needs it first).
$(STAMPS)/uplift: $(STAMPS)/no-show
	$(RUN) referral-ml train uplift --data $(WORLD) --metrics-out $(WORLD)/uplift_metrics.json
	$(RUN) referral-ml promote uplift || echo "(not promoted: the service serves no expected benefit)"
	@mkdir -p $(STAMPS) && touch $@

# On a small world the ranker may not beat every baseline: the gates then refuse it (and the
# service will not serve it), while the demo still shows what the newest version recommends.
$(STAMPS)/ranker: $(WORLD)/manifest.json
	$(RUN) referral-ml train ranker --data $(WORLD) --metrics-out $(WORLD)/ranker_metrics.json
	$(RUN) referral-ml promote ranker || echo "(not promoted: recommend below uses the newest version)"
	$(RUN) referral-ml recommend --data $(WORLD) --model models:/specialist-ranker/latest
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/store: $(WORLD)/manifest.json
	$(RUN) referral-ml store load --data $(WORLD) --db $(STORE)
	@mkdir -p $(STAMPS) && touch $@

world: setup
	$(RUN) referral-ml generate --size $(SIZE) --seed $(SEED) --out $(WORLD)

validate: setup
	$(RUN) referral-ml validate $(WORLD)

train-no-show: setup
	$(RUN) referral-ml train no-show --data $(WORLD) --metrics-out $(WORLD)/no_show_metrics.json

promote-no-show: setup
	$(RUN) referral-ml promote no-show

score-no-show: setup
	$(RUN) referral-ml score no-show --data $(WORLD) --upcoming-only --out $(WORLD)/no_show_scores.csv

train-uplift: setup
	$(RUN) referral-ml train uplift --data $(WORLD) --metrics-out $(WORLD)/uplift_metrics.json

promote-uplift: setup
	$(RUN) referral-ml promote uplift

train-ranker: setup
	$(RUN) referral-ml train ranker --data $(WORLD) --metrics-out $(WORLD)/ranker_metrics.json

promote-ranker: setup
	$(RUN) referral-ml promote ranker || echo "(not promoted: recommend below uses the newest version)"

recommend: setup
	$(RUN) referral-ml recommend --data $(WORLD) --model models:/specialist-ranker/latest

# The service: load the world into ./referral.db, copy the champions into the BentoML model
# store, keep one API key per role in demo-keys.env, serve on 127.0.0.1:3000.
STORE ?= sqlite:///$(CURDIR)/referral.db
PORT ?= 3000

store: setup
	$(RUN) referral-ml store load --data $(WORLD) --db $(STORE)

export: setup
	$(RUN) referral-ml export

demo-keys: setup
	$(RUN) referral-ml keys demo --env-file demo-keys.env --db $(STORE)

# Serves what exists (the store is loaded once per world; `make store` reloads it).
serve: setup $(WORLD)/manifest.json
	@test -f referral.db || rm -f $(STAMPS)/store
	@$(MAKE) --no-print-directory $(STAMPS)/store export demo-keys
	@echo
	@echo "Serving both models on http://127.0.0.1:$(PORT)  (API: /docs.json; probes: /readyz, /metrics)"
	@echo "Console: http://127.0.0.1:$(PORT)/console/  (sign in with a key below: outreach -> worklist, referral_ui -> referral, admin -> all pages)"
	@echo "API keys (also in demo-keys.env):"
	@sed 's/^/  /' demo-keys.env
	@echo "Try, once /readyz answers 200:"
	@echo "  source demo-keys.env; curl -s -X POST http://127.0.0.1:$(PORT)/recommend -H \"Authorization: Bearer \$$REFERRAL_UI_KEY\" -H 'Content-Type: application/json' -d @examples/recommend.json"
	@echo
	REFERRAL_ML_STORE=$(STORE) REFERRAL_ML_NOW="$$($(RUN) python -c "import json;print(json.load(open('$(WORLD)/manifest.json'))['as_of'])")" \
	  $(RUN) bentoml serve serving.service:ReferralService --host 127.0.0.1 --port $(PORT)

# The PostgreSQL server binaries the store tests start their own throwaway cluster from:
# Debian's postgresql package, installed when missing and run as root (without a cluster of its
# own: create_main_cluster = false). A no-op when installed; otherwise only a note, and the
# PostgreSQL tests skip (CI sets REFERRAL_ML_REQUIRE_POSTGRES=1: there they fail instead).
postgres-deps:
ifeq ($(PG_INITDB),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  set -e; \
	  mkdir -p /etc/postgresql-common/createcluster.d; \
	  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/referral-ml.conf; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq; \
	  apt-get install -y -qq --no-install-recommends postgresql; \
	else \
	  echo "note: PostgreSQL is not installed (needs root and apt-get to install it): the PostgreSQL store tests will skip"; \
	fi
endif

# Debian's Chromium for the console's browser tests (Playwright drives /usr/bin/chromium; a
# browser download by the test tool is impossible here). A no-op when installed; otherwise only a
# note, and the browser tests skip (CI sets REFERRAL_ML_REQUIRE_BROWSER=1: there they fail).
browser-deps:
ifeq ($(CHROMIUM),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  set -e; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq; \
	  apt-get install -y -qq --no-install-recommends chromium; \
	else \
	  echo "note: Chromium is not installed (needs root and apt-get to install it): the console's browser tests will skip"; \
	fi
endif

# Unit and model tests in two processes (pytest-xdist: they share nothing but the CPU); the
# integration tests start servers and share trained models per session, so they run in one.
test: setup postgres-deps browser-deps
	$(RUN) ruff check .
	$(RUN) pytest -n 2 tests/unit tests/model
	$(RUN) pytest tests/integration

test-fast: setup
	$(RUN) pytest -m "not slow"

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: setup
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

# Every benchmark, one after another, each against its anchor in the same run: writes
# benchmarks/results/<date>.json and <date>.md (the README's table). Generates the large and
# medium worlds first when they are missing. About 30 minutes on 2 cores.
bench: setup
	$(RUN) python benchmarks/run_all.py

# The service as a Bento (needs the models exported: `make demo` or `referral-ml export`).
# `bentoml containerize referral_ml:latest` then builds an OCI image where a Docker engine runs.
bento: setup
	@mkdir -p build
	$(UV) export --frozen --no-dev --no-hashes --no-emit-project --quiet -o build/requirements.txt
	$(RUN) bentoml build -f bentofile.yaml .

clean:
	rm -rf .venv .uv data mlruns mlflow.db referral.db demo-keys.env .pytest_cache .ruff_cache .mypy_cache
