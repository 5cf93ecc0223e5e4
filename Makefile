# The commands a newcomer runs. Each one installs what it needs first.
.PHONY: install demo test up down status lint

install:
	./scripts/bootstrap.sh

demo: install
	.venv/bin/flightline demo

test:
	./scripts/bootstrap.sh --browser
	.venv/bin/python -m pytest

up: install
	.venv/bin/flightline up

down:
	.venv/bin/flightline down

status:
	.venv/bin/flightline status

lint:
	.venv/bin/ruff check src dags tests benchmarks ray_serve feature_repo plugins
