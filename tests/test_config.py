"""Bad configuration values end in a ValueError that names the parameter, in the notebook itself."""
import re

import pytest
import torch

from conftest import error_outputs, run_notebook

BAD_VALUES = [
    ({"LAB4_LATENT_DIM": "0"}, "Invalid parameter LATENT_DIM=0: expected an integer >= 1"),
    ({"LAB4_SIGMA": "-0.5"}, "Invalid parameter SIGMA=-0.5: expected a finite number > 0"),
    ({"LAB4_SIGMA": "nan"}, "Invalid parameter SIGMA=nan: expected a finite number > 0"),
    ({"LAB4_LR": "0"}, "Invalid parameter LR=0.0: expected a finite number > 0"),
    ({"LAB4_EPOCHS": "-1"}, "Invalid parameter EPOCHS=-1: expected an integer >= 0"),
    ({"LAB4_EPOCHS": "ten"}, "LAB4_EPOCHS='ten' does not parse as the type of EPOCHS (int)"),
    ({"LAB4_BATCH_SIZE": "0"}, "Invalid parameter BATCH_SIZE=0: expected an integer >= 1"),
    ({"LAB4_CLIP_NORM": "0"}, "Invalid parameter CLIP_NORM=0.0: expected a finite number > 0"),
    ({"LAB4_DEVICE": "gpu"}, "Invalid parameter DEVICE='gpu'"),
    ({"LAB4_DATA_DIR": "README.md"}, "Invalid parameter DATA_DIR='README.md': expected a folder path"),
    ({"LAB4_ACTIVATION": "sigmoid"}, "Invalid parameter ACTIVATION='sigmoid': expected one of"),
    ({"LAB4_HIDDEN_DIMS": "512,0"}, "Invalid parameter HIDDEN_DIMS=(512, 0): expected a non-empty tuple of integers >= 1"),
    ({"LAB4_QUICK": "maybe"}, "LAB4_QUICK='maybe' does not parse as the type of QUICK (bool)"),
    ({"LAB4_VARIANTS": '{"deeper": {"DEPTH": 3}}'}, "Invalid parameter VARIANTS="),
    ({"LAB4_VARIANTS": '{"a": {"LR": 0.01}}'}, "Invalid parameter VARIANTS="),  # no "base" to compare with
    ({"LAB4_EPOHCS": "3"}, "Unknown environment variable(s) ['LAB4_EPOHCS']; known parameters: LAB4_DATA_DIR"),
]


@pytest.mark.parametrize("overrides, message", BAD_VALUES, ids=[next(iter(o)) + "=" + next(iter(o.values()))
                                                                 for o, _ in BAD_VALUES])
def test_bad_parameter_stops_the_notebook_with_a_clear_error(tmp_path, overrides, message):
    proc, path = run_notebook(tmp_path, overrides)
    assert proc.returncode != 0
    errors = error_outputs(path)
    assert len(errors) == 1 and errors[0].startswith("ValueError: ") and message in errors[0], errors
    assert not (tmp_path / "run-out").exists()  # stopped before writing anything


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_cuda_is_refused(nb):
    with pytest.raises(ValueError, match=r"DEVICE='cuda': CUDA is not available"):
        nb["resolve_device"]("cuda")


def test_good_overrides_are_parsed_and_typed(nb):
    namespace = {name: nb[name] for name in nb["PARAM_RULES"]}
    params = nb["apply_config"](namespace, {"LAB4_LATENT_DIM": "5", "LAB4_SIGMA": "1", "LAB4_QUICK": "yes",
                                            "LAB4_SIGMA_GRID": "0.1, 0.3", "LAB4_VARIANTS": '{"base": {}, "a": {"LR": 0.01}}'})
    assert params["LATENT_DIM"] == 5 and params["SIGMA"] == 1.0 and isinstance(params["SIGMA"], float)
    assert params["SIGMA_GRID"] == (0.1, 0.3) and params["VARIANTS"] == {"base": {}, "a": {"LR": 0.01}}
    assert params["QUICK"] is True and params["EPOCHS"] == params["QUICK_EPOCHS"]  # quick mode caps epochs
    assert namespace["LATENT_DIM"] == nb["LATENT_DIM"]  # the namespace itself is not modified


def test_absurd_learning_rate_stops_with_a_clear_message(tmp_path):
    proc, path = run_notebook(tmp_path, {"LAB4_LR": "1e12"})
    errors = error_outputs(path)
    assert len(errors) == 1, errors
    assert re.match(r"FloatingPointError: (AE|VAE) d=2 \(seed 0\): non-finite loss or gradient at epoch 1, step \d+ ", errors[0])
    assert "weights of epoch 0 were restored" in errors[0]
