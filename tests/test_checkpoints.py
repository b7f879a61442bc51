"""Checkpoints: atomic writes, reuse keyed by configuration, corrupt or stale files retrained."""
import pytest
import torch


@pytest.fixture
def ckpt_env(nb, tmp_path, monkeypatch):
    monkeypatch.setitem(nb, "CKPT_DIR", str(tmp_path))
    monkeypatch.setitem(nb, "RETRAIN", False)
    monkeypatch.setitem(nb, "RETRAINED", set())
    return tmp_path


def small_vae(nb):
    torch.manual_seed(0)
    return nb["VAE"](784, 2, 0.1, (16,), "relu")


SPEC = {"kind": "vae", "latent_dim": 2, "sigma": 0.1, "hidden_dims": [16], "activation": "relu"}


def fit_small(nb, model, epochs=1):
    data = (torch.rand(128, 784, generator=torch.Generator().manual_seed(0)),)
    return nb["fit"]("small", model, nb["vae_loss"], SPEC, data, data, epochs=epochs, batch_size=64, lr=1e-3,
                     clip_norm=100.0, seed=0)


def test_fit_saves_then_restores_without_training(nb, ckpt_env, monkeypatch, capsys):
    model, history = fit_small(nb, small_vae(nb))
    files = list(ckpt_env.iterdir())
    assert len(files) == 1 and files[0].name.startswith("vae-") and files[0].suffix == ".pt"

    def no_training(*args, **kwargs):
        raise AssertionError("a saved model was trained again")

    monkeypatch.setitem(nb, "train_model", no_training)
    restored, restored_history = fit_small(nb, small_vae(nb))
    assert "restored from" in capsys.readouterr().out
    assert restored_history == history
    for p, q in zip(model.parameters(), restored.parameters()):
        assert torch.equal(p, q)


def test_changed_configuration_retrains(nb, ckpt_env):
    fit_small(nb, small_vae(nb), epochs=1)
    fit_small(nb, small_vae(nb), epochs=2)
    assert len(list(ckpt_env.glob("*.pt"))) == 2


def test_retrain_flag_ignores_older_checkpoints_only(nb, ckpt_env, monkeypatch):
    fit_small(nb, small_vae(nb))
    nb["RETRAINED"].clear()  # a new run of the notebook, with LAB4_RETRAIN=1
    monkeypatch.setitem(nb, "RETRAIN", True)
    calls = []
    original = nb["train_model"]
    monkeypatch.setitem(nb, "train_model", lambda *a, **k: calls.append(1) or original(*a, **k))
    fit_small(nb, small_vae(nb))
    assert calls == [1]
    fit_small(nb, small_vae(nb))  # the same configuration again in that run: reused, not retrained
    assert calls == [1]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_spec"])
def test_unusable_checkpoint_is_detected_and_retrained(nb, ckpt_env, damage):
    fit_small(nb, small_vae(nb))
    (path,) = ckpt_env.glob("*.pt")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["spec"]["sigma"] = 0.5
        torch.save(checkpoint, path)
    with pytest.warns(UserWarning, match=r"is unusable .*; retraining"):
        _, history = fit_small(nb, small_vae(nb))
    assert len(history["train"]["loss"]) == 1
    torch.load(path, weights_only=True)  # a good checkpoint replaced the bad one


def test_interrupted_save_leaves_no_checkpoint(nb, ckpt_env, monkeypatch):
    def dying_save(obj, path):
        with open(path, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the run is killed while writing

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        fit_small(nb, small_vae(nb))
    assert not list(ckpt_env.glob("*.pt"))
