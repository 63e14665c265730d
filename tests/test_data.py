"""Data sets, augmentations and reproducible loaders (tiny on-disk fixtures, no network)."""

from __future__ import annotations

import io
import pickle
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from msrdsl.data import (
    Cutout,
    DatasetInfo,
    RandomCrop,
    RandomHorizontalFlip,
    RandomShift,
    dataset_info,
    make_loader,
    search_split,
    train_test,
)
from msrdsl.data import cifar
from msrdsl.errors import DataError

# ---------------------------------------------------------------------------------------- digits


@pytest.mark.parametrize("size", [16, 32])
def test_digits_shapes_and_classes(size):
    info = dataset_info("digits", input_size=size)
    assert info == DatasetInfo("digits", 1, size, 10)
    train, test = train_test("digits", input_size=size)
    assert (len(train), len(test)) == (1438, 359)  # 1,797 split 80/20
    image, label = test[0]
    assert image.shape == (1, size, size) and image.dtype == torch.float32
    assert isinstance(label, int)
    assert set(test.labels.tolist()) == set(range(10))


def test_digits_default_size_is_16():
    assert dataset_info("digits").input_size == 16
    assert search_split("digits")[0][0][0].shape == (1, 16, 16)


def test_digits_search_split_is_4_to_1_of_train_part_only():
    weights, valid = search_split("digits", seed=0)
    assert (len(weights), len(valid)) == (1150, 288)
    assert weights.dataset is valid.dataset
    assert not set(weights.indices) & set(valid.indices)
    assert len(weights.dataset) == 1438  # the test part is never reached


def test_digits_split_is_deterministic_by_seed():
    a, _ = search_split("digits", seed=3)
    b, _ = search_split("digits", seed=3)
    c, _ = search_split("digits", seed=4)
    assert a.indices == b.indices
    assert a.indices != c.indices


def test_digits_test_part_does_not_depend_on_seed():
    assert torch.equal(train_test("digits", seed=0)[1].images, train_test("digits", seed=9)[1].images)


def test_digits_normalised_roughly_zero_mean_unit_std():
    train, _ = train_test("digits", augment=False)
    x = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(x.mean().item()) < 1e-3
    assert abs(x.std().item() - 1.0) < 1e-2


def test_digits_augmentation_shifts_but_never_flips():
    train, _ = train_test("digits", augment=True)
    kinds = [type(step) for step in train.transform.transforms]
    assert RandomShift in kinds and RandomHorizontalFlip not in kinds


# ------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_shaped_by_options():
    opts = dict(channels=2, classes=5, count=50, data_seed=7)
    assert dataset_info("synthetic", input_size=12, **opts) == DatasetInfo("synthetic", 2, 12, 5)
    train, test = train_test("synthetic", input_size=12, augment=False, **opts)
    again, _ = train_test("synthetic", input_size=12, augment=False, **opts)
    other, _ = train_test("synthetic", input_size=12, augment=False, **{**opts, "data_seed": 8})
    assert (len(train), len(test)) == (40, 10)
    assert train[0][0].shape == (2, 12, 12)
    assert torch.equal(train.images, again.images)
    assert not torch.equal(train.images, other.images)
    assert int(train.labels.max()) < 5


def test_synthetic_rejects_unknown_option_with_hint():
    with pytest.raises(DataError, match="no option 'chanels'") as err:
        dataset_info("synthetic", chanels=3)
    assert "channels" in err.value.hint


def test_unknown_dataset_suggests_closest_name():
    with pytest.raises(DataError, match="unknown dataset 'cifar'") as err:
        dataset_info("cifar")
    assert "cifar10" in err.value.hint


# --------------------------------------------------------------------------------------- cifar10

_PER_BATCH = 4


def _batch(first: int, count: int) -> dict:
    """A batch in the real layout; image k has every red byte k, green 100+k, blue 200-k."""
    ids = np.arange(first, first + count)
    planes = np.stack([ids, 100 + ids, 200 - ids], axis=1).astype(np.uint8)  # (N, 3)
    data = np.repeat(planes, 32 * 32, axis=1)  # rows: 1024 red, 1024 green, 1024 blue bytes
    return {
        "batch_label": "tiny batch",
        "labels": [int(i) % 10 for i in ids],
        "data": data,
        "filenames": [f"img_{i}.png" for i in ids],
    }


