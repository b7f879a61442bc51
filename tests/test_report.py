"""Tests of the LaTeX report (report/main.tex).

The report is built from the committed ``report/figures/`` (written by the
notebook ``lab4_vae.ipynb``) in a temporary copy of ``report/``, so the
repository is never polluted by build products. These tests fail until the
notebook has written ``report/figures/``; that is expected.

Requirements: TeX Live with latexmk and pdflatex, and poppler-utils (pdfinfo),
all installed by the project's setup (see the Makefile).

The environment variable ``LAB4_REPORT_DIR`` may point the tests at another
copy of the report directory (e.g. a draft built with placeholder figures
outside the repository); by default they use ``<repo>/report``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REPORT = Path(os.environ.get("LAB4_REPORT_DIR", REPO / "report")).resolve()
MAIN = REPORT / "main.tex"
RESULTS = REPORT / "figures" / "results.tex"
# Measured epoch times: written by the notebook next to results.tex, kept apart
# because they differ from run to run.
TIMINGS = REPORT / "figures" / "timings.tex"

SETUP_HINT = (
    "run the project's setup first (`make setup`, or `make tex`, installs TeX Live: "
    "latexmk, pdflatex, texlive-latex-extra, texlive-science, lmodern, poppler-utils)"
)

MIN_PAGES, MAX_PAGES = 3, 6  # whole PDF, references included (course limit: 6 pages)
MAX_OVERFULL_PT = 1.0

# Macros of report/figures/results.tex that main.tex relies on (the notebook's
# export cell promises them; keep this set equal to what main.tex uses).
CONTRACT_MACROS = {
    # setup
    "NTrain", "NDev", "NTest", "LatentDim", "HiddenDims", "SigmaDec", "KLWeight",
    "ReconConst", "BatchSize", "LearningRate", "ClipNorm", "ClipNormVAE", "ClfFeatureDim",
    "EpochsFinal", "EpochsAE", "EpochsStudy", "EpochsGen", "NSeeds", "GenLatentDim", "LearnedSigmaStart",
    "IwaeK", "KnnK", "NGen", "ActiveThreshold", "SigmaGrid", "ClfTestAcc", "TorchVersion",
    "GmmComponentsGrid", "GmmNFit", "LogNDev",
    # the models of parts 1-2 (test set, mean and sd over seeds; AE vs VAE paired)
    "VAENegElbo", "VAENegElboSd", "VAEKL", "VAEKLSd", "VAEActiveUnits", "VAEParams",
    "VAEKnnAcc", "AEParams",
    "AEvsVAEMSEDiff", "AEvsVAEMSEDiffLow", "AEvsVAEMSEDiffHigh", "AEvsVAEMSEDiffWord",
    "AEvsVAEKnnDiff", "AEvsVAEKnnDiffLow", "AEvsVAEKnnDiffHigh", "AEvsVAEKnnDiffWord",
    "AEvsVAEFrechetDiff", "AEvsVAEFrechetDiffLow",
    "AEvsVAEFrechetDiffHigh", "AEvsVAEFrechetDiffWord", "RealFrechet", "RealFrechetDev",
    "RealConfidence", "RealEntropy",
    # equal-budget effect of the code size (AE, dev squared error after EpochsAE epochs)
    "AEDevSseAtEpochsAE", "AEHighDevSseAtEpochsAE",
    # training dynamics and geometry of the lab's VAE; clipping of every model
    "VAEClippedFirstEpoch", "VAEClippedLastEpoch", "VAEClippedMax", "ClippedMaxAll",
    "MeansRadiusMedian", "MeansRadiusBeyondThree",
    # exact likelihood at d = 2
    "LikOrdered", "LikGapIwaeElbo", "LikGapLogPxIwae", "LikGapLogPxElbo",
    "QuadN", "QuadGrid", "QuadHalfWidth", "QuadCheck", "QuadCheckMean", "QuadCheckN",
    # sigma study (dev, one seed): orderings and trends computed by the notebook
    "SigmaBestElbo", "SigmaBestFrechet", "SigmaCollapsed",
    "SigmaRateTrend", "SigmaMarginalKLTrend",
    # why the lab's VAE generates badly (test, paired over seeds)
    "CauseFdRecon", "CauseFdReconSd", "CauseFdPrior", "CauseFdPriorSd", "CauseFdSamples",
    "CauseFdSamplesSd", "CauseSharpRecon", "CauseSharpReconSd", "CauseSharpPrior",
    "CauseSharpPriorSd",
    "CauseBlur", "CauseBlurLow", "CauseBlurHigh", "CauseBlurWord",
    "CauseHoles", "CauseHolesLow", "CauseHolesHigh", "CauseHolesWord",
    "CauseNoise", "CauseNoiseLow", "CauseNoiseHigh", "CauseNoiseWord",
    # what fixes it: dev search, test comparisons, the learned sigma
    "WinnerName", "RunnerUpName", "WinnerTestFrechet", "WinnerTestFrechetSd",
    "LabTestFrechet", "GmmComponentsChosen", "GmmChosenBelowMax",
    "WinnerVsRunnerUp", "WinnerVsRunnerUpLow", "WinnerVsRunnerUpHigh", "WinnerVsRunnerUpWord",
    "WinnerVsLab", "WinnerVsLabLow", "WinnerVsLabHigh", "WinnerVsLabWord",
    "WinnerVsOtherSampler", "WinnerVsOtherSamplerLow", "WinnerVsOtherSamplerHigh",
    "WinnerVsOtherSamplerWord", "WinnerOtherSampler", "WinnerConfidence", "WinnerEntropy",
    "WinnerFdRecon", "WinnerFdReconSd", "WinnerSharpRecon", "WinnerSharpReconSd",
    "WinnerVsLabRecon", "WinnerVsLabReconLow", "WinnerVsLabReconHigh", "WinnerVsLabReconWord",
    "WinnerFdSamples", "LabMixTestFrechet", "LabMixTestFrechetSd",
    "LeverMixTestFrechet", "LeverMixTestFrechetSd", "LeverMixComponents",
    "LearnedVsFixed", "LearnedVsFixedLow", "LearnedVsFixedHigh", "LearnedVsFixedWord",
    "LeverLongVsLever", "LeverLongVsLeverLow", "LeverLongVsLeverHigh", "LeverLongVsLeverWord",
    "LeverLongVsLongMix", "LeverLongVsLongMixLow", "LeverLongVsLongMixHigh", "LeverLongVsLongMixWord",
    "LeverLongMixTestFrechet", "LeverLongMixTestFrechetSd", "LongMixTestFrechet", "LongMixTestFrechetSd",
    "LeverLongClippedMax",
    "LeverMixVsLabMix", "LeverMixVsLabMixLow", "LeverMixVsLabMixHigh", "LeverMixVsLabMixWord",
    "LearnedSigmaFinal", "LearnedSigmaStarFinal", "LearnedClippedMax",
    # the lab's VAE trained as long as the generators; the larger code against that longer training
    "LongFdRecon", "LongFdPrior", "LongLeverRecon", "LongLeverReconLow", "LongLeverReconHigh",
    "LongLeverReconWord", "LongLeverPrior", "LongLeverPriorLow", "LongLeverPriorHigh", "LongLeverPriorWord",
    "CodeVsLength", "CodeVsLengthLow", "CodeVsLengthHigh", "CodeVsLengthWord",
}

# Measured epoch times, from report/figures/timings.tex.
TIMING_MACROS = {"BaseEpochSeconds"}

# The tables and figures of report/figures/ that the report shows (the notebook
# exports them); the studies removed from the notebook must not come back.
REQUIRED_FILES = {
    "figures/tab_models.tex", "figures/tab_likelihood.tex", "figures/tab_sigma.tex",
    "figures/tab_candidates.tex", "figures/tab_generation.tex",
    "figures/fig_learning_curves.pdf", "figures/fig_ae_vs_vae_latent.pdf",
    "figures/fig_reconstructions.pdf",  # fig_means_vs_samples: in the notebook; Fig. 6's top rows show it
    "figures/fig_learned_sigma.pdf", "figures/fig_generation.pdf",
}
REMOVED_FILES = {"tab_variants", "tab_latent", "fig_latent_dims"}

# The group's names: one line in AUTHORS at the repository root; `make report`
# writes report/authors.tex from it, and main.tex reads that file.
AUTHORS = REPO / "AUTHORS"
AUTHORS_TEX = REPORT / "authors.tex"

# Capitalised commands of LaTeX and of the packages loaded by main.tex; any
# other capitalised command used in main.tex and not defined there must come
# from results.tex (this catches typos in result macro names).
KNOWN_CAPITALISED = {
    "Big", "Bigg", "Biggl", "Biggr", "Bigl", "Bigr", "Cref", "Crefname", "Delta",
    "Gamma", "Huge", "LARGE", "Lambda", "LaTeX", "Large", "Leftarrow",
    "Leftrightarrow", "Longrightarrow", "Omega", "Phi", "Pi", "Pr", "Psi", "Re",
    "Im", "Rightarrow", "Sigma", "TeX", "Theta", "Upsilon", "Vert", "Xi",
    "DeclareMathOperator", "Alph", "Roman", "AE", "OE", "L", "O", "P", "S",
}

BUILD_PRODUCTS = re.compile(
    r"^(main\.pdf|.*\.(aux|log|out|bbl|blg|fls|fdb_latexmk|synctex\.gz|toc|lof|lot))$|^build$"
)


@dataclass
class Build:
    proc: subprocess.CompletedProcess
    workdir: Path

    @property
    def pdf(self) -> Path:
        return self.workdir / "main.pdf"

    def text(self, suffix: str) -> str:
        path = self.workdir / f"main.{suffix}"
        return path.read_text(encoding="latin-1") if path.exists() else ""


def strip_comments(tex: str) -> str:
    """Remove TeX comments (an unescaped % to the end of the line)."""
    return re.sub(r"(?<!\\)%.*", "", tex)


def unwrap_log(log: str) -> str:
    """Undo TeX's hard wrapping of log lines at 79 characters."""
    out, buf = [], ""
    for line in log.splitlines():
        buf += line
        if len(line) != 79:
            out.append(buf)
            buf = ""
    if buf:
        out.append(buf)
    return "\n".join(out)


