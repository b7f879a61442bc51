"""The vendored MNIST files and the notebook's checked loader."""
import hashlib
import shutil

import pytest
import torch

from conftest import DATA_DIR


def test_vendored_checksums_match():
    listed = dict(reversed(line.split()) for line in (DATA_DIR / "SHA256SUMS").read_text().splitlines())
    assert len(listed) == 4
    for name, digest in listed.items():
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest, name


def test_loader_gives_the_course_split(nb):
    data = nb["load_mnist"](DATA_DIR, torch.device("cpu"))
    sizes = {split: (tuple(x.shape), tuple(y.shape)) for split, (x, y) in data.items()}
    assert sizes == {"train": ((50000, 784), (50000,)), "dev": ((10000, 784), (10000,)),
                     "test": ((10000, 784), (10000,))}
    for x, y in data.values():
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() == 1
        assert y.dtype == torch.int64 and set(y.unique().tolist()) == set(range(10))
    # the dev set is the tail of the training file: first dev label of the original file is index 50,000
    assert data["train"][1][:5].tolist() == [5, 0, 4, 1, 9]


@pytest.fixture
def data_copy(tmp_path):
    target = tmp_path / "mnist"
    shutil.copytree(DATA_DIR, target)
    return target


def test_missing_file_names_the_path_and_the_remedy(nb, data_copy):
    (data_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz is missing.*data/mnist"):
        nb["load_mnist"](data_copy, torch.device("cpu"))


def test_corrupted_file_is_refused(nb, data_copy):
    path = data_copy / "train-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz fails its SHA-256 check"):
        nb["load_mnist"](data_copy, torch.device("cpu"))


def test_truncated_file_is_refused(nb, data_copy):
    path = data_copy / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz fails its SHA-256 check: it is truncated"):
        nb["load_mnist"](data_copy, torch.device("cpu"))


def test_idx_reader_checks_the_header_and_size(nb, tmp_path):
    import gzip
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as handle:
        handle.write((2051).to_bytes(4, "big") + (2).to_bytes(4, "big") + (28).to_bytes(4, "big")
                     + (28).to_bytes(4, "big") + bytes(28 * 28))  # announces 2 images, holds 1
    with pytest.raises(ValueError, match=r"bad\.gz holds 784 bytes of data, its header announces 1568"):
        nb["read_idx"](bad, 2051)
    with pytest.raises(ValueError, match=r"bad\.gz has IDX magic 2051, expected 2049"):
        nb["read_idx"](bad, 2049)
