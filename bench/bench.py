"""Training-speed benchmark: the notebook's training loop against the conventional pipeline.

Every configuration trains one epoch per round and the rounds interleave them, so that the slow
phases of a shared machine hit all of them alike; the first round warms up (and compiles) and is
not counted. Reported: median seconds per epoch over the rounds, and speed-ups as the median of
the per-round ratios. Configurations, for the notebook's VAE and for the 784-400-20 VAE named in
the performance issue (the reference):
  conventional   torchvision `MNIST` + `ToTensor()` + `DataLoader`, a `.item()` per step, Adam;
  notebook       the notebook's own `train_model` (resident tensors, index slices, fused Adam,
                 one host synchronisation per epoch) -- what the notebook runs;
  + bf16         the same loop under bf16 autocast (measured, not used);
  + compile      the same loop with `torch.compile`d encoder and decoder (measured, not used);
  matmuls alone  only the model's own forward and backward matrix products at its batch size;
  GEMM bound     the model's matmul FLOPs over the device's fp32 throughput on large square products.
Also the whole notebook in quick mode (whole-process wall time, median of several runs).
Writes a Markdown table (default bench/results.md).

    python bench/bench.py                 # full benchmark (about 6 minutes on 2 CPU cores)
    python bench/bench.py --tiny --output /tmp/bench.md   # a few seconds (used by the tests)
    python bench/bench.py --device cuda --output results_gpu.md   # on a GPU machine (no Jupyter needed)
"""
import argparse
import gzip
import importlib.util
import math
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

REFERENCE = {"latent_dim": 20, "hidden_dims": (400,)}  # the 784-400-20 VAE


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


def build_model(nb, spec, device, seed=0):
    """The notebook's VAE with `spec`'s latent and hidden sizes and its other parameters, seeded."""
    torch.manual_seed(seed)
    return nb["VAE"](784, spec["latent_dim"], nb["SIGMA"], spec["hidden_dims"], nb["ACTIVATION"]).to(device)


def vae_clip_norm(nb):
    """The gradient-clipping threshold of the notebook's VAE in nats (what its clip_threshold turns CLIP_NORM into),
    for the hand-written loops; the notebook's own train_model takes CLIP_NORM and rescales it itself."""
    return nb["CLIP_NORM"] / (2 * nb["SIGMA"]**2)


def describe(spec):
    return f"784-{'-'.join(map(str, spec['hidden_dims']))}-{spec['latent_dim']}"


def linear_layers(model):
    """[(name, nn.Linear)] of the model, in definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def epoch_flops(model, n_images):
    """Matrix-multiply FLOPs of one training epoch: 2 MACs forward + 4 backward per weight, per image."""
    return 6 * sum(m.in_features * m.out_features for _, m in linear_layers(model)) * n_images


def gemm_gflops(device, size=2048, repeats=3):
    """fp32 matrix-multiply throughput (GFLOP/s) on large square products: the best of `repeats`."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e9


def under_bf16_autocast(loss_fn, device):
    """`loss_fn` with its forward pass run under bf16 autocast on `device`."""
    def bf16_loss(model, *batch, generator=None):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return loss_fn(model, *batch, generator=generator)
    return bf16_loss


class GemmThroughput:
    """Not an epoch: the fp32 GEMM throughput, measured in every round like the rest (GFLOP/s in .values)."""
    silent = True

    def __init__(self, device):
        self.device, self.values = device, []

    def epoch(self):
        self.values.append(gemm_gflops(self.device))
        return 0.0


class MatmulsAlone:
    """One epoch of only the model's matrix products at its batch size: per linear layer the forward
    product (with bias), the weight gradient and, except for layers reading the images, the input gradient."""

    def __init__(self, model, batch_size, n_images, device, steps=50):
        self.steps, self.n_steps, self.device = steps, math.ceil(n_images / batch_size), device
        self.layers = []
        for name, layer in linear_layers(model):
            x = torch.rand(batch_size, layer.in_features, device=device)
            grad = torch.randn(batch_size, layer.out_features, device=device)
            reads_images = name.startswith("encoder") and layer.in_features == 784
            self.layers.append((x, layer.weight.detach(), layer.bias.detach(), grad, not reads_images))

    def epoch(self):
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(self.steps):
            for x, weight, bias, grad, input_grad in self.layers:
                torch.addmm(bias, x, weight.t())
                torch.mm(grad.t(), x)
                if input_grad:
                    torch.mm(grad, weight)
        synchronize(self.device)
        return (time.perf_counter() - start) * self.n_steps / self.steps


