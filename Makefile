# The README's two commands: `make run` and `make test`.
.PHONY: run test lint bench web bootstrap

PY := .venv/bin/python

bootstrap:
	@scripts/bootstrap

run: bootstrap
	@scripts/run

lint: bootstrap
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .
	@if [ -f Dockerfile ]; then .venv/bin/hadolint Dockerfile; fi

# The tests run in a network namespace of their own where only 127.0.0.0/8 exists
# (scripts/offline): nothing they start, livekit-server and Chromium included, can reach
# anything else.
test: lint
	scripts/offline $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Each prints its figures (ratios against a baseline measured in the same run).
# Run as modules from the repo root (bench/<name>.py is bench.<name>).
BENCHES := token_throughput worker_footprint voice_latency concurrency call_latency load

bench: bootstrap
	@for b in $(BENCHES); do echo "== bench.$$b"; $(PY) -m bench.$$b || exit 1; done

# npm ci only when the lockfile changed since the last install (a stamp in node_modules):
# a re-run needs no registry, and the build itself is quick.
web:
	@if [ -f web/package.json ]; then cd web && \
	  stamp=node_modules/.ocf-lock-$$(sha256sum package-lock.json | cut -c1-16) && \
	  { [ -f "$$stamp" ] || { npm ci --no-audit --no-fund --silent && touch "$$stamp"; }; } && \
	  npm run --silent build; fi
