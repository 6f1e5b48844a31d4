"""Tests for dartok.data: IDX reader, Fashion-MNIST loading, ClutteredFashionMNIST, create_dataset."""
from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import dartok  # noqa: F401  (installs the torchvision shim before timm)
from dartok.data import (
    FASHION_MNIST_CLASSES,
    ClutteredFashionMNIST,
    FashionMNISTDataset,
    create_dataset,
    load_fashion_mnist,
    read_idx,
)


_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Independent IDX writer (struct-packed header, big-endian data)."""
    header = struct.pack(">BBBB", 0, 0, _CODES[arr.dtype], arr.ndim)
    header += struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr: np.ndarray, gz: bool) -> str:
    data = idx_bytes(arr)
    path = str(path)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


def write_fake_fmnist(root, images: np.ndarray, labels: np.ndarray, gz: bool = False, split: str = "train"):
    prefix = "train" if split == "train" else "t10k"
    ext = ".gz" if gz else ""
    write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{ext}"), images.astype(np.uint8), gz)
    write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{ext}"), labels.astype(np.uint8), gz)
    return str(root)


def pil_resize(item: np.ndarray, s: int) -> np.ndarray:
    return np.asarray(Image.fromarray(item).resize((s, s), Image.BILINEAR)).astype(np.float32)


def box_pixels(ds: ClutteredFashionMNIST, i: int) -> tuple[int, int, int, int]:
    S = ds.canvas_size
    x0, y0, x1, y1 = ds.object_box(i)
    return round(x0 * S), round(y0 * S), round(x1 * S), round(y1 * S)


# --------------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip_uint8(tmp_path, gz):
    arr = np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    p = write_idx(tmp_path / ("x.gz" if gz else "x"), arr, gz)
    out = read_idx(p)
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 7  # writable


def test_read_idx_detects_gzip_by_content(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    p = write_idx(tmp_path / "no_gz_suffix", arr, gz=True)  # gzipped without .gz
    np.testing.assert_array_equal(read_idx(p), arr)


@settings(max_examples=25, deadline=None)
@given(
    dtype=st.sampled_from(sorted(_CODES, key=str)),
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    gz=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_read_idx_roundtrip_dtypes(tmp_path_factory, dtype, shape, gz, seed):
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    p = write_idx(tmp_path_factory.mktemp("idx") / "a", arr, gz)
    out = read_idx(p)
    assert out.dtype == dtype and out.dtype.isnative and out.shape == tuple(shape)
    np.testing.assert_array_equal(out, arr)


def _corruptions(good: bytes):
    yield "truncated data", good[:-10]
    yield "trailing bytes", good + b"\x00\x01"
    yield "bad magic", b"\x01\x02" + good[2:]
    yield "unknown type", good[:2] + b"\x07" + good[3:]
    yield "zero dims", good[:3] + b"\x00"
    yield "truncated header", good[:9]
    yield "tiny", good[:2]


@pytest.mark.parametrize("case", [c for c, _ in _corruptions(b"\x00" * 64)])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_corrupt_raises_valueerror_naming_file(tmp_path, case, gz):
    good = idx_bytes(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))
    bad = dict(_corruptions(good))[case]
    p = tmp_path / "broken-images-idx3-ubyte"
    p.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(ValueError, match="broken-images-idx3-ubyte"):
        read_idx(p)


def test_read_idx_corrupt_gzip_stream(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    blob = gzip.compress(idx_bytes(arr))
    (tmp_path / "cut.gz").write_bytes(blob[: len(blob) // 2])  # truncated gzip
    with pytest.raises(ValueError, match="cut.gz"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "garbled.gz").write_bytes(blob[:10] + bytes(b ^ 0xFF for b in blob[10:40]) + blob[40:])
    with pytest.raises(ValueError, match="garbled.gz"):
        read_idx(tmp_path / "garbled.gz")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------------------------
# load_fashion_mnist
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_files_error_message(tmp_path, split):
    with pytest.raises(FileNotFoundError) as ei:
        load_fashion_mnist(split, root=str(tmp_path))
    msg = str(ei.value)
    assert "dataset-fashion-mnist" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-root" in msg
    prefix = "train" if split == "train" else "t10k"
    assert os.path.join(str(tmp_path), f"{prefix}-images-idx3-ubyte.gz") in msg


def test_missing_labels_only(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8), gz=True)
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_fashion_mnist("train", root=str(tmp_path))


def test_missing_root_in_dataset_constructor(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        ClutteredFashionMNIST(root=str(tmp_path / "does-not-exist"))


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")


@pytest.mark.parametrize("gz", [True, False])
def test_fake_root_loads_and_caches(tmp_path, gz):
    imgs = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9, 5])
    write_fake_fmnist(tmp_path, imgs, labels, gz=gz, split="test")
    x, y = load_fashion_mnist("test", root=str(tmp_path))
    np.testing.assert_array_equal(x, imgs)
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()
    x2, y2 = load_fashion_mnist("test", root=str(tmp_path) + "/")  # same root, normalized
    assert x2 is x and y2 is y  # cached
    assert not x.flags.writeable  # cache is protected
    with pytest.raises(FileNotFoundError):  # train files were never written
        load_fashion_mnist("train", root=str(tmp_path))


def test_inconsistent_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((2,), np.uint8), gz=False)
    with pytest.raises(ValueError, match="labels"):
        load_fashion_mnist("train", root=str(tmp_path))


def test_real_data_shapes():
    x, y = load_fashion_mnist("train")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == [6000] * 10
    xt, yt = load_fashion_mnist("test")
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert np.bincount(yt, minlength=10).tolist() == [1000] * 10
    assert x.max() == 255 and x.min() == 0
    assert not np.array_equal(x[:100], xt[:100])
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"


# --------------------------------------------------------------------------------------------
# ClutteredFashionMNIST on real data
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_ds():
    return ClutteredFashionMNIST(split="train", seed=0)


def test_item_shape_dtype_label(train_ds):
    _, y = load_fashion_mnist("train")
    assert len(train_ds) == 60000
    assert train_ds.classes == list(FASHION_MNIST_CLASSES)
    for i in (0, 1, 59999, -1):
        img, label = train_ds[i]
        assert isinstance(img, torch.Tensor) and img.dtype == torch.float32
        assert img.shape == (1, 224, 224)
        assert type(label) is int and label == y[i % 60000]
    np.testing.assert_array_equal(train_ds.targets, y)
    assert train_ds.labels is train_ds.targets
    with pytest.raises(IndexError):
        train_ds[60000]


def test_determinism_and_seed(train_ds):
    again = ClutteredFashionMNIST(split="train", seed=0)
    other = ClutteredFashionMNIST(split="train", seed=1)
    for i in (0, 17, 4242):
        a, _ = train_ds[i]
        assert torch.equal(a, train_ds[i][0])
        assert torch.equal(a, again[i][0])
        assert not torch.equal(a, other[i][0])
        assert train_ds.object_box(i) != other.object_box(i)
    assert not torch.equal(train_ds[0][0], train_ds[1][0])


def test_access_order_independence(train_ds):
    idx = [5, 3, 900, 0, 77, 3]
    fresh = ClutteredFashionMNIST(split="train", seed=0)
    forward = {i: train_ds[i][0] for i in idx}
    backward = {i: fresh[i][0] for i in reversed(idx)}
    for i in idx:
        assert torch.equal(forward[i], backward[i])


def test_dataloader_workers_match_direct_access():
    ds = ClutteredFashionMNIST(split="test", seed=3, num_samples=12, canvas_size=64, object_scale=(0.4, 0.6))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    imgs, labels = zip(*loader)
    imgs, labels = torch.cat(imgs), torch.cat(labels)
    for i in range(12):
        assert torch.equal(imgs[i], ds[i][0]) and labels[i].item() == ds[i][1]


def test_pickle_drops_arrays_and_reproduces():
    ds = ClutteredFashionMNIST(split="test", seed=2, num_samples=10)
    blob = pickle.dumps(ds)
    assert len(blob) < 100_000  # the 10000x28x28 images are not shipped to workers
    ds2 = pickle.loads(blob)
    assert torch.equal(ds2[7][0], ds[7][0])


@pytest.mark.parametrize("split", ["train", "test"])
def test_object_is_the_right_split_item(split):
    """Without clutter the box holds exactly the PIL-resized split item and nothing is outside it."""
    x, y = load_fashion_mnist(split)
    other, _ = load_fashion_mnist("test" if split == "train" else "train")
    ds = ClutteredFashionMNIST(split=split, seed=5, num_clutter=0, normalize=False)
    for i in (0, 1, 123):
        raw = ds.render(i)
        img, label = ds[i]
        assert label == y[i]
        np.testing.assert_allclose(img[0].numpy(), raw / 255.0, atol=1e-6)
        x0, y0, x1, y1 = box_pixels(ds, i)
        s = x1 - x0
        assert y1 - y0 == s
        inside = raw[y0:y1, x0:x1]
        np.testing.assert_allclose(inside, pil_resize(x[i], s), atol=1.5)
        assert np.abs(inside - pil_resize(other[i], s)).mean() > 10  # not the other split's item
        outside = raw.copy()
        outside[y0:y1, x0:x1] = 0
        assert outside.max() == 0


def test_object_box_geometry_and_bright_mass(train_ds):
    lo, hi = train_ds.object_scale
    S = train_ds.canvas_size
    ratios = []
    for i in range(40):
        x0, y0, x1, y1 = train_ds.object_box(i)
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
        side = x1 - x0
        assert y1 - y0 == pytest.approx(side)
        assert lo - 1 / S <= side <= hi + 1 / S
        raw = train_ds.render(i)
        px0, py0, px1, py1 = box_pixels(train_ds, i)
        inside = raw[py0:py1, px0:px1]
        mask = np.ones_like(raw, dtype=bool)
        mask[py0:py1, px0:px1] = False
        ratios.append(inside.mean() / max(raw[mask].mean(), 1e-3))
        # with clutter the box still contains the (max-pasted) object
        resized = pil_resize(load_fashion_mnist("train")[0][i], px1 - px0)
        assert np.all(inside >= resized - 1.5)
    assert np.median(ratios) > 10  # the object's bright mass sits in the box


def test_object_box_does_not_depend_on_clutter_args():
    a = ClutteredFashionMNIST(split="test", seed=9, num_clutter=0)
    b = ClutteredFashionMNIST(split="test", seed=9, num_clutter=20, clutter_size=0.2)
    assert [a.object_box(i) for i in range(10)] == [b.object_box(i) for i in range(10)]


def test_clutter_is_present(train_ds):
    n_with_clutter = 0
    for i in range(20):
        raw = train_ds.render(i)
        x0, y0, x1, y1 = box_pixels(train_ds, i)
        raw[y0:y1, x0:x1] = 0
        n_with_clutter += (raw > 0).sum() > 50
    assert n_with_clutter >= 18


def test_value_range_and_normalization():
    norm = ClutteredFashionMNIST(split="test", seed=1, num_samples=5, normalize=True)
    unit = ClutteredFashionMNIST(split="test", seed=1, num_samples=5)  # default: [0, 1]
    for i in range(5):
        a, b = norm[i][0], unit[i][0]
        assert a.min() >= -1.0 and a.max() <= 1.0 and a.min() == -1.0  # background is -1
        assert b.min() >= 0.0 and b.max() <= 1.0 and b.min() == 0.0
        assert b.max() > 0.5
        torch.testing.assert_close(a, b * 2 - 1, atol=1e-6, rtol=0)


def test_channels_3():
    ds1 = ClutteredFashionMNIST(split="test", num_samples=3)
    ds3 = ClutteredFashionMNIST(split="test", num_samples=3, channels=3)
    img, _ = ds3[2]
    assert img.shape == (3, 224, 224) and img.is_contiguous()
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    assert torch.equal(img[:1], ds1[2][0])


def test_num_samples_cycles_split():
    ds = ClutteredFashionMNIST(split="test", num_samples=10005, canvas_size=64, object_scale=(0.4, 0.5))
    _, y = load_fashion_mnist("test")
    assert len(ds) == 10005 and len(ds.targets) == 10005
    assert ds[10003][1] == y[3] == ds.targets[10003]
    assert not torch.equal(ds[10003][0], ds[3][0])  # same garment, new placement / clutter
    small = ClutteredFashionMNIST(split="test", num_samples=4)
    assert len(small) == 4 and torch.equal(small[3][0], ClutteredFashionMNIST(split="test")[3][0])


def test_custom_canvas():
    ds = ClutteredFashionMNIST(split="test", canvas_size=96, object_scale=(0.5, 0.5), num_clutter=3,
                               clutter_size=0.1, num_samples=2)
    img, _ = ds[0]
    assert img.shape == (1, 96, 96)
    x0, y0, x1, y1 = ds.object_box(0)
    assert x1 - x0 == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------
# Clutter source, checked exactly on a synthetic root
# --------------------------------------------------------------------------------------------


def test_clutter_comes_from_other_items(tmp_path):
    """Two flat items (100 and 200): the object is one, every clutter pixel must be the other."""
    imgs = np.stack([np.full((28, 28), 100, np.uint8), np.full((28, 28), 200, np.uint8)])
    root = write_fake_fmnist(tmp_path, imgs, np.array([3, 7]), gz=True)
    ds = ClutteredFashionMNIST(root=root, canvas_size=64, object_scale=(0.2, 0.3), num_clutter=10,
                               clutter_size=0.15, num_samples=6, normalize=False)
    assert ds.targets.tolist() == [3, 7] * 3
    clutter_over_object = 0
    for i in range(6):
        obj_val, clutter_val = (100.0, 200.0) if i % 2 == 0 else (200.0, 100.0)
        raw = ds.render(i)
        x0, y0, x1, y1 = box_pixels(ds, i)
        inside = raw[y0:y1, x0:x1]
        np.testing.assert_allclose(np.minimum(inside, obj_val), obj_val, atol=1e-3)  # object fills its box
        outside = raw.copy()
        outside[y0:y1, x0:x1] = 0
        vals = np.unique(np.round(outside, 3))
        assert set(vals.tolist()) <= {0.0, clutter_val}
        assert clutter_val in vals.tolist()
        assert ds[i][1] == (3 if i % 2 == 0 else 7)
        if obj_val == 100.0:
            clutter_over_object += int((np.abs(inside - 200.0) < 1e-3).sum())
    assert clutter_over_object > 0  # pasting takes the max: brighter clutter shows through the object


def test_train_and_test_use_different_streams():
    """Same seed and index, different split: different rng stream (split_id), so different layout."""
    tr = ClutteredFashionMNIST(split="train", seed=0)
    te = ClutteredFashionMNIST(split="test", seed=0)
    assert sum(tr.object_box(i) != te.object_box(i) for i in range(10)) >= 9


def test_single_item_split_rejects_clutter(tmp_path):
    root = write_fake_fmnist(tmp_path, np.zeros((1, 28, 28), np.uint8), np.array([0]))
    with pytest.raises(ValueError, match="2 items"):
        ClutteredFashionMNIST(root=root, num_clutter=1)
    ds = ClutteredFashionMNIST(root=root, num_clutter=0, num_samples=3)
    assert len(ds) == 3 and ds[2][0].shape == (1, 224, 224)


# --------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        write_fake_fmnist(root, rng.integers(0, 256, (4, 28, 28)), np.arange(4), split=split)
    return str(root)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(canvas_size=20), "too small"),
        (dict(canvas_size=40, object_scale=(0.1, 0.5)), "too small"),
        (dict(canvas_size=0), "canvas_size"),
        (dict(object_scale=(0.0, 0.3)), "object_scale"),
        (dict(object_scale=(0.5, 1.5)), "object_scale"),
        (dict(object_scale=(0.4, 0.2)), "object_scale"),
        (dict(object_scale=0.3), "object_scale"),
        (dict(num_clutter=-1), "num_clutter"),
        (dict(clutter_size=0.0), "clutter_size"),
        (dict(clutter_size=1.5), "clutter_size"),
        (dict(canvas_size=224, clutter_size=0.001), "clutter"),
        (dict(channels=2), "channels"),
        (dict(num_samples=-3), "num_samples"),
        (dict(split="val"), "split"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_args(tiny_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClutteredFashionMNIST(root=tiny_root, **kwargs)


def test_fashion_mnist_dataset_bad_args(tiny_root):
    with pytest.raises(ValueError, match="channels"):
        FashionMNISTDataset(root=tiny_root, channels=4)
    with pytest.raises(ValueError, match="split"):
        FashionMNISTDataset(split="dev", root=tiny_root)


# --------------------------------------------------------------------------------------------
# create_dataset
# --------------------------------------------------------------------------------------------


def test_create_dataset_local(tiny_root):
    ds = create_dataset("cluttered_fmnist", tiny_root, "train", canvas_size=64, object_scale=(0.3, 0.4),
                        num_clutter=2, num_samples=5, seed=4, channels=3, is_training=True, batch_size=8)
    assert isinstance(ds, ClutteredFashionMNIST)
    assert (ds.canvas_size, ds.num_clutter, len(ds), ds.seed, ds.channels) == (64, 2, 5, 4, 3)
    assert ds[0][0].shape == (3, 64, 64)
    val = create_dataset("cluttered_fmnist", tiny_root, "validation")
    assert val.split == "test"

    fm = create_dataset("fashion_mnist", tiny_root, "test")
    assert isinstance(fm, FashionMNISTDataset) and len(fm) == 4
    img, label = fm[1]
    x, y = load_fashion_mnist("test", tiny_root)
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32 and label == y[1]
    torch.testing.assert_close(img[0], torch.from_numpy(x[1] / 255.0).float(), atol=1e-6, rtol=0)

    with pytest.raises(TypeError, match="canvas_size"):
        create_dataset("fashion_mnist", tiny_root, "test", canvas_size=64)


def test_create_dataset_folder_via_timm(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "train" / cls / f"{k}.png")
    for name in ("", "folder", "imagefolder"):
        ds = create_dataset(name, str(tmp_path), "train")
        assert len(ds) == 4
        img, label = ds[3]
        assert isinstance(img, Image.Image) and img.size == (16, 12) and label == 1
    tf = lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255  # noqa: E731
    img, label = create_dataset("folder", str(tmp_path), "train", transform=tf)[0]
    assert isinstance(img, torch.Tensor) and img.shape == (3, 12, 16) and label == 0


def test_create_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        create_dataset("imagenet-9000", str(tmp_path), "train")
    with pytest.raises(ValueError, match="root"):
        create_dataset("folder", None, "train")
    with pytest.raises(FileNotFoundError):
        create_dataset("folder", str(tmp_path / "missing"), "train")
    with pytest.raises(ValueError, match="split"):
        create_dataset("cluttered_fmnist", str(tmp_path), "dev")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        create_dataset("cluttered_fmnist", str(tmp_path), "train")


# --------------------------------------------------------------------------------------------
# the dataset registry
# --------------------------------------------------------------------------------------------
from dartok.data import (  # noqa: E402
    DataConfig,
    build_dataset,
    dataset_info,
    list_datasets,
    register_dataset,
    unregister_dataset,
)


class ToyBars(torch.utils.data.Dataset):
    """3 classes: a bright bar at the top, middle or bottom of a 16x16 image (label = row band)."""

    classes = None  # the registry's num_classes tells

    def __init__(self, split, num_samples=None, channels=1):
        n = num_samples if num_samples is not None else (48 if split == "train" else 12)
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.noise = 0.1 * torch.rand(n, channels, 16, 16, generator=g)
        self.split, self.channels = split, channels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.noise[i].clone()
        y = int(self.labels[i])
        x[:, 5 * y:5 * y + 5, :] += 1.0
        return x, y


@pytest.fixture
def toy_bars():
    info = register_dataset("toy_bars", lambda root, split, **kw: ToyBars(split, **kw), num_classes=3, in_chans=1,
                            sized=True, accepts={"num_samples", "channels"}, description="test dataset")
    yield info
    unregister_dataset("toy_bars")


def test_registry_lists_the_builtin_datasets():
    assert {"cluttered_fmnist", "fashion_mnist", "moving_fmnist", "moving_cluttered_fmnist", "video_folder",
            "ssv2"} <= set(list_datasets())
    assert set(list_datasets(video=True)) >= {"moving_fmnist", "moving_cluttered_fmnist", "video_folder", "ssv2"}
    assert "fashion_mnist" not in list_datasets(video=True)
    assert set(list_datasets(canvas=True)) == {"cluttered_fmnist", "cluttered_fmnist_seg", "moving_fmnist",
                                               "moving_cluttered_fmnist"}
    assert set(list_datasets(task="segmentation")) == {"cluttered_fmnist_seg", "seg_folder"}
    info = dataset_info("Cluttered_FMNIST ")
    assert info.name == "cluttered_fmnist" and info.num_classes == 10 and info.in_chans == 1 and info.canvas
    assert info.task == "classification" and info.tensors and not info.video
    timm_info = dataset_info("torch/cifar10")
    assert not timm_info.registered and not timm_info.tensors and timm_info.in_chans == 3
    assert not dataset_info("folder").registered
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*cluttered_fmnist"):
        dataset_info("nope")


def test_register_dataset_errors(toy_bars):
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy_bars", ToyBars)
    with pytest.raises(ValueError, match="timm owns"):
        register_dataset("torch/mine", ToyBars)
    with pytest.raises(ValueError, match="timm owns"):
        register_dataset("folder", ToyBars)
    with pytest.raises(TypeError, match="callable"):
        register_dataset("toy_other", 3)
    with pytest.raises(ValueError, match="in_chans"):
        register_dataset("toy_other", ToyBars, in_chans=2)
    assert "toy_other" not in list_datasets()
    # replacing is explicit
    register_dataset("toy_bars", lambda root, split, **kw: ToyBars(split, **kw), num_classes=3, overwrite=True)
    assert dataset_info("toy_bars").num_classes == 3


def test_registered_dataset_is_created_and_built_by_name(toy_bars):
    # timm-only kwargs and None values are dropped
    ds = create_dataset("toy_bars", None, "train", num_samples=5, is_training=True, channels=None)
    assert len(ds) == 5 and ds[0][0].shape == (1, 16, 16)
    with pytest.raises(TypeError, match="unexpected kwargs \\['canvas_size'\\]"):
        create_dataset("toy_bars", None, "train", canvas_size=3)
    # a run's options: channels from in_chans, num_samples passed on (sized), canvas_size refused
    ds = build_dataset(DataConfig(data="toy_bars", in_chans=3), "test", num_samples=4)
    assert len(ds) == 4 and ds[0][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="canvas_size only applies to"):
        build_dataset(DataConfig(data="toy_bars", canvas_size=32), "train")


def test_registered_dataset_trains_without_other_edits(toy_bars, tmp_path):
    """A dataset registered here is usable by train() and 'dartok eval' with no other module edited."""
    from dartok.engine import train
    from dartok.train import evaluate_checkpoint

    res = train(model="vit_micro_patch8", num_tokens=4, model_kwargs={"depth": 1}, data="toy_bars",
                train_samples=16, test_samples=8, epochs=1, warmup_epochs=0, batch_size=8, progress=False,
                output=str(tmp_path / "run"))
    model = res["model"]
    assert model.num_classes == 3 and res["test"]["n"] == 8 and res["task"] == "classification"
    from dartok.checkpoint import load_config

    cfg = load_config(tmp_path / "run" / "checkpoint")
    assert cfg["data"]["name"] == "toy_bars" and cfg["data"]["num_classes"] == 3 and cfg["data"]["in_chans"] == 1
    assert cfg["task"] == "classification" and cfg["best_metric"] == "top1" and "best_top1" in cfg
    out = evaluate_checkpoint(tmp_path / "run" / "checkpoint", "test", device="cpu")
    assert out["data"] == "toy_bars" and out["n"] == 8 and out["top1"] == pytest.approx(res["test"]["top1"])


def test_data_config_from_checkpoint():
    config = {"model": "m", "model_kwargs": {"in_chans": 3},
              "data": {"name": "cluttered_fmnist", "root": "/r", "canvas_size": 64, "kwargs": {"num_clutter": 2},
                       "seed": 5}}
    d = DataConfig.from_checkpoint(config, num_samples=7)
    assert (d.data, d.data_root, d.canvas_size, d.data_kwargs, d.data_seed, d.in_chans) == (
        "cluttered_fmnist", "/r", 64, {"num_clutter": 2}, 5, 3)
    assert d.train_samples == d.test_samples == 7
    # another dataset starts from its own defaults; explicit overrides win
    d = DataConfig.from_checkpoint(config, data="fashion_mnist", data_seed=1)
    assert (d.data, d.data_root, d.canvas_size, d.data_kwargs, d.data_seed) == ("fashion_mnist", None, None, {}, 1)
    d = DataConfig.from_checkpoint(config, data_root="/other", canvas_size=32)
    assert (d.data_root, d.canvas_size) == ("/other", 32)