class StepPhases:
    """Where a training step's time goes: the notebook's loss forward, backward, gradient clipping and
    fused Adam step, each timed on its own over `steps` steps, scaled to one epoch (seconds per phase)."""

    def __init__(self, nb, spec, train_x, device, steps=100):
        self.nb, self.train_x, self.device, self.steps = nb, train_x, device, steps
        self.model = build_model(nb, spec, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=nb["LR"], fused=True)
        self.clip = vae_clip_norm(nb)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.n_steps = math.ceil(len(train_x) / nb["BATCH_SIZE"])
        self.phases = {"forward (loss)": [], "backward": [], "clipping": [], "Adam step": []}

    def epoch(self):
        totals = dict.fromkeys(self.phases, 0.0)
        batches = torch.randint(len(self.train_x), (self.steps, self.nb["BATCH_SIZE"]), generator=self.generator,
                                device=self.device)
        for indices in batches:
            marks = [time.perf_counter()]
            loss = self.nb["vae_loss"](self.model, self.train_x[indices], self.generator)["loss"]
            synchronize(self.device), marks.append(time.perf_counter())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            synchronize(self.device), marks.append(time.perf_counter())
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            synchronize(self.device), marks.append(time.perf_counter())
            self.optimizer.step()
            synchronize(self.device), marks.append(time.perf_counter())
            for phase, start, end in zip(totals, marks, marks[1:]):
                totals[phase] += end - start
        for phase, total in totals.items():
            self.phases[phase].append(total * self.n_steps / self.steps)
        return sum(totals.values()) * self.n_steps / self.steps


class NotebookLoop:
    """One epoch per call of the notebook's own `train_model`, on a persistent model."""

    def __init__(self, nb, spec, train_x, device, bf16=False, compiled=False):
        self.nb, self.train_x, self.device = nb, train_x, device
        self.model = build_model(nb, spec, device)
        if compiled:
            self.model.encoder = torch.compile(self.model.encoder)
            self.model.decoder = torch.compile(self.model.decoder)
        self.loss_fn = under_bf16_autocast(nb["vae_loss"], device) if bf16 else nb["vae_loss"]
        self.first_call_seconds = None

    def epoch(self):
        nb = self.nb
        start = time.perf_counter()
        history = nb["train_model"](self.model, self.loss_fn, (self.train_x,), (self.train_x[:256],), name="bench",
                                    epochs=1, batch_size=nb["BATCH_SIZE"], lr=nb["LR"],
                                    clip_norm=nb["CLIP_NORM"], seed=0)  # train_model rescales it by 1 / (2 sigma^2)
        if self.first_call_seconds is None:
            self.first_call_seconds = time.perf_counter() - start
        return history["seconds"][0]


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


class Conventional:
    """The textbook pipeline: ToTensor per image, DataLoader batches, .item() per step, plain Adam."""

    def __init__(self, nb, spec, dataset, device, n_train):
        from torch.utils.data import DataLoader, Subset
        from torchvision.transforms import ToTensor

        dataset.transform = ToTensor()
        self.loader = DataLoader(Subset(dataset, range(n_train)), batch_size=nb["BATCH_SIZE"], shuffle=True,
                                 generator=torch.Generator().manual_seed(0))
        self.nb, self.device = nb, device
        self.model = build_model(nb, spec, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=nb["LR"])
        self.clip = vae_clip_norm(nb)

    def epoch(self):
        synchronize(self.device)
        start, running = time.perf_counter(), 0.0
        for images, _labels in self.loader:
            x = images.view(len(images), -1).to(self.device)
            loss = self.nb["vae_loss"](self.model, x)["loss"]
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.optimizer.step()
            running += loss.item()
        synchronize(self.device)
        return time.perf_counter() - start


