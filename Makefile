# Lab 4 (VAE on MNIST): one command builds everything, one command tests it.
#   make        venv + TeX (Debian) + full notebook run in place + report PDF + submission/
#   make test   the whole test suite (what CI runs)
#   make lab    open the notebook in JupyterLab with the project's kernel (LAB_ARGS: extra server options)
#   make bench  training-speed benchmark -> bench/results.md (make quality: faster settings vs dev ELBO)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NOTEBOOK := lab4_vae.ipynb
LAB_ARGS ?=

.PHONY: all setup venv tex notebook lab report submission test mutate bench quality clean

all: submission

setup: venv tex

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

tex:
	@bash scripts/install_tex.sh

notebook: venv
	$(PY) scripts/set_authors.py
	$(PY) scripts/execute_notebook.py $(NOTEBOOK)

# JupyterLab on the notebook. JUPYTER_PREFER_ENV_PATH: the venv's kernelspec wins over one in ~/.local;
# transport_encryption: CurveZMQ for its kernels, else ipykernel warns at every start that it runs over
# unencrypted TCP (scripts/execute_notebook.py does the same).
lab: venv
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab $(NOTEBOOK) --KernelManager.transport_encryption=auto $(LAB_ARGS)

report: tex report/authors.tex
	cd report && latexmk -pdf -interaction=nonstopmode -halt-on-error -quiet main.tex

# The group's names live in AUTHORS (one line) and only there; the report reads them from report/authors.tex,
# written here (and committed, so that a bare latexmk in report/ works too; tests/test_report.py checks they agree).
report/authors.tex: AUTHORS
	{ echo '% Written by `make report` from AUTHORS (the group'"'"'s names); edit AUTHORS, not this file.'; \
	  printf '\\newcommand{\\GroupMembers}{%s}\n' "$$(head -n 1 AUTHORS)"; } > $@

submission: notebook report
	$(PY) scripts/make_submission.py

test: setup
	$(PY) -m pytest -q tests

# plant small bugs in a copy of the notebook, one at a time; every one must fail a fast test (about 7 min)
mutate: venv
	$(PY) scripts/mutate.py

bench: venv
	$(PY) bench/bench.py

quality: venv
	$(PY) bench/quality.py

clean:
	cd report && latexmk -C main.tex >/dev/null 2>&1 || true
	rm -rf submission checkpoints
