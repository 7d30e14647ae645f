"""CIFAR through paddle.vision.datasets (data_file), offline, on tiny archives in the real format."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from paddle_lenet.data import load_split

from .conftest import ROOT, metrics, tool


def make_archive(folder, name: str, n_train: int = 64, n_test: int = 20, seed: int = 0) -> np.ndarray:
    """Write ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` as the originals are laid out."""
    rng = np.random.default_rng(seed)
    ten = name == "Cifar10"
    classes = 10 if ten else 100
    key = b"labels" if ten else b"fine_labels"
    top = "cifar-10-batches-py" if ten else "cifar-100-python"
    batches = ({f"data_batch_{i}": n_train // 2 for i in (1, 2)} | {"test_batch": n_test}) if ten else \
        {"train": n_train, "test": n_test}
    path = os.path.join(folder, "cifar-10-python.tar.gz" if ten else "cifar-100-python.tar.gz")
    first = None
    with tarfile.open(path, "w:gz") as tar:
        for bname, n in batches.items():
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            # a learnable signal: the class sets the mean brightness of the red plane
            labels = rng.integers(0, classes, n)
            data[:, :1024] = (labels[:, None] * (255 // classes)).astype(np.uint8)
            first = data if first is None and bname != "test_batch" and bname != "test" else first
            raw = pickle.dumps({key: labels.tolist(), b"data": data})
            info = tarfile.TarInfo(f"{top}/{bname}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return first


@pytest.mark.parametrize("name,model,classes", [("Cifar10", "Strided_CNN_A", 10), ("Cifar100", "Strided_CNN_A", 100)])
def test_cifar_trains_offline(tmp_path, name: str, model: str, classes: int) -> None:
    first = make_archive(str(tmp_path), name)
    data = load_split(name, str(tmp_path), "train")
    assert data.images.shape == (64, 3, 32, 32) and data.info.num_classes == classes
    np.testing.assert_array_equal(data.images[0], first[0].reshape(3, 32, 32) / np.float32(255))  # CHW, ToTensor scale
    out = str(tmp_path / "out")
    tool("train", "-c", os.path.join(ROOT, "configs/allcnn/strided_cnn_a_cifar10.yml"), "-o", f"Data.name={name}",
         "-o", f"Data.root={tmp_path}", "-o", f"Arch.name={model}", "-o", "Global.epochs=1",
         "-o", "Optimizer.milestones=[]", "-o", "Data.batch_size=16",
         "-o", f"Global.output_dir={out}", "-o", "Global.name=c", check=True)
    m = metrics(out, "c")
    assert m["test_samples"] == 20 and m["train_samples"] == 64 and m["dataset"] == name
    assert m["params"] == 839242 + (0 if classes == 10 else 90 * 193)


def test_corrupt_cifar_archive(tmp_path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b broken")
    p = tool("train", "-c", os.path.join(ROOT, "configs/allcnn/all_cnn_c_cifar10.yml"), "-o", f"Data.root={tmp_path}",
             "-o", f"Global.output_dir={tmp_path}/out")
    assert p.returncode == 2 and "not a readable .tar.gz" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()
