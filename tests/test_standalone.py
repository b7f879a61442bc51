"""The notebook as a grader meets it: alone in an empty folder, and without data or network."""
import gzip
import os
import re
import shutil
import subprocess
import sys
import time

import nbformat

from conftest import DATA_DIR, NOTEBOOK, ROOT, error_outputs, run_notebook

TRANSPORT_WARNING = "Kernel is running over TCP without encryption"


def test_notebook_alone_in_an_empty_folder_runs_and_writes_there(tmp_path):
    """Only lab4_vae.ipynb in the folder; MNIST from a torchvision root elsewhere (no network here)."""
    root = tmp_path / "torchvision-root"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in DATA_DIR.glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(NOTEBOOK, alone)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB4_")}
    env.update(LAB4_QUICK="1", LAB4_DATA_DIR=str(root))  # OUT_DIR and CKPT_DIR keep their relative defaults
    executed = tmp_path / "executed.ipynb"
    # run from elsewhere: the kernel works in the notebook's folder, as in Jupyter
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_notebook.py"), str(alone / NOTEBOOK.name),
                           "--output", str(executed)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    assert TRANSPORT_WARNING not in proc.stderr  # `make notebook` runs the same script
    assert sorted(p.name for p in alone.iterdir()) == ["checkpoints", "lab4_vae.ipynb", "report"]
    assert (alone / "report" / "figures" / "results.json").is_file()
    assert (alone / "report" / "figures" / "fig_manifold.pdf").is_file()
    assert any((alone / "checkpoints").iterdir())
    outputs = [o for c in nbformat.read(executed, 4).cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "outputs -> report/figures | checkpoints -> checkpoints" in text
    for output in outputs:  # display paths stay relative to the working folder
        shown = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        assert not re.search(r"(/work/|/home/|/root/|/tmp/|site-packages)", shown), shown[:300]


def test_no_data_and_no_network_stop_the_notebook_quickly_with_one_message(tmp_path, unused_port):
    """Every URL goes through a proxy that refuses connections: the situation of a machine offline."""
    proxy = f"http://127.0.0.1:{unused_port}"
    offline = {name: proxy for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    offline.update(no_proxy="", NO_PROXY="", LAB4_DATA_DIR=str(tmp_path / "nodata"))
    start = time.perf_counter()
    proc, path = run_notebook(tmp_path, offline, timeout=120)
    assert time.perf_counter() - start < 90  # kernel start and imports included
    assert proc.returncode != 0
    errors = error_outputs(path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"FileNotFoundError: MNIST is not in {tmp_path / 'nodata'} and could not be "
                                "downloaded ("), errors
    assert "Put the four files" in errors[0] and "or run the notebook once with internet access" in errors[0]
    assert not (tmp_path / "nodata").exists()