def _cifar_files() -> dict[str, bytes]:
    files = {
        f"data_batch_{b}": pickle.dumps(_batch((b - 1) * _PER_BATCH, _PER_BATCH), protocol=2)
        for b in range(1, 6)
    }
    files["test_batch"] = pickle.dumps(_batch(50, 3), protocol=2)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": _PER_BATCH}
    files["batches.meta"] = pickle.dumps(meta, protocol=2)
    return files


def _write_cifar_folder(root):
    folder = root / cifar.FOLDER
    folder.mkdir(parents=True)
    for name, blob in _cifar_files().items():
        (folder / name).write_bytes(blob)
    return folder


def _write_cifar_archive(root):
    root.mkdir(parents=True, exist_ok=True)
    archive = root / cifar.ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in _cifar_files().items():
            member = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
            member.size = len(blob)
            tar.addfile(member, io.BytesIO(blob))
    return archive


@pytest.fixture
def no_download(monkeypatch):
    """Fail loudly if the loader tries the network; record that it asked."""
    calls = []

    def fake(root):
        calls.append(root)
        return "offline (test)"

    monkeypatch.setattr(cifar, "_download", fake)
    return calls


def _unnormalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(cifar.MEAN).view(3, 1, 1)
    std = torch.tensor(cifar.STD).view(3, 1, 1)
    return ((image * std + mean) * 255).round()


@pytest.mark.parametrize("layout", ["folder", "archive"])
def test_cifar_loads_tiny_set_in_real_layout(tmp_path, layout, no_download):
    (_write_cifar_folder if layout == "folder" else _write_cifar_archive)(tmp_path)
    assert dataset_info("cifar10", root=str(tmp_path)) == DatasetInfo("cifar10", 3, 32, 10)
    train, test = train_test("cifar10", root=str(tmp_path), augment=False)
    assert (len(train), len(test)) == (5 * _PER_BATCH, 3)
    assert train.images.dtype == torch.uint8 and train.images.shape == (20, 3, 32, 32)
    image, label = train[6]
    assert label == 6
    assert _unnormalise(image)[:, 0, 0].tolist() == [6.0, 106.0, 194.0]  # channel order kept
    assert test[1][1] == 51 % 10
    weights, valid = search_split("cifar10", root=str(tmp_path), split=0.75)
    assert (len(weights), len(valid)) == (15, 5)
    assert no_download == []  # files were there: no download attempt


def test_cifar_accepts_root_pointing_inside_and_resizes(tmp_path, no_download):
    folder = _write_cifar_folder(tmp_path / "a")
    train, _ = train_test("cifar10", root=str(folder), input_size=16, augment=True, cutout=4)
    assert train[0][0].shape == (3, 16, 16)
    archive = _write_cifar_archive(tmp_path / "b")
    assert len(train_test("cifar10", root=str(archive))[1]) == 3
    assert no_download == []


def test_cifar_missing_folder_names_folder_and_archive_fast(tmp_path, no_download):
    root = tmp_path / "nowhere"
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        train_test("cifar10", root=str(root))
    assert time.perf_counter() - start < 2.0
    text = err.value.render()
    assert str(root) in text and "cifar-10-python.tar.gz" in err.value.message
    assert "cifar-10-batches-py" in text and "offline (test)" in text
    assert len(no_download) == 1


def test_cifar_needs_root(no_download):
    with pytest.raises(DataError, match="no root folder"):
        search_split("cifar10")


def test_cifar_download_failure_is_quick_and_leaves_nothing(tmp_path, monkeypatch):
    import socket
    import urllib.error

    import torchvision.datasets.utils as tv_utils

    seen = {}

    def offline(url, download_root, **kwargs):
        seen["timeout"] = socket.getdefaulttimeout()
        (tmp_path / "data").mkdir()  # torchvision creates the folder before failing
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    before = socket.getdefaulttimeout()
    reason = cifar._download(tmp_path / "data")
    assert "no network" in reason
    assert seen["timeout"] == cifar.DOWNLOAD_TIMEOUT_S
    assert socket.getdefaulttimeout() == before
    assert not (tmp_path / "data").exists()


