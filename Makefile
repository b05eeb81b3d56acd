# The two commands of the README are `make demo` and `make test`; both set everything up.
.PHONY: setup demo test lint bench kafka-up kafka-down

setup:
	scripts/bootstrap.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

kafka-up: setup
	.venv/bin/copyloop kafka up

kafka-down:
	.venv/bin/copyloop kafka down
