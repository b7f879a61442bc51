"""Copy the two files to hand in into submission/, after checking the notebook is one clean run.

The notebook must have been executed top to bottom (execution counts 1..N over its code cells,
no error output) and the report PDF must exist; otherwise nothing is copied.
"""
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def check_executed(path):
    """Raise ValueError unless every code cell ran once, in order, without error."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    if counts != list(range(1, len(code) + 1)):
        raise ValueError(f"{path.name} was not executed top to bottom (execution counts {counts})")
    errors = [i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.outputs)]
    if errors:
        raise ValueError(f"{path.name} has error outputs in code cells {errors}")


def main():
    notebook, pdf = ROOT / "lab4_vae.ipynb", ROOT / "report" / "main.pdf"
    try:
        check_executed(notebook)
        if not pdf.is_file():
            raise ValueError("report/main.pdf is missing: run `make report`")
    except ValueError as err:
        print(f"submission not made: {err}", file=sys.stderr)
        return 1
    out = ROOT / "submission"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    shutil.copy2(notebook, out / "lab4_vae.ipynb")
    shutil.copy2(pdf, out / "report.pdf")
    print("submission/: lab4_vae.ipynb, report.pdf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
