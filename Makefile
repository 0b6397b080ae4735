# mmaqd: the two entry points are `make demo` and `make test` (see README.md).
PYTHON ?= .venv/bin/python
DATA ?= synthetic
STAMP := .venv/.mmaqd-installed

.PHONY: install test demo data clean-venv

install: $(STAMP)

# Re-runs only when the pins or the installer change; tools/install.sh is idempotent.
$(STAMP): tools/install.sh requirements/build.txt requirements/runtime.txt requirements/deploy.txt \
          requirements/tests.txt setup.cfg setup.py
	bash tools/install.sh
	touch $@

test: install
	$(PYTHON) -m pytest

# DATA=synthetic (default) or DATA=neon-trees
demo: install
	$(PYTHON) tools/demo.py --data $(DATA)

data: install
	$(PYTHON) tools/demo.py --data $(DATA) --only-data

clean-venv:
	rm -rf .venv
