"""`cifar10`: the python version of CIFAR-10 from a local folder, in torchvision's layout.

Accepted under `root`: the extracted folder `cifar-10-batches-py/` (data_batch_1..5, test_batch),
the archive `cifar-10-python.tar.gz` (read in place: nothing is written next to the user's data,
so a truncated archive can never leave a half-extracted folder behind), or `root` being that
folder or that archive itself. Only when none is there do we try torchvision's download, with a
short socket timeout so an offline machine fails in seconds instead of hanging.
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
import socket
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from msrdsl.data.common import DatasetInfo
from msrdsl.data.resize import resize_images
from msrdsl.data.tensorset import ImageSet
from msrdsl.errors import DataError

NAME = "cifar10"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
HOME_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CLASSES = 10
CHANNELS = 3
SIDE = 32
DEFAULT_INPUT_SIZE = SIDE
# The usual CIFAR-10 statistics (as in DARTS' utils), fixed so every run normalises alike.
MEAN = (0.49139968, 0.48215827, 0.44653124)
STD = (0.24703233, 0.24348505, 0.26158768)
DOWNLOAD_TIMEOUT_S = 10.0
LAYOUT = f"{FOLDER}/ with {', '.join(TRAIN_FILES)} and {TEST_FILE}"


def info(input_size: int) -> DatasetInfo:
    """Constant shape facts; reads nothing."""
    return DatasetInfo(NAME, CHANNELS, input_size, CLASSES)


def load(root: Path, input_size: int) -> ImageSet:
    """The whole set as uint8 tensors, resized when input_size is not 32; cached per process."""
    return _load_sized(str(root.resolve()), input_size)


@functools.lru_cache(maxsize=2)
def _load_sized(root: str, input_size: int) -> ImageSet:
    train_x, train_y, test_x, test_y = _load_raw(root)
    return ImageSet(
        info=info(input_size),
        train_images=resize_images(train_x, input_size),
        train_labels=train_y,
        test_images=resize_images(test_x, input_size),
        test_labels=test_y,
        mean=MEAN,
        std=STD,
    )


@functools.lru_cache(maxsize=1)
def _load_raw(root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    blobs, where = _read_batches(Path(root))
    train = [_parse_batch(blobs[name], f"{where}/{name}") for name in TRAIN_FILES]
    test_x, test_y = _parse_batch(blobs[TEST_FILE], f"{where}/{TEST_FILE}")
    train_x = torch.cat([x for x, _ in train])
    train_y = torch.cat([y for _, y in train])
    return train_x, train_y, test_x, test_y


def _read_batches(root: Path) -> tuple[dict[str, bytes], str]:
    """The raw bytes of every batch file, and where they came from (for error messages)."""
    folder, archive = root / FOLDER, root / ARCHIVE
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        return _read_archive(root), str(root)  # root is the archive itself
    if (root / TRAIN_FILES[0]).is_file() and not folder.is_dir():
        return _read_folder(root), str(root)  # root is the extracted folder itself
    if _complete(folder) or (folder.is_dir() and not archive.is_file()):
        return _read_folder(folder), str(folder)  # an incomplete folder names what it lacks
    if archive.is_file():
        return _read_archive(archive), str(archive)
    failure = _download(root)
    if _complete(folder):
        return _read_folder(folder), str(folder)
    raise _missing_error(root, failure)


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE))


def _missing_error(root: Path, failure: str | None) -> DataError:
    where = f"{root} does not exist" if not root.exists() else f"nothing usable in {root}"
    download = f"; the download failed ({failure})" if failure else ""
    return DataError(
        f"dataset '{NAME}': no CIFAR-10 data: {where}{download}; expected {root}/{ARCHIVE} "
        f"or {root}/{LAYOUT}",
        hint=f"download {ARCHIVE} from {HOME_PAGE} (python version) and place it in {root}",
    )


def _read_folder(folder: Path) -> dict[str, bytes]:
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"dataset '{NAME}': {folder} lacks {', '.join(missing)}; expected {LAYOUT}",
            hint=f"re-extract {ARCHIVE} (from {HOME_PAGE}) into {folder.parent}",
        )
    return {name: (folder / name).read_bytes() for name in (*TRAIN_FILES, TEST_FILE)}


def _read_archive(archive: Path) -> dict[str, bytes]:
    wanted = {f"{FOLDER}/{name}": name for name in (*TRAIN_FILES, TEST_FILE)}
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # One sequential pass: seeking backwards in a gzip stream means decompressing again.
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is not None and member.isfile():
                    blobs[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _corrupt_error(str(archive), exc) from None
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if name not in blobs]
    if missing:
        raise DataError(
            f"dataset '{NAME}': archive {archive} lacks {FOLDER}/{', '.join(missing)}",
            hint=f"this is not the python version of CIFAR-10; get {ARCHIVE} from {HOME_PAGE}",
        )
    return blobs


def _corrupt_error(where: str, exc: BaseException) -> DataError:
    return DataError(
        f"dataset '{NAME}': {where} is corrupt or truncated ({type(exc).__name__}: {exc})",
        hint=f"delete it and place a fresh {ARCHIVE} from {HOME_PAGE}",
    )


def _parse_batch(blob: bytes, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch -> (Nx3x32x32 uint8 images, N int64 labels), checked."""
    try:
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="latin1").load()
        batch = {_text(key): value for key, value in batch.items()}
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except Exception as exc:  # anything a damaged pickle can raise
        raise _corrupt_error(where, exc) from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        problem = f"data is {data.dtype} {data.shape}, not uint8 (N, 3072)"
        raise _corrupt_error(where, ValueError(problem))
    out_of_range = len(labels) > 0 and (labels.min() < 0 or labels.max() >= CLASSES)
    if labels.shape != (len(data),) or out_of_range:
        problem = f"{len(labels)} labels for {len(data)} images, or labels outside 0..9"
        raise _corrupt_error(where, ValueError(problem))
    images = torch.from_numpy(data.reshape(-1, CHANNELS, SIDE, SIDE).copy())
    return images, torch.from_numpy(labels)


def _text(key: object) -> str:
    return key.decode("latin1") if isinstance(key, bytes) else str(key)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: a batch file cannot run code."""

    _ALLOWED = frozenset(
        {
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):
        # The real files come from numpy 1 (numpy.core); numpy 2 renamed it numpy._core.
        canonical = module
        if module.startswith("numpy.core"):
            canonical = "numpy._core" + module[len("numpy.core") :]
        if (canonical, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        try:
            return getattr(importlib.import_module(canonical), name)
        except ImportError:  # numpy 1 has no numpy._core
            return getattr(importlib.import_module(module), name)


def _download(root: Path) -> str | None:
    """Try torchvision's CIFAR-10 download into root; None on success, else why it failed."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    existed = root.exists()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        download_and_extract_archive(CIFAR10.url, str(root), filename=ARCHIVE, md5=CIFAR10.tgz_md5)
        return None
    except Exception as exc:  # offline, refused, timed out, bad checksum: all mean "not here"
        return f"{type(exc).__name__}: {exc}"
    finally:
        socket.setdefaulttimeout(previous)
        # Leave no empty folder behind when the download never got anywhere.
        if not existed and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
