"""Independent oracles for every formula the report relies on.

The whole-notebook tests compare one run of the code with another run of the same code, so a
deterministic error in a formula passes them. Here each formula of the notebook's `defs` is checked
against a value computed another way: closed forms (a linear-Gaussian decoder, whose exact log p(x)
and posterior are known), torch.distributions, scipy, brute-force integrals, sample moments.
scripts/mutate.py plants small bugs in a copy of the notebook and checks that these tests catch each.
"""
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence


# --- a linear-Gaussian VAE: p(z) = N(0, I), p(x | z) = N(W z + b, sigma^2 I) -----------------------------
# log p(x) = log N(x; b, W W^T + sigma^2 I); p(z | x) = N(m, P^-1), P = I + W^T W / sigma^2,
# m = P^-1 W^T (x - b) / sigma^2: every bound and integral of the notebook has an exact value here.

class AffineEncoder(nn.Module):
    """q(z | x) = N(A x + c, diag exp(log_var)): (mu [B, d], log_var [B, d])."""

    def __init__(self, A, c, log_var):
        super().__init__()
        self.A, self.c, self.log_var = A, c, log_var

    def forward(self, x):
        return x @ self.A.T + self.c, self.log_var.expand(len(x), -1)


class LinearGaussianVAE(nn.Module):
    """The interface of the notebook's VAE (encoder, decoder, sigma, decoder_std) with a linear decoder."""

    def __init__(self, W, b, sigma, A, c, log_var):
        super().__init__()
        self.dim_latent, self.learn_sigma, self.fixed_sigma = W.shape[1], False, float(sigma)
        self.decoder = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.decoder.weight.copy_(W)
            self.decoder.bias.copy_(b)
        self.encoder = AffineEncoder(A, c, log_var)

    @property
    def sigma(self):
        return self.fixed_sigma

    def decoder_std(self):
        return self.fixed_sigma

    def encode(self, x):
        return self.encoder(x)[0]


def exact_posterior(W, b, sigma, x):
    """(means [N, d], covariance [d, d]) of p(z | x) for the linear-Gaussian model (float64)."""
    W, b, x = W.double(), b.double(), x.double()
    precision = torch.eye(W.shape[1], dtype=torch.float64) + W.T @ W / sigma**2
    cov = torch.linalg.inv(precision)
    return (x - b) @ W @ cov.T / sigma**2, cov


def exact_log_px(W, b, sigma, x):
    """log N(x; b, W W^T + sigma^2 I) per row of x (float64)."""
    W, b = W.double(), b.double()
    cov = W @ W.T + sigma**2 * torch.eye(W.shape[0], dtype=torch.float64)
    return MultivariateNormal(b, covariance_matrix=cov).log_prob(x.double())


