"""MNIST where users have it: the notebook's checked loader on every layout it accepts, and what it refuses."""
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import torch
import torchvision

from conftest import DATA_DIR

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_vendored_checksums_match():
    listed = dict(reversed(line.split()) for line in (DATA_DIR / "SHA256SUMS").read_text().splitlines())
    assert len(listed) == 4
    for name, digest in listed.items():
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest, name


# MD5s of the four decompressed IDX files as published with the original MNIST (LeCun, Cortes, Burges), e.g.
# in qal/paths.py ("MD5 checksums of the uncompressed files") and secml's MNIST loader. An independent
# source: neither the notebook's constants nor our vendored copy. (torchvision's MD5s, f68b3c2d... for
# train-images-idx3-ubyte.gz, are those of the original .gz wrappers; our .gz files were re-compressed, so
# only the decompressed content can be compared.)
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


@pytest.fixture(scope="module")
def contents():
    """The decompressed bytes of the four vendored files."""
    return {stem: gzip.decompress((DATA_DIR / f"{stem}.gz").read_bytes()) for stem in STEMS}


def test_vendored_content_is_the_published_mnist_and_the_notebook_checks_for_it(nb, contents):
    """The vendored content has the published MD5s, and the notebook's SHA-256 constants are of that content."""
    for stem in STEMS:
        assert hashlib.md5(contents[stem]).hexdigest() == PUBLISHED_MD5[stem], stem
        assert nb["MNIST_SHA256"][stem] == hashlib.sha256(contents[stem]).hexdigest(), stem


def test_one_flipped_byte_is_refused(nb, contents, tmp_path):
    """Same size, same header, one pixel or label changed: only the checksum can tell, and it refuses."""
    for stem, magic, shape in nb["MNIST_FILES"].values():
        path = tmp_path / stem
        raw = bytearray(contents[stem])
        raw[len(raw) - 7] ^= 0x01
        path.write_bytes(bytes(raw))
        with pytest.raises(ValueError, match=rf"{stem} fails its SHA-256 check"):
            nb["read_mnist_file"](path, stem, magic, shape)
        path.write_bytes(contents[stem])
        assert nb["read_mnist_file"](path, stem, magic, shape) == contents[stem]


@pytest.fixture(scope="module")
def vendored(nb):
    return nb["load_mnist"](DATA_DIR, torch.device("cpu"))


def assert_same_data(data, reference):
    assert data.keys() == reference.keys()
    for split in data:
        for got, want in zip(data[split], reference[split]):
            assert got.dtype == want.dtype and torch.equal(got, want), split


def test_loader_gives_the_course_split(vendored):
    sizes = {split: (tuple(x.shape), tuple(y.shape)) for split, (x, y) in vendored.items()}
    assert sizes == {"train": ((50000, 784), (50000,)), "dev": ((10000, 784), (10000,)),
                     "test": ((10000, 784), (10000,))}
    for x, y in vendored.values():
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() == 1
        assert y.dtype == torch.int64 and set(y.unique().tolist()) == set(range(10))
    assert vendored["train"][1][:5].tolist() == [5, 0, 4, 1, 9]  # the published first labels
    assert vendored["test"][1][:5].tolist() == [7, 2, 1, 0, 4]


def idx_array(content, n_header):
    return torch.from_numpy(np.frombuffer(content, dtype=np.uint8, offset=n_header).copy())


def test_splits_are_the_rows_of_the_raw_files(vendored, contents):
    """train = rows 0-49,999 of the training file, dev = rows 50,000-59,999 (no overlap), test = t10k, read
    here straight from the IDX bytes."""
    images = idx_array(contents["train-images-idx3-ubyte"], 16).view(60000, 784).float() / 255
    labels = idx_array(contents["train-labels-idx1-ubyte"], 8).long()
    assert torch.equal(vendored["train"][0], images[:50000]) and torch.equal(vendored["train"][1], labels[:50000])
    assert torch.equal(vendored["dev"][0], images[50000:]) and torch.equal(vendored["dev"][1], labels[50000:])
    test_images = idx_array(contents["t10k-images-idx3-ubyte"], 16).view(10000, 784).float() / 255
    assert torch.equal(vendored["test"][0], test_images)
    assert torch.equal(vendored["test"][1], idx_array(contents["t10k-labels-idx1-ubyte"], 8).long())


@pytest.fixture
def no_download(nb, monkeypatch):
    """Fail the test if the loader tries to download."""
    def refuse(data_dir):
        raise AssertionError(f"unexpected download into {data_dir}")
    monkeypatch.setitem(nb, "download_mnist", refuse)


@pytest.fixture
def flat_gz(tmp_path):
    """A user's folder of the four .gz files, without SHA256SUMS or anything else."""
    target = tmp_path / "mnist-gz"
    target.mkdir()
    for stem in STEMS:
        shutil.copy(DATA_DIR / f"{stem}.gz", target)
    return target


