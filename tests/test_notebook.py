"""The whole notebook: a quick run on real MNIST slices, its reproducibility, and the committed run."""
import json
import math
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import NOTEBOOK, ROOT, notebook_env, run_notebook
from make_submission import check_executed
from notebook_layout import MAX_CELL_LINES, MAX_LINES_BEFORE_TRAINING, layout

FIGURES = ["fig_ae_latent", "fig_learning_curves", "fig_means_vs_samples", "fig_manifold", "fig_interpolations",
           "fig_reconstructions", "fig_ae_vs_vae_latent", "fig_generation", "fig_rate_distortion",
           "fig_sigma_samples", "fig_learned_sigma"]
TABLES = ["tab_hparams", "tab_layers", "tab_models", "tab_sigma", "tab_candidates", "tab_generation",
          "tab_likelihood"]
COLUMN_PT, TEXT_PT = 3.31 * 72, 6.85 * 72


def numbers_in(obj, path="results"):
    """(path, value) of every number in a JSON structure."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from numbers_in(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from numbers_in(value, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def vae_metrics(results):
    """name -> metrics of every VAE the run evaluated (each seed of a replicated model)."""
    found = {}
    for group in ("models",):
        for name, summary in results[group].items():
            if "values" in summary and "neg_elbo" in summary["values"]:
                for i in range(summary["n_seeds"]):
                    found[f"{group}.{name}[{i}]"] = {k: v[i] for k, v in summary["values"].items()}
    for study in ("sigma_study",):
        found.update({f"{study}.{k}": m for k, m in results[study].items()})
    return found


def test_quick_run_exports_every_file(quick_run):
    out, results, _, _ = quick_run
    for name in FIGURES:
        pdf = (out / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and b"/CreationDate" not in pdf, name
        width = float(re.search(rb"/MediaBox \[ ?0 0 ([\d.]+)", pdf).group(1))
        assert min(abs(width - COLUMN_PT), abs(width - TEXT_PT)) < 0.5, f"{name} is {width} pt wide"
    for name in TABLES:
        table = (out / f"{name}.tex").read_text()
        assert table.startswith("\\begin{tabular}") and "\\toprule" in table and "\\bottomrule" in table
    macros = dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}", (out / "results.tex").read_text()))
    for name in ("VAENegElbo", "VAENegElboSd", "VAEKL", "AEKnnAcc", "VAEFrechet", "ClfTestAcc", "SigmaDec",
                 "LikLogPx", "QuadCheck", "WinnerName", "WinnerTestFrechet", "CauseHoles", "CauseNoiseWord",
                 "LearnedSigmaFinal", "GmmComponentsChosen", "DLeverRecon", "HolmFamily", "RealSubsetFrechet",
                 "CauseClassKept", "LabMixVsPrior", "WinnerReconVsDraws", "EpochLeverRecon", "LearnedClippedText",
                 "LongLeverRecon", "LongFdRecon", "CodeVsLength"):
        assert macros.get(name), name


def test_quick_run_numbers_are_finite_and_consistent(quick_run):
    _, results, _, _ = quick_run
    bad = [(path, value) for path, value in numbers_in(results) if not math.isfinite(value)]
    assert not bad, bad
    vaes = vae_metrics(results)
    assert len(vaes) >= 7
    for name, m in vaes.items():
        assert m.get("iwae_gap", 0) >= 0, f"{name}: IWAE bound below the ELBO"
        assert 0 <= m["active_units"] <= m["latent_dim"], name
        assert m["kl"] >= 0 and m["distortion_sse"] > 0 and m["sigma"] > 0, name
    generation = results["generation"]
    scored = list(vaes.items()) + list(results["real"].items()) + [
        (f"generation.candidates.{name}.{how}", r[how]["mean"]) for name, r in generation["candidates"].items()
        for how in ("prior", "mixture")] + [(f"generation.test.{row}", s["mean"]) for row, s in generation["test"].items()]
    for name, m in scored:
        assert 0 <= m["class_entropy"] <= math.log(10) + 1e-9, name
        assert 0 <= m["confidence"] <= 1 and m["frechet"] >= 0, name
    for m in results["sigma_study"].values():
        assert m["mutual_info"] + m["marginal_kl"] == pytest.approx(m["kl"], abs=1e-3)
    lik = results["likelihood"]["mean"]
    assert lik["elbo"] <= lik["iwae"] <= lik["log_px"] + 1e-3
    assert generation["winner"][1] in ("prior", "mixture") and generation["winner"][0] in generation["candidates"]
    assert generation["runner_up"][0] != generation["winner"][0]
    for name, r in generation["candidates"].items():  # the mixture size kept is the best on dev of those tried
        grid = r["mixture_dev_loglik"]
        assert str(r["mixture_size"]) == max(grid, key=grid.get), name
    comparisons = [*generation["comparisons"].values(), *results["causes"]["differences"].values(),
                   *results["d_lever"]["differences"].values(), *results["epoch_lever"]["differences"].values(),
                   *results["long_lever"]["differences"].values(), results["code_vs_length"],
                   *results["ae_vs_vae"].values()]
    for d in comparisons:
        assert d["low"] is None or d["low"] <= d["difference"] <= d["high"]
        assert d["p"] is None or (0 <= d["p"] <= d["p_holm"] <= 1 and (d["p"] < 0.05) == d["resolved"])
    assert results["holm"]["family"] == len(comparisons)
    assert set(results["holm"]["hold"]) <= set(results["holm"]["resolved"])


def test_quick_run_keeps_per_seed_values(quick_run):
    _, results, _, _ = quick_run
    for summary in results["models"].values():
        for key, values in summary["values"].items():
            assert len(values) == summary["n_seeds"]
            assert summary["mean"][key] == pytest.approx(sum(values) / len(values), rel=1e-5, abs=1e-9)


def test_quick_run_learns(quick_run):
    _, results, _, _ = quick_run
    for history in (*results["final_vae_histories"].values(), results["ae_history"], results["classifier_history"]):
        assert history["dev"]["loss"][-1] < history["dev"]["loss"][0]


def test_fonts_are_embedded(quick_run):
    if not shutil.which("pdffonts"):
        pytest.fail("pdffonts (poppler-utils) is missing: run `make setup`")
    out = quick_run[0]
    for name in FIGURES:
        lines = subprocess.run(["pdffonts", str(out / f"{name}.pdf")], capture_output=True, text=True,
                               check=True).stdout.splitlines()[2:]
        assert lines and all(line.split()[-5] == "yes" for line in lines), (name, lines)


def test_plain_script_run_gives_the_kernel_run_results(quick_run, tmp_path):
    """scripts/run_as_script.py, for machines without Jupyter, runs the same code to the same files; its own
    checkpoint folder is empty, so this also shows that a fresh retraining reproduces the results."""
    out, _, _, _ = quick_run
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_as_script.py")],
                          env=notebook_env(tmp_path, {}, name="script"), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ran lab4_vae.ipynb as a script" in proc.stdout
    produced = sorted(p.name for p in out.iterdir())
    assert sorted(p.name for p in (tmp_path / "script-out").iterdir()) == produced
    for name in produced:
        if name != "timings.tex":  # measured epoch times: the one file two fresh runs may not share
            assert (tmp_path / "script-out" / name).read_bytes() == (out / name).read_bytes(), name


def test_rerun_reuses_checkpoints_and_rewrites_identical_files(quick_run, tmp_path):
    out, _, _, quick_tmp = quick_run
    proc, path = run_notebook(tmp_path, {"LAB4_CKPT_DIR": str(quick_tmp / "a-ckpt")}, name="c")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = "".join(o.get("text", "") for c in nbformat.read(path, 4).cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "restored from" in text and ": training " not in text  # nothing was trained again
    assert "VAE d=2 (seed 0) | epoch 2/2 | train " in text  # the stored training log is printed
    for produced in sorted(out.iterdir()):
        assert (tmp_path / "c-out" / produced.name).read_bytes() == produced.read_bytes(), produced.name


def test_every_cell_can_run_twice(quick_run, tmp_path, monkeypatch):
    """Running each cell a second time right away changes nothing that later cells see."""
    out, results, _, quick_tmp = quick_run
    env = notebook_env(tmp_path, {"LAB4_CKPT_DIR": str(quick_tmp / "a-ckpt")}, name="twice")
    for key, value in env.items():
        if key.startswith("LAB4_"):
            monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
            client.execute_cell(cell, index)
    assert json.loads((tmp_path / "twice-out" / "results.json").read_text()) == results


# --- the committed notebook ------------------------------------------------------------------
@pytest.fixture(scope="module")
def committed():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]


def test_committed_notebook_is_one_clean_run():
    check_executed(NOTEBOOK)  # the check `make` runs before packaging: valid, counts 1..N, no error


def test_committed_notebook_is_the_full_run(committed):
    text = "".join(o.get("text", "") for c in code_cells(committed) for o in c.outputs)
    assert "quick mode: False" in text and "train: images (50000, 784)" in text


def test_committed_notebook_shows_its_figures(committed):
    for cell in code_cells(committed):
        if "save_figure(" in cell.source and "def save_figure" not in cell.source:
            n_saved = cell.source.count("save_figure(")
            images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert len(images) >= n_saved, cell.source[:80]


def test_committed_notebook_has_no_machine_paths_or_widgets(committed):
    for cell in code_cells(committed):
        for output in cell.outputs:
            text = output.get("text", "") + json.dumps(output.get("data", {}).get("text/plain", ""))
            assert not re.search(r"(/work/|/home/|/root/|/tmp/|site-packages)", text), text[:300]
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {})


def test_notebook_structure(committed):
    tags = [c.metadata.get("tags", []) for c in committed.cells if c.cell_type == "code"]
    assert sum("parameters" in t for t in tags) == 1
    defs_sources = [c.source for c in committed.cells if "defs" in c.metadata.get("tags", [])]
    for definition in ("class VAEEncoder", "def reparameterize", "def gaussian_kl", "def train_model"):
        assert any(definition in source for source in defs_sources), definition
    for cell in committed.cells:  # defs cells only define: no top-level training, no figures
        if "defs" in cell.metadata.get("tags", []):
            top_level = "\n".join(line for line in cell.source.splitlines() if not line[:1].isspace())
            assert not re.search(r'save_figure\(fig, "|train_vae\(f"|train_ae\(f"', top_level), cell.source[:80]


# --- opening clean, stored outputs and reading order -----------------------------------------
PROGRESS_BAR = re.compile(r"\d+%\||it/s\]|s/it\]|epoch/s\]|s/epoch\]")


def test_kernelspec_is_the_installed_kernel(committed):
    """JupyterLab marks a notebook modified on open when its kernelspec differs from the kernel's."""
    installed = json.loads((ROOT / ".venv" / "share" / "jupyter" / "kernels" / "python3" / "kernel.json").read_text())
    assert committed.metadata.kernelspec == {"name": "python3", "display_name": installed["display_name"],
                                             "language": installed["language"]}
    assert committed.metadata.language_info["name"] == installed["language"]