def defined_macros(tex: str) -> set[str]:
    pat = (r"\\(?:newcommand|renewcommand|providecommand|DeclareMathOperator)\*?"
           r"\s*\{?\s*\\([A-Za-z]+)")
    names = set(re.findall(pat, tex))
    names |= set(re.findall(r"\\(?:def|let)\s*\\([A-Za-z]+)", tex))
    names |= set(re.findall(r"\\newsavebox\s*\{\s*\\([A-Za-z]+)", tex))
    return names


def tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Build:
    if shutil.which("latexmk") is None or shutil.which("pdflatex") is None:
        pytest.fail(f"latexmk/pdflatex not found on PATH: {SETUP_HINT}")
    if not RESULTS.exists():
        pytest.fail(
            f"{RESULTS} is missing: run the notebook lab4_vae.ipynb first; it writes "
            "report/figures/ (results.tex, tab_*.tex, fig_*.pdf)"
        )
    workdir = tmp_path_factory.mktemp("report") / "report"

    def ignore(directory, names):
        if Path(directory).resolve() == REPORT:
            return [n for n in names if BUILD_PRODUCTS.match(n)]
        return []

    shutil.copytree(REPORT, workdir, ignore=ignore)
    proc = subprocess.run(  # from report/, as `make report` does: latexmk reads report/latexmkrc only there
        ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
        cwd=workdir, capture_output=True, text=True, timeout=600,
    )
    return Build(proc=proc, workdir=workdir)


