"""Shared tensor operations of the fast corruption backend (not a corruption itself).

Everything here works on float tensors on any device and mirrors the numerics of the library the
reference uses for the same step (scipy.ndimage, OpenCV, scikit-image), as stated per function.
Images are (N, C, H, W); kernels are built in float64 on the CPU and moved to the input's device.

References: scipy.ndimage (gaussian_filter1d, zoom, boundary modes), OpenCV (filter2D border
BORDER_REFLECT_101, getGaussianKernel), scikit-image (rgb2hsv / hsv2rgb).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F

#: Boundary modes, named as in scipy.ndimage: ``reflect`` (d c b a | a b c d, half-sample
#: symmetric; OpenCV BORDER_REFLECT), ``mirror`` (d c b | a b c d, OpenCV BORDER_REFLECT_101,
#: torch ``reflect``), ``nearest`` (a a | a b; OpenCV BORDER_REPLICATE), ``wrap``.
BOUNDARY_MODES = ("reflect", "mirror", "nearest", "wrap")


# -- boundary handling -------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _pad_index_np(n: int, before: int, after: int, mode: str) -> np.ndarray:
    i = np.arange(-before, n + after)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    if mode == "reflect":
        i = np.mod(i, 2 * n)
        return np.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(i)
        i = np.mod(i, 2 * n - 2)
        return np.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown boundary mode {mode!r}; use one of {BOUNDARY_MODES}")


def pad_index(n: int, before: int, after: int, mode: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source indices (before + n + after,) of an axis of length n padded with ``mode``."""
    return torch.as_tensor(_pad_index_np(n, before, after, mode), device=device, dtype=torch.long)