def quick_notebook_seconds(repeats):
    """Whole-process wall time of the notebook in quick mode (fresh checkpoints each time); through a
    Jupyter kernel where nbclient is installed, else as a plain script (scripts/run_as_script.py)."""
    if importlib.util.find_spec("nbclient") and importlib.util.find_spec("ipykernel"):
        how, command = "Jupyter kernel", [str(ROOT / "scripts" / "execute_notebook.py"), str(ROOT / "lab4_vae.ipynb")]
    else:
        how, command = "plain script", [str(ROOT / "scripts" / "run_as_script.py")]
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("LAB4_")}
            env.update(LAB4_QUICK="1", LAB4_OUT_DIR=f"{tmp}/out", LAB4_CKPT_DIR=f"{tmp}/ckpt")
            extra = ["--output", f"{tmp}/nb.ipynb"] if how == "Jupyter kernel" else []
            start = time.perf_counter()
            subprocess.run([sys.executable, *command, *extra], env=env, cwd=ROOT, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return times, how


def run_rounds(configs, rounds):
    """{name: [seconds of each counted round]}: every config once per round, round 0 not counted."""
    seconds = {name: [] for name in configs}
    for r in range(rounds + 1):
        for name, config in configs.items():
            value = config.epoch()
            if r:
                seconds[name].append(value)
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: " + ", ".join(
            f"{name} {config_seconds[-1]:.2f} s" for name, config_seconds in seconds.items()
            if config_seconds and r and not getattr(configs[name], "silent", False)),
            flush=True)
    return seconds


def speedup(baseline, seconds):
    """Median over rounds of baseline / seconds (paired by round)."""
    return statistics.median(b / s for b, s in zip(baseline, seconds))


def table(rows, conventional, n_train):
    lines = ["| pipeline | s / epoch | images / s | speed-up vs conventional |", "| --- | ---: | ---: | ---: |"]
    for label, seconds in rows:
        median = statistics.median(seconds)
        lines.append(f"| {label} | {median:.2f} | {n_train / median:,.0f} | {speedup(conventional, seconds):.2f}x |")
    return lines