def orthogonal_decoder(D=6, scales=(2.0, 1.2), sigma=0.7, seed=0):
    """W with orthogonal columns (so p(z | x) has a diagonal covariance, which q can match exactly), b, sigma."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, len(scales), generator=g, dtype=torch.float64))
    W = (Q * torch.tensor(scales, dtype=torch.float64)).float()
    b = 0.5 * torch.randn(D, generator=g)
    return W, b, sigma


def sample_x(W, b, sigma, n, seed=1, z_shift=0.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, W.shape[1], generator=g) + z_shift
    return z @ W.T + b + sigma * torch.randn(n, W.shape[0], generator=g)


def exact_encoder_model(W, b, sigma, mean_shift=0.0, var_factor=1.0):
    """The linear-Gaussian VAE whose encoder is the exact posterior (mean shifted, variance scaled if asked)."""
    _, cov = exact_posterior(W, b, sigma, torch.zeros(1, W.shape[0]))
    assert torch.allclose(cov, torch.diag(torch.diag(cov)), atol=1e-9)  # orthogonal columns: diagonal posterior
    A = (cov @ W.double().T / sigma**2).float()
    c = -(A @ b) + mean_shift
    return LinearGaussianVAE(W, b, sigma, A, c, torch.log(torch.diag(cov) * var_factor).float()[None])


def gaussian_kl_full(m_q, var_q, m_p, cov_p):
    """KL(N(m_q, diag var_q) || N(m_p, cov_p)) per row (float64)."""
    q = MultivariateNormal(m_q.double(), covariance_matrix=torch.diag_embed(var_q.double()).expand(len(m_q), -1, -1))
    p = MultivariateNormal(m_p.double(), covariance_matrix=cov_p.double().expand(len(m_p), -1, -1))
    return kl_divergence(q, p)


# --- ELBO --------------------------------------------------------------------------------------------------

class RecordingDecoder(nn.Module):
    """Wraps a decoder and keeps the codes it was given (the draws of z the loss used)."""

    def __init__(self, decoder):
        super().__init__()
        self.inner, self.inputs = decoder, []

    def forward(self, z):
        self.inputs.append(z.detach().clone())
        return self.inner(z)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_elbo_terms_against_torch_distributions_on_the_same_draws(nb, learn_sigma):
    torch.manual_seed(0)
    model = nb["VAE"](784, 3, 0.3, (16,), "relu", learn_sigma=learn_sigma)
    model.decoder = RecordingDecoder(model.decoder)
    x = torch.rand(32, 784, generator=torch.Generator().manual_seed(1))
    terms = nb["vae_loss"](model, x, torch.Generator().manual_seed(2))
    (z,) = model.decoder.inputs
    with torch.no_grad():
        mu, log_var = model.encoder(x)
        q = Normal(mu, torch.exp(0.5 * log_var))
        recon = -Normal(model.decoder.inner(z), 0.3).log_prob(x).sum(-1)
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(terms["recon"].detach(), recon.mean(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(terms["kl"].detach(), kl.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["loss"].detach(), (recon + kl).mean(), rtol=1e-5, atol=1e-3)
    # the draws are z = mu + std * eps with eps ~ N(0, I): standardised, they are N(0, 1) (not scaled by a variance)
    eps = ((z - mu) / torch.exp(0.5 * log_var)).flatten()
    assert abs(float(eps.mean())) < 0.2 and abs(float(eps.std()) - 1) < 0.15


def test_one_sample_elbo_averages_to_the_exact_log_likelihood(nb):
    """With the exact posterior as q, E_q[-ELBO estimate] = -log p(x): checks the reparameterised draws,
    the decoder likelihood and the KL together against a closed form."""
    W, b, sigma = orthogonal_decoder()
    model = exact_encoder_model(W, b, sigma)
    x = sample_x(W, b, sigma, 8).repeat(4000, 1)
    with torch.no_grad():
        terms = nb["vae_loss"](model, x, torch.Generator().manual_seed(0))
        mu, log_var = model.encoder(x[:8])
    assert float(terms["loss"]) == pytest.approx(-float(exact_log_px(W, b, sigma, x[:8]).mean()), abs=0.03)
    kl = gaussian_kl_full(mu, log_var.exp(), torch.zeros(8, 2), torch.eye(2)).mean()
    assert float(terms["kl"]) == pytest.approx(float(kl), abs=1e-4)


def test_learned_sigma_gradient_includes_the_normaliser(nb):
    """d(-ELBO)/d log sigma = D - SSE / sigma^2 (per image): the log-normaliser's gradient must flow."""
    torch.manual_seed(0)
    model = nb["VAE"](784, 2, 0.3, (16,), "relu", learn_sigma=True)
    model.decoder = RecordingDecoder(model.decoder)
    x = torch.rand(16, 784, generator=torch.Generator().manual_seed(1))
    nb["vae_loss"](model, x, torch.Generator().manual_seed(2))["loss"].backward()
    with torch.no_grad():
        sse = (x - model.decoder.inner(model.decoder.inputs[0])).pow(2).sum(-1)
        expected = (784 - sse / model.sigma**2).mean()
    torch.testing.assert_close(model.log_sigma.grad, expected, rtol=1e-4, atol=1e-3)