def pad2d(x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    """Pad the last two axes of ``x`` (..., H, W) with a scipy-named boundary ``mode`` (any width)."""
    h, w = x.shape[-2], x.shape[-1]
    x = x.index_select(-2, pad_index(h, top, bottom, mode, x.device))
    return x.index_select(-1, pad_index(w, left, right, mode, x.device))


# -- kernels and convolutions ------------------------------------------------------------------
def gaussian_kernel1d(sigma: float, *, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's Gaussian kernel: radius ``int(truncate * sigma + 0.5)``, normalised to 1."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return np.ones(1)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 / float(sigma) ** 2 * t**2)
    return cast("np.ndarray", k / k.sum())


def opencv_gaussian_kernel1d(ksize: int, sigma: float) -> np.ndarray:
    """``cv2.getGaussianKernel(ksize, sigma)`` in float64 (sigma > 0)."""
    t = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2.0
    k = np.exp(-(t**2) / (2.0 * float(sigma) ** 2))
    return cast("np.ndarray", k / k.sum())


@lru_cache(maxsize=256)
def axis_operator_np(n: int, kernel: tuple[float, ...], mode: str) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float64)
    r = (len(k) - 1) // 2
    idx = _pad_index_np(n, r, r, mode)
    m = np.zeros((n, n))
    rows = np.repeat(np.arange(n), len(k))
    cols = idx[np.arange(n)[:, None] + np.arange(len(k))[None, :]].ravel()
    np.add.at(m, (rows, cols), np.tile(k, n))
    return m


_TENSOR_CACHE: dict[tuple[object, ...], torch.Tensor] = {}


def cached_tensor(key: tuple[object, ...], build: Callable[[], np.ndarray], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A float64 numpy array built once per ``key``, converted once per (dtype, device)."""
    full = (key, dtype, str(device))
    t = _TENSOR_CACHE.get(full)
    if t is None:
        if len(_TENSOR_CACHE) > 256:
            _TENSOR_CACHE.clear()
        t = torch.as_tensor(build(), dtype=dtype, device=device)
        _TENSOR_CACHE[full] = t
    return t


def axis_operator(n: int, kernel: np.ndarray | torch.Tensor, mode: str, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, n) matrix of a 1-D correlation with ``kernel`` along an axis of length n, the boundary
    ``mode`` folded in: ``y = A @ x`` equals padding x with ``mode`` and correlating."""
    kt = tuple(float(v) for v in np.asarray(kernel, dtype=np.float64).ravel())
    return cached_tensor(("axis", n, kt, mode), lambda: axis_operator_np(n, kt, mode), dtype=dtype, device=torch.device(device))


def conv_separable(x: torch.Tensor, kh: np.ndarray | torch.Tensor, kw: np.ndarray | torch.Tensor, *, mode: str) -> torch.Tensor:
    """Correlate every channel of (N, C, H, W) ``x`` with ``kh`` along H and ``kw`` along W.

    Odd-length kernels, centred; boundary ``mode`` as in scipy.ndimage (see :data:`BOUNDARY_MODES`).
    Implemented as two matrix products with banded (n, n) operators (far faster than a
    single-channel convolution on CPU and GPU) for sides up to 1024, else as convolutions.
    """
    n, c, h, w = x.shape
    kh_np = np.asarray(kh.cpu() if isinstance(kh, torch.Tensor) else kh, dtype=np.float64).ravel()
    kw_np = np.asarray(kw.cpu() if isinstance(kw, torch.Tensor) else kw, dtype=np.float64).ravel()
    if max(h, w) <= 1024:
        y = x
        if kh_np.size > 1:
            y = torch.matmul(axis_operator(h, kh_np, mode, dtype=x.dtype, device=x.device), y)
        if kw_np.size > 1:
            y = torch.matmul(y, axis_operator(w, kw_np, mode, dtype=x.dtype, device=x.device).transpose(0, 1))
        return y
    kh_t = torch.as_tensor(kh_np, dtype=x.dtype, device=x.device)
    kw_t = torch.as_tensor(kw_np, dtype=x.dtype, device=x.device)
    rh, rw = (kh_t.numel() - 1) // 2, (kw_t.numel() - 1) // 2
    y = x.reshape(n * c, 1, h, w)
    if rh:
        y = F.conv2d(pad2d(y, rh, rh, 0, 0, mode), kh_t.view(1, 1, -1, 1))
    if rw:
        y = F.conv2d(pad2d(y, 0, 0, rw, rw, mode), kw_t.view(1, 1, 1, -1))
    return y.reshape(n, c, h, w)


def conv2d_same(x: torch.Tensor, kernel: np.ndarray | torch.Tensor, *, mode: str) -> torch.Tensor:
    """Correlate every channel of (N, C, H, W) ``x`` with one odd-sized 2-D kernel (like cv2.filter2D),
    boundary ``mode`` (scipy names), by direct convolution."""
    n, c, h, w = x.shape
    k = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    rh, rw = (k.shape[0] - 1) // 2, (k.shape[1] - 1) // 2
    y = pad2d(x.reshape(n * c, 1, h, w), rh, rh, rw, rw, mode)
    return F.conv2d(y, k.view(1, 1, *k.shape)).reshape(n, c, h, w)


def fft_conv2d_same(x: torch.Tensor, kernel: np.ndarray, *, mode: str) -> torch.Tensor:
    """:func:`conv2d_same` through the FFT (same result up to float rounding; much faster for big kernels)."""
    n, c, h, w = x.shape
    rh, rw = (kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2
    xp = pad2d(x, rh, rh, rw, rw, mode)
    hp, wp = xp.shape[-2], xp.shape[-1]
    kf = cached_tensor(
        ("fftk", hp, wp, kernel.tobytes(), kernel.shape),
        lambda: np.fft.rfft2(kernel[::-1, ::-1], s=(hp, wp)),
        dtype=torch.complex64 if x.dtype != torch.float64 else torch.complex128, device=x.device,
    )
    y = torch.fft.irfft2(torch.fft.rfft2(xp) * kf, s=(hp, wp))
    return cast("torch.Tensor", y[..., 2 * rh : 2 * rh + h, 2 * rw : 2 * rw + w].to(x.dtype))


#: Images with at most this many pixels use a dense (H W) x (H W) linear operator per corruption.
DENSE_MAX_PIXELS = 1600


def dense_operator(key: tuple[object, ...], h: int, w: int, apply: Callable[[torch.Tensor], torch.Tensor], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The (H W, H W) matrix of a linear, channel-independent image operator ``apply``, built once
    (in float64, by applying it to the H W basis images) and cached per key, size, dtype, device."""

    def build() -> np.ndarray:
        basis = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
        cols = torch.cat([apply(basis[i : i + 256]) for i in range(0, h * w, 256)])
        return cols.reshape(h * w, h * w).transpose(0, 1).contiguous().numpy()

    return cached_tensor(("dense", key, h, w), build, dtype=dtype, device=device)


def apply_dense(x: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """Apply a (H W, H W) operator to every channel of (N, C, H, W) ``x``."""
    n, c, h, w = x.shape
    return torch.matmul(x.reshape(n * c, h * w), op.transpose(0, 1)).reshape(n, c, h, w)


def gaussian_blur(x: torch.Tensor, sigma: float | tuple[float, float], *, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over H and W of each channel (skimage ``gaussian``'s numerics).

    Args:
        x: (N, C, H, W).
        sigma: one sigma, or (sigma_h, sigma_w).
        mode: boundary mode (skimage's ``gaussian`` default is ``nearest``).
    """
    sh, sw = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    return conv_separable(x, gaussian_kernel1d(sh, truncate=truncate), gaussian_kernel1d(sw, truncate=truncate), mode=mode)


# -- colour ------------------------------------------------------------------------------------
def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV with H in [0, 1), exactly as ``skimage.color.rgb2hsv``.

    Ties for the maximum resolve as in skimage: blue over green over red; grey pixels get H = S = 0.
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = torch.maximum(torch.maximum(r, g), b)
    delta = v - torch.minimum(torch.minimum(r, g), b)
    safe_delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    safe_v = torch.where(v == 0, torch.ones_like(v), v)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / safe_v)
    h = torch.where(r == v, (g - b) / safe_delta, torch.zeros_like(v))
    h = torch.where(g == v, 2.0 + (b - r) / safe_delta, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe_delta, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack((h, s, v), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) HSV (H in [0, 1)) -> RGB, exactly as ``skimage.color.hsv2rgb``."""
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    hi = torch.floor(h * 6.0)
    f = h * 6.0 - hi
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    hi = torch.remainder(hi, 6.0).long()
    table = torch.stack(
        (
            torch.stack((v, t, p), 1), torch.stack((q, v, p), 1), torch.stack((p, v, t), 1),
            torch.stack((p, q, v), 1), torch.stack((t, p, v), 1), torch.stack((v, p, q), 1),
        ),
        dim=0,
    )  # (6, N, 3, H, W)
    idx = hi.unsqueeze(0).unsqueeze(2).expand(1, -1, 3, -1, -1)
    return table.gather(0, idx).squeeze(0)


def rgb_to_grey(x: torch.Tensor, weights: Sequence[float] = (0.299, 0.587, 0.114)) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) weighted sum (default ITU-R BT.601 luma)."""
    w = torch.as_tensor(list(weights), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round values in [0, 1] to the nearest of the 256 grey levels (as a uint8 round trip would)."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


# -- geometry ----------------------------------------------------------------------------------
def linear_resize_matrix(n_in: int, n_out: int, *, offset: float = 0.0, src_len: int | None = None, take: int | None = None) -> np.ndarray:
    """Rows of linear interpolation with scipy.ndimage.zoom's corner-aligned grid (order=1).

    Output j samples source coordinate ``offset + j * (n_in - 1) / (n_out - 1)`` of an axis of
    length ``src_len`` (default ``n_in``). Returns (take or n_out, src_len) float64.
    """
    src_len = n_in if src_len is None else src_len
    take = n_out if take is None else take
    m = np.zeros((take, src_len))
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for j in range(take):
        c = offset + j * scale
        lo = int(math.floor(c))
        f = c - lo
        lo_c = min(max(lo, 0), src_len - 1)
        hi_c = min(max(lo + 1, 0), src_len - 1)
        m[j, lo_c] += 1.0 - f
        m[j, hi_c] += f
    return m


@lru_cache(maxsize=512)
def clipped_zoom_matrix(n: int, zoom: float) -> np.ndarray:
    """(n, n) matrix of imagecorruptions' ``clipped_zoom`` along one axis of length n.

    The centre crop of ``ceil(n / zoom)`` pixels (starting at ``(n - crop) // 2``) is zoomed with
    linear interpolation to ``round(crop * zoom)`` pixels and the first n are kept.
    """
    crop = int(np.ceil(n / float(zoom)))
    top = (n - crop) // 2
    n_out = int(round(crop * float(zoom)))
    return linear_resize_matrix(crop, n_out, offset=float(top), src_len=n, take=n)


@lru_cache(maxsize=512)
def _clipped_zoom_taps(n: int, zoom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = clipped_zoom_matrix(n, zoom)
    lo = np.argmax(m > 0, axis=1)
    hi = n - 1 - np.argmax(m[:, ::-1] > 0, axis=1)
    frac = np.where(hi > lo, m[np.arange(n), hi], 0.0)
    return lo, hi, frac


def lerp_axis(x: torch.Tensor, dim: int, taps: tuple[np.ndarray, np.ndarray, np.ndarray]) -> torch.Tensor:
    """Two-tap linear interpolation along ``dim``: ``x[lo] (1 - f) + x[hi] f``."""
    lo, hi, frac = taps
    dev = x.device
    a = x.index_select(dim, torch.as_tensor(lo, device=dev))
    b = x.index_select(dim, torch.as_tensor(hi, device=dev))
    shape = [1] * x.ndim
    shape[dim] = -1
    f = torch.as_tensor(frac, dtype=x.dtype, device=dev).view(shape)
    return a + (b - a) * f


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """imagecorruptions' ``clipped_zoom`` of every channel of (..., H, W) ``x`` (same size out)."""
    h, w = x.shape[-2], x.shape[-1]
    y = lerp_axis(x, x.ndim - 2, _clipped_zoom_taps(h, float(zoom)))
    return lerp_axis(y, x.ndim - 1, _clipped_zoom_taps(w, float(zoom)))


# -- per-image randomness ----------------------------------------------------------------------
def per_image(seeds: Sequence[int], draw: Callable[[torch.Generator], torch.Tensor], *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack ``draw(g)`` over images, ``g`` a CPU generator seeded with ``seeds[i]`` (so image i's
    randomness depends only on its own seed, never on the batch), moved to ``device``.

    The draws always happen on the CPU (so results do not depend on the device); for GPU batches
    this loop, not the corruption, bounds the throughput of the noise corruptions."""
    g = torch.Generator()
    outs = []
    for s in seeds:
        g.manual_seed(int(s) & ((1 << 63) - 1))
        outs.append(draw(g))
    return torch.stack(outs).to(device)


def check_input(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> int:
    """Validate the fast-corruption contract; returns the severity index 0..4."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, C, H, W) images with C = 1 or 3, got {tuple(x.shape)}")
    if int(severity) not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, got {severity!r}")
    if len(seeds) != x.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {x.shape[0]} images")
    return int(severity) - 1


def gaussian_draws(x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (N, C, H, W); image i's draws come from ``seeds[i]`` only."""
    shape = tuple(x.shape[1:])
    return per_image(seeds, lambda g: torch.randn(shape, generator=g), device=x.device).to(x.dtype)
