"""Shot noise's samplers (robustlab.corruptions.fast.shot_noise): the inverse-CDF table sampler for
8-bit images and the ``torch.poisson`` fallback for any other image must both draw Poisson(c x) per
value, image i from ``seeds[i]`` only.

Distribution tests use fixed seeds (deterministic) and large samples; each goodness-of-fit test
also checks that it rejects a slightly wrong rate on the same data, so it can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from robustlab.corruptions.fast.shot_noise import LEVELS, cdf_tables, level_values, poisson_photons

N_IMAGES = 48  # x 3 x 32 x 32 = 147,456 draws per constant image set


def _constant(level: float, n: int = N_IMAGES, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full((n, 3, 32, 32), float(level), dtype=torch.float64).to(dtype)


def _counts(y: torch.Tensor, c: float) -> np.ndarray:
    """Observed counts min(n, c) from outputs clip(n / c, 0, 1) (exact for integer c)."""
    return np.rint(y.double().numpy().ravel() * c).astype(np.int64)


def _chi2_p(counts: np.ndarray, lam: float, c: float) -> float:
    """p-value of a chi-square test of min(n, c) against Poisson(lam) clipped at c (integer c):
    single values 0, 1, ..., c - 1 and the clip bin n >= c, neighbours merged from the left until
    each bin expects at least 20 draws."""
    cap = int(c)
    probs_all = np.append(stats.poisson.pmf(np.arange(cap), lam), stats.poisson.sf(cap - 1, lam))
    observed_all = np.bincount(np.minimum(counts, cap), minlength=cap + 1)
    need = 20.0 / counts.size
    probs: list[float] = []
    observed: list[int] = []
    p_acc, o_acc = 0.0, 0
    for p_n, o_n in zip(probs_all, observed_all):
        p_acc, o_acc = p_acc + float(p_n), o_acc + int(o_n)
        if p_acc >= need:
            probs.append(p_acc)
            observed.append(o_acc)
            p_acc, o_acc = 0.0, 0
    probs[-1] += p_acc
    observed[-1] += o_acc
    assert len(probs) >= 2, "too few bins to test"
    expected = np.array(probs) * counts.size
    chi2 = float(((np.array(observed) - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(chi2, df=len(probs) - 1))


@pytest.mark.parametrize(
    ("c", "level", "wrong"),
    [(3.0, 1, 1.2), (5.0, 40, 1.05), (60.0, 51, 1.02), (100.0, 200, 1.01), (500.0, 128, 1.01), (500.0, 255, 1.01)],
)
def test_table_sampler_matches_poisson_pmf(c: float, level: int, wrong: float) -> None:
    """Rates 0.0118 (tiny), 0.78, 12, 78, 251 and 500 (clipped at c, like the corruption)."""
    x = _constant(level / 255)
    lam = float(np.float64(np.float32(level / 255))) * c
    counts = _counts(poisson_photons(x, c, list(range(1000, 1000 + N_IMAGES))), c)
    assert _chi2_p(counts, lam, c) > 1e-3
    assert _chi2_p(counts, lam * wrong, c) < 1e-6, "the test cannot tell a 1-20% wrong rate apart"


def test_fallback_for_values_off_the_8bit_grid() -> None:
    """0.5 is not k / 255: exact Poisson(250) through torch.poisson, not snapped to 127 or 128."""
    c = 500.0
    counts = _counts(poisson_photons(_constant(0.5), c, list(range(N_IMAGES))), c)
    assert _chi2_p(counts, 250.0, c) > 1e-3
    assert _chi2_p(counts, 500.0 * 127 / 255, c) < 1e-6 and _chi2_p(counts, 500.0 * 128 / 255, c) < 1e-6


def test_near_grid_values_are_not_snapped() -> None:
    """One value 1e-4 off the grid sends the image to the exact fallback, at its own rate."""
    c = 500.0
    x = _constant(100 / 255, n=16)
    x[:, 0, 0, 0] += 1e-4
    y = poisson_photons(x, c, list(range(16)))
    z = poisson_photons(_constant(100 / 255, n=16), c, list(range(16)))
    assert not torch.equal(y[:, 1:], z[:, 1:]), "an off-grid image must not take the table path"
    counts = _counts(y, c)
    assert _chi2_p(counts, float(np.float32(100 / 255)) * c, c) > 1e-3


@pytest.mark.parametrize("c", [500.0, 60.0])
def test_per_level_mean_and_variance(c: float) -> None:
    """Every 8-bit level k whose rate c k / 255 is at most c / 2 (clipping negligible): sample mean
    and variance of the counts within 5 standard errors of the rate (Poisson: mean = var)."""
    levels = torch.arange(LEVELS, dtype=torch.float32).repeat(12)[: 3 * 32 * 32].reshape(3, 32, 32)
    x = (levels / 255).expand(96, -1, -1, -1).contiguous()
    counts = _counts(poisson_photons(x, c, list(range(96))), c).reshape(96, -1)
    lv = levels.reshape(-1).long().numpy()
    rates = level_values(torch.float32).double().numpy() * c
    assert counts[:, lv == 0].max() == 0
    for k in range(1, LEVELS):
        lam = rates[k]
        if lam > c / 2:
            continue
        got = counts[:, lv == k].ravel()
        m = got.size
        assert abs(got.mean() - lam) < 5 * np.sqrt(lam / m), f"level {k}: mean {got.mean():.4f} vs rate {lam:.4f}"
        assert abs(got.var(ddof=1) - lam) < 5 * np.sqrt((lam + 2 * lam**2) / m), f"level {k}: variance {got.var():.4f} vs {lam:.4f}"


def test_stream_is_the_inverse_cdf_of_each_images_uniforms() -> None:
    """8-bit images: pixel j of image i is F^-1(u_j) with u = torch.rand(C, H, W, float64) from a
    generator seeded with seeds[i] (scipy's Poisson quantile function as the oracle)."""
    c = 100.0
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (3, 3, 16, 16), generator=g).float() / 255
    seeds = [7, 123456789, 2**62 + 3]
    y = poisson_photons(x, c, seeds)
    for i, s in enumerate(seeds):
        u = torch.rand((3, 16, 16), generator=torch.Generator().manual_seed(s), dtype=torch.float64).numpy()
        n = stats.poisson.ppf(u, x[i].double().numpy() * c)
        want = torch.from_numpy(np.minimum(n / c, 1.0)).float()
        torch.testing.assert_close(y[i], want, atol=0, rtol=0)


