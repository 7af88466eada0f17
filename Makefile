# posefleet: `make demo` runs the whole flow locally; `make test` installs and runs the tests
# (`make test-fast`: without the end-to-end and slow ones); `make fleet` starts a local fleet
# for your own photos (PHOTOS=dir CHECKPOINT=file WORKERS=n WATCH=1).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo fleet test test-fast lint format bench bench-scale bench-live bench-faults bench-cancel
.PHONY: soak hadolint
.PHONY: clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first, pinned to the releases this project is tested on (a local wheel here).
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m localfleet.demo

fleet: $(STAMP)
	$(PY) -m localfleet $(if $(PHOTOS),--photos "$(PHOTOS)") $(if $(CHECKPOINT),--checkpoint "$(CHECKPOINT)") $(if $(WORKERS),--workers $(WORKERS)) $(if $(WATCH),--watch)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

hadolint: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile

# Two pytest-xdist workers, a test file whole on each (tests/conftest.py runs the longest first).
test: lint hadolint
	$(PY) -m pytest -n 2 --dist loadfile

# The quick lane while you work: no end-to-end runs of real processes, no slow ones.
test-fast: lint hadolint
	$(PY) -m pytest -m "not e2e and not slow" -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m benchmarks

# The producer, status and export against a simulated S3+SQS of 1M and 10M keys, and the requests
# (and their cost) per million images by task size (docs/benchmarks.md); BASELINE=/path/to/another
# checkout measures that tree's producer too (at 20k keys, and as the requests' "before").
bench-scale: $(STAMP)
	$(PY) -m benchmarks.scale --keys 1000000,10000000 --status-tasks 1000000 --moto 300 \
		--requests 1000000 $(if $(BASELINE),--baseline $(BASELINE))
	$(if $(BASELINE),$(PY) -m benchmarks.scale --keys 20000 --code $(BASELINE) --label before)

# The live lane on the local fleet: upload -> label latency idle and behind a backfill, and the
# backfill's throughput with and without live uploads (docs/benchmarks.md). IMAGES=300: a quick run.
bench-live: $(STAMP)
	$(PY) -m benchmarks.live $(if $(IMAGES),--backfill $(IMAGES))

# Three real workers and the producer through a fault-injecting proxy (docs/benchmarks.md,
# "AWS faults"): half of all calls faulted with invalid bodies queued, then a 2-minute outage.
bench-faults: $(STAMP)
	$(PY) -m benchmarks.faults --faults 0.5 --images 300 --invalid 40
	$(PY) -m benchmarks.faults --outage 120 --images 900

# Cancelling a 2,000-image job on the local fleet: how soon the fleet stops on it, when its record
# reads cancelled, and a job submitted after it (docs/benchmarks.md, "Cancelling a job").
bench-cancel: $(STAMP)
	$(PY) -m benchmarks.cancel

soak: $(STAMP)
	$(PY) -m benchmarks.soak --images 1000

clean:
	rm -rf .demo bench-out .pytest_cache .ruff_cache

# The worker image: Docker where an engine answers, else buildah with a base made from Debian's
# packages (scripts/image/); prints its size and build time. image-test runs it as ECS would.
.PHONY: image image-test lock
TORCH_SOURCE ?= pypi
TEST_IMAGE ?= localhost/posefleet-worker:$(TORCH_SOURCE)

image:
	TORCH_SOURCE=$(TORCH_SOURCE) scripts/image/build.sh

# requirements/<torch source>.lock, every package with its hashes, from pyproject.toml and
# requirements/image.in: what the image installs (docs/security.md, "Supply chain").
lock: $(STAMP)
	PIP_COMPILE=$(VENV)/bin/pip-compile scripts/lock.sh

image-test: $(STAMP)
	POSEFLEET_TEST_IMAGE=$(TEST_IMAGE) $(PY) -m pytest tests/test_image.py -q -s
