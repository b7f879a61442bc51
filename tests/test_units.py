"""Unit tests of the notebook's own definitions (its `defs` cells, executed in a namespace)."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence


def test_kl_is_zero_at_the_prior(nb):
    mu, log_var = torch.zeros(4, 3), torch.zeros(4, 3)
    assert torch.equal(nb["gaussian_kl"](mu, log_var), torch.zeros(4))


def test_kl_known_value(nb):
    # One dimension, mu = 1, variance e: KL = 0.5 * (1 + e - 1 - 1) = (e - 1) / 2.
    kl = nb["gaussian_kl"](torch.tensor([[1.0]]), torch.tensor([[1.0]]))
    assert kl.shape == (1,)
    assert kl.item() == pytest.approx((math.e - 1) / 2, rel=1e-6)


def test_kl_matches_torch_distributions(nb):
    torch.manual_seed(0)
    mu, log_var = 2 * torch.randn(64, 5), 2 * torch.randn(64, 5)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * log_var)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(nb["gaussian_kl"](mu, log_var), expected, rtol=1e-5, atol=1e-5)


def test_reparameterize_has_the_right_moments(nb):
    mu, log_var = torch.tensor([[1.5, -2.0]]).expand(200_000, 2), torch.tensor([[0.0, math.log(0.25)]]).expand(200_000, 2)
    z = nb["reparameterize"](mu, log_var, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.tensor([1.5, -2.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 0.5]), atol=0.01, rtol=0)


def test_reparameterize_is_differentiable_and_seeded(nb):
    mu = torch.randn(8, 2, requires_grad=True)
    log_var = torch.randn(8, 2, requires_grad=True)
    z = nb["reparameterize"](mu, log_var, torch.Generator().manual_seed(1))
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))  # dz/dmu = 1
    eps = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(log_var.grad, 0.5 * eps * torch.exp(0.5 * log_var.detach()))  # dz/dlogvar
    again = nb["reparameterize"](mu, log_var, torch.Generator().manual_seed(1))
    assert torch.equal(z, again)


def test_vae_encoder_shapes_and_shared_trunk(nb):
    encoder = nb["VAEEncoder"](784, 2)
    mu, log_var = encoder(torch.rand(16, 784))
    assert mu.shape == log_var.shape == (16, 2)
    heads = [m for name, m in encoder.named_children() if name != "trunk"]
    assert len(heads) == 2 and all(isinstance(h, torch.nn.Linear) for h in heads)
    # Both heads read the same trunk: each head alone sends gradient into every trunk parameter.
    for output in (mu, log_var):
        encoder.zero_grad()
        output.sum().backward(retain_graph=True)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.trunk.parameters())
    assert not torch.allclose(mu, log_var)


def test_gaussian_nll_is_the_exact_negative_log_density(nb):
    torch.manual_seed(0)
    x, mean, sigma = torch.rand(10, 784), torch.rand(10, 784), 0.1
    expected = -Normal(mean, sigma).log_prob(x).sum(-1)
    torch.testing.assert_close(nb["gaussian_nll"](x, mean, sigma), expected, rtol=1e-5, atol=1e-3)
    # ... which is the summed squared error / (2 sigma^2) plus the stated constant (D/2) log(2 pi sigma^2).
    sse = (x - mean).pow(2).sum(-1)
    torch.testing.assert_close(nb["gaussian_nll"](x, mean, sigma) - sse / (2 * sigma**2),
                               torch.full((10,), 392 * math.log(2 * math.pi * sigma**2)), rtol=1e-5, atol=1e-3)


def test_vae_loss_terms_add_up(nb):
    torch.manual_seed(0)
    model = nb["VAE"](784, 2, 0.1, (32,), "relu")
    terms = nb["vae_loss"](model, torch.rand(8, 784), torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms["loss"], terms["recon"] + terms["kl"])
    assert terms["kl"] >= 0


class RecordingAdam(torch.optim.Adam):
    """Adam that records the global gradient norm it is asked to apply."""
    norms = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        RecordingAdam.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        return super().step(closure)


def test_training_clips_the_gradient_norm(nb, monkeypatch):
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    RecordingAdam.norms = []
    torch.manual_seed(0)
    # an auto-encoder: its threshold is clip_norm itself (a VAE's is rescaled by its sigma: test_oracles.py)
    model = nb["AutoEncoder"](784, 2, (32,), "relu")
    data = (torch.rand(256, 784),)
    history = nb["train_model"](model, nb["ae_loss"], data, data, name="clip test", epochs=1, batch_size=64,
                                lr=1e-3, clip_norm=0.5, seed=0)
    assert len(RecordingAdam.norms) == 4
    assert max(RecordingAdam.norms) <= 0.5 * (1 + 1e-4)
    assert history["clipped"] == [1.0] and history["grad_norm"][0] > 0.5


def test_non_finite_loss_stops_and_keeps_the_last_good_weights(nb):
    torch.manual_seed(0)
    model = nb["VAE"](784, 2, 0.1, (32,), "relu")
    calls = {"n": 0}

    def loss_turning_nan(model, x, generator=None):
        terms = nb["vae_loss"](model, x, generator)
        if model.training:
            calls["n"] += 1
            if calls["n"] >= 7:  # epoch 2, step 3 (4 steps per epoch)
                terms["loss"] = terms["loss"] * float("nan")
        return terms

    data = (torch.rand(256, 784),)
    with pytest.raises(FloatingPointError, match=r"my VAE: non-finite loss or gradient at epoch 2, step 3"):
        nb["train_model"](model, loss_turning_nan, data, data, name="my VAE", epochs=3, batch_size=64,
                           lr=1e-3, clip_norm=100.0, seed=0)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # The restored weights are those after epoch 1: the same as training one epoch from scratch.
    torch.manual_seed(0)
    reference = nb["VAE"](784, 2, 0.1, (32,), "relu")
    nb["train_model"](reference, nb["vae_loss"], data, data, name="ref", epochs=1, batch_size=64, lr=1e-3,
                      clip_norm=100.0, seed=0)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def test_training_is_deterministic(nb):
    data = (torch.rand(300, 784, generator=torch.Generator().manual_seed(3)),)
    histories = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nb["VAE"](784, 2, 0.1, (32,), "relu")
        histories.append(nb["train_model"](model, nb["vae_loss"], data, data, name="det", epochs=2,
                                           batch_size=64, lr=1e-3, clip_norm=100.0, seed=0))
    assert histories[0]["train"] == histories[1]["train"] and histories[0]["dev"] == histories[1]["dev"]


def test_iwae_bound_is_above_the_elbo(nb):
    torch.manual_seed(0)
    model = nb["VAE"](784, 2, 0.3, (32,), "relu")
    x = torch.rand(50, 784)
    elbo = -nb["evaluate_loss"](model, nb["vae_loss"], (x,), 50, 0)["loss"]
    one = nb["iwae_bound"](model, x, 1, 0)
    assert one["iwae"] == pytest.approx(one["elbo"], abs=1e-6)  # K = 1: L_1 is the ELBO of the same sample
    assert one["iwae"] == pytest.approx(elbo, abs=2.0)  # ... and the ELBO of other noise, up to Monte Carlo
    many = nb["iwae_bound"](model, x, 100, 0)
    assert many["iwae"] >= elbo and many["iwae"] >= many["elbo"]
    assert many["elbo"] == pytest.approx(elbo, abs=2.0)  # the mean of 100 log-weights estimates the ELBO


def test_frechet_distance(nb):
    torch.manual_seed(0)
    a, b = torch.randn(5000, 4), torch.randn(5000, 4) + torch.tensor([3.0, 0, 0, 0])
    stats_a = nb["gaussian_fit"](a)
    assert nb["frechet_distance"](stats_a, stats_a) == pytest.approx(0.0, abs=1e-6)
    assert nb["frechet_distance"](stats_a, nb["gaussian_fit"](b)) == pytest.approx(9.0, rel=0.05)


def test_number_formatting_for_latex(nb):
    fmt = nb["fmt"]
    assert fmt(1584.7) == "1{,}584.7"
    assert fmt(-176.71) == "\\ensuremath{-}176.7"
    assert fmt(-0.0001, 3) == "0.000"  # never a negative zero


# --- levers of generation and the evidence machinery ---------------------------------------------
def tiny_vae(nb, sigma=1.0, seed=0, **kwargs):
    torch.manual_seed(seed)
    return nb["VAE"](784, 2, sigma, (16,), "relu", **kwargs).eval()


def test_quadrature_matches_a_brute_force_integral(nb):
    """log p(x) on a box around q equals a fine global grid over the prior's whole range."""
    model = tiny_vae(nb, sigma=1.0)
    x = torch.rand(3, 784, generator=torch.Generator().manual_seed(0))
    quad = nb["log_marginal_quadrature"](model, x, 64, 10.0)
    with torch.no_grad():
        t = torch.linspace(-9, 9, 241)
        z = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
        cell = (t[1] - t[0]) ** 2
        log_joint = (-nb["gaussian_nll"](x[:, None], model.decoder(z)[None], 1.0)
                     - 0.5 * z.pow(2).sum(-1) - math.log(2 * math.pi))
        brute = torch.logsumexp(log_joint.double(), 1) + math.log(cell)
    torch.testing.assert_close(quad, brute, atol=1e-3, rtol=0)


