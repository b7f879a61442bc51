"""Shared fixtures: the notebook's own definitions, and quick runs of the whole notebook."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "lab4_vae.ipynb"
DATA_DIR = ROOT / "data" / "mnist"
sys.path.insert(0, str(ROOT / "scripts"))
from notebook_defs import load_defs, notebook_under_test  # noqa: E402


@pytest.fixture(scope="session")
def nb():
    """The notebook's definitions as a namespace (a dict): nb["gaussian_kl"], nb["VAEEncoder"], ...
    (of the notebook NOTEBOOK_UNDER_TEST names, if set: scripts/mutate.py's mutated copies)."""
    return load_defs(notebook_under_test())


def notebook_env(tmp_path, env_overrides, name):
    """This process's environment without its LAB4_* variables, plus a quick run's: outputs and
    checkpoints below tmp_path (never the committed report/figures), then `env_overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB4_")}
    env.update({"LAB4_QUICK": "1", "LAB4_DATA_DIR": str(DATA_DIR),
                "LAB4_OUT_DIR": str(tmp_path / f"{name}-out"), "LAB4_CKPT_DIR": str(tmp_path / f"{name}-ckpt")})
    env.update(env_overrides)
    return env


def run_notebook(tmp_path, env_overrides, name="run", timeout=600):
    """Run the whole notebook in a fresh kernel (a subprocess) with LAB4_* overrides.

    Returns (completed process, path of the executed notebook). Outputs go below tmp_path unless
    the overrides say otherwise, never to the committed report/figures.
    """
    env = notebook_env(tmp_path, env_overrides, name)
    output = tmp_path / f"{name}.ipynb"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_notebook.py"), str(NOTEBOOK),
                           "--output", str(output)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    return proc, output


def error_outputs(path):
    """'ename: evalue' of every error output of an executed notebook."""
    notebook = nbformat.read(path, as_version=4)
    return [f"{o.ename}: {o.evalue}" for c in notebook.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One quick run of the whole notebook: (its output folder, results dict, executed notebook path)."""
    tmp = tmp_path_factory.mktemp("quick")
    proc, path = run_notebook(tmp, {}, name="a")
    assert proc.returncode == 0, f"quick notebook run failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    out = tmp / "a-out"
    return out, json.loads((out / "results.json").read_text()), path, tmp


@pytest.fixture
def unused_port():
    """A TCP port on 127.0.0.1 that nothing listens on: the OS picks a free one, the socket is closed again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
