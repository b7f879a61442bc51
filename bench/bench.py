"""Training-speed benchmark: the notebook's in-memory training loop vs the conventional pipeline.

In one run it measures, on this machine:
  (a) one epoch of the notebook's own VAE training (its `train_model`, data resident on the
      device, batches sliced by index, one host synchronisation per epoch);
  (b) the same model trained through the conventional pipeline (torchvision `MNIST` +
      `ToTensor()` + `DataLoader`, a `.item()` per step);
  (c) the same as (a) under bf16 autocast, to see whether it would pay;
  the fp32 matrix-multiply bound of the model (its FLOPs per epoch over this machine's measured
  fp32 GEMM throughput), and the whole notebook in quick mode (whole-process wall time).
Every timing is the median of several repetitions. Writes a Markdown table (default
bench/results.md).

    python bench/bench.py                 # full benchmark (about 3 minutes on 2 CPU cores)
    python bench/bench.py --tiny --output /tmp/bench.md   # a few seconds (used by the tests)
"""
import argparse
import gzip
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from notebook_defs import load_defs  # noqa: E402


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(nb, device):
    torch.manual_seed(0)
    return nb["VAE"](784, nb["LATENT_DIM"], nb["SIGMA"], nb["HIDDEN_DIMS"], nb["ACTIVATION"]).to(device)


def epoch_flops(model, n_images):
    """Matrix-multiply FLOPs of one training epoch: 2 MACs forward + 4 backward per weight, per image."""
    macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6 * macs * n_images


def gemm_gflops(device, size=2048, repeats=5):
    """Measured fp32 matrix-multiply throughput (GFLOP/s), median of `repeats` products."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def notebook_epochs(nb, train_x, device, epochs, bf16=False):
    """Seconds of each training epoch of the notebook's own loop (dev evaluation excluded)."""
    model = build_model(nb, device)
    loss_fn = nb["vae_loss"]
    if bf16:
        def loss_fn(model, x, generator=None):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return nb["vae_loss"](model, x, generator)
    history = nb["train_model"](model, loss_fn, (train_x,), (train_x[:256],), name="bench", epochs=epochs,
                                batch_size=nb["BATCH_SIZE"], lr=nb["LR"], clip_norm=nb["CLIP_NORM"] / (2 * nb["SIGMA"]**2),
                                seed=0)
    return history["seconds"], history["dev"]["loss"][-1]


def prepare_torchvision_root():
    """A temporary torchvision MNIST root built from the vendored files (no download)."""
    from torchvision.datasets import MNIST

    root = Path(tempfile.mkdtemp(prefix="lab4-bench-"))
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with gzip.open(ROOT / "data" / "mnist" / f"{name}.gz", "rb") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root, MNIST(str(root), train=True, download=False)