def test_batch_composition_never_changes_an_image() -> None:
    """A batch mixing 8-bit and off-grid images gives every image the values it gets alone."""
    g = torch.Generator().manual_seed(3)
    grid = torch.randint(0, 256, (4, 3, 8, 8), generator=g).float() / 255
    x = torch.cat([grid[:2], torch.rand(1, 3, 8, 8, generator=g), grid[2:]])
    seeds = [11, 12, 13, 14, 15]
    for c in (500.0, 3.0):
        y = poisson_photons(x, c, seeds)
        alone = torch.cat([poisson_photons(x[i : i + 1], c, [seeds[i]]) for i in range(5)])
        torch.testing.assert_close(y, alone, atol=0, rtol=0)
        torch.testing.assert_close(poisson_photons(x, c, seeds), y, atol=0, rtol=0)
        assert not torch.equal(poisson_photons(x, c, [21, 22, 23, 24, 25]), y)


def test_cdf_tables_are_exact_poisson_cdfs() -> None:
    for c in (500.0, 60.0, 3.0):
        cdf, values, guide, spans = cdf_tables(c, torch.float32)
        assert cdf.shape[0] == LEVELS and values.shape == (cdf.shape[1],)
        assert np.all(np.diff(cdf, axis=1) >= 0) and np.all(cdf[:, -1] == 1.0)
        assert np.all(cdf * 2.0**53 == np.floor(cdf * 2.0**53)), "entries must sit on the uniforms' 2^-53 grid"
        rates = level_values(torch.float32).double().numpy() * c
        n = np.arange(cdf.shape[1])
        for k in (1, 17, 128, 255):
            ref = stats.poisson.cdf(n, rates[k])
            assert np.abs(cdf[k] - ref).max() < 1e-14
            last = int(np.argmax(cdf[k] >= 1.0))
            assert stats.poisson.sf(last, rates[k]) <= 2.0**-53, "mass above the table must be below float64 rounding"
        assert (guide < 0).sum() == len(spans)


def test_uniforms_are_53_bit() -> None:
    """The exactness argument needs torch.rand(float64) on the 2^-53 grid (and below 1)."""
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    assert np.all(u * 2.0**53 == np.floor(u * 2.0**53)) and u.max() < 1.0


def test_float64_and_float16_inputs() -> None:
    for dtype in (torch.float64, torch.float16):
        x = _constant(77 / 255, n=24, dtype=dtype)
        y = poisson_photons(x, 60.0, list(range(24)))
        assert y.dtype == dtype and y.shape == x.shape
        lam = float(x[0, 0, 0, 0].double()) * 60.0
        assert _chi2_p(_counts(y.double(), 60.0), lam, 60.0) > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_results_equal_cpu() -> None:
    x = torch.randint(0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(0)).float() / 255
    x[5] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    seeds = list(range(6))
    cpu = poisson_photons(x, 500.0, seeds)
    dev = poisson_photons(x.to("cuda"), 500.0, seeds)
    assert dev.device.type == "cuda"
    torch.testing.assert_close(dev.cpu(), cpu, atol=0, rtol=0)