def test_cifar_corrupt_batch_is_data_error(tmp_path, no_download):
    folder = _write_cifar_folder(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x02this is not a pickle")
    with pytest.raises(DataError, match="data_batch_3 is corrupt"):
        train_test("cifar10", root=str(tmp_path))


def test_cifar_wrong_shape_batch_is_data_error(tmp_path, no_download):
    folder = _write_cifar_folder(tmp_path)
    bad = _batch(0, 2)
    bad["data"] = bad["data"][:, :100]
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="test_batch is corrupt"):
        train_test("cifar10", root=str(tmp_path))


def test_cifar_batch_cannot_run_code(tmp_path, no_download):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = _write_cifar_folder(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"unexpected object \w+\.print"):
        train_test("cifar10", root=str(tmp_path))


def test_cifar_missing_batch_file_is_named(tmp_path, no_download):
    folder = _write_cifar_folder(tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="lacks data_batch_5"):
        train_test("cifar10", root=str(tmp_path))


def test_cifar_truncated_archive_is_data_error(tmp_path, no_download):
    archive = _write_cifar_archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        train_test("cifar10", root=str(tmp_path))
    assert "cifar-10-python.tar.gz" in err.value.message
    assert no_download == []


# -------------------------------------------------------------------------------------- imagenet


def _write_image(path, seed: int, fmt: str):
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def _write_imagenet(root, classes=("cat", "dog"), per_class=3):
    for split, count in (("train", per_class), ("val", 1)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "JPEG")
                _write_image(folder / f"{i}.{ext}", 10 * c + i, fmt)
    return root


def test_imagenet_tiny_folder_loads(tmp_path):
    root = _write_imagenet(tmp_path)
    assert dataset_info("imagenet", root=str(root), input_size=32) == DatasetInfo("imagenet", 3, 32, 2)
    assert dataset_info("imagenet", root=str(root)).input_size == 224
    train, test = train_test("imagenet", root=str(root), input_size=32, cutout=8)
    assert (len(train), len(test)) == (6, 2)
    image, label = train[4]
    assert image.shape == (3, 32, 32) and label == 1
    assert test[0][0].shape == (3, 32, 32)
    weights, valid = search_split("imagenet", root=str(root), input_size=32, split=0.5, augment=True)
    assert (len(weights), len(valid)) == (3, 3)
    assert weights[0][0].shape == (3, 32, 32)


def test_imagenet_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        dataset_info("imagenet", root=str(tmp_path / "none"))
    assert "root/train/<class>/*.JPEG" in err.value.message


def test_imagenet_no_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        train_test("imagenet", root=str(tmp_path), input_size=32)


def test_imagenet_class_without_images(tmp_path):
    root = _write_imagenet(tmp_path)
    (root / "train" / "emu").mkdir()
    with pytest.raises(DataError, match="class folder without images"):
        search_split("imagenet", root=str(root), input_size=32)


def test_imagenet_val_classes_must_match(tmp_path):
    root = _write_imagenet(tmp_path)
    folder = root / "val" / "emu"
    folder.mkdir()
    _write_image(folder / "0.png", 99, "PNG")
    with pytest.raises(DataError, match="different class folders"):
        train_test("imagenet", root=str(root), input_size=32)


def test_imagenet_unreadable_image_is_named(tmp_path):
    root = _write_imagenet(tmp_path)
    bad = root / "val" / "cat" / "0.JPEG"
    bad.write_bytes(b"not a jpeg")
    _, test = train_test("imagenet", root=str(root), input_size=32)
    with pytest.raises(DataError, match="cannot read image .*0.JPEG"):
        test[0]


# ------------------------------------------------------------------------------------ make_loader


