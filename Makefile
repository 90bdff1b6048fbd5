# Convenience wrappers around ./run (the README's two commands work without make installed).
.PHONY: setup demo test lint lock clean

setup:
	./run setup

demo:
	./run demo

test:
	./run test

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# Re-pin after changing dependencies in pyproject.toml.
lock: setup
	.venv/bin/python -m pip freeze --all --exclude-editable | sed -E 's/^(torch==[0-9.]+)\+cpu$$/\1/' \
	  | { echo "# Exact versions of every Python dependency (pip freeze of a working venv)."; \
	      echo "# Used as pip constraints by scripts/setup.sh; regenerate with: make lock"; cat; } > requirements.lock

clean:
	rm -rf .venv build install log .pytest_cache
