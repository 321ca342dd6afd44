"""Contract tests of every fast corruption and of the engine: shape, dtype, range, device, per-image
seeding (batch size never changes results), determinism, and the size/channel protocol."""

from __future__ import annotations

import pytest
import torch

from robustlab.corruptions.engine import Backend, check_name, corrupt, corruption_seeds
from robustlab.corruptions.protocol import Geometry, from_working, to_working, upscale_factor
from robustlab.corruptions.registry import ALL, FAST_CORRUPTIONS
from robustlab.errors import SuiteError, UnknownNameError

DETERMINISTIC = {"brightness", "contrast", "saturate", "defocus_blur", "gaussian_blur", "zoom_blur", "pixelate", "jpeg_compression"}


def _images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, c, max(h // 4, 2), max(w // 4, 2), generator=g), size=(h, w), mode="bilinear", align_corners=False)
    return (x * 255).round() / 255


def test_all_nineteen_registered() -> None:
    assert sorted(FAST_CORRUPTIONS.names()) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_contract(name: str) -> None:
    fn = FAST_CORRUPTIONS.get(name)
    x = _images(4, 3, 32, 32)
    seeds = [11, 12, 13, 14]
    y = fn(x, 3, seeds)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert float((y - x).abs().mean()) > 1e-3, "the corruption changed nothing"
    torch.testing.assert_close(fn(x, 3, seeds), y)  # same seeds, same images
    single = torch.cat([fn(x[i : i + 1], 3, [seeds[i]]) for i in range(4)])
    torch.testing.assert_close(single, y, atol=1e-5, rtol=0)  # batch size never changes results
    if name not in DETERMINISTIC:
        assert not torch.equal(fn(x, 3, [21, 22, 23, 24]), y), "other seeds should give other images"


@pytest.mark.parametrize("name", ALL)
def test_severity_grows(name: str) -> None:
    x = _images(4, 3, 32, 32, seed=1)
    seeds = [1, 2, 3, 4]
    d1 = float((corrupt(x, name, 1, seeds) - x).abs().mean())
    d5 = float((corrupt(x, name, 5, seeds) - x).abs().mean())
    assert d5 > d1 * 0.9 or name == "saturate", f"{name}: severity 5 perturbs less ({d5:.4f}) than severity 1 ({d1:.4f})"


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 20, 50), (2, 1, 33, 47), (1, 3, 64, 40)])
@pytest.mark.parametrize("name", ALL)
def test_engine_sizes_and_grey(shape: tuple[int, int, int, int], name: str) -> None:
    x = _images(*shape)
    y = corrupt(x, name, 2, list(range(shape[0])))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_protocol_round_trip_and_rules() -> None:
    assert upscale_factor(8, 8) == 4 and upscale_factor(32, 32) == 1 and upscale_factor(20, 50) == 2 and upscale_factor(31, 100) == 2
    x = torch.rand(2, 1, 8, 10)
    w, geom = to_working(x)
    assert w.shape == (2, 3, 32, 40) and geom == Geometry(channels=1, factor=4)
    torch.testing.assert_close(from_working(w, "contrast", geom), x)  # identity corruption comes back exactly
    noisy = w.clone()
    noisy[:, 1:] = 0.0  # channels differ: noise keeps channel 0, others use luma
    torch.testing.assert_close(from_working(noisy, "gaussian_noise", geom), x)
    torch.testing.assert_close(from_working(noisy, "frost", geom), 0.299 * x)


def test_grey_noise_keeps_its_strength() -> None:
    x = torch.full((8, 1, 32, 32), 0.5)
    y = corrupt(x, "gaussian_noise", 1, list(range(8)))
    assert abs(float((y - x).std()) - 0.08) < 0.004  # sigma of severity 1, not weakened by luma


def test_seeds_depend_on_sample_corruption_severity() -> None:
    ids = ["a", "b"]
    s = corruption_seeds(0, "fog", 3, ids)
    assert s == corruption_seeds(0, "fog", 3, ids)
    assert corruption_seeds(0, "fog", 3, ["b"]) == s[1:]
    assert s != corruption_seeds(0, "fog", 4, ids) and s != corruption_seeds(0, "snow", 3, ids) and s != corruption_seeds(1, "fog", 3, ids)


def test_engine_errors() -> None:
    with pytest.raises(UnknownNameError, match="gaussian_noise"):
        check_name("gausian_noise")
    with pytest.raises(SuiteError, match="severity"):
        corrupt(torch.rand(1, 3, 32, 32), "fog", 0, [0])
    with pytest.raises(SuiteError, match="backend"):
        Backend.parse("gpu")
    with pytest.raises(ValueError, match="one seed per image"):
        corrupt(torch.rand(2, 3, 32, 32), "fog", 1, [0])


def test_reference_backend_through_engine() -> None:
    x = _images(2, 3, 32, 32)
    a = corrupt(x, "contrast", 2, [0, 1], backend=Backend.REFERENCE)
    b = corrupt(x, "contrast", 2, [0, 1], backend="fast")
    assert float((a - b).abs().max()) <= 1.0 / 255 + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_jpeg_compression_on_a_gpu_runs_libjpeg_and_matches_the_cpu_bit_for_bit():
    # torchvision's CUDA encoder (nvJPEG) leaves the bytes on the GPU and its decoder then refused
    # them ("Input list must contain tensors on CPU"): the corruption check failed on every GPU run.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    seeds = list(range(6))
    for severity in range(1, 6):
        cpu = corrupt(x, "jpeg_compression", severity, seeds)
        gpu = corrupt(x.cuda(), "jpeg_compression", severity, seeds)
        assert gpu.device.type == "cuda"
        assert torch.equal(gpu.cpu(), cpu)
