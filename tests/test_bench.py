"""The benchmark runs (tiny size; no timing is asserted: machines are noisy)."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def test_benchmark_runs_on_a_tiny_size(tmp_path):
    output = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--tiny", "--output", str(output)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = output.read_text()
    for row in ("| conventional: torchvision MNIST", "| notebook: resident tensors", "| notebook loop under bf16",
                "| the model's matrix products alone", "| fp32 GEMM bound", "| Adam step |",
                "## Reference: the VAE 784-400-20"):
        assert row in table, row
    assert table.count("| pipeline | s / epoch | images / s | speed-up vs conventional |") == 2
    # every timing row holds positive numbers and a speed-up
    rows = [line for line in table.splitlines() if re.match(r"\| (conventional|notebook|the model|fp32)", line)]
    assert len(rows) == 9
    for line in rows:
        seconds, images, speedup = (cell.strip() for cell in line.strip("|").split("|")[1:])
        assert float(seconds) > 0 and int(images.replace(",", "")) > 0 and speedup.endswith("x"), line
    assert re.search(r"vs conventional pipeline: \*\*\d+\.\d\dx\*\*", table)


def test_quality_comparison_runs_on_a_tiny_size(tmp_path):
    output = tmp_path / "quality.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--epochs", "1", "--n-train", "1000",
                           "--output", str(output)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = output.read_text()
    rows = re.findall(r"^\| (.+?) \| (-?[\d.]+) \| ([\d.]+) \|$", table, re.M)
    assert len(rows) == 6 and all(float(seconds) > 0 for _, _, seconds in rows)
    # one verdict per faster setting, and each one says what its numbers say ("not acceptable." also ends in
    # "acceptable.", so the whole verdict is matched)
    worst_seed = max(float(dev) for _, dev, _ in rows[:3])
    verdicts = re.findall(r"^- (.+?): (not worse than the worst seed: acceptable|([\d.]+) nats worse than the worst "
                          r"seed: not acceptable)\.$", table, re.M)
    assert [label for label, _, _ in verdicts] == [label for label, _, _ in rows[3:]]
    for (label, verdict, worse), (_, dev, _) in zip(verdicts, rows[3:]):
        if worse:  # the table rounds to 0.1 nat
            assert float(dev) > worst_seed - 0.05 and float(worse) == pytest.approx(float(dev) - worst_seed, abs=0.11), label
        else:
            assert float(dev) <= worst_seed + 0.05, label
