# Every target sets itself up: a fresh clone needs only Python 3.11+ and the package index.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
export SAM_CLI_TELEMETRY := 0
export PYTHONPATH := $(CURDIR)/layers/shared:$(CURDIR)
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help venv test test-fast fuzz demo up bench deploy validate checkov build register-corp org-sync org-rule replay-dlq replay-stats clean

help:
	@echo "make demo   - start the local stack and replay a store's morning through it"
	@echo "make test   - unit, integration, template and end-to-end tests, a short fuzz run, checkov, sam validate --lint, sam build"
	@echo "make fuzz   - a long Schemathesis run of the ops API against docs/openapi.yaml (FUZZ_EXAMPLES, FUZZ_MAX_TIME)"
	@echo "make up     - run the local stack in the foreground (Ctrl-C stops it)"
	@echo "make bench  - print the benchmark figures"
	@echo "make deploy - sam build && sam deploy --guided"
	@echo "make register-corp CORP_FILE=corp.json [AWS=1] - register a corp's credentials"
	@echo "make register-corp FROM_LEGACY=ww... AWS=1 - split a corp's secret of before the split in two"
	@echo "make org-sync [CORP=ww...] [AWS=1] - full sync of departments and staff from WeCom"
	@echo "make org-rule CORP=ww... RULE_FILE=rule.json [AWS=1] - how departments map to branch/region/store"
	@echo "make replay-dlq [AWS=1] [ARGS=--dry-run] - move dead-lettered events back to their queues"
	@echo "make replay-stats [AWS=1] [ARGS=--dry-run] - count the stream records the stats projector set aside"

$(STAMP): requirements-dev.txt layers/shared/requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(TOOLS_STAMP): requirements-tools.txt
	test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check -r requirements-tools.txt
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -n 2 tests/unit tests/integration tests/template
	$(BIN)/pytest tests/e2e
	$(BIN)/pytest tests/fuzz
	$(MAKE) --no-print-directory checkov validate build

test-fast: $(STAMP)
	$(BIN)/pytest -n 2 tests/unit tests/integration tests/template

# A fresh seed each run; the report's curl lines reproduce each finding against `make up`.
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} FUZZ_MAX_TIME=$${FUZZ_MAX_TIME:-1800} FUZZ_SEED= $(BIN)/pytest -s tests/fuzz

# Every finding is fixed or skipped in template.yaml with a one-line reason (Metadata: checkov).
checkov: $(TOOLS_STAMP)
	$(TOOLS)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

validate: $(STAMP)
	$(BIN)/sam validate --lint --region $(AWS_DEFAULT_REGION)

build: $(STAMP)
	@infra/scripts/sam_build.sh $(BIN)/sam

demo: $(STAMP)
	$(BIN)/python -m infra.local.demo

up: $(STAMP)
	$(BIN)/python -m infra.local.stack

bench: $(STAMP)
	$(BIN)/python -m bench.run

deploy: $(STAMP)
	@infra/scripts/sam_build.sh $(BIN)/sam --required
	$(BIN)/sam deploy --guided

register-corp: $(STAMP)
	$(BIN)/python -m infra.scripts.register_corp $(if $(AWS),--aws) $(if $(FROM_LEGACY),--from-legacy $(FROM_LEGACY),--file $(CORP_FILE))

org-sync: $(STAMP)
	$(BIN)/python -m infra.scripts.org sync $(if $(CORP),--corp $(CORP)) $(if $(AWS),--aws)

org-rule: $(STAMP)
	$(BIN)/python -m infra.scripts.org rule --corp $(CORP) --file $(RULE_FILE) $(if $(AWS),--aws)

replay-dlq: $(STAMP)
	$(BIN)/python -m infra.scripts.replay_dlq $(if $(AWS),--aws) $(ARGS)

replay-stats: $(STAMP)
	$(BIN)/python -m infra.scripts.replay_stats $(if $(AWS),--aws) $(ARGS)

clean:
	rm -rf .aws-sam .local
