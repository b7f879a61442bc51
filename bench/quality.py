"""Would a faster training setting cost quality? Dev -ELBO after the notebook's EPOCHS, side by side.

The performance issue allows a speed-up only if results do not get worse (same dev ELBO within
noise at the same epochs). This trains the notebook's VAE with its own `train_model` under
  fp32, batch 128, three seeds        the notebook's setting, and its seed-to-seed noise;
  bf16 matrix products, batch 128     torch.set_float32_matmul_precision("medium") (oneDNN/AMX);
  bf16 autocast, batch 128;
  fp32, batch 256, lr x2              fewer, larger steps per epoch;
and reports the final dev -ELBO (always evaluated in full fp32) and the median seconds per epoch.
Writes a Markdown table (default bench/quality.md). About 5 minutes on 2 CPU cores.

    python bench/quality.py
    python bench/quality.py --epochs 1 --n-train 2000 --output /tmp/q.md   # a smoke run
"""
import argparse
import platform
import statistics
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench import build_model, under_bf16_autocast  # noqa: E402  (bench/ is this script's own folder)
from notebook_defs import load_defs  # noqa: E402


def train_and_score(nb, data, *, seed, batch_size, lr, epochs, matmul_precision="highest", autocast=False):
    """(final dev -ELBO in fp32, median seconds per epoch) of the notebook's VAE under one setting."""
    train_x, dev_x = data
    loss_fn = under_bf16_autocast(nb["vae_loss"], train_x.device) if autocast else nb["vae_loss"]
    model = build_model(nb, {"latent_dim": nb["LATENT_DIM"], "hidden_dims": nb["HIDDEN_DIMS"]}, train_x.device, seed)
    torch.set_float32_matmul_precision(matmul_precision)
    try:
        history = nb["train_model"](model, loss_fn, (train_x,), (dev_x[:256],), name=f"seed {seed}", epochs=epochs,
                                    batch_size=batch_size, lr=lr, clip_norm=nb["CLIP_NORM"],
                                    seed=seed)
    finally:
        torch.set_float32_matmul_precision("highest")
    dev = nb["evaluate_loss"](model, nb["vae_loss"], (dev_x,), nb["EVAL_BATCH_SIZE"], seed)["loss"]
    return dev, statistics.median(history["seconds"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the notebook's EPOCHS")
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "quality.md")
    args = parser.parse_args()

    nb = load_defs(device=args.device)
    mnist = nb["load_mnist"](ROOT / "data" / "mnist", torch.device(args.device))
    data = (mnist["train"][0][:args.n_train], mnist["dev"][0])
    epochs = args.epochs or nb["EPOCHS"]
    batch, lr = nb["BATCH_SIZE"], nb["LR"]
    settings = [(f"fp32, batch {batch} (the notebook), seed {s}", dict(seed=s, batch_size=batch, lr=lr)) for s in (0, 1, 2)]
    settings += [
        (f"bf16 matrix products (float32 matmul precision 'medium'), batch {batch}",
         dict(seed=0, batch_size=batch, lr=lr, matmul_precision="medium")),
        (f"bf16 autocast, batch {batch}", dict(seed=0, batch_size=batch, lr=lr, autocast=True)),
        (f"fp32, batch {2 * batch}, lr {2 * lr:g}", dict(seed=0, batch_size=2 * batch, lr=2 * lr)),
    ]
    rows = []
    for label, kwargs in settings:
        dev, seconds = train_and_score(nb, data, epochs=epochs, **kwargs)
        rows.append((label, dev, seconds))
        print(f"{label}: dev -ELBO {dev:.1f}, {seconds:.2f} s/epoch", flush=True)

    base = [dev for label, dev, _ in rows[:3]]
    lines = [
        "# Faster settings vs quality",
        "",
        f"Machine: {args.device}, torch {torch.__version__}, {platform.machine()}. Date: {date.today().isoformat()}. "
        f"The notebook's VAE trained for {epochs} epochs on {len(data[0]):,} images with its own `train_model`; "
        "dev -ELBO (nats per image, lower is better) always evaluated in full fp32.",
        "",
        "| setting | dev -ELBO | s / epoch |",
        "| --- | ---: | ---: |",
        *[f"| {label} | {dev:.1f} | {seconds:.2f} |" for label, dev, seconds in rows],
        "",
        f"Seed-to-seed spread of the notebook's setting: {min(base):.1f} to {max(base):.1f} "
        f"(mean {statistics.mean(base):.1f}). A faster setting is acceptable only if its dev -ELBO falls "
        "within that spread.",
    ]
    for label, dev, _ in rows[3:]:
        verdict = ("not worse than the worst seed: acceptable" if dev <= max(base)
                   else f"{dev - max(base):.1f} nats worse than the worst seed: not acceptable")
        lines.append(f"- {label}: {verdict}.")
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
