"""Reference backend of the ``cifar-c`` protocol: ``make_cifar_c.py`` transcribed to NumPy, one image
at a time, step by step (robustlab's own transcription, read from hendrycks/robustness
``ImageNet-C/create_c/make_cifar_c.py``).

Per image i: quantise to uint8 (``round(255 x)``, as the script's PIL input), draw all randomness
from ``np.random.RandomState(seeds[i] mod 2**32)`` in the script's order, apply the script's
procedure with its constants (:mod:`.constants`), and truncate to uint8 (``np.uint8``) as the script
does before saving. Differences from the script, all stated:

* motion blur and snow's motion blur: the script calls ImageMagick's ``MotionBlurImage`` through
  Wand; here ``imagecorruptions``' NumPy ``_motion_blur`` (the same half-Gaussian kernel along a
  line, edge replication) is used, as in the fast backend. ImageMagick's kernel placement differs
  in detail, so these two are not bit-compatible with the published files.
* frost: the five photographs shipped with ``imagecorruptions`` (the script's own files, same
  names); the script lists six but draws ``randint(5)``.
* non-32x32 images: the script hard-codes 32 (glass-blur loop, fog map, frost crop, elastic
  IMSIZE); here the image's own size is used, which is the script exactly at 32x32.
* impulse noise: ``skimage.util.random_noise`` is given a generator seeded from the image's
  RandomState (current scikit-image no longer reads numpy's global state).

References: Hendrycks & Dietterich, ICLR 2019; ``make_cifar_c.py``; ``imagecorruptions`` 1.1.2.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Callable, Sequence, cast

import numpy as np
import torch

from .constants import FROST_SCALE, const, zoom_factors

Rng = np.random.RandomState


def _sk_gaussian(img: np.ndarray, sigma: float, **kw: Any) -> np.ndarray:
    from skimage.filters import gaussian

    if img.ndim == 3:
        kw.setdefault("channel_axis", -1)
    return np.asarray(cast(Any, gaussian)(img, sigma=sigma, **kw))  # skimage may ship untyped: call through Any


def _zoom(img: np.ndarray, z: float) -> np.ndarray:
    """The script's ``clipped_zoom``: centre crop, scipy linear zoom, centred trim (square images)."""
    from scipy.ndimage import zoom as scizoom

    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    out = scizoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return np.asarray(out[trim : trim + h, trim : trim + h])