def conventional_epochs(nb, dataset, device, n_train, epochs):
    """Seconds per epoch of the textbook pipeline: ToTensor per image, DataLoader, .item() per step."""
    from torch.utils.data import DataLoader, Subset
    from torchvision.transforms import ToTensor

    dataset.transform = ToTensor()
    loader = DataLoader(Subset(dataset, range(n_train)), batch_size=nb["BATCH_SIZE"], shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    model = build_model(nb, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=nb["LR"])
    clip = nb["CLIP_NORM"] / (2 * nb["SIGMA"]**2)
    seconds = []
    for _ in range(epochs):
        synchronize(device)
        start, running = time.perf_counter(), 0.0
        for images, _labels in loader:
            x = images.view(len(images), -1).to(device)
            loss = nb["vae_loss"](model, x)["loss"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            running += loss.item()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def quick_notebook_seconds(repeats):
    """Whole-process wall time of the notebook in quick mode (fresh checkpoints each time)."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("LAB4_")}
            env.update(LAB4_QUICK="1", LAB4_OUT_DIR=f"{tmp}/out", LAB4_CKPT_DIR=f"{tmp}/ckpt")
            start = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_notebook.py"), str(ROOT / "lab4_vae.ipynb"),
                            "--output", f"{tmp}/nb.ipynb"], env=env, cwd=ROOT, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="epochs / runs per measurement (median taken)")
    parser.add_argument("--tiny", action="store_true", help="2,000 images, 1 repeat, no notebook run (tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args()

    device = torch.device(args.device)
    nb = load_defs(device=args.device)
    n_train = 2000 if args.tiny else 50_000
    repeats = 1 if args.tiny else args.repeats
    data = nb["load_mnist"](ROOT / "data" / "mnist", device)
    train_x = data["train"][0][:n_train]
    model = build_model(nb, device)
    flops = epoch_flops(model, n_train)

    print(f"device: {device_description(device)} | torch {torch.__version__} | model "
          f"784-{'-'.join(map(str, nb['HIDDEN_DIMS']))}-{nb['LATENT_DIM']}, batch {nb['BATCH_SIZE']}, "
          f"{n_train:,} images per epoch", flush=True)
    peak = gemm_gflops(device)
    bound = flops / (peak * 1e9)
    print(f"fp32 GEMM throughput {peak:.0f} GFLOP/s -> matmul bound {bound:.2f} s/epoch", flush=True)
    ours, _ = notebook_epochs(nb, train_x, device, repeats + 1)  # the first epoch warms up
    ours = statistics.median(ours[1:])
    print(f"notebook loop: {ours:.2f} s/epoch", flush=True)
    bf16, _ = notebook_epochs(nb, train_x, device, repeats + 1, bf16=True)
    bf16 = statistics.median(bf16[1:])
    print(f"notebook loop, bf16 autocast: {bf16:.2f} s/epoch", flush=True)
    root, dataset = prepare_torchvision_root()
    try:
        conventional = statistics.median(conventional_epochs(nb, dataset, device, n_train, repeats))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"conventional pipeline: {conventional:.2f} s/epoch", flush=True)
    quick = None if args.tiny else statistics.median(quick_notebook_seconds(repeats))

    rows = [
        ("conventional: torchvision MNIST + ToTensor + DataLoader, .item() per step", conventional),
        ("notebook: resident tensors, index slices, one sync per epoch (fp32, kept)", ours),
        ("notebook loop under bf16 autocast (measured, not used)", bf16),
        ("fp32 matrix-multiply bound of the model", bound),
    ]
    lines = [
        "# Training-speed benchmark",
        "",
        f"Machine: {device_description(device)}; {platform.system()} {platform.machine()}; "
        f"torch {torch.__version__}. Date: {date.today().isoformat()}.",
        f"Model: the notebook's VAE 784-{'-'.join(map(str, nb['HIDDEN_DIMS']))}-{nb['LATENT_DIM']} "
        f"({sum(p.numel() for p in model.parameters()):,} parameters), batch {nb['BATCH_SIZE']}, Adam, "
        f"gradient clipping; one epoch = {n_train:,} training images. Median of {repeats} epoch(s) each "
        "(the notebook loop's first, warm-up epoch is not counted).",
        "",
        "| pipeline | s / epoch | images / s | vs conventional |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {sec:.2f} | {n_train / sec:,.0f} | {conventional / sec:.2f}x |" for name, sec in rows]
    lines += ["", f"Measured fp32 GEMM throughput: {peak:.0f} GFLOP/s; the model needs {flops / 1e9:.0f} GFLOP "
              f"per epoch (6 FLOPs per weight per image), hence the bound above. The notebook's loop is "
              f"{ours / bound:.2f}x the bound and {conventional / ours:.2f}x faster than the conventional pipeline."]
    if quick is not None:
        lines += ["", f"Whole notebook in quick mode (`LAB4_QUICK=1`, fresh checkpoints, kernel start included): "
                  f"{quick:.1f} s (median of {repeats} runs)."]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
