"""Unit tests of the generation study's own functions: the clipping threshold that follows a learned sigma,
paired differences with their Student-t interval, the mixture-size choice (mixture sampling itself: test_oracles.py),
and the measures of the causes."""
import math

import numpy as np
import scipy.stats
import pytest
import torch


def test_clip_threshold_follows_the_current_sigma(nb):
    torch.manual_seed(0)
    fixed = nb["VAE"](784, 2, 0.2, (16,), "relu")
    assert nb["clip_threshold"](fixed, 50.0) == pytest.approx(50.0 / (2 * 0.2**2))
    learned = nb["VAE"](784, 2, 1.0, (16,), "relu", learn_sigma=True)
    for sigma in (1.0, 0.3, 0.05):
        with torch.no_grad():
            learned.log_sigma.fill_(math.log(sigma))
        threshold = nb["clip_threshold"](learned, 50.0)
        assert float(threshold) == pytest.approx(50.0 / (2 * sigma**2), rel=1e-5)
        assert not torch.is_tensor(threshold) or not threshold.requires_grad
    assert nb["clip_threshold"](nb["AutoEncoder"](784, 2, (16,), "relu"), 50.0) == 50.0


def test_training_uses_the_threshold_of_the_learned_sigma_at_every_step(nb, monkeypatch):
    """Record (threshold, sigma) at every step of a learned-sigma VAE: the threshold is clip_norm / (2 sigma^2) of
    the sigma of that very step, it moves with sigma, the clipped norm leaves out the log sigma gradient, and
    after clipping the network's gradient norm is at most the threshold."""
    seen = []
    original = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        norm = original(parameters, max_norm, *args, **kwargs)
        after = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None])))
        assert after <= float(max_norm) * (1 + 1e-4)
        seen.append((float(max_norm), float(model.sigma.detach()), any(p is model.log_sigma for p in parameters),
                     float(norm) > float(max_norm)))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    torch.manual_seed(0)
    model = nb["VAE"](784, 2, 1.0, (32,), "relu", learn_sigma=True)
    data = (torch.rand(512, 784, generator=torch.Generator().manual_seed(0)),)
    history = nb["train_model"](model, nb["vae_loss"], data, data, name="learned", epochs=3, batch_size=64, lr=1e-2,
                                clip_norm=50.0, seed=0)
    assert len(seen) == 24
    for threshold, sigma, includes_log_sigma, _ in seen:
        assert threshold == pytest.approx(50.0 / (2 * sigma**2), rel=1e-4)
        assert not includes_log_sigma
    assert seen[-1][0] > 1.5 * seen[0][0]  # sigma fell, so the threshold rose
    assert history["dev"]["sigma"][-1] < 0.8
    assert max(history["clipped"]) < 0.5
    assert history["clipped"][0] > 0  # some steps of the first epoch pass the threshold: the count below is not 0 = 0
    for epoch in range(3):  # the history's clipped share is the share of that epoch's steps whose norm passed
        assert history["clipped"][epoch] == pytest.approx(np.mean([s[3] for s in seen[8 * epoch:8 * epoch + 8]]))


