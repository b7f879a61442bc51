"""Load the definitions of lab4_vae.ipynb (its cells tagged `defs`) without running any training.

The notebook is the single source of the code; tests and the benchmark execute its `defs` cells
(imports, the parameters cell, function and class definitions) in a fresh namespace.
"""
import os
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "lab4_vae.ipynb"


def load_defs(notebook=NOTEBOOK, device="cpu"):
    """Execute the `defs` cells of `notebook` (from the repository root); return their namespace dict."""
    import torch

    cells = nbformat.read(notebook, as_version=4).cells
    namespace = {"__name__": "lab4_defs"}
    cwd = os.getcwd()
    os.chdir(ROOT)  # the parameters hold paths relative to the repository root
    try:
        for index, cell in enumerate(cells):
            if cell.cell_type == "code" and "defs" in cell.metadata.get("tags", []):
                exec(compile(cell.source, f"<{Path(notebook).name} cell {index}>", "exec"), namespace)
    finally:
        os.chdir(cwd)
    namespace["device"] = torch.device(device)
    return namespace