def ml_sigma(nb, model, x, draws=16):
    """sqrt of the per-pixel mean squared error of reconstructions from z ~ q(z | x): the sigma that maximises
    E_q[log p(x | z)] for this encoder and decoder."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        mu, log_var = model.encoder(x)
        sse = sum(float((x - model.decoder(mu + torch.randn(mu.shape, generator=g) * torch.exp(0.5 * log_var))).pow(2).sum())
                  for _ in range(draws))
    return math.sqrt(sse / (draws * x.numel()))


def test_learned_sigma_moves_to_its_maximum_likelihood_value(nb):
    """Trained alone (encoder and decoder frozen), the learned sigma converges to sqrt(mean squared error of
    sampled reconstructions), the maximum-likelihood value, from above and from below."""
    x = torch.rand(256, 784, generator=torch.Generator().manual_seed(2))
    for start in (1.0, 0.12):
        torch.manual_seed(0)
        model = nb["VAE"](784, 2, start, (16,), "relu", learn_sigma=True)
        for name, p in model.named_parameters():
            p.requires_grad_(name == "log_sigma")
        target = ml_sigma(nb, model, x)
        history = nb["train_model"](model, nb["vae_loss"], (x,), (x,), name="sigma", epochs=10, batch_size=32,
                                    lr=0.05, clip_norm=1e30, seed=0)
        assert history["dev"]["sigma"][0] == pytest.approx(start)
        assert model.decoder_std() == pytest.approx(target, rel=0.05), (start, target)


# --- importance-weighted bound ------------------------------------------------------------------------------

def test_iwae_and_elbo_equal_the_exact_log_likelihood_under_the_exact_posterior(nb):
    """q = p(z | x): every log-weight log p(x, z) - log q(z | x) equals log p(x), so both estimates are exact."""
    W, b, sigma = orthogonal_decoder()
    model = exact_encoder_model(W, b, sigma)
    x = sample_x(W, b, sigma, 30)
    bounds = nb["iwae_bound"](model, x, 16, 0)
    exact = float(exact_log_px(W, b, sigma, x).mean())
    assert bounds["elbo"] == pytest.approx(exact, abs=2e-3)
    assert bounds["iwae"] == pytest.approx(exact, abs=2e-3)


def test_iwae_converges_to_log_px_and_the_elbo_misses_by_the_posterior_kl(nb):
    """An imperfect q (shifted mean, wider variance): the K-sample mean of the log-weights estimates
    ELBO = log p(x) - KL(q || p(z | x)) and L_K approaches log p(x) from below as K grows."""
    W, b, sigma = orthogonal_decoder()
    model = exact_encoder_model(W, b, sigma, mean_shift=0.4, var_factor=2.0)
    x = sample_x(W, b, sigma, 20)
    exact = exact_log_px(W, b, sigma, x)
    m, cov = exact_posterior(W, b, sigma, x)
    mu, log_var = model.encoder(x)
    kl = gaussian_kl_full(mu, log_var.exp(), m, cov)
    assert float(kl.mean()) > 0.3  # the test can tell the ELBO from log p(x)
    few, many = nb["iwae_bound"](model, x, 4, 0), nb["iwae_bound"](model, x, 2000, 0)
    assert many["elbo"] == pytest.approx(float((exact - kl).mean()), abs=0.03)
    assert many["iwae"] == pytest.approx(float(exact.mean()), abs=0.02)
    assert many["elbo"] < few["iwae"] < many["iwae"] <= float(exact.mean()) + 0.01


# --- exact log p(x) by quadrature, and the posterior modes ---------------------------------------------------

def narrow_rotated_model(D=5, sigma=0.05, seed=3):
    """A linear-Gaussian model whose posterior is narrow (std 0.02 and 0.11), rotated (W^T W not diagonal)
    and off-centre; its encoder says mu = 0 everywhere, so the mode search has to find the mode."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, 2, generator=g)
    W[:, 1] = 0.3 * W[:, 1] + W[:, 0]  # correlated columns: the posterior's axes are rotated
    b = 0.3 * torch.randn(D, generator=g)
    model = LinearGaussianVAE(W, b, sigma, torch.zeros(2, D), torch.zeros(2), torch.zeros(1, 2))
    return model, W, b, sigma


