"""Read lab4_vae.ipynb's code without Jupyter: its `defs` cells (tests, benchmark) or all code cells.

The notebook is the single source of the code; tests and the benchmark execute its `defs` cells
(imports, the parameters cell, function and class definitions) in a fresh namespace. The .ipynb
is plain JSON, so this needs neither nbformat nor a kernel and also works on machines where only
PyTorch and its usual companions are installed (the lent GPU machines, for instance).
"""
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "lab4_vae.ipynb"


def notebook_under_test():
    """The notebook whose defs the unit tests load: NOTEBOOK_UNDER_TEST if set (scripts/mutate.py points it at
    a mutated copy; deliberately not a LAB4_* name, which the notebook would refuse as an unknown parameter),
    else lab4_vae.ipynb."""
    return Path(os.environ.get("NOTEBOOK_UNDER_TEST") or NOTEBOOK)


def code_cells(notebook=NOTEBOOK):
    """[(index, source, tags)] of the notebook's code cells, in order."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    return [(index, "".join(cell["source"]), cell.get("metadata", {}).get("tags", []))
            for index, cell in enumerate(cells) if cell["cell_type"] == "code"]


def load_defs(notebook=NOTEBOOK, device="cpu"):
    """Execute the `defs` cells of `notebook` (from the repository root); return their namespace dict."""
    import torch

    namespace = {"__name__": "lab4_defs"}
    cwd = os.getcwd()
    os.chdir(ROOT)  # the parameters hold paths relative to the repository root
    try:
        for index, source, tags in code_cells(notebook):
            if "defs" in tags:
                exec(compile(source, f"<{Path(notebook).name} cell {index}>", "exec"), namespace)
    finally:
        os.chdir(cwd)
    namespace["device"] = torch.device(device)
    return namespace