def _motion(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    from ..compat import load_imagecorruptions

    mod = load_imagecorruptions().corruptions
    return np.asarray(mod._motion_blur(img, radius=radius, sigma=sigma, angle=angle))


def _plasma(rng: Rng, mapsize: int, decay: float) -> np.ndarray:
    """The script's diamond-square ``plasma_fractal`` with draws from ``rng``."""
    m = np.zeros((mapsize, mapsize), dtype=np.float64)
    step, wibble = mapsize, 100.0
    while step >= 2:
        half = step // 2
        corner = m[0:mapsize:step, 0:mapsize:step]
        acc = corner + np.roll(corner, -1, axis=0)
        acc += np.roll(acc, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = acc / 4 + wibble * rng.uniform(-wibble, wibble, acc.shape)
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        m[0:mapsize:step, half:mapsize:step] = lt / 4 + wibble * rng.uniform(-wibble, wibble, lt.shape)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        m[half:mapsize:step, 0:mapsize:step] = tt / 4 + wibble * rng.uniform(-wibble, wibble, tt.shape)
        step //= 2
        wibble /= decay
    m -= m.min()
    return cast("np.ndarray", m / m.max())


def gaussian_noise(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=const("gaussian_noise", s)), 0, 1) * 255


def shot_noise(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    c = const("shot_noise", s)
    return cast("np.ndarray", np.clip(rng.poisson(x / 255.0 * c) / c, 0, 1) * 255)


def impulse_noise(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    from skimage.util import random_noise

    gen = np.random.default_rng(int(rng.randint(0, 2**31 - 1)))
    return cast("np.ndarray", np.clip(cast(Any, random_noise)(x / 255.0, mode="s&p", amount=const("impulse_noise", s), rng=gen), 0, 1) * 255)


def speckle_noise(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    x = x / 255.0
    return np.clip(x + x * rng.normal(size=x.shape, scale=const("speckle_noise", s)), 0, 1) * 255


def gaussian_blur(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    return cast("np.ndarray", np.clip(_sk_gaussian(x / 255.0, const("gaussian_blur", s)), 0, 1) * 255)


def glass_blur(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    sigma, d, iters = const("glass_blur", s)
    y: np.ndarray = (_sk_gaussian(x / 255.0, sigma) * 255).astype(np.uint8)
    h, w = y.shape[:2]
    # as in the script, the tuple assignment of numpy views copies y[r2, c2] into y[r, c] and
    # leaves y[r2, c2] unchanged (not a true swap); kept as is
    for _ in range(iters):
        for r in range(h - d, d, -1):
            for c in range(w - d, d, -1):
                dx, dy = rng.randint(-d, d, size=(2,))
                r2, c2 = r + dy, c + dx
                y[r, c], y[r2, c2] = y[r2, c2], y[r, c]
    return cast("np.ndarray", np.clip(_sk_gaussian(y / 255.0, sigma), 0, 1) * 255)


def defocus_blur(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    import cv2

    radius, alias = const("defocus_blur", s)
    coords = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(coords, coords)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias)
    x = x / 255.0
    out = np.stack([cv2.filter2D(x[:, :, ch], -1, kernel) for ch in range(3)], axis=-1)
    return np.clip(out, 0, 1) * 255


def motion_blur(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    radius, sigma = const("motion_blur", s)
    return cast("np.ndarray", np.clip(_motion(x, radius, sigma, rng.uniform(-45, 45)), 0, 255))


def zoom_blur(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    zs = zoom_factors(s)
    for z in zs:
        out += _zoom(x, z)
    return cast("np.ndarray", np.clip((x + out) / (len(zs) + 1), 0, 1) * 255)


def fog(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    a, decay = const("fog", s)
    x = x / 255.0
    h, w = x.shape[:2]
    mapsize = 1 << max(int(np.ceil(np.log2(max(h, w, 3)))), 0)
    max_val = x.max()
    x = x + a * _plasma(rng, mapsize, decay)[:h, :w][..., None]
    return cast("np.ndarray", np.clip(x * max_val / (max_val + a), 0, 1) * 255)


def frost(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    import cv2

    from ..fast.frost import frost_dir

    a, b = const("frost", s)
    idx = rng.randint(5)
    photo: Any = cv2.imread(str(frost_dir() / ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"][idx]))
    photo = cv2.resize(photo, (0, 0), fx=FROST_SCALE, fy=FROST_SCALE)
    h, w = x.shape[:2]
    top, left = rng.randint(0, photo.shape[0] - h), rng.randint(0, photo.shape[1] - w)
    crop = photo[top : top + h, left : left + w][..., [2, 1, 0]]
    return cast("np.ndarray", np.clip(a * x + b * crop, 0, 255))


def snow(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    import cv2

    loc, scale, z, thr, radius, sigma, blend = const("snow", s)
    x = x.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    layer = rng.normal(size=(h, w), loc=loc, scale=scale)
    layer = _zoom(layer[..., None], z)
    layer[layer < thr] = 0
    layer = (np.clip(layer.squeeze(-1), 0, 1) * 255).astype(np.uint8)  # the script's 'L' PNG
    layer = _motion(layer, radius, sigma, rng.uniform(-135, -45))
    layer = (np.round(np.clip(layer, 0, 255)).astype(np.uint8) / 255.0)[..., None]
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
    x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def spatter(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    import cv2

    loc, scale, sigma, thr, strength, mud = const("spatter", s)
    x = x.astype(np.float32) / 255.0
    liquid = _sk_gaussian(np.asarray(rng.normal(size=x.shape[:2], loc=loc, scale=scale)), sigma)
    liquid[liquid < thr] = 0
    if not mud:
        level = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(level, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m: Any = cv2.cvtColor(level * dist, cv2.COLOR_GRAY2BGRA)
        m /= np.max(m, axis=(0, 1))
        m *= strength
        colour = np.concatenate([v / 255.0 * np.ones_like(m[..., :1]) for v in (175, 238, 238)], axis=2)
        colour = cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA)
        xa = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cast("np.ndarray", cv2.cvtColor(np.clip(xa + m * colour, 0, 1), cv2.COLOR_BGRA2BGR) * 255)
    m = _sk_gaussian(np.where(liquid > thr, 1, 0).astype(np.float32), strength)
    m[m < 0.8] = 0
    colour = np.concatenate([v / 255.0 * np.ones_like(x[..., :1]) for v in (63, 42, 20)], axis=2) * m[..., None]
    return cast("np.ndarray", np.clip(x * (1 - m[..., None]) + colour, 0, 1) * 255)


def _hsv(x: np.ndarray, channel: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    import skimage.color

    hsv = skimage.color.rgb2hsv(x / 255.0)
    hsv[:, :, channel] = fn(hsv[:, :, channel])
    return cast("np.ndarray", np.clip(skimage.color.hsv2rgb(hsv), 0, 1) * 255)


def brightness(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    return _hsv(x, 2, lambda v: np.clip(v + const("brightness", s), 0, 1))


def saturate(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    a, b = const("saturate", s)
    return _hsv(x, 1, lambda v: np.clip(v * a + b, 0, 1))


def contrast(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    x = x / 255.0
    m = np.mean(x, axis=(0, 1), keepdims=True)
    return cast("np.ndarray", np.clip((x - m) * const("contrast", s) + m, 0, 1) * 255)


def jpeg_compression(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    from PIL import Image

    buf = BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=const("jpeg_compression", s))
    return np.asarray(Image.open(buf))


def pixelate(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    from PIL import Image

    c = const("pixelate", s)
    h, w = x.shape[:2]
    box = Image.Resampling.BOX
    im = Image.fromarray(x).resize((int(w * c), int(h * c)), box)
    return np.asarray(im.resize((w, h), box))


def elastic_transform(x: np.ndarray, s: int, rng: Rng) -> np.ndarray:
    import cv2
    from scipy.ndimage import map_coordinates

    side = x.shape[0]
    alpha, sigma, aff = (side * v for v in const("elastic_transform", s))
    img = x.astype(np.float32) / 255.0
    shape = img.shape
    size = shape[:2]
    centre = np.asarray(size, dtype=np.float32) // 2
    sq = min(size) // 3
    pts1 = np.asarray([centre + sq, [centre[0] + sq, centre[1] - sq], centre - sq], dtype=np.float32)
    pts2 = pts1 + rng.uniform(-aff, aff, size=pts1.shape).astype(np.float32)
    warp: Any = cv2.getAffineTransform(pts1, pts2)
    img = np.asarray(cv2.warpAffine(img, warp, size[::-1], borderMode=cv2.BORDER_REFLECT_101))
    dx = (_sk_gaussian(rng.uniform(-1, 1, size=size), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (_sk_gaussian(rng.uniform(-1, 1, size=size), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    cols, rows, chans = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    idx = (np.reshape(rows + dy[..., None], (-1, 1)), np.reshape(cols + dx[..., None], (-1, 1)), np.reshape(chans, (-1, 1)))
    return cast("np.ndarray", np.clip(map_coordinates(img, idx, order=1, mode="reflect").reshape(shape), 0, 1) * 255)


FUNCTIONS: dict[str, Callable[[np.ndarray, int, Rng], np.ndarray]] = {
    f.__name__: f
    for f in (
        gaussian_noise, shot_noise, impulse_noise, speckle_noise, gaussian_blur, glass_blur, defocus_blur,
        motion_blur, zoom_blur, fog, frost, snow, spatter, brightness, saturate, contrast, jpeg_compression,
        pixelate, elastic_transform,
    )
}


def reference_cifar_c(x: torch.Tensor, name: str, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """Corrupt a batch with the NumPy transcription of ``make_cifar_c.py``.

    Args:
        x: (N, 3, H, W) float in [0, 1] (RGB; the engine maps grey and small images first).
        name: one of the 19 corruptions; severity: 1..5.
        seeds: N integers; image i draws from ``np.random.RandomState(seeds[i] % 2**32)``.
    Returns:
        (N, 3, H, W) float32 in [0, 1] (uint8 levels / 255), on the CPU.

    References: ``make_cifar_c.py`` (Hendrycks & Dietterich 2019).
    """
    if name not in FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(FUNCTIONS)}")
    if len(seeds) != x.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {x.shape[0]} images")
    fn = FUNCTIONS[name]
    imgs = (x.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(imgs)
    for i in range(imgs.shape[0]):
        rng = np.random.RandomState(int(seeds[i]) % 2**32)
        out[i] = np.uint8(fn(np.ascontiguousarray(imgs[i]), int(severity), rng))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
