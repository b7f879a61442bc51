"""`make lab`: JupyterLab serves the notebook with the project's kernel (headless, on localhost, bounded)."""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import NOTEBOOK, ROOT

DEADLINE_S = 60


@pytest.fixture
def lab_server(tmp_path, unused_port):
    """`make lab` headless on 127.0.0.1 with a random port and token; always stopped (its whole process group)."""
    port, token = unused_port, secrets.token_hex(16)
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 " \
           f"--IdentityProvider.token={token}" + (" --allow-root" if os.geteuid() == 0 else "")
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    log = open(tmp_path / "server.log", "w+")
    # -o: take the venv as made (`make test` has just set it up), so the test never reinstalls packages
    proc = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "lab", f"LAB_ARGS={args}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", token, proc, log
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def get_json(url, token, deadline):
    """GET `url` with the token, retrying until the server answers or `deadline` (time.monotonic) passes."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_make_lab_serves_the_notebook_with_the_project_kernel(lab_server):
    base, token, proc, log = lab_server
    deadline = time.monotonic() + DEADLINE_S
    try:
        model = get_json(f"{base}/api/contents/{NOTEBOOK.name}?content=0", token, deadline)
    except urllib.error.URLError:
        log.seek(0)
        pytest.fail(f"JupyterLab did not serve the notebook within {DEADLINE_S} s (exit {proc.poll()}):\n"
                    f"{log.read()[-3000:]}")
    assert model["type"] == "notebook" and model["path"] == NOTEBOOK.name
    kernel_name = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["metadata"]["kernelspec"]["name"]
    specs = get_json(f"{base}/api/kernelspecs", token, deadline)["kernelspecs"]
    assert kernel_name in specs, sorted(specs)
    kernel_python = Path(specs[kernel_name]["spec"]["argv"][0])
    assert kernel_python.parent.parent.resolve() == Path(sys.prefix).resolve(), kernel_python  # this venv
    with pytest.raises(urllib.error.HTTPError):  # and nothing is served without the token
        urllib.request.urlopen(f"{base}/api/contents/{NOTEBOOK.name}?content=0", timeout=5)
