"""Spatter (Hendrycks & Dietterich 2019), batched torch version.

The reference (``imagecorruptions`` 1.1.2) draws a liquid layer ``N(loc, scale)`` (H x W), blurs it
(``skimage.filters.gaussian``, sigma ``s1``) and zeroes values below ``threshold``. Then:

* severities 1-3 (water): the layer is truncated to uint8 ``L``; ``E = cv2.Canny(L, 50, 150)``;
  ``D = distanceTransform(255 - E, DIST_L2, 5)`` (5x5 chamfer, weights 1, 1.4, 2.1969) truncated at
  20, 3x3 box blur, truncated to uint8, ``equalizeHist``, the emboss kernel
  ``[[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]`` (uint8 saturation), 3x3 box blur (uint8); the tint
  ``m = L * D / max(L * D) * intensity`` times the colour (175, 238, 238)/255, added to channels
  (0, 1, 2) of the image as they are (the reference calls it BGR but the image is RGB);
* severities 4-5 (mud): ``m = gaussian(liquid > threshold, s2)``, zeroed below 0.8; the image becomes
  ``x (1 - m) + m (63, 42, 20)/255``.

Every OpenCV step is re-implemented in batched torch with OpenCV's conventions: Sobel with replicated
border, L1 gradient magnitude, non-maximum suppression with OpenCV's fixed-point tan(22.5)/tan(67.5)
sectors and its strict/non-strict comparisons, 8-connected hysteresis (iterated 3x3 dilation inside
the weak mask until nothing changes); the chamfer distance with OpenCV's weights and its two raster
passes, each pass row by row (the dependency along a row, ``d[x] = min(d[x], d[x-1] + 1)``,
is a ``cummin``); the liquid layer and the first box blur in float64 (as numpy and OpenCV do);
box filters and the emboss with ``BORDER_REFLECT_101``; uint8 casts as ``floor`` (numpy ``astype``)
or round-half-even (OpenCV ``saturate_cast``); ``equalizeHist`` from a per-image 256-bin histogram.
Given numpy's normal numbers, the output matches the reference up to float rounding (tested).

Deviations from the reference:
  * randomness: the liquid layer of image ``i`` comes from ``torch.Generator().manual_seed(seeds[i])``;
  * when no liquid passes the threshold (about 3% of 32x32 images at severity 1), the reference
    divides 0 by 0 and casts NaN to uint8, returning a black image; we return the image unchanged
    (``m = 0``);
  * float input and output instead of uint8 (the reference truncates its output to uint8: mean
    shift of about -0.5/255 that we do not add);
  * grey images (C = 1) are replicated to RGB, spattered, and converted back with BT.601 luma, as
    :mod:`robustlab.corruptions.protocol` does for both backends (so a direct call agrees with the
    engine).

References: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019; Canny, IEEE TPAMI 1986; Borgefors, CVGIP 1986 (chamfer distances);
checked against ``imagecorruptions`` 1.1.2 (bethgelab) and OpenCV.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, per_image, rgb_to_grey
from .glass_blur import gaussian_blur_nearest, pad_edges

# (loc, scale, sigma, threshold, intensity or mud sigma, mud?) per severity
PARAMS: tuple[tuple[float, float, float, float, float, int], ...] = (
    (0.65, 0.3, 4.0, 0.69, 0.6, 0),
    (0.65, 0.3, 3.0, 0.68, 0.6, 0),
    (0.65, 0.3, 2.0, 0.68, 0.5, 0),
    (0.65, 0.3, 1.0, 0.65, 1.5, 1),
    (0.67, 0.4, 1.0, 0.65, 1.5, 1),
)
WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)
MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)
_TG22 = 13573  # round(tan(22.5 deg) * 2**15), OpenCV's CANNY_SHIFT = 15


def _correlate3(padded: Tensor, kernel: tuple[tuple[float, ...], ...], h: int, w: int) -> Tensor:
    """3x3 correlation of an already padded (..., h + 2, w + 2) tensor, as shifted-slice sums."""
    out = torch.zeros(padded.shape[:-2] + (h, w), dtype=padded.dtype, device=padded.device)
    for i, row in enumerate(kernel):
        for j, k in enumerate(row):
            if k != 0.0:
                out.add_(padded[..., i : i + h, j : j + w], alpha=k)
    return out


def canny(img: Tensor, low: float, high: float) -> Tensor:
    """OpenCV's ``Canny(img, low, high)`` (aperture 3, L1 gradient) on uint8-valued images.

    Args:
        img: (N, 1, H, W) float holding integers 0..255.
    Returns:
        (N, 1, H, W) bool edge map.
    """
    h, w = img.shape[-2:]
    p = pad_edges(pad_edges(img, 1, -2), 1, -1)
    gx = _correlate3(p, ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0)), h, w)
    gy = _correlate3(p, ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0)), h, w)
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay
    mp = F.pad(mag, (1, 1, 1, 1), value=0.0)
    left, right = mp[..., 1:-1, :-2], mp[..., 1:-1, 2:]
    up, down = mp[..., :-2, 1:-1], mp[..., 2:, 1:-1]
    ul, ur, dl, dr = mp[..., :-2, :-2], mp[..., :-2, 2:], mp[..., 2:, :-2], mp[..., 2:, 2:]
    tg22x = ax * _TG22
    y = ay * 32768.0
    horiz = y < tg22x
    vert = ~horiz & (y > tg22x + ax * 65536.0)
    diag = ~horiz & ~vert
    same_sign = (gx < 0) == (gy < 0)  # OpenCV: s = (xs ^ ys) < 0 ? -1 : 1
    keep = horiz & (mag > left) & (mag >= right)
    keep |= vert & (mag > up) & (mag >= down)
    keep |= diag & same_sign & (mag > ul) & (mag > dr)
    keep |= diag & ~same_sign & (mag > ur) & (mag > dl)
    weak = keep & (mag > low)
    edges = weak & (mag > high)
    while True:
        grown = (weak & _dilate3(edges)) | edges
        if torch.equal(grown, edges):
            return edges
        edges = grown


# OpenCV's 5x5 chamfer weights for DIST_L2, as the float32 numbers it passes to IPP
_A, _B, _C = 1.0, 1.399999976158142, 2.196899890899658


def chamfer_distance(zero: Tensor, *, cap: float) -> Tensor:
    """Distance to the nearest ``zero`` pixel with OpenCV's 5x5 chamfer mask, capped at ``cap``.

    Computed like ``cv2.distanceTransform(src, DIST_L2, 5)``: weights 1, 1.4, 2.1969, a forward and
    a backward raster pass. Each pass goes row by row; within a row the only dependency,
    ``d[x] = min(d[x], d[x - 1] + a)``, is solved at once as ``cummin(d - a x) + a x``. OpenCV
    builds with IPP (the PyPI wheels) sum in float, builds without it in 16.16 fixed point; both
    agree with this to about 1e-4.

    Args:
        zero: (N, H, W) bool, the pixels at distance 0.
        cap: values are ``min(distance, cap)`` (pixels outside the image never count as zero).
    Returns:
        (N, H, W) float32 distances.
    """
    n, h, w = zero.shape
    big = torch.full((n, 2, w + 4), float(cap), dtype=torch.float64, device=zero.device)
    d = torch.where(zero, 0.0, float(cap)).to(torch.float64)
    ramp = torch.arange(w, dtype=torch.float64, device=zero.device) * _A
    fwd = ((-2, -1, _C), (-2, 1, _C), (-1, -2, _C), (-1, -1, _B), (-1, 0, _A), (-1, 1, _B), (-1, 2, _C))
    for flip in (False, True):
        src = torch.flip(d, dims=(1, 2)) if flip else d
        padded = torch.cat([big, F.pad(src, (2, 2), value=float(cap))], dim=1)  # (N, H + 2, W + 4)
        for r in range(h):
            row = padded[:, r + 2, 2 : w + 2]
            for dy, dx, wt in fwd:
                row = torch.minimum(row, padded[:, r + 2 + dy, 2 + dx : w + 2 + dx] + wt)
            row = torch.cummin(row - ramp, dim=1).values + ramp  # left-to-right: d[x-1] + a
            padded[:, r + 2, 2 : w + 2] = row
        d = padded[:, 2:, 2 : w + 2]
        d = torch.flip(d, dims=(1, 2)) if flip else d
    return d.clamp(max=float(cap)).to(torch.float32)


def _pad_mirror1(x: Tensor) -> Tensor:
    """Pad the last two axes by one pixel with BORDER_REFLECT_101 (``d c b | a b c d``)."""
    for dim in (-2, -1):
        n = x.shape[dim]
        lo, hi = (x.narrow(dim, 1, 1), x.narrow(dim, n - 2, 1)) if n > 1 else (x, x)
        x = torch.cat([lo, x, hi], dim=dim)
    return x


def _dilate3(e: Tensor) -> Tensor:
    """3x3 binary dilation of a bool (..., H, W) tensor (outside counts as False)."""
    z = torch.zeros_like(e[..., :, :1])
    p = torch.cat([z, e, z], dim=-1)
    r = p[..., :-2] | p[..., 1:-1] | p[..., 2:]
    z = torch.zeros_like(r[..., :1, :])
    p = torch.cat([z, r, z], dim=-2)
    return p[..., :-2, :] | p[..., 1:-1, :] | p[..., 2:, :]


def _box3(x: Tensor, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """``cv2.blur(x, (3, 3))`` on (..., H, W): BORDER_REFLECT_101, row then column sums in ``dtype``
    (OpenCV sums float images in float64; integer images are exact in float32), times 1/9."""
    h, w = x.shape[-2:]
    p = _pad_mirror1(x.to(dtype))
    rows = p[..., 0:w] + p[..., 1 : w + 1] + p[..., 2 : w + 2]
    return ((rows[..., 0:h, :] + rows[..., 1 : h + 1, :] + rows[..., 2 : h + 2, :]) * (1.0 / 9.0)).to(x.dtype)


def equalize_hist(img: Tensor) -> Tensor:
    """OpenCV's ``equalizeHist`` per image on (N, 1, H, W) float holding integers 0..255."""
    n = img.shape[0]
    flat = img.reshape(n, -1).to(torch.int64)
    total = flat.shape[1]
    hist = torch.zeros((n, 256), dtype=torch.int64, device=img.device).scatter_add_(1, flat, torch.ones_like(flat))
    first = (hist > 0).to(torch.int64).argmax(dim=1, keepdim=True)
    h_first = hist.gather(1, first)
    cum = torch.cumsum(hist, dim=1) - hist.gather(1, first).expand(-1, 256)  # sum over (first, j]
    denom = (total - h_first).clamp(min=1).to(torch.float32)
    scale = torch.tensor(255.0, dtype=torch.float32, device=img.device) / denom
    lut = torch.round(cum.to(torch.float32) * scale).clamp_(0.0, 255.0)
    constant = h_first == total  # a single grey level: OpenCV sets every pixel to it
    lut = torch.where(constant, first.to(torch.float32).expand(-1, 256), lut)
    return lut.gather(1, flat).reshape(img.shape).to(img.dtype)