def test_bounds_are_ordered_below_the_exact_likelihood(nb):
    model = tiny_vae(nb, sigma=0.5)
    x = torch.rand(20, 784, generator=torch.Generator().manual_seed(1))
    bounds = nb["iwae_bound"](model, x, 200, 0)
    log_px = float(nb["log_marginal_quadrature"](model, x, 64, 10.0).mean())
    assert bounds["elbo"] <= bounds["iwae"] <= log_px + 1e-3


def test_mixture_sampling_is_seeded_and_shaped(nb):
    from sklearn.mixture import GaussianMixture
    codes = torch.cat([torch.randn(300, 3) - 4, torch.randn(300, 3) + 4]).numpy()
    mixture = GaussianMixture(2, random_state=0).fit(codes)
    a, b = nb["sample_mixture"](mixture, 500, 7), nb["sample_mixture"](mixture, 500, 7)
    assert a.shape == (500, 3) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, nb["sample_mixture"](mixture, 500, 8))
    # draws come from both components, in random order (GaussianMixture.sample groups them)
    side = (a[:, 0] > 0).float()
    assert 0.3 < side.mean() < 0.7 and 0.3 < side[:50].mean() < 0.7


def test_learned_sigma_is_positive_and_moves(nb):
    model = tiny_vae(nb, sigma=0.5, learn_sigma=True).train()
    assert [n for n, _ in model.named_parameters()].count("log_sigma") == 1
    data = (torch.rand(256, 784, generator=torch.Generator().manual_seed(2)),)
    history = nb["train_model"](model, nb["vae_loss"], data, data, name="learned sigma", epochs=3, batch_size=64,
                                lr=1e-2, clip_norm=1e6, seed=0)
    sigmas = history["dev"]["sigma"]
    assert sigmas[0] == pytest.approx(0.5) and all(s > 0 for s in sigmas)
    assert abs(sigmas[-1] - sigmas[0]) > 0.01  # it is trained
    fixed = tiny_vae(nb, sigma=0.5)
    assert "log_sigma" not in dict(fixed.named_parameters()) and fixed.sigma == 0.5