def test_posterior_modes_and_curvature_are_exact_for_a_linear_decoder(nb):
    model, W, b, sigma = narrow_rotated_model()
    x = sample_x(W, b, sigma, 6, seed=4, z_shift=torch.tensor([1.5, -1.0]))
    modes, hessians = nb["find_posterior_modes"](model, x)
    m, cov = exact_posterior(W, b, sigma, x)
    torch.testing.assert_close(modes.double(), m, atol=1e-4, rtol=0)  # the grid alone is 0.05 off
    torch.testing.assert_close(hessians.double(), torch.linalg.inv(cov).expand(6, 2, 2), rtol=1e-3, atol=1e-2)


def test_quadrature_is_exact_for_a_narrow_rotated_off_centre_posterior(nb):
    model, W, b, sigma = narrow_rotated_model()
    x = sample_x(W, b, sigma, 6, seed=4, z_shift=torch.tensor([1.5, -1.0]))
    m, cov = exact_posterior(W, b, sigma, x)
    assert float(torch.linalg.eigvalsh(cov).sqrt().max()) < 0.12  # narrow ...
    assert abs(float(cov[0, 1] / cov.diagonal().prod().sqrt())) > 0.9  # ... and rotated
    quad = nb["log_marginal_quadrature"](model, x, 32, 8.0, modes=m.float())
    torch.testing.assert_close(quad, exact_log_px(W, b, sigma, x), atol=2e-3, rtol=0)
    # coarse and narrow grids still agree: the grid follows the posterior's own axes and widths
    torch.testing.assert_close(nb["log_marginal_quadrature"](model, x, 12, 6.0, modes=m.float()), quad,
                               atol=2e-3, rtol=0)


