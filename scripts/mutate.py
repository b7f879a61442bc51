"""Mutation check: plant small bugs in a copy of lab4_vae.ipynb, one at a time, and run the fast tests on each.

Every mutation must be caught (some fast test fails). Each is a (name, old snippet, new snippet): the old
snippet must occur exactly once in the code cells (matched in their source, not by cell index, so that
moving cells does not break it) and inside a `defs` cell, else the mutation is reported as stale. The
mutated copy is written to a temporary folder; the tests load it through NOTEBOOK_UNDER_TEST
(scripts/notebook_defs.py). lab4_vae.ipynb itself is never written.

    python scripts/mutate.py               # all mutations; exit 1 if one survives, is stale, or the baseline fails
    python scripts/mutate.py --list        # names only
    python scripts/mutate.py -k iwae -k kl # those whose name contains one of the words
    python scripts/mutate.py --notebook X  # mutate another copy (e.g. a committed version) instead
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "lab4_vae.ipynb"
FAST_TESTS = ["tests/test_oracles.py", "tests/test_units.py", "tests/test_generation.py", "tests/test_data.py"]

# (name, old, new, test file to run first: the one expected to catch it; all fast tests run in any case).
# old and new may be tuples of alternatives (the same change in two versions of the code): the first
# alternative found exactly once is applied.
MUTATIONS = [
    ("ELBO: doubled KL term",
     'terms = {"loss": (recon + kl).mean()', 'terms = {"loss": (recon + 2 * kl).mean()', "oracles"),
    ("KL: mean term with the wrong sign",
     "1 + log_sigma_squared - mu.pow(2) - log_sigma_squared.exp()",
     "1 + log_sigma_squared + mu.pow(2) - log_sigma_squared.exp()", "oracles"),
    ("reparameterize: scaled by the variance, not the std",
     "return mu + eps * torch.exp(0.5 * log_sigma_squared)", "return mu + eps * torch.exp(log_sigma_squared)",
     "oracles"),
    ("NLL: without its log(2 pi sigma^2) constant",
     "/ (2 * sigma**2) + 0.5 * x.shape[-1] * log_2pi_var", "/ (2 * sigma**2)", "oracles"),
    ("NLL: squared error over sigma^2 instead of 2 sigma^2",
     "/ (2 * sigma**2) + 0.5 * x.shape[-1] * log_2pi_var", "/ sigma**2 + 0.5 * x.shape[-1] * log_2pi_var",
     "oracles"),
    ("log density: without log(2 pi)",
     "+ log_var + math.log(2 * math.pi)).sum(-1)", "+ log_var).sum(-1)", "oracles"),
    ("learned sigma: normaliser detached",
     "torch.log(2 * math.pi * sigma**2) if torch.is_tensor(sigma)",
     "torch.log(2 * math.pi * sigma.detach()**2) if torch.is_tensor(sigma)", "oracles"),
    ("IWAE: log-weights without the prior term",
     "log_w = log_lik + log_prior - log_q", "log_w = log_lik - log_q", "oracles"),
    ("IWAE: log-weights without the posterior term",
     "log_w = log_lik + log_prior - log_q", "log_w = log_lik + log_prior", "oracles"),
    ("IWAE: mean of the log-weights instead of their log-mean-exp",
     "(torch.logsumexp(log_w, 0) - math.log(k)).sum()", "log_w.mean(0).sum()", "oracles"),
    ("IWAE: logsumexp without the 1/K",
     "(torch.logsumexp(log_w, 0) - math.log(k)).sum()", "torch.logsumexp(log_w, 0).sum()", "oracles"),
    ("IWAE: draws scaled by the variance",
     "z = mu + eps * torch.exp(0.5 * log_var)", "z = mu + eps * torch.exp(log_var)", "oracles"),
    ("quadrature: cell volume of one axis only",
     "2 * math.log(2 * half_width / n_grid)", "math.log(2 * half_width / n_grid)", "oracles"),
    ("quadrature: Jacobian determinant with the wrong sign",
     "-0.5 * eigenvalues[i:i + chunk].log().sum(-1)", "0.5 * eigenvalues[i:i + chunk].log().sum(-1)", "oracles"),
    ("quadrature: grid scaled by the eigenvalues instead of their rsqrt",
     "eigenvectors * eigenvalues.rsqrt()[:, None, :]", "eigenvectors * eigenvalues[:, None, :]", "oracles"),
    ("quadrature: grid rotated the wrong way",
     "unit[None] @ S.transpose(1, 2)", "unit[None] @ S", "oracles"),
    ("mode search: no Newton step taken",
     "z = torch.where(better[:, None], candidate, z)", "z = torch.where(better[:, None], z, z)", "oracles"),
    ("mixture sampling: without the covariance",
     'z = mixture.means_[component] + np.einsum("nij,nj->ni", chol[component], eps)',
     "z = mixture.means_[component] + eps", "oracles"),
    ("mixture sampling: transposed Cholesky factor",
     '"nij,nj->ni"', '"nji,nj->ni"', "oracles"),
    ("mixture sampling: ignoring the weights",
     "p=mixture.weights_ / mixture.weights_.sum())", "p=None)", "oracles"),
    ("Frechet distance: without the matrix square root",
     "cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ c_b @ root_a), 0, None)).sum()",
     "cross = np.clip(np.linalg.eigvalsh(root_a @ c_b @ root_a), 0, None).sum()", "oracles"),
    ("Frechet distance: C_a instead of its square root",
     "root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T", "root_a = (v * np.clip(w, 0, None)) @ v.T", "oracles"),
    ("Gaussian fit: biased covariance",
     "np.cov(f, rowvar=False)", "np.cov(f, rowvar=False, bias=True)", "oracles"),
    ("class entropy in bits",
     "(freq[freq > 0] * freq[freq > 0].log()).sum()", "(freq[freq > 0] * freq[freq > 0].log2()).sum()", "oracles"),
    ("confidence: mean probability instead of the top one",
     "probs.max(-1).values.mean()", "probs.mean(-1).mean()", "oracles"),
    ("mutual information: wrong sign",
     "mutual_info = float((log_q_given_x - log_q).mean())", "mutual_info = float((log_q - log_q_given_x).mean())",
     "oracles"),
    ("aggregate posterior: sum instead of mean over the N posteriors",
     "for zb in z.split(max(1, 2_000_000 // len(x)))]) - math.log(len(x))",
     "for zb in z.split(max(1, 2_000_000 // len(x)))])", "oracles"),
    ("evaluate_loss: every batch weighted as a full batch",
     "weighted = torch.stack(list(terms.values())) * len(batch[0])",
     "weighted = torch.stack(list(terms.values())) * batch_size", "oracles"),
    ("clipping: threshold not rescaled with sigma",
     "return clip_norm / (2 * (model.sigma.detach() if model.learn_sigma else model.sigma) ** 2)",
     "return clip_norm", "oracles"),
    ("clipping: threshold over 2 sigma instead of 2 sigma^2",
     "return clip_norm / (2 * (model.sigma.detach() if model.learn_sigma else model.sigma) ** 2)",
     "return clip_norm / (2 * (model.sigma.detach() if model.learn_sigma else model.sigma))", "oracles"),
    ("clipping: a learned sigma's threshold frozen at its start (1)",
     "return clip_norm / (2 * (model.sigma.detach() if model.learn_sigma else model.sigma) ** 2)",
     "return clip_norm / (2 * (1.0 if model.learn_sigma else model.sigma) ** 2)", "generation"),
    ("clipping: the log sigma gradient inside the clipped norm",
     'network = [p for name, p in model.named_parameters() if name != "log_sigma"]',
     "network = list(model.parameters())", "generation"),
    ("clipping: the norm measured, the gradients never rescaled",
     "norm = torch.nn.utils.clip_grad_norm_(network, threshold)",
     "norm = torch.nn.utils.get_total_norm([p.grad for p in network if p.grad is not None])", "generation"),
    ("class kept: the share of images given a label other than their own",
     'scores["class_kept"] = float((probs.argmax(-1) == labels).float().mean())',
     'scores["class_kept"] = float((probs.argmax(-1) != labels).float().mean())', "oracles"),
    ("paired difference: normal quantile instead of Student t",
     "scipy.stats.t.ppf(0.5 + level / 2, n - 1)", "scipy.stats.norm.ppf(0.5 + level / 2)", "generation"),
    ("paired difference: sd of the differences, not of their mean",
     "d.std(ddof=1) / math.sqrt(n)", "d.std(ddof=1)", "generation"),
    ("paired difference: resolved when the interval holds 0",
     '"resolved": bool(mean - half > 0 or mean + half < 0)', '"resolved": bool(mean - half < 0 < mean + half)',
     "generation"),
    ("paired difference: p-value one-sided",
     "p = float(2 * scipy.stats.t.sf(abs(mean) / se, n - 1))", "p = float(scipy.stats.t.sf(abs(mean) / se, n - 1))",
     "generation"),
    ("Holm: every p times the family size (Bonferroni)",
     "running = max(running, min(1.0, (len(p_values) - k) * p_values[name]))",
     "running = max(running, min(1.0, len(p_values) * p_values[name]))", "generation"),
    ("Holm: not made monotone",
     "running = max(running, min(1.0, (len(p_values) - k) * p_values[name]))",
     "running = min(1.0, (len(p_values) - k) * p_values[name])", "generation"),
    ("mixture size: the worst dev log-likelihood kept",
     "    best = max(scores, key=scores.get)\n    return fits[best], scores",
     "    best = min(scores, key=scores.get)\n    return fits[best], scores", "generation"),
    ("sharpness: vertical differences dropped",
     " + (x[:, 1:] - x[:, :-1]).pow(2).sum((1, 2))).mean())", ").mean())", "generation"),
    ("learned sigma path: sigma* as a variance",
     'np.sqrt(sse / IMAGE_DIM).tolist()', '(sse / IMAGE_DIM).tolist()', "generation"),
    ("checkpoint: configuration mismatch ignored",
     'if checkpoint["spec"] != spec:', 'if checkpoint["spec"] != spec and False:', "oracles"),
    ("checkpoint: snapshot saved one epoch late",
     "def save_snapshot(epoch, state, history_so_far):\n            if epoch in snapshot_epochs",
     "def save_snapshot(epoch, state, history_so_far):\n            epoch -= 1\n            if epoch in snapshot_epochs",
     "oracles"),
    ("kNN: fitted on the evaluated split's own codes",
     "knn = KNeighborsClassifier(n_neighbors=KNN_K).fit(encode_means(model, train_x).cpu().numpy(),\n"
     "                                                      train_y.cpu().numpy())",
     "knn = KNeighborsClassifier(n_neighbors=KNN_K).fit(encode_means(model, x).cpu().numpy(), y.cpu().numpy())",
     "oracles"),
    ("active units: threshold inverted",
     "(codes.var(0, unbiased=False) > (threshold or ACTIVE_THRESHOLD))",
     "(codes.var(0, unbiased=False) < (threshold or ACTIVE_THRESHOLD))", "oracles"),
    ("seed summary: population sd (ddof=0)",
     "np.std(v, ddof=1)", "np.std(v, ddof=0)", "units"),
    ("data: dev split overlapping train",
     '"dev": (train_x[N_TRAIN_SPLIT:], train_y[N_TRAIN_SPLIT:])',
     '"dev": (train_x[N_TRAIN_SPLIT - 10_000:N_TRAIN_SPLIT], train_y[N_TRAIN_SPLIT - 10_000:N_TRAIN_SPLIT])', "data"),
    ("data: only the size checked, not the checksum",
     "if problem is None and hashlib.sha256(raw).hexdigest() != MNIST_SHA256[stem]:",
     "if problem is None and len(raw) != len(idx_header(magic, shape)) + math.prod(shape):", "data"),
]


def load_cells(path=NOTEBOOK):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def apply(notebook, old, new):
    """A deep copy of `notebook` with `old` replaced by `new` in the one code cell holding it; or an error."""
    notebook = json.loads(json.dumps(notebook))
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    alternatives = list(zip(old, new)) if isinstance(old, tuple) else [(old, new)]
    counts = [sum("".join(c["source"]).count(o) for c in code) for o, _ in alternatives]
    if 1 not in counts:
        return None, f"stale: the old snippet occurs {' or '.join(map(str, counts))} times in the code cells (expected once)"
    old, new = alternatives[counts.index(1)]
    cell = next(c for c in code if old in "".join(c["source"]))
    if "defs" not in cell.get("metadata", {}).get("tags", []):
        return None, "stale: the old snippet is not in a `defs` cell, so the fast tests cannot see it"
    source = "".join(cell["source"]).replace(old, new)
    try:
        compile(source, "<mutated cell>", "exec")
    except SyntaxError as err:
        return None, f"invalid: the mutated cell does not compile ({err})"
    cell["source"] = source.splitlines(keepends=True)
    return notebook, None


def run_tests(notebook_path, first, timeout):
    """pytest -x on the fast tests (the likely catcher first) against `notebook_path`: (caught, seconds, detail)."""
    files = sorted(FAST_TESTS, key=lambda f: f != f"tests/test_{first}.py")
    env = {**os.environ, "NOTEBOOK_UNDER_TEST": str(notebook_path)}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *files]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, time.perf_counter() - start, f"timed out after {timeout} s"
    seconds = time.perf_counter() - start
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if proc.returncode == 0:
        return False, seconds, summary
    return True, seconds, failed[0].split(" - ")[0] if failed else summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", action="append", default=[], help="only mutations whose name contains this word")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test run")
    parser.add_argument("--notebook", default=str(NOTEBOOK), help="the notebook to mutate (default lab4_vae.ipynb)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="test runs at a time (default 2)")
    args = parser.parse_args()
    mutations = [m for m in MUTATIONS if not args.k or any(k.lower() in m[0].lower() for k in args.k)]
    if args.list:
        print("\n".join(name for name, *_ in mutations))
        return 0
    if args.jobs > 1:  # share the cores between the parallel test runs instead of oversubscribing them
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // args.jobs)))
    original = load_cells(args.notebook)
    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        baseline = Path(tmp) / "baseline" / "lab4_vae.ipynb"
        baseline.parent.mkdir()
        baseline.write_text(json.dumps(original, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        failed, seconds, detail = run_tests(baseline, "oracles", args.timeout)
        print(f"baseline (no mutation): {'FAILS' if failed else 'passes'} ({seconds:.0f} s) {detail}", flush=True)
        if failed:
            print("The fast tests must pass on the unmutated notebook first.")
            return 1

        def check(i, name, old, new, first):
            mutated, problem = apply(original, old, new)
            if problem:
                return name, "STALE", problem, 0.0
            path = Path(tmp) / f"m{i}" / "lab4_vae.ipynb"
            path.parent.mkdir()
            path.write_text(json.dumps(mutated, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            caught, seconds, detail = run_tests(path, first, args.timeout)
            return name, "caught" if caught else "SURVIVED", detail, seconds

        results = []
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(check, i, *mutation) for i, mutation in enumerate(mutations, 1)]
            for future in concurrent.futures.as_completed(futures):
                name, status, detail, seconds = future.result()
                results.append((name, status, detail))
                print(f"[{len(results):2}/{len(mutations)}] {status:<9} {name} ({seconds:.0f} s): {detail}", flush=True)
    bad = [r for r in results if r[1] != "caught"]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutations caught in {time.perf_counter() - total_start:.0f} s"
          + ("" if not bad else "; not caught: " + "; ".join(f"{name} ({status})" for name, status, _ in bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