def test_seeds_give_distinct_models_and_seed_summaries(nb):
    a, b, a_again = tiny_vae(nb, seed=0), tiny_vae(nb, seed=1), tiny_vae(nb, seed=0)
    assert not torch.equal(a.encoder.mu.weight, b.encoder.mu.weight)
    assert torch.equal(a.encoder.mu.weight, a_again.encoder.mu.weight)
    summary = nb["summarize_seeds"]([{"fd": 1.0, "n": 2}, {"fd": 3.0, "n": 2}])
    assert summary["values"]["fd"] == [1.0, 3.0] and summary["mean"]["fd"] == 2.0
    assert summary["sd"]["fd"] == pytest.approx(math.sqrt(2))
    assert nb["summarize_seeds"]([{"fd": 1.0}])["sd"]["fd"] is None


def test_rate_split_adds_up(nb):
    model = tiny_vae(nb, sigma=0.5)
    x = torch.rand(200, 784, generator=torch.Generator().manual_seed(4))
    parts = nb["split_rate"](model, x, 2000, 0)
    assert parts["mutual_info"] + parts["marginal_kl"] == pytest.approx(parts["rate"])
    assert parts["mutual_info"] <= math.log(len(x)) + 1e-6


def test_gaussian_log_density_matches_torch_distributions(nb):
    torch.manual_seed(0)
    z, mean, log_var = torch.randn(6, 4, 3), torch.randn(4, 3), torch.randn(4, 3)  # broadcasts over the first dim
    expected = Normal(mean, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
    torch.testing.assert_close(nb["gaussian_log_density"](z, mean, log_var), expected, rtol=1e-5, atol=1e-5)


def test_evaluation_is_cached_and_the_likelihood_added_once(nb, monkeypatch):
    """A model scored by two studies is evaluated once; the IWAE bound is computed only when first asked
    for, and an evaluation without it never shows it (seed summaries need the same keys in every seed)."""
    model = tiny_vae(nb, sigma=0.5)
    model.spec_key = "unit-test-model"
    x = torch.rand(40, 784, generator=torch.Generator().manual_seed(5))
    calls = {"iwae": 0, "scores": 0}

    def iwae(*args):
        calls["iwae"] += 1
        return {"elbo": -10.0, "iwae": -9.0}

    def scores(*args):
        calls["scores"] += 1
        return {"confidence": 0.5, "class_entropy": 1.0, "frechet": 3.0}

    monkeypatch.setitem(nb, "EVALUATIONS", {})
    monkeypatch.setitem(nb, "SPLITS", {"dev": (x, torch.zeros(40, dtype=torch.long))})
    monkeypatch.setitem(nb, "REFERENCE_STATS", {"dev": None})
    monkeypatch.setitem(nb, "train_x", x)
    monkeypatch.setitem(nb, "train_y", torch.arange(40) % 10)
    monkeypatch.setitem(nb, "N_GEN", 8)
    monkeypatch.setitem(nb, "IMAGE_DIM", 784)
    monkeypatch.setitem(nb, "iwae_bound", iwae)
    monkeypatch.setitem(nb, "generation_scores", lambda images, stats: scores())
    without = nb["evaluate_model"](model, "dev", likelihood=False)
    assert "neg_iwae" not in without and calls == {"iwae": 0, "scores": 1}
    with_bound = nb["evaluate_model"](model, "dev")
    assert with_bound["neg_iwae"] == 9.0 and with_bound["iwae_gap"] == 1.0
    assert nb["evaluate_model"](model, "dev")["neg_iwae"] == 9.0
    assert set(nb["evaluate_model"](model, "dev", likelihood=False)) == set(without)
    assert calls == {"iwae": 1, "scores": 1}