class BentDecoder(nn.Module):
    """f(z) = W z + b + 0.3 tanh(V z + a): a smooth nonlinear decoder with a unimodal, non-Gaussian posterior."""

    def __init__(self, D=5, seed=5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(D, 2, generator=g)
        self.W[:, 1] = 0.3 * self.W[:, 1] + self.W[:, 0]
        self.b, self.V, self.a = 0.3 * torch.randn(D, generator=g), torch.randn(D, 2, generator=g), torch.randn(D, generator=g)

    def forward(self, z):
        return z @ self.W.T + self.b + 0.3 * torch.tanh(z @ self.V.T + self.a)


def test_quadrature_matches_brute_force_for_a_nonlinear_decoder(nb):
    """Narrow, rotated, off-centre, non-Gaussian posterior: the Laplace-aligned grid against a fine brute-force
    grid around the brute-force mode."""
    model, _, _, sigma = narrow_rotated_model(sigma=0.08)
    model.decoder = BentDecoder()
    g = torch.Generator().manual_seed(6)
    z_true = torch.tensor([[1.2, -0.8], [-0.5, 1.4], [0.3, 0.2]])
    with torch.no_grad():
        x = model.decoder(z_true) + sigma * torch.randn(3, 5, generator=g)
        quad = nb["log_marginal_quadrature"](model, x, 32, 8.0)

        def log_joint(z):  # [G, 2] -> [N, G] in float64
            means = model.decoder(z.float()).double()
            return (Normal(means[None], sigma).log_prob(x.double()[:, None]).sum(-1)
                    + Normal(0.0, 1.0).log_prob(z[None]).sum(-1))

        t = torch.linspace(-5, 5, 501, dtype=torch.float64)
        coarse = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
        centres = coarse[log_joint(coarse).argmax(1)]
        s = torch.linspace(-0.6, 0.6, 601, dtype=torch.float64)
        box = torch.stack(torch.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2)
        brute = torch.stack([torch.logsumexp(log_joint(c + box)[i], 0) for i, c in enumerate(centres)])
        brute = brute + 2 * math.log(float(s[1] - s[0]))
    torch.testing.assert_close(quad, brute, atol=5e-3, rtol=0)


# --- rate split ------------------------------------------------------------------------------------------------

class GivenPosteriors(nn.Module):
    """An encoder that reads (mu, log_var) from its input rows: x = [mu, log_var]."""

    def __init__(self, d):
        super().__init__()
        self.d = d
        self.encoder = lambda x: (x[:, :self.d], x[:, self.d:])


def test_mutual_information_of_known_posteriors(nb):
    split = nb["split_rate"]
    model = GivenPosteriors(2)
    n = 64
    mu0, lv0 = torch.tensor([0.6, -0.3]), torch.log(torch.tensor([0.5, 0.2]))
    kl0 = float(kl_divergence(Normal(mu0, torch.exp(0.5 * lv0)), Normal(0.0, 1.0)).sum())
    # identical posteriors: z says nothing about x, I = 0, and the whole rate is the aggregate's KL
    same = split(model, torch.cat([mu0, lv0]).expand(n, 4).contiguous(), 4000, 0)
    assert same["mutual_info"] == pytest.approx(0.0, abs=1e-4)
    assert same["rate"] == pytest.approx(kl0, rel=1e-5)
    assert same["marginal_kl"] == pytest.approx(kl0, abs=1e-4)
    # two separated groups of identical narrow posteriors: z tells the group, I = log 2
    mus = torch.cat([torch.tensor([[-3.0, 0.0]]).expand(n // 2, 2), torch.tensor([[3.0, 0.0]]).expand(n // 2, 2)])
    lv = torch.full((n, 2), math.log(0.01))
    two = split(model, torch.cat([mus, lv], 1), 4000, 0)
    assert two["mutual_info"] == pytest.approx(math.log(2), abs=1e-3)
    # separated narrow posteriors: z identifies x, I = log N
    spread = torch.stack([torch.arange(n) % 8, torch.arange(n) // 8], 1).float() * 2 - 7
    distinct = split(model, torch.cat([spread, lv], 1), 4000, 0)
    assert distinct["mutual_info"] == pytest.approx(math.log(n), abs=1e-3)
    rate = float(kl_divergence(Normal(spread, 0.1), Normal(0.0, 1.0)).sum(-1).mean())
    assert distinct["rate"] == pytest.approx(rate, rel=1e-5)
    assert distinct["marginal_kl"] == pytest.approx(rate - math.log(n), abs=1e-3)


# --- generation: mixtures, Frechet distance, scores -----------------------------------------------------------

def test_mixture_samples_have_the_mixture_moments(nb):
    """Unequal weights, correlated covariances: fractions, means and covariances of each component's draws."""
    from sklearn.mixture import GaussianMixture
    mixture = GaussianMixture(3, covariance_type="full")
    mixture.weights_ = np.array([0.6, 0.3, 0.1])
    mixture.means_ = np.array([[0.0, 0.0], [20.0, 5.0], [-15.0, 12.0]])
    mixture.covariances_ = np.array([[[2.0, 1.2], [1.2, 1.0]], [[1.0, -0.7], [-0.7, 0.8]], [[0.5, 0.0], [0.0, 3.0]]])
    n = 100_000
    z = nb["sample_mixture"](mixture, n, 0).double().numpy()
    component = np.argmin(((z[:, None] - mixture.means_[None]) ** 2).sum(-1), 1)  # far apart: nearest mean
    np.testing.assert_allclose(np.bincount(component, minlength=3) / n, mixture.weights_, atol=0.006)
    for k in range(3):
        draws = z[component == k]
        np.testing.assert_allclose(draws.mean(0), mixture.means_[k], atol=0.05)
        np.testing.assert_allclose(np.cov(draws, rowvar=False), mixture.covariances_[k], atol=0.06)
    mean = mixture.weights_ @ mixture.means_
    np.testing.assert_allclose(z.mean(0), mean, atol=0.15)


def test_frechet_distance_against_scipy_sqrtm_with_non_commuting_covariances(nb):
    rng = np.random.default_rng(0)
    for dim in (2, 5):
        a, b = rng.standard_normal((dim, dim)), rng.standard_normal((dim, dim))
        c_a, c_b = a @ a.T + 0.1 * np.eye(dim), b @ b.T + 0.1 * np.eye(dim)
        assert not np.allclose(c_a @ c_b, c_b @ c_a)
        m_a, m_b = rng.standard_normal(dim), rng.standard_normal(dim)
        expected = ((m_a - m_b) ** 2).sum() + np.trace(c_a + c_b - 2 * scipy.linalg.sqrtm(c_a @ c_b).real)
        assert nb["frechet_distance"]((m_a, c_a), (m_b, c_b)) == pytest.approx(expected, rel=1e-7, abs=1e-9)
        assert nb["frechet_distance"]((m_b, c_b), (m_a, c_a)) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_gaussian_fit_is_the_sample_mean_and_covariance(nb):
    features = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 0.5])
    mean, cov = nb["gaussian_fit"](features)
    f = features.double().numpy()
    np.testing.assert_allclose(mean, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, (f - f.mean(0)).T @ (f - f.mean(0)) / 49, rtol=1e-10)


class OneHotClassifier(nn.Module):
    """features(x) = x (4 dims); logits = 3 x for classes 0-3, 0 for the others."""

    def __init__(self):
        super().__init__()
        self.body = nn.Identity()
        self.head = nn.Linear(4, 10, bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[:4] = 3 * torch.eye(4)

    def features(self, x):
        return self.body(x)


def test_generation_scores_of_a_known_classifier(nb, monkeypatch):
    monkeypatch.setitem(nb, "classifier", OneHotClassifier())
    images = torch.eye(4)[torch.tensor([0] * 20 + [1] * 20 + [2] * 40)]  # classes 0, 1, 2 with 1/4, 1/4, 1/2
    reference = (np.zeros(4), np.eye(4))
    scores = nb["generation_scores"](images, reference)
    confidence = float(torch.softmax(torch.tensor([3.0] + [0.0] * 9), 0)[0])
    assert scores["confidence"] == pytest.approx(confidence, rel=1e-6)
    assert scores["class_entropy"] == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.5)), rel=1e-9)
    f = images.double().numpy()
    expected = nb["frechet_distance"]((f.mean(0), np.cov(f, rowvar=False)), reference)
    assert scores["frechet"] == pytest.approx(expected, rel=1e-9)
    assert "class_kept" not in scores  # only images made from known digits have a label to keep
    labels = torch.tensor([0] * 20 + [1] * 20 + [2] * 40)
    labels[:8] = 3  # 8 of the 80 labels disagree with the class the classifier sees
    assert nb["generation_scores"](images, reference, labels)["class_kept"] == pytest.approx(72 / 80)


# --- evaluation helpers -------------------------------------------------------------------------------------

def test_evaluate_loss_weights_batches_by_their_size(nb):
    """Batches 4, 4, 2 of 10 rows: the mean over rows, not over batches."""
    data = (torch.arange(10, dtype=torch.float32)[:, None] ** 2,)

    def loss_fn(model, x, generator=None):
        return {"a": x.mean(), "b": 2 * x.mean()}

    out = nb["evaluate_loss"](nn.Identity(), loss_fn, data, 4, 0)
    assert out == pytest.approx({"a": 28.5, "b": 57.0})


def test_active_units_counts_dimensions_above_the_threshold(nb):
    codes = torch.randn(4000, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 0.5, 0.3, 0.05, 0.001])
    assert nb["active_units"](codes) == 3  # variances 1, 0.25, 0.09 > 0.01 > 0.0025, 1e-6
    assert nb["active_units"](codes, 0.001) == 4


class CodeIsInput(nn.Module):
    def encode(self, x):
        return x


def test_knn_accuracy_fits_on_train_codes_only(nb, monkeypatch):
    """Train codes sit at their label's centre; half the dev labels are wrong for their position: 50 %
    from the train fit (a fit on dev's own codes would score 100 %)."""
    centres = torch.stack([torch.arange(10.0) * 10, torch.zeros(10)], 1)
    train_y = torch.arange(100) % 10
    train_x = centres[train_y] + 0.1 * torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    dev_pos = torch.arange(20) % 10
    dev_y = torch.where(torch.arange(20) < 10, dev_pos, (dev_pos + 1) % 10)
    dev_x = centres[dev_pos] + 0.1 * torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    for name, value in {"train_x": train_x, "train_y": train_y, "SPLITS": {"dev": (dev_x, dev_y)}, "KNN_K": 1}.items():
        monkeypatch.setitem(nb, name, value)
    assert nb["knn_accuracy"](CodeIsInput(), "dev") == pytest.approx(50.0)


# --- training through train_vae: clipping, checkpoints, seeds ----------------------------------------------

@pytest.fixture
def tiny_setup(nb, monkeypatch, tmp_path):
    """The notebook's globals for a tiny run: 64 train and 32 dev images, a (8,) trunk, 1 epoch, checkpoints
    in tmp_path; returns a function that sets more of them."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 784, generator=g), torch.arange(96) % 10
    (tmp_path / "ckpt").mkdir()

    def setitems(**values):
        for name, value in values.items():
            monkeypatch.setitem(nb, name, value)

    setitems(train_x=x[:64], train_y=y[:64], dev_x=x[64:], dev_y=y[64:], IMAGE_DIM=784, CKPT_DIR=str(tmp_path / "ckpt"),
             RETRAIN=False, HIDDEN_DIMS=(8,), LATENT_DIM=2, SIGMA=0.3, EPOCHS=1, STUDY_EPOCHS=1, BATCH_SIZE=32, LR=1e-3,
             CLIP_NORM=50.0, SEED=0, EVAL_BATCH_SIZE=50, RETRAINED=set(), EVALUATIONS={})
    return setitems


class PostClipNorms(torch.optim.Adam):
    """Adam that records the global norm of the gradients it is given (after any clipping)."""
    norms = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        PostClipNorms.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return super().step(closure)


@pytest.mark.parametrize("sigma", [0.1, 0.5])
def test_clipping_threshold_follows_sigma(nb, tiny_setup, monkeypatch, sigma):
    """The gradient in nats scales like 1 / (2 sigma^2): train_vae clips it at CLIP_NORM / (2 sigma^2), so
    every (clipped) step reaches the optimiser with exactly that norm."""
    monkeypatch.setattr(torch.optim, "Adam", PostClipNorms)
    PostClipNorms.norms = []
    clip_norm = 1e-3  # small enough that every step is clipped
    _, history = nb["train_vae"](f"clip sigma {sigma}", sigma=sigma, clip_norm=clip_norm, epochs=2)
    threshold = clip_norm / (2 * sigma**2)
    assert len(PostClipNorms.norms) == 4
    assert PostClipNorms.norms == pytest.approx([threshold] * 4, rel=1e-4)
    assert history["clipped"] == [1.0, 1.0] and min(history["grad_norm"]) > threshold


def state_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_snapshot_checkpoint_holds_the_weights_of_its_epoch(nb, tiny_setup, monkeypatch):
    """Training 2 epochs with STUDY_EPOCHS = 1 also saves the 1-epoch model; asking for it restores exactly
    the weights (and log) of a 1-epoch training, without training."""
    two, history_two = nb["train_vae"]("two epochs", epochs=2)
    assert len(list(Path(nb["CKPT_DIR"]).glob("vae-*.pt"))) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("the snapshot should have been restored")

    with monkeypatch.context() as m:
        m.setitem(nb, "train_model", no_training)
        restored, history_restored = nb["train_vae"]("one epoch", epochs=1)
    tiny_setup(CKPT_DIR=str(Path(nb["CKPT_DIR"]).parent / "fresh"))
    Path(nb["CKPT_DIR"]).mkdir()
    fresh, history_fresh = nb["train_vae"]("one epoch, fresh", epochs=1)
    for name, value in state_of(fresh).items():
        assert torch.equal(restored.state_dict()[name], value), name
    assert not torch.equal(two.decoder.net[0].weight, fresh.decoder.net[0].weight)
    assert history_restored["dev"] == history_fresh["dev"] and history_restored["train"] == history_fresh["train"]
    assert history_two["dev"]["loss"][:2] == history_fresh["dev"]["loss"]


def test_checkpoint_of_another_configuration_is_refused(nb, tmp_path):
    torch.manual_seed(0)
    model = nb["VAE"](784, 2, 0.3, (8,), "relu")
    path = tmp_path / "vae.pt"
    spec = {"kind": "vae", "sigma": 0.3, "epochs": 2}
    nb["save_checkpoint"](path, model.state_dict(), spec, {"train": {}})
    other = nb["VAE"](784, 2, 0.3, (8,), "relu")
    before = state_of(other)
    with pytest.warns(UserWarning, match="trained with another configuration"):
        assert nb["load_checkpoint"](path, other, {**spec, "sigma": 0.5}) is None
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    assert nb["load_checkpoint"](path, other, spec) == {"train": {}}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in other.state_dict().items())


def test_multi_seed_path_on_tiny_data(nb, tiny_setup, monkeypatch):
    """Two seeds through train_vae, evaluate_model, summarize_seeds and the table/macro helpers; a seed's
    re-run is restored from its checkpoint with the same metrics."""
    torch.manual_seed(0)
    classifier = nb["Classifier"](feature_dim=8)
    dev = (nb["dev_x"], nb["dev_y"])
    tiny_setup(SPLITS={"dev": dev}, classifier=classifier, KNN_K=3, IWAE_K=4, IWAE_N=8, N_GEN=16)
    tiny_setup(REFERENCE_STATS={"dev": nb["gaussian_fit"](nb["classifier_outputs"](dev[0])[1])})
    seeds = [0, 1]
    models = {seed: nb["train_vae"](f"VAE (seed {seed})", seed=seed)[0] for seed in seeds}
    assert models[0].spec_key != models[1].spec_key
    per_seed = [nb["evaluate_model"](models[seed], "dev") for seed in seeds]
    summary = nb["summarize_seeds"](per_seed)
    assert summary["n_seeds"] == 2
    for key in ("neg_elbo", "kl", "mse", "neg_iwae", "frechet", "knn_accuracy"):
        a, b = per_seed[0][key], per_seed[1][key]
        assert summary["values"][key] == [a, b]
        assert summary["mean"][key] == pytest.approx((a + b) / 2)
        assert summary["sd"][key] == pytest.approx(abs(a - b) / math.sqrt(2))
    assert per_seed[0]["neg_elbo"] != per_seed[1]["neg_elbo"]  # the seeds train different models
    cells = nb["seed_cells"](summary, ["neg_elbo", "mse"])
    assert all("$\\pm$" in cell for cell in cells)
    macros = nb["seed_macros"]("Vae", summary, ["neg_elbo"])
    assert macros["VaeNegElbo"] == nb["fmt"](summary["mean"]["neg_elbo"], 1)
    assert macros["VaeNegElboSd"] == nb["fmt"](summary["sd"]["neg_elbo"], 1)
    # seed 0 again: restored (no training), same weights, same metrics when evaluated afresh
    tiny_setup(EVALUATIONS={})
    with monkeypatch.context() as m:
        m.setitem(nb, "train_model", lambda *a, **k: pytest.fail("seed 0 should be restored"))
        again = nb["train_vae"]("VAE (seed 0)", seed=0)[0]
    assert nb["evaluate_model"](again, "dev") == per_seed[0]