def test_paired_difference_against_a_hand_computation(nb):
    # differences 1, 2, 2: mean 5/3, sd sqrt(1/3); t(0.975, 2) = 4.302653; half width 4.302653 * sqrt(1/3) / sqrt(3)
    d = nb["paired_difference"]([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    half = 4.302652729911275 * math.sqrt(1 / 3) / math.sqrt(3)
    assert d["difference"] == pytest.approx(5 / 3) and d["n"] == 3
    assert d["low"] == pytest.approx(5 / 3 - half, rel=1e-6) and d["high"] == pytest.approx(5 / 3 + half, rel=1e-6)
    assert d["resolved"]
    # the same mean difference but a spread wide enough for the interval to hold 0: differences 4, -1, 2
    wide = nb["paired_difference"]([4.0, -1.0, 2.0], [0.0, 0.0, 0.0])
    assert wide["difference"] == pytest.approx(5 / 3) and wide["low"] < 0 < wide["high"] and not wide["resolved"]
    # pairing matters: a shared seed effect cancels (unpaired ranges of a and b would overlap)
    paired = nb["paired_difference"]([10.0, 20.0, 30.0], [9.0, 19.1, 28.9])
    assert paired["resolved"] and paired["low"] > 0
    # negative differences resolve too; one seed gives no interval
    assert nb["paired_difference"]([0.0, 0.0, 1.0], [1.0, 2.0, 3.0])["resolved"]
    one = nb["paired_difference"]([1.0], [0.0])
    assert one["low"] is None and not one["resolved"] and one["p"] is None


def test_paired_p_value_is_the_paired_t_test(nb):
    """The p-value is scipy's paired t test, and below 0.05 exactly when the 95 % interval excludes 0."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        a, b = rng.normal(size=3), rng.normal(size=3) + rng.normal()
        d = nb["paired_difference"](a, b)
        assert d["p"] == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue, rel=1e-9)
        assert (d["p"] < 0.05) == d["resolved"]


def test_holm_adjustment_against_a_hand_computation(nb):
    # sorted p: 0.01 (x4), 0.02 (x3 -> 0.06), 0.03 (x2 -> 0.06), 0.5 (x1); monotone, capped at 1
    adjusted = nb["holm_adjust"]({"a": 0.03, "b": 0.01, "c": 0.5, "d": 0.02})
    assert adjusted == pytest.approx({"a": 0.06, "b": 0.04, "c": 0.5, "d": 0.06})
    # the running maximum: a later, smaller product does not undercut an earlier one; and the cap at 1
    assert nb["holm_adjust"]({"a": 0.02, "b": 0.021, "c": 0.0211}) == pytest.approx({"a": 0.06, "b": 0.06, "c": 0.06})
    assert nb["holm_adjust"]({"a": 0.4, "b": 0.9}) == pytest.approx({"a": 0.8, "b": 0.9})
    assert nb["holm_adjust"]({"a": 0.6, "b": 0.7}) == pytest.approx({"a": 1.0, "b": 1.0})


def test_mixture_size_is_chosen_on_held_out_codes(nb):
    """Three well separated, correlated clusters: the held-out log-likelihood prefers 3 components over fewer
    (underfit) and over many (each fitted to a handful of training codes)."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])

    def draw(n):
        return centres[rng.integers(0, 3, n)] + rng.multivariate_normal([0, 0], cov, n)

    mixture, scores = nb["choose_mixture_size"](draw(150), draw(2000), (1, 3, 40), seed=0)
    assert len(mixture.weights_) == 3 and max(scores, key=scores.get) == 3 and set(scores) == {1, 3, 40}
    assert scores[3] > scores[1] and scores[3] > scores[40]


def test_gradient_energy_of_known_images(nb):
    flat = torch.full((2, 784), 0.5)
    assert nb["gradient_energy"](flat) == 0.0
    edge = torch.zeros(1, 28, 28)
    edge[:, :, 14:] = 1.0  # one vertical edge: 28 horizontal jumps of 1, no vertical ones
    assert nb["gradient_energy"](edge.reshape(1, 784)) == pytest.approx(28.0)
    blurred = torch.zeros(1, 28, 28)
    blurred[:, :, 14] = 0.5
    blurred[:, :, 15:] = 1.0  # the same edge over two steps of 0.5: half the energy
    assert nb["gradient_energy"](blurred.reshape(1, 784)) == pytest.approx(14.0)
    across = torch.zeros(1, 28, 28)
    across[:, 14:, :] = 1.0  # one horizontal edge: 28 vertical jumps of 1
    assert nb["gradient_energy"](across.reshape(1, 784)) == pytest.approx(28.0)


def test_learned_sigma_path_recovers_sigma_star(nb, monkeypatch):
    monkeypatch.setitem(nb, "IMAGE_DIM", 784)
    sigma, mse = np.array([1.0, 0.5, 0.2]), np.array([0.09, 0.04, 0.03])  # per-pixel squared error of each epoch
    recon = 784 * mse / (2 * sigma**2) + 0.5 * 784 * np.log(2 * np.pi * sigma**2)
    path = nb["learned_sigma_path"]({"dev": {"sigma": list(sigma), "recon": list(recon)}})
    np.testing.assert_allclose(path["sigma_star"], np.sqrt(mse), rtol=1e-9)
    np.testing.assert_allclose(path["sigma"], sigma)
