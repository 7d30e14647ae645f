"""Data: validated files → ``paddle.vision.datasets`` → in-memory arrays → a seeded batch sampler.

Why in memory: MNIST-sized sets fit easily, and batching arrays is ~30× faster than paddle's
per-sample transform + collate while giving bit-identical tensors (ToTensor's x/255 in CHW).
Why our own sampler: batch order must be a pure function of (seed, epoch) so that a different
seed really gives a different order (hapi's sampler ignores it) and a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator

import numpy as np
from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle

from .errors import DataError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


PACKAGED = {"MNIST5k": os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets", "mnist5k")}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    num_classes: int
    files: tuple[str, ...]  # what Data.root must hold
    class_names: tuple[str, ...] | None = None
    paddle_name: str = ""  # the paddle.vision.datasets class that reads the files
    description: str = ""  # for reports: what the data is, and whether it is a subset


DATASETS = {
    "MNIST": DatasetInfo("MNIST", (1, 28, 28), 10, IDX_FILES["train"] + IDX_FILES["test"], None, "MNIST", "MNIST"),
    "MNIST5k": DatasetInfo("MNIST5k", (1, 28, 28), 10, IDX_FILES["train"] + IDX_FILES["test"], None, "MNIST",
                           "MNIST5k (a 5,000-digit subset of real MNIST; its test split is not MNIST's)"),
    "FashionMNIST": DatasetInfo("FashionMNIST", (1, 28, 28), 10, IDX_FILES["train"] + IDX_FILES["test"],
                                tuple(FASHION_CLASSES), "FashionMNIST", "Fashion-MNIST"),
    "Cifar10": DatasetInfo("Cifar10", (3, 32, 32), 10, ("cifar-10-python.tar.gz",), tuple(CIFAR10_CLASSES), "Cifar10",
                           "CIFAR-10"),
    "Cifar100": DatasetInfo("Cifar100", (3, 32, 32), 100, ("cifar-100-python.tar.gz",), None, "Cifar100", "CIFAR-100"),
}


def _paddle_class(name: str) -> Any:
    from paddle.vision import datasets

    return getattr(datasets, DATASETS[name].paddle_name)


@functools.cache
def _idx_class(cls: type) -> type:
    """Paddle's MNIST-format dataset class ``cls`` with its file parser in one numpy pass.

    Paddle's ``_parse_dataset`` unpacks every 100 images into a tuple of Python ints and back (3–3.5 s for the 60,000
    training images on a 2.45 GHz core, at the start of every training process and every study run); this reads the
    same bytes as uint8 arrays in milliseconds. Paddle's class is otherwise unchanged: the same files, paths and
    checks, and items (``__getitem__``, transforms, either backend) equal to its own — the pixels are its 0–255 values
    as uint8 rather than float32, which its ``__getitem__`` converts anyway (``tests/test_data.py`` compares the two).
    Each file is read once: :func:`check_idx` validates the bytes parsed here.
    """
    class IdxDataset(cls):
        def _parse_dataset(self, buffer_size: int = 100) -> None:
            img, lab = _read_gzip(self.image_path), _read_gzip(self.label_path)
            n = check_idx(img, lab, self.image_path, self.label_path)
            self.images = np.frombuffer(img, np.uint8, n * 784, 16).reshape(n, 784).copy()  # writable, as paddle's
            self.labels = np.frombuffer(lab, np.uint8, n, 8).astype("int64").reshape(n, 1)

    IdxDataset.__name__ = IdxDataset.__qualname__ = cls.__name__
    return IdxDataset


# --------------------------------------------------------------------------- file validation
def _read_gzip(path: str) -> bytes:
    if not os.path.isfile(path):
        raise DataError(f"data file '{path}' is missing; Data.root must hold the original files")
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError:
        raise DataError(f"data file '{path}' is truncated (gzip stream ends early); download it again") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"data file '{path}' is not a valid gzip file ({e}); download it again") from None


def check_idx(img: bytes, lab: bytes, image_path: str, label_path: str) -> int:
    """Check an IDX image/label pair's decompressed bytes before they are parsed; returns the sample count.

    Paddle's parser would raise FileNotFoundError, EOFError, BadGzipFile or struct.error here, none
    of which says which file is wrong or why.
    """
    if len(img) < 16 or struct.unpack_from(">I", img)[0] != 2051:
        raise DataError(f"'{image_path}' is not an IDX image file (magic number is not 2051)")
    if len(lab) < 8 or struct.unpack_from(">I", lab)[0] != 2049:
        raise DataError(f"'{label_path}' is not an IDX label file (magic number is not 2049)")
    _, n_img, rows, cols = struct.unpack_from(">IIII", img)
    _, n_lab = struct.unpack_from(">II", lab)
    if (rows, cols) != (28, 28):
        raise DataError(f"'{image_path}' holds {rows}×{cols} images; expected 28×28")
    if len(img) != 16 + n_img * rows * cols:
        raise DataError(f"'{image_path}' header says {n_img} images but the file holds {(len(img) - 16) // 784}")
    if len(lab) != 8 + n_lab:
        raise DataError(f"'{label_path}' header says {n_lab} labels but the file holds {len(lab) - 8}")
    if n_img != n_lab:
        raise DataError(f"'{image_path}' has {n_img} images but '{label_path}' has {n_lab} labels")
    if n_img == 0 or n_img % 100:
        raise DataError(f"'{image_path}' has {n_img} images; paddle's IDX reader needs a positive multiple of 100")
    if max(lab[8:]) > 9:
        raise DataError(f"'{label_path}' has labels above 9")
    return n_img


def validate_cifar(path: str, name: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"data file '{path}' is missing; Data.root must hold {os.path.basename(path)}")
    want = ("data_batch", "test_batch") if name == "Cifar10" else ("/train", "/test")
    try:
        with tarfile.open(path, "r:gz") as tar:
            names = tar.getnames()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"data file '{path}' is not a readable .tar.gz ({e}); download it again") from None
    for w in want:
        if not any(w in n for n in names):
            raise DataError(f"'{path}' holds no '{w.strip('/')}' batch; is it the {name} python archive?")


# --------------------------------------------------------------------------- download
def _cache_dir(name: str) -> str:
    from paddle.dataset.common import DATA_HOME

    return os.path.join(DATA_HOME, _paddle_class(name).NAME if "MNIST" in name else "cifar")


def _download(url: str, md5: str | None, dest: str, name: str, timeout: float = 15.0) -> None:
    """Fetch one file with a timeout (paddle's own download has none and hides the cause)."""
    hint = (f"this machine may be offline: put the original files ({', '.join(DATASETS[name].files)}) "
            f"in a folder and pass -o Data.root=FOLDER, or train on the 5,000 real MNIST digits shipped with the "
            f"package: -o Data.name=MNIST5k")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except (OSError, ValueError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {name} from {url} ({reason}); {hint}") from None
    if md5:
        with open(tmp, "rb") as f:
            got = hashlib.md5(f.read()).hexdigest()
        if got != md5:
            os.remove(tmp)
            raise DataError(f"download of {url} is corrupt (md5 {got}, expected {md5}); try again or {hint}")
    os.replace(tmp, dest)


def resolve_files(name: str, root: str | None) -> str:
    """Folder holding the dataset's original files; downloads into paddle's cache if root is null."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}' (Data.name); choose one of {', '.join(DATASETS)}")
    if name in PACKAGED:
        if root is not None:
            raise DataError(f"Data.name={name} ships with the package and reads no Data.root; "
                            f"leave Data.root null, or use Data.name=MNIST with your own files")
        return PACKAGED[name]
    if root is not None:
        if not os.path.isdir(root):
            raise DataError(f"Data.root '{root}' is not a folder; it must hold {', '.join(DATASETS[name].files)}")
        return root
    cls, folder = _paddle_class(name), _cache_dir(name)
    if name in ("MNIST", "FashionMNIST"):
        todo = [(getattr(cls, f"{m}_{k}_URL"), getattr(cls, f"{m}_{k}_MD5"))
                for m in ("TRAIN", "TEST") for k in ("IMAGE", "LABEL")]
    else:
        from paddle.vision.datasets import cifar

        todo = [(cifar.CIFAR10_URL, cifar.CIFAR10_MD5) if name == "Cifar10" else (cifar.CIFAR100_URL, cifar.CIFAR100_MD5)]
    for url, md5 in todo:
        dest = os.path.join(folder, os.path.basename(url))
        if not os.path.isfile(dest):
            print(f"downloading {url} -> {dest}", flush=True)
            _download(url, md5, dest, name)
    return folder


# --------------------------------------------------------------------------- arrays
def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1]: ToTensor's scaling, the same float32 division for every element."""
    return pixels.astype("float32") / np.float32(255.0)


@dataclass
class ArrayData:
    """A split as arrays: ``pixels`` uint8 [N, C, H, W] as in the files (60,000 Fashion-MNIST images: 47 MB, not
    188 MB as float32), labels int64 [N, 1]. Batches are scaled to float32 in [0, 1] as they are taken."""

    pixels: np.ndarray
    labels: np.ndarray
    info: DatasetInfo

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> np.ndarray:
        """Every image as float32 in [0, 1] (a new array: for small splits and slices; loaders use :meth:`batch`)."""
        return to_float(self.pixels)

    def batch(self, idx: np.ndarray) -> np.ndarray:
        return to_float(self.pixels[idx])


def load_split(name: str, root: str | None, mode: str, limit: int | None = None) -> ArrayData:
    """Read one split through ``paddle.vision.datasets`` after validating its files."""
    folder = resolve_files(name, root)
    info = DATASETS[name]
    cls = _paddle_class(name)
    if info.shape[0] == 1:
        image_path, label_path = (os.path.join(folder, f) for f in IDX_FILES[mode])
        ds = _idx_class(cls)(image_path=image_path, label_path=label_path, mode=mode, transform=None, backend="cv2",
                             download=False)
        images, labels = ds.images.reshape(-1, 1, 28, 28), ds.labels
        del ds
    else:
        path = os.path.join(folder, info.files[0])
        validate_cifar(path, name)
        try:
            ds = cls(data_file=path, mode=mode, transform=None, backend="cv2", download=False)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
            raise DataError(f"'{path}' holds unreadable {name} batches ({type(e).__name__}); download it again") from None
        images = np.stack([d[0] for d in ds.data]).reshape(-1, 3, 32, 32).astype(np.uint8)
        labels = np.array([d[1] for d in ds.data], dtype="int64").reshape(-1, 1)
    if limit:
        images, labels = images[:limit], labels[:limit]
    _check_content(name, folder, images)
    return ArrayData(np.ascontiguousarray(images), labels, info)


# mean pixel value (0–255) of each grayscale set: MNIST digits are thin strokes on black (~33), Fashion-MNIST
# garments fill the frame (~73); the files share names and format, so only their content tells them apart
_MEAN_INTENSITY = {"MNIST": 33.3, "MNIST5k": 33.3, "FashionMNIST": 72.9}


def _check_content(name: str, folder: str, images: np.ndarray) -> None:
    """Refuse digits recorded as garments (and the reverse): a run would be published under the wrong data set."""
    if name not in _MEAN_INTENSITY or len(images) < 32:
        return
    mean = float(images[:2000].mean())
    nearest = min(_MEAN_INTENSITY, key=lambda k: abs(_MEAN_INTENSITY[k] - mean))
    if _MEAN_INTENSITY[nearest] != _MEAN_INTENSITY[name] and abs(mean - _MEAN_INTENSITY[name]) > 15:
        raise DataError(f"the files in '{folder}' look like {nearest.replace('5k', '')} (mean pixel {mean:.0f}; "
                        f"{name} has ~{_MEAN_INTENSITY[name]:.0f}), not {name}; point Data.root at {name}'s files or "
                        f"set -o Data.name={nearest if nearest != 'MNIST5k' else 'MNIST'}")


def fingerprint(data: ArrayData) -> str:
    """A short hash of a split's images and labels: tells a run's own test set from any other.

    MNIST and Fashion-MNIST files have the same names and format, so only the content can tell them apart.
    """
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    return h.hexdigest()[:16]


def shift_images(x: np.ndarray, k: int, direction: str) -> np.ndarray:
    """Translate a batch by ``k`` pixels (``up``/``down``/``left``/``right``), zero fill."""
    if k == 0:
        return x
    out = np.zeros_like(x)
    if direction == "right":
        out[..., :, k:] = x[..., :, :-k]
    elif direction == "left":
        out[..., :, :-k] = x[..., :, k:]
    elif direction == "down":
        out[..., k:, :] = x[..., :-k, :]
    elif direction == "up":
        out[..., :-k, :] = x[..., k:, :]
    else:
        raise ValueError(direction)
    return out


# --------------------------------------------------------------------------- sampling
class EpochBatchSampler:
    """Index batches for one epoch, a pure function of ``(seed, epoch)``.

    Sharding follows ``DistributedBatchSampler`` (pad to a multiple of ``world_size``, then every
    ``world_size``-th index), so ranks see disjoint slices of the same permutation. ``skip``
    drops the batches an interrupted run already trained on.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> np.ndarray:
        idx = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        if self.world_size > 1:
            total = -(-self.n // self.world_size) * self.world_size
            idx = np.concatenate([idx, idx[: total - self.n]])[self.rank :: self.world_size]
        return idx

    def batches_per_epoch(self) -> int:
        per_rank = -(-self.n // self.world_size)
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        idx = self.indices()
        for b in range(self.skip, self.batches_per_epoch()):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.skip


class _Batches(paddle.io.Dataset):
    """One item = one whole batch, for worker processes (DataLoader with ``batch_size=None``)."""

    def __init__(self, data: ArrayData, batches: list[np.ndarray]) -> None:
        self.data, self.batches = data, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        b = self.batches[i]
        return self.data.batch(b), self.data.labels[b]


class ArrayLoader:
    """Iterable of ``(images, labels)`` numpy batches that ``paddle.Model.fit``/``evaluate`` accept."""

    def __init__(self, data: ArrayData, sampler: EpochBatchSampler, num_workers: int = 0,
                 transform: Any = None) -> None:
        self.data, self.sampler, self.num_workers, self.transform = data, sampler, num_workers, transform

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.num_workers > 0:
            loader = paddle.io.DataLoader(_Batches(self.data, list(self.sampler)), batch_size=None,
                                          num_workers=self.num_workers)
            for x, y in loader:
                yield (self.transform(x.numpy()) if self.transform else x), y
            return
        for b in self.sampler:
            x = self.data.batch(b)
            yield (self.transform(x) if self.transform else x), self.data.labels[b]
