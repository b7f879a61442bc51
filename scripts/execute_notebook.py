"""Execute a notebook top to bottom with a fresh kernel and save it with its outputs.

Usage: python scripts/execute_notebook.py NOTEBOOK [--output OUT.ipynb] [--timeout SECONDS]

The kernel runs in the repository root, so the notebook's relative paths (data/mnist,
report/figures, checkpoints) resolve there; LAB4_* variables in the environment reach the
kernel and override the notebook's parameters. Stream outputs are coalesced and carriage
returns resolved, so progress bars are stored as their final line of plain text.
"""
import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def resolve_carriage_returns(text):
    """Keep, on every line, only what follows its last carriage return (what a terminal shows)."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def coalesce_streams(cell):
    """Merge consecutive stdout/stderr outputs of a cell and resolve carriage returns."""
    merged = []
    for output in cell.get("outputs", []):
        if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == output.name):
            merged[-1].text += output.text
        else:
            merged.append(output)
    for output in merged:
        if output.output_type == "stream":
            output.text = resolve_carriage_returns(output.text)
    cell.outputs = [o for o in merged if o.output_type != "stream" or o.text.strip()]


def execute(path, output=None, timeout=None):
    """Run every cell of `path` in order; write the executed notebook to `output` (default: in place)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        for cell in notebook.cells:
            if cell.cell_type == "code":
                coalesce_streams(cell)
        nbformat.write(notebook, output or path)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--timeout", type=int, default=None, help="per-cell limit in seconds (default: none)")
    args = parser.parse_args()
    try:
        seconds = execute(args.notebook, args.output, args.timeout)
    except CellExecutionError as err:
        print(f"{args.notebook} failed; the partial outputs are saved.\n{err}", file=sys.stderr)
        return 1
    print(f"executed {args.notebook} in {seconds:.0f} s -> {args.output or args.notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
