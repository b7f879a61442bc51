"""Reading-order limits of lab4_vae.ipynb: code before the first training cell, and the longest code cell.

    python scripts/notebook_layout.py [NOTEBOOK]   # prints both numbers; exit status 1 if over the limits

The first training cell is the first code cell that calls train_ae( (part 1). Counts are non-blank lines.
"""
import json
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "lab4_vae.ipynb"
MAX_LINES_BEFORE_TRAINING = 650
MAX_CELL_LINES = 100


def non_blank(source):
    return sum(1 for line in source.splitlines() if line.strip())


def layout(notebook=NOTEBOOK):
    """(non-blank code lines before the first training cell, [(cell index, non-blank lines)] of every code cell)."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    code = [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    first = next(i for i, source in code if "train_ae(" in source and "def train_ae" not in source)
    return (sum(non_blank(source) for i, source in code if i < first),
            [(i, non_blank(source)) for i, source in code])


def main():
    notebook = Path(sys.argv[1]) if len(sys.argv) > 1 else NOTEBOOK
    before, sizes = layout(notebook)
    index, longest = max(sizes, key=lambda item: item[1])
    print(f"{before} non-blank code lines before the first training cell (limit {MAX_LINES_BEFORE_TRAINING}); "
          f"longest code cell: cell {index}, {longest} lines (limit {MAX_CELL_LINES})")
    return int(before > MAX_LINES_BEFORE_TRAINING or longest > MAX_CELL_LINES)


if __name__ == "__main__":
    sys.exit(main())
