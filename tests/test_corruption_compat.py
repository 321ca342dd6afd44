"""The compatibility layer that makes imagecorruptions 1.1.2 work on numpy 2 / current scikit-image /
setuptools without pkg_resources, and the reference backend built on it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from robustlab.corruptions.compat import REFERENCE_NAMES, load_imagecorruptions
from robustlab.corruptions.reference import reference_corrupt
from robustlab.corruptions.registry import ALL


def test_reference_names_match_registry_and_upstream() -> None:
    ic = load_imagecorruptions()
    assert tuple(ic.get_corruption_names("all")) == REFERENCE_NAMES
    assert set(REFERENCE_NAMES) == set(ALL)


def test_no_global_side_effects() -> None:
    load_imagecorruptions()
    assert not hasattr(np, "float_")  # numpy 2 has no float_; the alias lives only in the module
    try:
        import pkg_resources  # noqa: F401
        has_real = True
    except ImportError:
        has_real = False
    assert has_real or "pkg_resources" not in sys.modules
    from skimage.filters import gaussian

    with pytest.raises(TypeError):
        gaussian(np.zeros((4, 4, 3)), sigma=1, multichannel=True)  # the real function is untouched


def test_frost_images_resolve() -> None:
    import os

    mod = sys.modules["imagecorruptions.corruptions"] if "imagecorruptions.corruptions" in sys.modules else None
    if mod is None:
        load_imagecorruptions()
        mod = sys.modules["imagecorruptions.corruptions"]
    for f in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"):
        assert os.path.isfile(mod.resource_filename(mod.__name__, f"./frost/{f}"))


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_every_reference_corruption_runs_and_is_seeded(name: str) -> None:
    ic = load_imagecorruptions()
    img = (np.random.default_rng(1).random((32, 36, 3)) * 255).astype(np.uint8)
    outs = []
    for sev in (1, 5):
        np.random.seed(7)
        a = ic.corrupt(img, severity=sev, corruption_name=name)
        np.random.seed(7)
        b = ic.corrupt(img, severity=sev, corruption_name=name)
        assert a.shape == img.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)  # reproducible under np.random.seed (impulse_noise needed the rng fix)
        outs.append(a)
    assert not np.array_equal(outs[0], img) or not np.array_equal(outs[1], img)


def test_reference_backend_seeds_and_restores_global_state() -> None:
    x = torch.rand(3, 3, 32, 32)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = reference_corrupt(x, "gaussian_noise", 3, [1, 2, 3])
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    b = reference_corrupt(x[1:2], "gaussian_noise", 3, [2])
    torch.testing.assert_close(a[1:2], b)  # per-image seeding: the batch does not matter
    c = reference_corrupt(x, "gaussian_noise", 3, [4, 5, 6])
    assert not torch.equal(a, c)


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (1, 3, 20, 50), (1, 1, 40, 33)])
@pytest.mark.parametrize("name", ["gaussian_noise", "frost", "spatter", "motion_blur", "pixelate"])
def test_reference_handles_small_grey_nonsquare(shape: tuple[int, ...], name: str) -> None:
    x = torch.rand(shape)
    y = reference_corrupt(x, name, 2, list(range(shape[0])))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_reference_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown corruption"):
        reference_corrupt(torch.rand(1, 3, 32, 32), "gaussian_nois", 1, [0])
    with pytest.raises(ValueError, match="severity"):
        reference_corrupt(torch.rand(1, 3, 32, 32), "gaussian_noise", 6, [0])
    with pytest.raises(ValueError, match="one seed per image"):
        reference_corrupt(torch.rand(2, 3, 32, 32), "gaussian_noise", 1, [0])
