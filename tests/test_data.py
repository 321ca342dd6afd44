import numpy as np
import pytest
import torch

from robustlab.data import load_dataset
from robustlab.errors import DataError, UnknownNameError


def test_digits_splits_fixed_and_disjoint():
    parts = {s: load_dataset("digits", split=s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1293, 144, 360]
    ids = [set(p.ids) for p in parts.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert load_dataset("digits").ids == parts["test"].ids  # stable
    x = parts["test"].images()
    assert x.shape[1:] == (1, 8, 8) and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("name,shape", [("cifar10", (3, 32, 32)), ("cifar100", (3, 32, 32)), ("mnist", (1, 28, 28)), ("fashion-mnist", (1, 28, 28)), ("imagenet", (3, 224, 224))])
def test_foolbox_samples(name, shape):
    d = load_dataset(f"samples:{name}")
    assert len(d) == 20 and d.images().shape[1:] == shape
    assert int(d.y.max()) < len(d.classes)


def test_samples_match_shared_cifar(cifar_data):
    d = load_dataset("samples:cifar10")
    assert torch.equal((d.images() * 255).round(), (cifar_data.images()[:20] * 255).round())
    assert torch.equal(d.y, cifar_data.y[:20])


def test_npz_layouts(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    y = np.arange(6) % 3
    np.savez(tmp_path / "a.npz", x=x, y=y)
    d = load_dataset(f"npz:{tmp_path / 'a.npz'}")
    assert d.images().shape == (6, 3, 5, 4)
    assert torch.allclose(d.images()[1, 2], torch.from_numpy(x[1, :, :, 2] / 255.0).float())
    np.savez(tmp_path / "b.npz", images=x)
    with pytest.raises(DataError, match="needs arrays"):
        load_dataset(f"npz:{tmp_path / 'b.npz'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


def test_folder_plugin(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path}")
    assert d.classes == ["cat", "dog"] and len(d) == 6 and d.x is None
    assert d.images([0, 5]).shape == (2, 3, 16, 16)
    assert d.y.tolist() == [0, 0, 0, 1, 1, 1]
    sub = d.subset([4, 1])
    assert sub.ids == [d.ids[4], d.ids[1]] and torch.equal(sub.images(), d.images([4, 1]))


def test_torchvision_sets_need_root_or_download(tmp_path):
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10", root=tmp_path)


def test_unknown_data_spec_suggests():
    with pytest.raises(UnknownNameError, match="digits"):
        load_dataset("digit")
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset("samples:cifar11")


def test_bounds_mapping():
    d = load_dataset("digits").limit(4)
    m = d.to_bounds((0.0, 255.0))
    assert torch.allclose(m.images(), d.images() * 255)