class _Indices(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _order(n=50, **kwargs) -> list[int]:
    options = {"shuffle": True, "seed": 0, "epoch": 0, **kwargs}
    loader = make_loader(_Indices(n), batch_size=7, **options)
    return torch.cat(list(loader)).tolist()


def test_loader_order_is_a_function_of_seed_and_epoch():
    assert _order(seed=1, epoch=2) == _order(seed=1, epoch=2)
    assert _order(seed=1, epoch=2) != _order(seed=1, epoch=3)
    assert _order(seed=1, epoch=2) != _order(seed=2, epoch=2)
    assert _order(seed=0, epoch=1) != _order(seed=1, epoch=0)  # no seed + epoch collision
    assert sorted(_order()) == list(range(50))
    assert _order(shuffle=False) == list(range(50))


def test_loader_drop_last():
    assert len(_order(n=50, drop_last=True)) == 49


def test_loader_shards_are_disjoint_and_cover():
    shards = [_order(n=50, world_size=2, rank=r, seed=4) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(50))
    odd = [_order(n=51, world_size=2, rank=r) for r in (0, 1)]
    assert len(odd[0]) == len(odd[1]) == 26  # padded so ranks stay in step
    assert set(odd[0]) | set(odd[1]) == set(range(51))


def test_loader_does_not_touch_global_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    _order()
    assert torch.equal(torch.get_rng_state(), state)


def _epoch_batches(dataset, **kwargs):
    loader = make_loader(dataset, batch_size=64, shuffle=True, seed=3, epoch=1, **kwargs)
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    pairs = zip(a, b, strict=False)
    return len(a) == len(b) and all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in pairs
    )


def test_seeded_epoch_replays_augmentation_bit_for_bit():
    train, _ = train_test("synthetic", input_size=16, count=300, cutout=6)
    torch.manual_seed(11)
    first = _epoch_batches(train)
    torch.manual_seed(11)
    second = _epoch_batches(train)
    torch.manual_seed(12)
    third = _epoch_batches(train)
    assert _same(first, second)
    assert not _same(first, third)


def test_worker_processes_are_seeded_from_seed_epoch_worker():
    train, _ = train_test("synthetic", input_size=16, count=200, cutout=6)
    first = _epoch_batches(train, num_workers=2)
    second = _epoch_batches(train, num_workers=2)
    assert _same(first, second)


# ------------------------------------------------------------------------------------ transforms


def test_random_crop_pads_with_zeros_and_keeps_shape():
    x = torch.ones(3, 8, 8)
    torch.manual_seed(0)
    outs = [RandomCrop(2)(x) for _ in range(20)]
    assert all(out.shape == (3, 8, 8) for out in outs)
    assert any((out == 0).any() for out in outs)  # some windows reach into the padding
    assert RandomShift(1)(x).shape == (3, 8, 8)


def test_flip_mirrors_columns():
    x = torch.arange(12.0).view(1, 3, 4)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x), x)


def test_cutout_zeroes_one_clipped_square_in_all_channels():
    x = torch.ones(3, 20, 20)
    for seed in range(30):
        torch.manual_seed(seed)
        out = Cutout(8)(x)
        holes = (out == 0).nonzero()
        assert torch.equal(out[0] == 0, out[1] == 0) and torch.equal(out[0] == 0, out[2] == 0)
        rows, cols = holes[:, 1].unique(), holes[:, 2].unique()
        assert len(holes) == 3 * len(rows) * len(cols)  # a filled rectangle
        assert len(rows) <= 8 and len(cols) <= 8
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
        interior = 4 <= rows.min() and rows.max() <= 15 and 4 <= cols.min() and cols.max() <= 15
        if interior:
            assert len(rows) == len(cols) == 8
    assert torch.equal(x, torch.ones(3, 20, 20))  # the input is never modified


def test_split_accepts_the_ir_fraction_and_rejects_empty_parts():
    from fractions import Fraction

    weights, valid = search_split("digits", split=Fraction(4, 5))
    assert (len(weights), len(valid)) == (1150, 288)
    with pytest.raises(DataError, match="non-empty"):
        search_split("synthetic", count=5, split=Fraction(1, 100))
    with pytest.raises(DataError, match="strictly between"):
        search_split("digits", split=1.5)
