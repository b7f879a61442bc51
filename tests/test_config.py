"""Parameter checks: every rule of the notebook's PARAM_RULES at its boundaries, in-process (apply_config
called directly, no kernel), and one whole-notebook launch showing how the message reaches the user."""
import re

import pytest
import torch

from conftest import ROOT, error_outputs, run_notebook

README = str(ROOT / "README.md")  # an existing file: refused where a folder is expected

# name -> (accepted LAB4_<name> values, refused values), at the boundaries of each rule (defaults elsewhere:
# LATENT_DIM 2, GEN_LATENT_DIM 16, GMM_COMPONENTS up to 300, KNN_K 5, 50,000 training images).
BOUNDARIES = {
    "DATA_DIR": (["data/mnist", "no/such/folder/yet"], [README, "", "  "]),
    "OUT_DIR": (["/tmp/x", "out"], [README, ""]),
    "CKPT_DIR": (["/tmp/x", "ckpt"], [README, ""]),
    "QUICK": (["1", "0", "yes", "False"], []),
    "RETRAIN": (["1", "no"], []),
    "DEVICE": (["auto", "cpu", "cuda", "cuda:1", "mps"], ["gpu", "cuda:x", "cuda:", ""]),
    "SEED": (["0", str(2**32 - 101)], ["-1", str(2**32 - 100)]),
    "N_SEEDS": (["1", "100"], ["0", "101"]),
    "LATENT_DIM": (["2", "15"], ["1", "0", "16"]),  # 16: not below GEN_LATENT_DIM
    "HIDDEN_DIMS": (["1", "512,512", "64,32,16"], ["512,0", "", "0"]),
    "ACTIVATION": (["relu", "tanh", "silu"], ["sigmoid", "ReLU"]),
    "SIGMA": (["1e-6", "3"], ["0", "-0.5", "nan", "inf"]),
    "EPOCHS": (["1"], ["0", "-1"]),
    "BATCH_SIZE": (["1", "50000"], ["0"]),
    "LR": (["1e-9", "1"], ["0", "-1e-3", "nan", "inf"]),
    "CLIP_NORM": (["1e-9", "1e30"], ["0", "inf"]),
    "AE_EPOCHS": (["1"], ["0"]),
    "GEN_LATENT_DIM": (["3", "100"], ["2", "0"]),
    "GEN_EPOCHS": (["1"], ["0", "-1"]),
    "LEARNED_SIGMA_START": (["1e-6", "1", "5"], ["0", "-1", "nan", "inf"]),
    "STUDY_EPOCHS": (["1"], ["0"]),
    "SIGMA_GRID": (["0.1,0.2", "0.03,0.1,3"], ["0.2", "0.1,0.1", "0.1,0", ""]),
    "GMM_COMPONENTS": (["1", "1,5,10,20"], ["0", "5,5", ""]),
    "GMM_N_FIT": (["600", "50000"], ["599", "2", "1"]),  # >= 2 * max(GMM_COMPONENTS) = 600
    "EVAL_BATCH_SIZE": (["1"], ["0"]),
    "IWAE_K": (["1"], ["0"]),
    "IWAE_N": (["1"], ["0"]),
    "QUAD_N": (["10"], ["9", "0"]),
    "QUAD_GRID": (["4"], ["3"]),
    "QUAD_HALF_WIDTH": (["1e-3"], ["0", "nan"]),
    "KNN_K": (["1", "50000"], ["0", "50001"]),
    "ACTIVE_THRESHOLD": (["1e-9"], ["0"]),
    "N_GEN": (["2"], ["1", "0"]),
    "CLF_EPOCHS": (["1"], ["0"]),
    "CLF_FEATURE_DIM": (["2"], ["1", "0"]),
    "QUICK_EPOCHS": (["1"], ["0"]),
    "QUICK_N_SEEDS": (["1"], ["0"]),
    "QUICK_N_TRAIN": (["600", "60000"], ["1", "0"]),
    "QUICK_N_EVAL": (["22"], ["21", "0"]),
}
# in quick mode the rules between parameters use the capped sizes: (overrides, refused parameter or None)
QUICK_CASES = [
    # quick mode keeps the two smallest mixture sizes (50, 100): two training codes per component of the larger
    ({"QUICK_N_TRAIN": "200"}, None), ({"QUICK_N_TRAIN": "199"}, "QUICK_N_TRAIN"),
    ({"QUICK_N_TRAIN": "700", "KNN_K": "700"}, None), ({"QUICK_N_TRAIN": "700", "KNN_K": "701"}, "KNN_K"),
    ({"QUICK_N_TRAIN": "100", "GMM_COMPONENTS": "1,50"}, None), ({"QUICK_N_TRAIN": "99", "GMM_COMPONENTS": "50"}, "QUICK_N_TRAIN"),
    ({"EPOCHS": "0"}, "EPOCHS"),  # validated before the caps
]


def configure(nb, env):
    """apply_config on the notebook's default parameters with LAB4_<name> overrides."""
    namespace = {name: nb[name] for name in nb["PARAM_RULES"]}
    return nb["apply_config"](namespace, {f"LAB4_{name}": value for name, value in env.items()})


def test_every_rule_has_boundary_cases(nb):
    assert set(BOUNDARIES) == set(nb["PARAM_RULES"])


@pytest.mark.parametrize("name, value", [(n, v) for n, (ok, _) in BOUNDARIES.items() for v in ok])
def test_accepted_at_the_boundary(nb, name, value):
    assert name in configure(nb, {name: value})