def verdict(ok):
    return "met" if ok else "NOT met"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (median taken); one more warms up")
    parser.add_argument("--tiny", action="store_true",
                        help="2,000 images, 1 counted round, no torch.compile, no notebook run (tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args()

    # torch.compile starts from an empty cache, as in a student's first run, and leaves nothing behind
    inductor_cache = tempfile.mkdtemp(prefix="lab4-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache
    device = torch.device(args.device)
    nb = load_defs(device=args.device)
    n_train = 2000 if args.tiny else 50_000
    rounds = 1 if args.tiny else args.rounds
    train_x = nb["load_mnist"](ROOT / "data" / "mnist", device)["train"][0][:n_train]
    main_spec = {"latent_dim": nb["LATENT_DIM"], "hidden_dims": tuple(nb["HIDDEN_DIMS"])}
    specs = {"main": main_spec, "reference": REFERENCE}
    models = {key: build_model(nb, spec, device) for key, spec in specs.items()}
    print(f"device: {device_description(device)} | torch {torch.__version__} | batch {nb['BATCH_SIZE']}, "
          f"{n_train:,} images per epoch | models " + ", ".join(describe(s) for s in specs.values()), flush=True)

    root, dataset = prepare_torchvision_root()
    try:
        configs = {
            "conventional": Conventional(nb, main_spec, dataset, device, n_train),
            "notebook": NotebookLoop(nb, main_spec, train_x, device),
            "bf16": NotebookLoop(nb, main_spec, train_x, device, bf16=True),
        }
        if not args.tiny:
            configs["compile"] = NotebookLoop(nb, main_spec, train_x, device, compiled=True)
        configs.update({
            "matmuls": MatmulsAlone(models["main"], nb["BATCH_SIZE"], n_train, device),
            "phases": StepPhases(nb, main_spec, train_x, device),
            "reference conventional": Conventional(nb, REFERENCE, dataset, device, n_train),
            "reference notebook": NotebookLoop(nb, REFERENCE, train_x, device),
            "reference matmuls": MatmulsAlone(models["reference"], nb["BATCH_SIZE"], n_train, device),
        })
        configs["gemm peak"] = GemmThroughput(device)
        seconds = run_rounds(configs, rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(inductor_cache, ignore_errors=True)
    peaks = configs["gemm peak"].values[1:]  # the warm-up round's value is not counted
    peak = statistics.median(peaks)
    bounds = {key: [epoch_flops(model, n_train) / (p * 1e9) for p in peaks] for key, model in models.items()}
    quick = None if args.tiny else quick_notebook_seconds(3)

    conv, ours = seconds["conventional"], seconds["notebook"]
    rows = [("conventional: torchvision MNIST + ToTensor + DataLoader, .item() per step", conv),
            ("notebook: resident tensors, index slices, fused Adam, one sync per epoch (fp32, what it runs)", ours),
            ("notebook loop under bf16 autocast (measured, not used)", seconds["bf16"])]
    if "compile" in seconds:
        rows.append(("notebook loop, encoder and decoder under torch.compile (measured, not used)", seconds["compile"]))
    rows += [("the model's matrix products alone at batch size " + str(nb["BATCH_SIZE"]), seconds["matmuls"]),
             ("fp32 GEMM bound: matmul FLOPs / large-GEMM throughput", bounds["main"])]
    ratio, to_bound = speedup(conv, ours), statistics.median(ours) / statistics.median(bounds["main"])
    to_matmuls = statistics.median(ours) / statistics.median(seconds["matmuls"])
    ref_conv, ref_ours = seconds["reference conventional"], seconds["reference notebook"]
    ref_ratio = speedup(ref_conv, ref_ours)
    ref_to_bound = statistics.median(ref_ours) / statistics.median(bounds["reference"])
    main_model = models["main"]

    lines = [
        "# Training-speed benchmark",
        "",
        f"Machine: {device_description(device)}; {platform.system()} {platform.machine()}; "
        f"torch {torch.__version__}. Date: {date.today().isoformat()}. Command: `{' '.join(['python'] + sys.argv)}`.",
        "",
        f"One epoch = {n_train:,} training images at batch size {nb['BATCH_SIZE']} (Adam, gradient clipping). "
        f"The configurations ran in {rounds} interleaved rounds of one epoch each (after one warm-up round), so "
        "that the slow phases of a shared machine hit all of them alike; s / epoch is the median over the rounds, "
        "the speed-up the median of the per-round ratios.",
        "",
        f"## The notebook's VAE {describe(main_spec)} ({sum(p.numel() for p in main_model.parameters()):,} "
        "parameters)",
        "",
        *table(rows, conv, n_train),
        "",
        f"fp32 GEMM throughput (2048 x 2048 products, median over rounds): {peak:.0f} GFLOP/s; the model needs "
        f"{epoch_flops(main_model, n_train) / 1e9:.0f} GFLOP of matrix products per epoch (6 FLOPs per weight per image).",
        "",
        f"- Notebook loop vs conventional pipeline: **{ratio:.2f}x** faster (target at least 3x: {verdict(ratio >= 3)}).",
        f"- Notebook loop vs the fp32 GEMM bound: **{to_bound:.2f}x** the bound (target within 2x: "
        f"{verdict(to_bound <= 2)}); {to_matmuls:.2f}x the time of its matrix products alone.",
    ]
    phases = configs["phases"].phases
    lines += ["", "Where a step's time goes (each phase timed on its own over 100 steps of the notebook's loss and "
              "optimizer, scaled to one epoch, median over rounds):", "",
              "| phase | s / epoch | share |", "| --- | ---: | ---: |"]
    phase_total = sum(statistics.median(v) for v in phases.values())
    lines += [f"| {phase} | {statistics.median(v):.2f} | {statistics.median(v) / phase_total:.0%} |"
              for phase, v in phases.items()]
    lines += [f"| all (the model's matrix products alone take {statistics.median(seconds['matmuls']):.2f}) | "
              f"{phase_total:.2f} | 100% |"]
    if "compile" in seconds:
        lines.append("")
        compile_first = configs["compile"].first_call_seconds
        saved = statistics.median(ours) - statistics.median(seconds["compile"])
        lines.append(f"- torch.compile (empty compile cache): the first epoch, compiling, took {compile_first:.0f} s, "
                     + (f"and each later epoch saved {saved:.2f} s. " if saved > 0 else "and later epochs were not faster. ")
                     + "Every new model (the notebook trains over a dozen, "
                     "mostly for 5 epochs) and every new batch shape compiles again, so it does not pay there.")
    lines += [
        "",
        f"## Reference: the VAE {describe(REFERENCE)} of the performance issue "
        f"({sum(p.numel() for p in models['reference'].parameters()):,} parameters), same loop",
        "",
        *table([("conventional: torchvision MNIST + ToTensor + DataLoader, .item() per step", ref_conv),
                ("notebook loop (fp32)", ref_ours),
                ("the model's matrix products alone", seconds["reference matmuls"]),
                ("fp32 GEMM bound", bounds["reference"])], ref_conv, n_train),
        "",
        f"- Notebook loop vs conventional pipeline: **{ref_ratio:.2f}x**; vs the fp32 GEMM bound: "
        f"**{ref_to_bound:.2f}x** the bound.",
    ]
    if quick is not None:
        times, how = quick
        lines += ["", "## Whole notebook", "",
                  f"Quick mode (`LAB4_QUICK=1`, fresh checkpoints, process start included, run through a {how}): "
                  f"{statistics.median(times):.1f} s (median of {len(times)} runs: "
                  + ", ".join(f"{t:.1f}" for t in times) + " s)."]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