def water_mask(level: Tensor) -> Tensor:
    """The reference's water tint ``m`` in [0, 1] (N, 1, H, W) from the uint8 liquid layer ``level``."""
    edges = canny(level, 50.0, 150.0)
    dist = chamfer_distance(edges[:, 0], cap=20.0)[:, None]
    dist = torch.floor(_box3(dist, dtype=torch.float64))
    dist = equalize_hist(dist)
    emboss = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))
    dist = _correlate3(_pad_mirror1(dist), emboss, *dist.shape[-2:]).clamp_(0.0, 255.0)
    dist = torch.round(_box3(dist))
    m = level * dist
    peak = m.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(peak > 0, m / peak.clamp(min=1e-12), torch.zeros_like(m))


def _colour(colour: tuple[float, float, float], like: Tensor) -> Tensor:
    return torch.tensor(colour, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def spatter_with_normals(x: Tensor, severity: int, normals: Tensor, *, params: tuple[float, float, float, float, float, int] | None = None) -> Tensor:
    """Spatter with explicit standard normal numbers ``normals`` (N, H, W) for the liquid layer;
    ``params`` replaces ``PARAMS[severity - 1]`` (another protocol's constants)."""
    if x.shape[1] == 1:
        rgb = spatter_with_normals(x.expand(-1, 3, -1, -1), severity, normals, params=params)
        return rgb_to_grey(rgb).clamp_(0.0, 1.0)
    loc, scale, sigma, thr, strength, mud = params or PARAMS[severity - 1]
    liquid = loc + scale * normals.to(device=x.device, dtype=torch.float64)[:, None]  # float64 as numpy
    liquid = gaussian_blur_nearest(liquid, sigma)
    liquid = torch.where(liquid < thr, torch.zeros_like(liquid), liquid)
    if not mud:
        level = torch.remainder(torch.floor(liquid * 255.0), 256.0).to(torch.float32)  # astype(uint8)
        m = water_mask(level).to(x.dtype) * strength
        return (x + m * _colour(WATER, x)).clamp_(0.0, 1.0)
    m = gaussian_blur_nearest((liquid > thr).to(torch.float64), strength)
    m = torch.where(m < 0.8, torch.zeros_like(m), m).to(x.dtype)
    return (x * (1 - m) + m * _colour(MUD, x)).clamp_(0.0, 1.0)


def draw_normals(seeds: Sequence[int], height: int, width: int) -> Tensor:
    """(N, H, W) standard normals, image i from a generator seeded with ``seeds[i]`` (CPU)."""
    return per_image(seeds, lambda g: torch.randn((height, width), generator=g))


@FAST_CORRUPTIONS.register("spatter")
def spatter(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Water (severity 1-3) or mud (4-5) spatter from a thresholded blurred noise layer.

    Args:
        x: (N, C, H, W) float in [0, 1], C in {1, 3}, any device, any H, W.
        severity: 1..5 (see ``PARAMS``).
        seeds: N integers; the spatter of image i depends only on ``seeds[i]``.
    Returns:
        (N, C, H, W) tensor, same dtype and device, in [0, 1].

    References: Hendrycks & Dietterich, ICLR 2019; ``imagecorruptions`` 1.1.2 ``spatter``.
    """
    s = check_input(x, severity, seeds) + 1
    if x.shape[0] == 0:
        return x.clone()
    return spatter_with_normals(x, s, draw_normals(seeds, x.shape[-2], x.shape[-1]))


__all__ = ["spatter", "spatter_with_normals", "canny", "chamfer_distance", "equalize_hist", "draw_normals"]