def make_torchvision_root(root):
    """root/MNIST/raw/ with the four uncompressed IDX files, as torchvision.datasets.MNIST leaves it."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in STEMS:
        (raw / stem).write_bytes(gzip.decompress((DATA_DIR / f"{stem}.gz").read_bytes()))
    return root


def test_flat_folder_of_gz_files_without_side_file(nb, flat_gz, vendored, no_download):
    assert_same_data(nb["load_mnist"](flat_gz, torch.device("cpu")), vendored)


def test_flat_folder_of_uncompressed_files(nb, tmp_path, vendored, no_download):
    raw = make_torchvision_root(tmp_path / "root") / "MNIST" / "raw"
    assert_same_data(nb["load_mnist"](raw, torch.device("cpu")), vendored)


def test_torchvision_root_with_uncompressed_raw_files(nb, tmp_path, vendored, no_download):
    root = make_torchvision_root(tmp_path / "root")
    assert len(torchvision.datasets.MNIST(root, train=False)) == 10000  # torchvision itself accepts this root
    assert_same_data(nb["load_mnist"](root, torch.device("cpu")), vendored)


def test_missing_file_names_the_path_and_the_remedy(nb, flat_gz, no_download):
    (flat_gz / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz is missing: .* holds only some of the "
                                                 r"four files\. Add the missing ones"):
        nb["load_mnist"](flat_gz, torch.device("cpu"))


def test_corrupted_file_is_refused(nb, flat_gz):
    path = flat_gz / "train-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz fails its SHA-256 check: it is corrupted"):
        nb["load_mnist"](flat_gz, torch.device("cpu"))


def test_truncated_gz_file_is_refused(nb, flat_gz):
    path = flat_gz / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz fails its SHA-256 check: it is truncated"):
        nb["load_mnist"](flat_gz, torch.device("cpu"))


def test_truncated_uncompressed_file_is_refused(nb, tmp_path):
    raw = make_torchvision_root(tmp_path / "root") / "MNIST" / "raw"
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1_000_000])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte fails its SHA-256 check: it is truncated "
                                         r"\(1,000,000 of 47,040,016 bytes\)"):
        nb["load_mnist"](tmp_path / "root", torch.device("cpu"))


def test_fashion_mnist_is_refused(nb, tmp_path):
    """Fashion-MNIST has MNIST's file names, headers and sizes; only the content (so the checksum) differs."""
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    generator = torch.Generator().manual_seed(0)
    for stem in STEMS:
        content = gzip.decompress((DATA_DIR / f"{stem}.gz").read_bytes())
        header = 16 if "images" in stem else 8
        body = torch.randint(0, 256 if "images" in stem else 10, (len(content) - header,), dtype=torch.uint8,
                             generator=generator)
        (fashion / f"{stem}.gz").write_bytes(gzip.compress(content[:header] + bytes(body.numpy()), mtime=0))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz fails its SHA-256 check: it is not the "
                                         r"original MNIST, only in its format \(Fashion-MNIST"):
        nb["load_mnist"](fashion, torch.device("cpu"))


def test_empty_folder_without_network_fails_fast_with_one_clear_message(nb, tmp_path, monkeypatch, unused_port):
    """Nothing listens on the mirror's port (as without network): one message, no empty folders left."""
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{unused_port}/mnist/"])
    target = tmp_path / "data" / "mnist"
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        nb["load_mnist"](target, torch.device("cpu"))
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert message.startswith(f"MNIST is not in {target} and could not be downloaded (")
    assert "Put the four files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, " \
           "t10k-labels-idx1-ubyte (gzip-compressed or not) into" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not (tmp_path / "data").exists()  # the folders torchvision created for the download are removed


def test_a_silent_network_costs_at_most_the_download_timeout(nb, tmp_path, monkeypatch):
    """A mirror that accepts the connection and never answers (a dead proxy, a firewall) must not hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors",
                            [f"http://127.0.0.1:{silent.getsockname()[1]}/mnist/"])
        monkeypatch.setitem(nb, "MNIST_DOWNLOAD_TIMEOUT", 1)
        start = time.perf_counter()
        with pytest.raises(FileNotFoundError, match=r"could not be downloaded \(.*timed out"):
            nb["load_mnist"](tmp_path / "mnist", torch.device("cpu"))
        assert time.perf_counter() - start < 10
    assert socket.getdefaulttimeout() is None  # restored


def test_empty_folder_is_filled_by_a_torchvision_download(nb, tmp_path, monkeypatch, vendored):
    """The download path end to end, from a local mirror serving our .gz files (no internet here)."""
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(DATA_DIR))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # our .gz wrappers were re-made: torchvision's MD5s are those of the original .gz files
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
        monkeypatch.setattr(torchvision.datasets.MNIST, "resources", [
            (f"{stem}.gz", hashlib.md5((DATA_DIR / f"{stem}.gz").read_bytes()).hexdigest()) for stem in STEMS])
        data = nb["load_mnist"](tmp_path / "fresh", torch.device("cpu"))
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in (tmp_path / "fresh" / "MNIST" / "raw").iterdir()) == sorted(
        STEMS + [f"{stem}.gz" for stem in STEMS])
    assert_same_data(data, vendored)