@pytest.mark.parametrize("name, value", [(n, v) for n, (_, bad) in BOUNDARIES.items() for v in bad])
def test_refused_at_the_boundary_with_a_message_naming_the_parameter(nb, name, value):
    with pytest.raises(ValueError) as err:
        configure(nb, {name: value})
    message = str(err.value)
    assert (message.startswith(f"Invalid parameter {name}=") or message.startswith(f"LAB4_{name}=")
            or "GEN_LATENT_DIM" in message), message
    assert ": expected " in message or "does not parse" in message, message


@pytest.mark.parametrize("overrides, refused", QUICK_CASES, ids=[str(o) for o, _ in QUICK_CASES])
def test_quick_mode_sizes(nb, overrides, refused):
    env = {"QUICK": "1", **overrides}
    if refused is None:
        configure(nb, env)
    else:
        with pytest.raises(ValueError, match=rf"^Invalid parameter {refused}="):
            configure(nb, env)


def test_messages_say_what_is_expected(nb):
    cases = [({"LATENT_DIM": "1"}, "Invalid parameter LATENT_DIM=1: expected an integer >= 2"),
             ({"SIGMA": "-0.5"}, "Invalid parameter SIGMA=-0.5: expected a finite number > 0"),
             ({"EPOCHS": "0"}, "Invalid parameter EPOCHS=0: expected an integer >= 1 (0 would leave"),
             ({"EPOCHS": "ten"}, "LAB4_EPOCHS='ten' does not parse as the type of EPOCHS (int)"),
             ({"QUICK": "maybe"}, "LAB4_QUICK='maybe' does not parse as the type of QUICK (bool)"),
             ({"DATA_DIR": README}, f"Invalid parameter DATA_DIR={README!r}: expected a folder path"),
             ({"ACTIVATION": "sigmoid"}, "Invalid parameter ACTIVATION='sigmoid': expected one of"),
             ({"HIDDEN_DIMS": "512,0"}, "expected a non-empty tuple of integers >= 1"),
             ({"LATENT_DIM": "16"}, "Invalid parameter GEN_LATENT_DIM=16: expected an integer > LATENT_DIM = 16"),
             ({"GMM_N_FIT": "599"}, "Invalid parameter GMM_N_FIT=599: expected an integer >= 2 * max(GMM_COMPONENTS) = 600"),
             ({"EPOHCS": "3"}, "Unknown environment variable(s) ['LAB4_EPOHCS']; known parameters: LAB4_DATA_DIR")]
    for env, message in cases:
        with pytest.raises(ValueError) as err:
            configure(nb, env)
        assert str(err.value).startswith(message) or message in str(err.value), (env, str(err.value))


def test_good_overrides_are_parsed_and_typed(nb):
    namespace = {name: nb[name] for name in nb["PARAM_RULES"]}
    params = nb["apply_config"](namespace, {"LAB4_LATENT_DIM": "5", "LAB4_SIGMA": "1", "LAB4_QUICK": "yes",
                                            "LAB4_SIGMA_GRID": "0.1, 0.3", "LAB4_GMM_COMPONENTS": "5,10"})
    assert params["LATENT_DIM"] == 5 and params["SIGMA"] == 1.0 and isinstance(params["SIGMA"], float)
    assert params["SIGMA_GRID"] == (0.1, 0.3) and params["GMM_COMPONENTS"] == (5, 10)
    assert params["QUICK"] is True and params["EPOCHS"] == params["QUICK_EPOCHS"]  # quick mode caps epochs
    assert namespace["LATENT_DIM"] == nb["LATENT_DIM"]  # the namespace itself is not modified


def test_lists_set_in_the_namespace_become_tuples(nb):  # papermill passes lists
    namespace = {name: nb[name] for name in nb["PARAM_RULES"]}
    params = nb["apply_config"]({**namespace, "HIDDEN_DIMS": [64, 32], "SIGMA_GRID": [0.1, 0.2]}, {})
    assert params["HIDDEN_DIMS"] == (64, 32) and params["SIGMA_GRID"] == (0.1, 0.2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_cuda_is_refused(nb):
    with pytest.raises(ValueError, match=r"DEVICE='cuda': CUDA is not available"):
        nb["resolve_device"]("cuda")


def test_absurd_learning_rate_stops_training_with_a_clear_message(nb):
    torch.manual_seed(0)
    model, x = nb["VAE"](784, 2, 0.2, (32,), "relu"), torch.rand(512, 784)
    with pytest.raises(FloatingPointError) as err:
        nb["train_model"](model, nb["vae_loss"], (x,), (x[:64],), name="VAE d=2 (seed 0)", epochs=1,
                          batch_size=64, lr=1e12, clip_norm=625.0, seed=0)
    assert re.match(r"VAE d=2 \(seed 0\): non-finite loss or gradient at epoch 1, step \d+ ", str(err.value))
    assert "weights of epoch 0 were restored" in str(err.value)


def test_bad_parameter_stops_the_notebook_with_a_clear_error(tmp_path):
    """The one whole-notebook launch: the message reaches the user as the error of the checks cell."""
    proc, path = run_notebook(tmp_path, {"LAB4_EPOCHS": "0"})
    assert proc.returncode != 0
    errors = error_outputs(path)
    assert len(errors) == 1 and errors[0].startswith(
        "ValueError: Invalid parameter EPOCHS=0: expected an integer >= 1 (0 would leave the final models untrained)"), errors
    assert not (tmp_path / "run-out").exists()  # stopped before writing anything
