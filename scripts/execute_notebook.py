"""Execute a notebook top to bottom with a fresh kernel and save it with its outputs.

Usage: python scripts/execute_notebook.py NOTEBOOK [--output OUT.ipynb] [--timeout SECONDS] [--cwd DIR]

The kernel runs in the notebook's own folder, as in Jupyter (for lab4_vae.ipynb: the repository
root), or in --cwd, so the notebook's relative paths (data/mnist, report/figures, checkpoints)
resolve there; LAB4_* variables in the environment reach the kernel and override the notebook's
parameters. Stream outputs are coalesced and carriage returns resolved, so progress bars are
stored as their final line of plain text. The kernel's connection is encrypted (CurveZMQ) where
its kernelspec supports it, so ipykernel does not warn about plain-text TCP. Progress bars are switched
off in the kernel (TQDM_DISABLE=1, which tqdm reads as the default of `disable`), so none is stored;
in Jupyter a person still sees them live. While it runs, it prints which section (the latest markdown
heading) and cell run, with the elapsed time, and at the end the time spent in each section.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
import zmq
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from traitlets.config import Config


def kernel_config():
    """Kernel-manager settings: CurveZMQ keys for kernels whose kernelspec declares support (ipykernel's
    does). Without them ipykernel >= 7.4 warns on every start that it runs over unencrypted TCP."""
    config = Config()
    if zmq.has("curve"):  # "auto" needs libzmq built with CurveZMQ; otherwise keep the default (and the warning)
        config.KernelManager.transport_encryption = "auto"
    return config


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


def section_of_cells(notebook):
    """The title of the latest markdown heading above each cell (the notebook's title before the first)."""
    sections, current = [], "(start)"
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            headings = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            current = headings[-1] if headings else current
        sections.append(current)
    return sections


class ProgressClient(NotebookClient):
    """NotebookClient that reports each code cell as it starts (section, cell index, elapsed time) and adds
    up the time per section."""

    def __init__(self, notebook, progress_file=sys.stdout, **kwargs):
        super().__init__(notebook, **kwargs)
        self.sections, self.progress_file, self.section_seconds = section_of_cells(notebook), progress_file, {}
        self.n_code = sum(cell.cell_type == "code" for cell in notebook.cells)
        self.started = time.perf_counter()

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        if cell.cell_type != "code":
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        section, start = self.sections[cell_index], time.perf_counter()
        position = sum(c.cell_type == "code" for c in self.nb.cells[:cell_index + 1])
        print(f"[{start - self.started:6.0f} s] code cell {position}/{self.n_code} (cell {cell_index}): {section}",
              file=self.progress_file, flush=True)
        try:
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        finally:
            self.section_seconds[section] = self.section_seconds.get(section, 0.0) + time.perf_counter() - start

    def time_table(self):
        """Plain-text table of the seconds spent in each section, in notebook order, and the total."""
        width = max(len(name) for name in [*self.section_seconds, "total"])
        rows = [f"{name:<{width}}  {seconds:7.1f} s" for name, seconds in self.section_seconds.items()]
        total = sum(self.section_seconds.values())
        return "\n".join(["time per section:", *rows, "-" * (width + 11), f"{'total':<{width}}  {total:7.1f} s"])


def execute(path, output=None, timeout=None, cwd=None, log=sys.stdout):
    """Run every cell of `path` in order, in folder `cwd` (default: the notebook's folder); write the
    executed notebook to `output` (default: in place). Progress and the time per section go to `log`."""
    notebook = nbformat.read(path, as_version=4)
    cwd = Path(cwd) if cwd is not None else Path(path).resolve().parent
    os.environ["TQDM_DISABLE"] = "1"  # inherited by the kernel: no progress bar is stored in the outputs
    client = ProgressClient(notebook, progress_file=log, timeout=timeout, kernel_name="python3", config=kernel_config(),
                            resources={"metadata": {"path": str(cwd)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        if client.section_seconds:
            print(client.time_table(), file=log, flush=True)
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
    parser.add_argument("--cwd", type=Path, default=None,
                        help="folder the kernel runs in (default: the notebook's folder, as in Jupyter)")
    args = parser.parse_args()
    try:
        seconds = execute(args.notebook, args.output, args.timeout, args.cwd)
    except CellExecutionError as err:
        print(f"{args.notebook} failed; the partial outputs are saved.\n{err}", file=sys.stderr)
        return 1
    print(f"executed {args.notebook} in {seconds:.0f} s -> {args.output or args.notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
