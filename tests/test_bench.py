"""The benchmark runs (tiny size; no timing is asserted: machines are noisy)."""
import subprocess
import sys

from conftest import ROOT


def test_benchmark_runs_on_a_tiny_size(tmp_path):
    output = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--tiny", "--output", str(output)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = output.read_text()
    for row in ("conventional: torchvision MNIST", "notebook: resident tensors", "fp32 matrix-multiply bound"):
        assert row in table
    assert "| pipeline | s / epoch | images / s | vs conventional |" in table
