"""Run every code cell of the notebook, in order, as one plain Python program (no Jupyter needed).

For machines with PyTorch but without Jupyter (the lent GPU machines, for instance): the same code
as `make notebook`, with LAB4_* environment overrides, figures drawn with the non-interactive Agg
backend, progress bars off (TQDM_DISABLE=1) and nothing saved into the .ipynb. Runs in the repository root; prints the wall time.

    python scripts/run_as_script.py                     # the full notebook
    LAB4_QUICK=1 LAB4_OUT_DIR=/tmp/out LAB4_CKPT_DIR=/tmp/ckpt python scripts/run_as_script.py
    python scripts/run_as_script.py --export lab4_vae.py   # only write the program
"""
import argparse
import os
import sys
import time
from pathlib import Path

from notebook_defs import NOTEBOOK, ROOT, code_cells


def as_program(notebook):
    """The notebook's code cells joined into one program, each headed by a comment with its index."""
    parts = []
    for index, source, _tags in code_cells(notebook):
        if any(line.lstrip().startswith(("%", "!")) for line in source.splitlines()):
            raise ValueError(f"{notebook} cell {index} uses IPython syntax; it cannot run as a plain script")
        parts.append(f"# ---- cell {index} ----\n{source}\n")
    return "\n".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, nargs="?", default=NOTEBOOK)
    parser.add_argument("--export", type=Path, help="write the program to this file instead of running it")
    args = parser.parse_args()
    program = as_program(args.notebook)
    if args.export:
        args.export.write_text(program, encoding="utf-8")
        print(f"wrote {args.export}")
        return 0
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["TQDM_DISABLE"] = "1"  # as scripts/execute_notebook.py: the per-epoch log lines, no progress bars
    os.chdir(ROOT)
    start = time.perf_counter()
    exec(compile(program, str(args.notebook), "exec"), {"__name__": "__main__"})
    print(f"ran {args.notebook.name} as a script in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