def stored_output_problems(notebook):
    """Progress-bar remnants, cells storing more than 50 outputs, stderr holding a tqdm bar."""
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if len(cell.outputs) > 50:
            problems.append(f"cell {index} stores {len(cell.outputs)} outputs")
        for output in cell.outputs:
            if output.output_type == "stream" and PROGRESS_BAR.search(output.text):
                problems.append(f"cell {index} {output.name}: {PROGRESS_BAR.search(output.text).group()!r}")
    return problems


def test_committed_outputs_hold_no_progress_bars(committed):
    assert not stored_output_problems(committed)


def too_long_lines(notebook, folder=""):
    """Printed lines wider than a notebook (110 characters; 140 for an epoch log line, one per epoch, which may
    name a long model), with `folder` + "/" left out of them."""
    return [line for cell in code_cells(notebook) for output in cell.outputs
            for line in output.get("text", "").replace(folder + "/" if folder else "", "").splitlines()
            if len(line) > (140 if " | epoch " in line else 110)]


def test_committed_outputs_fit_a_notebook_width(committed):
    """Printed lines fit a notebook's width."""
    assert not too_long_lines(committed)


def test_quick_run_outputs_are_clean(quick_run):
    """No progress bar is stored, no cell floods its output, printed lines are short (epoch log lines,
    one per epoch, may name a long model)."""
    notebook = nbformat.read(quick_run[2], as_version=4)
    assert not stored_output_problems(notebook)
    # the test's folders are longer than a user's report/figures and checkpoints
    assert not too_long_lines(notebook, folder=str(quick_run[3]))
    for cell in code_cells(notebook):
        for output in cell.outputs:
            assert "\\begin{tabular}" not in output.get("text", "")  # tables print as plain text


def test_reading_order_limits():
    before, sizes = layout(NOTEBOOK)
    assert before <= MAX_LINES_BEFORE_TRAINING, f"{before} code lines before the first training cell"
    assert max(n for _, n in sizes) <= MAX_CELL_LINES, [(i, n) for i, n in sizes if n > MAX_CELL_LINES]


def test_group_names_come_from_authors(committed):
    """AUTHORS is the one place the names are set: the notebook's first cell shows the same line
    (scripts/set_authors.py writes it, `make notebook` runs that first)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from set_authors import group_line
    assert group_line() in committed.cells[0].source.split("\n")
    assert group_line() != "**Group:** "
