"""Write the group's names from AUTHORS (one line, the one place they are set) into the notebook's first cell,
as its '**Group:** ...' line. `make notebook` runs it before executing; tests/test_notebook.py checks the two agree.
Only that one markdown line changes, so the notebook's outputs stay those of its last run."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "**Group:** "


def group_line():
    return PREFIX + (ROOT / "AUTHORS").read_text(encoding="utf-8").splitlines()[0].strip()


def main(notebook=ROOT / "lab4_vae.ipynb"):
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    first = nb["cells"][0]
    lines = "".join(first["source"]).split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith(PREFIX)), None)
    if at is None:
        raise SystemExit(f"{notebook}: the first cell has no '{PREFIX}...' line")
    if lines[at] != group_line():
        lines[at] = group_line()
        text = "\n".join(lines)
        first["source"] = [line + "\n" for line in text.split("\n")[:-1]] + [text.split("\n")[-1]]
        Path(notebook).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