def test_report_builds(build):
    assert build.proc.returncode == 0 and build.pdf.exists(), (
        "latexmk failed:\n" + tail(build.proc.stdout + build.proc.stderr)
        + "\n--- end of main.log ---\n" + tail(build.text("log"))
    )


def test_page_count(build):
    """The whole PDF, references included, has at most MAX_PAGES pages."""
    assert build.pdf.exists(), "no PDF was produced"
    if shutil.which("pdfinfo") is None:
        pytest.fail(f"pdfinfo not found on PATH: {SETUP_HINT}")
    info = subprocess.run(["pdfinfo", str(build.pdf)], capture_output=True, text=True,
                          check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    assert MIN_PAGES <= pages <= MAX_PAGES, (
        f"{pages} pages in all (references included), expected {MIN_PAGES}-{MAX_PAGES}")


def test_floats_within_body(build):
    """Every figure and table is placed by the page on which the body ends
    (label `endofbody`, just before the bibliography): no float may drift
    among or after the references."""
    aux = build.text("aux")
    assert aux, "no main.aux"
    labels = dict(re.findall(r"\\newlabel\{([^}@]+)\}\{\{[^{}]*\}\{(\d+)\}", aux))
    assert "endofbody" in labels, "label `endofbody` not found in main.aux"
    body_end = int(labels["endofbody"])
    late = {k: int(v) for k, v in labels.items()
            if k.startswith(("fig:", "tab:")) and int(v) > body_end}
    assert not late, f"floats placed after the body's last page {body_end}: {late}"


def test_every_float_is_referenced():
    """Each figure and table of main.tex is cited in the text (\\ref, \\cref,
    \\Cref, possibly with several labels)."""
    src = _main_source()
    labels = set(re.findall(r"\\label\{((?:fig|tab):[^}]+)\}", src))
    cited = set()
    for group in re.findall(r"\\(?:[cC]ref|ref|autoref)\{([^}]+)\}", src):
        cited |= {g.strip() for g in group.split(",")}
    assert labels, "main.tex has no labelled figure or table"
    unreferenced = sorted(labels - cited)
    assert not unreferenced, "figures/tables never referenced: " + ", ".join(unreferenced)


def test_no_undefined_references_or_citations(build):
    log = unwrap_log(build.text("log"))
    assert log, "no main.log"
    patterns = [
        r"LaTeX Warning: Reference `[^']*' on page \d+ undefined",
        r"Citation `[^']*'[^\n]*undefined",
        r"There were undefined (references|citations)",
        r"Label\(s\) may have changed",
        r"LaTeX Warning: There were multiply-defined labels",
    ]
    found = [m.group(0) for p in patterns for m in re.finditer(p, log)]
    assert not found, "undefined references/citations:\n" + "\n".join(found)


def test_bibtex_clean(build):
    blg = build.text("blg")
    assert blg, "no main.blg (bibtex did not run?)"
    warnings = [line for line in blg.splitlines() if line.startswith("Warning--")]
    errors = re.findall(r".*error message.*", blg)
    assert not warnings and not errors, "bibtex problems:\n" + "\n".join(warnings + errors)


def test_no_missing_files(build):
    log = unwrap_log(build.text("log"))
    found = re.findall(r"File `[^']*' not found[^\n]*", log)
    found += re.findall(r"No file [^\n]*", log)
    assert not found, "missing files:\n" + "\n".join(found)


def test_no_overfull_hbox(build):
    log = unwrap_log(build.text("log"))
    too_wide = [
        m.group(0) for m in re.finditer(
            r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)[^\n]*", log)
        if float(m.group(1)) > MAX_OVERFULL_PT
    ]
    floats = re.findall(r"LaTeX Warning: Float too large[^\n]*", log)
    assert not too_wide and not floats, "layout problems:\n" + "\n".join(too_wide + floats)


def _main_source() -> str:
    return strip_comments(MAIN.read_text(encoding="utf-8"))


def test_preamble_contract():
    src = _main_source()
    assert r"\documentclass[10pt,a4paper,twocolumn]{article}" in src
    assert r"\usepackage[a4paper,margin=18mm,columnsep=6mm]{geometry}" in src
    assert r"\input{figures/results.tex}" in src
    assert r"\input{authors.tex}" in src, "main.tex must read the names from authors.tex"
    assert r"\GroupMembers" in src.split(r"\begin{document}", 1)[0], "names not used in the preamble"
    assert re.search(r"\\cite[tp]?\{[^}]*kingma2014vae", src), "Kingma & Welling not cited"
    packages = re.findall(r"\\usepackage(?:\[[^\]]*\])?\{([^}]*)\}", src)
    assert packages[-1] == "cleveref", "cleveref must be the last package loaded"


def test_included_files_exist():
    src = _main_source()
    targets = re.findall(r"\\includegraphics\s*(?:\[[^\]]*\])?\s*\{([^}]+)\}", src)
    inputs = re.findall(r"\\(?:input|FitTable)\s*\{([^}#]+)\}", src)
    assert targets, "main.tex includes no figure"
    missing = [t for t in targets if not (REPORT / t).exists()]
    missing += [t for t in inputs
                if not (REPORT / t).exists() and not (REPORT / f"{t}.tex").exists()]
    assert not missing, "files used by main.tex but absent from report/: " + ", ".join(missing)


def test_figures_included_at_natural_size():
    """The notebook exports figures at the exact column/text width."""
    src = _main_source()
    scaled = re.findall(r"\\includegraphics\s*\[[^\]]*\]\s*\{[^}]+\}", src)
    assert not scaled, "figures must be included without options: " + ", ".join(scaled)


def test_result_macros_defined():
    src = _main_source()
    if not RESULTS.exists():
        pytest.fail(f"{RESULTS} is missing: run the notebook lab4_vae.ipynb first")
    results = strip_comments(RESULTS.read_text(encoding="utf-8"))
    if TIMINGS.exists():
        results += strip_comments(TIMINGS.read_text(encoding="utf-8"))
    from_results = defined_macros(results)
    local = defined_macros(src)
    if AUTHORS_TEX.exists():  # \GroupMembers, written from AUTHORS
        local |= defined_macros(strip_comments(AUTHORS_TEX.read_text(encoding="utf-8")))
    used = set(re.findall(r"\\([A-Za-z]+)", src))
    needed = (used & (CONTRACT_MACROS | TIMING_MACROS)) | {
        m for m in used - local - KNOWN_CAPITALISED if m[0].isupper()
    }
    missing = sorted(needed - from_results)
    assert not missing, "macros used in main.tex but not defined in results.tex: " + ", ".join(
        "\\" + m for m in missing)
    clash = sorted(local & from_results)
    assert not clash, "macros defined both in main.tex and results.tex: " + ", ".join(clash)


def test_no_hand_typed_measurements():
    """Measured numbers come from macros; the body may only contain decimal
    constants of definitions (the active-unit threshold 0.01) and two facts
    of the prior N(0, I_2), for comparison with the measured radii of the
    posterior means: the median radius sqrt(2 ln 2) = 1.18 and the share
    exp(-9/2) = 1.1 % beyond radius 3."""
    src = _main_source()
    body = src.split(r"\begin{document}", 1)[-1]
    decimals = set(re.findall(r"(?<![\w.])\d+\.\d+", body)) - {"0.01", "1.18", "1.1"}
    assert not decimals, "hand-typed decimal numbers in main.tex: " + ", ".join(sorted(decimals))


def test_report_shows_the_exported_tables_and_figures():
    """main.tex includes every table and figure of the story (REQUIRED_FILES) and
    none of the removed studies."""
    src = _main_source()
    used = set(re.findall(r"\\includegraphics\s*\{([^}]+)\}", src))
    used |= set(re.findall(r"\\(?:input|FitTable)\s*\{([^}#]+)\}", src))
    missing = sorted(REQUIRED_FILES - used)
    assert not missing, "tables/figures of the story not included: " + ", ".join(missing)
    removed = sorted(name for name in REMOVED_FILES if name in src)
    assert not removed, "removed studies still in main.tex: " + ", ".join(removed)


def test_authors_in_one_place():
    """AUTHORS (one line) is the one place for the group's names: report/authors.tex
    says the same, the README names AUTHORS, and the Makefile writes authors.tex."""
    names = AUTHORS.read_text(encoding="utf-8").strip()
    assert names and "\n" not in names, "AUTHORS must hold the names on one line"
    tex = strip_comments(AUTHORS_TEX.read_text(encoding="utf-8"))
    match = re.search(r"\\newcommand\{\\GroupMembers\}\{(.*)\}\s*$", tex.strip())
    assert match, f"{AUTHORS_TEX} does not define \\GroupMembers"
    assert match.group(1) == names, (
        f"report/authors.tex says {match.group(1)!r}, AUTHORS says {names!r}: run `make report`")
    assert "`AUTHORS`" in (REPO / "README.md").read_text(encoding="utf-8"), "README must name AUTHORS"
    assert "report/authors.tex: AUTHORS" in (REPO / "Makefile").read_text(encoding="utf-8")
