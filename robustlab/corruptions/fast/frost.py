"""Frost (Hendrycks & Dietterich 2019), batched torch version.

The reference (``imagecorruptions`` 1.1.2) picks one of its bundled frost photographs
(``randint(5)``: ``frost1.png`` .. ``frost5.jpg``; ``frost6.jpg`` is listed but never drawn), reads it
with ``cv2.imread`` (colour, alpha dropped), scales it by ``1.1 x`` the factor that makes it cover the
image (``1.1`` for images smaller than the photograph) with ``cv2.resize(INTER_CUBIC)``, takes a random
``H x W`` crop (``randint`` offsets) and returns ``clip(a x + b frost)``.

Here the photographs are read once with Pillow from the installed ``imagecorruptions`` package
(located with ``importlib.util.find_spec``, which does not import it, so neither ``pkg_resources`` nor
OpenCV is needed), resized with ``F.interpolate(mode="bicubic", align_corners=False)`` (the same
Keys cubic, ``A = -0.75``, and pixel-centre mapping as OpenCV), rounded to uint8 and cached per
(photograph, size, device); the blend weights ``(a, b)`` and the crop rule are the reference's. The
crop offsets are drawn per image and the blend runs on the whole batch.

Deviations from the reference (tested at distribution level, deterministic parts against cv2):
  * randomness: photograph and offsets of image ``i`` come from ``torch.Generator().manual_seed(seeds[i])``;
  * resizing: OpenCV's uint8 bicubic uses fixed-point weights, ours is float then rounded: the
    resized photographs differ by at most 1 level on about 0.01% of values (tested against
    ``cv2.resize``; Pillow and OpenCV decode the five files identically here);
  * float input and output instead of uint8 (the reference truncates its output to uint8: mean
    shift of about -0.5/255 that we do not add);
  * grey images (C = 1) are replicated to RGB, frosted, and converted back with BT.601 luma, as
    :mod:`robustlab.corruptions.protocol` does for both backends (so a direct call agrees with the
    engine).

References: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019; checked against ``imagecorruptions`` 1.1.2 (bethgelab).
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import DataError
from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, rgb_to_grey

# (a, b) blend weights per severity
PARAMS: tuple[tuple[float, float], ...] = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # randint(5)


def frost_dir() -> Path:
    """Folder of the frost photographs shipped with ``imagecorruptions`` (not imported)."""
    spec = importlib.util.find_spec("imagecorruptions")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        folder = Path(loc) / "frost"
        if (folder / FROST_FILES[0]).is_file():
            return folder
    raise DataError(
        "the frost corruption needs the frost images of the 'imagecorruptions' package; "
        "install it with `pip install imagecorruptions`"
    )


@lru_cache(maxsize=None)
def frost_image(index: int) -> Tensor:
    """(3, h, w) uint8 RGB photograph ``FROST_FILES[index]`` (alpha dropped, as cv2.imread)."""
    from PIL import Image

    with Image.open(frost_dir() / FROST_FILES[index]) as im:
        rgb = im.convert("RGB")
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def scaled_size(frost_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) the reference resizes a frost photograph to for an image of ``image_hw``."""
    fh, fw = frost_hw
    h, w = image_hw
    if fh >= h and fw >= w:
        factor = 1.0
    elif fh < h and fw >= w:
        factor = h / fh
    elif fh >= h and fw < w:
        factor = w / fw
    else:
        factor = max(h / fh, w / fw)
    factor *= 1.1
    return int(math.ceil(fh * factor)), int(math.ceil(fw * factor))


@lru_cache(maxsize=64)
def frost_layer(index: int, height: int, width: int, device: str) -> Tensor:
    """(3, height, width) float32 photograph ``index`` resized bicubically, uint8-rounded, in 0..255."""
    img = frost_image(index).to(torch.float32)[None]
    out = F.interpolate(img, size=(height, width), mode="bicubic", align_corners=False)
    return out[0].round_().clamp_(0.0, 255.0).to(device)


def draw_frost(seeds: Sequence[int], height: int, width: int) -> list[tuple[int, int, int]]:
    """Per image (photograph index, top, left) of the crop, from ``seeds[i]``."""
    draws = []
    g = torch.Generator()
    for s in seeds:
        g.manual_seed(int(s) & ((1 << 63) - 1))
        idx = int(torch.randint(0, len(FROST_FILES), (), generator=g))
        fh, fw = scaled_size(tuple(frost_image(idx).shape[1:]), (height, width))  # type: ignore[arg-type]
        top = int(torch.randint(0, fh - height, (), generator=g))
        left = int(torch.randint(0, fw - width, (), generator=g))
        draws.append((idx, top, left))
    return draws


def frost_with_draws(x: Tensor, severity: int, draws: Sequence[tuple[int, int, int]]) -> Tensor:
    """Frost with explicit (photograph index, top, left) per image."""
    a, b = PARAMS[severity - 1]
    h, w = x.shape[-2:]
    crops = []
    for idx, top, left in draws:
        fh, fw = scaled_size(tuple(frost_image(idx).shape[1:]), (h, w))  # type: ignore[arg-type]
        layer = frost_layer(idx, fh, fw, str(x.device))
        crops.append(layer[:, top : top + h, left : left + w])
    grey = x.shape[1] == 1
    rgb = x.expand(-1, 3, -1, -1) if grey else x
    out = torch.stack(crops).to(x.dtype).mul_(b / 255.0).add_(rgb, alpha=a).clamp_(0.0, 1.0)  # a x + b frost
    return rgb_to_grey(out).clamp_(0.0, 1.0) if grey else out


@FAST_CORRUPTIONS.register("frost")
def frost(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Blend a random crop of a frost photograph into the image.

    Args:
        x: (N, C, H, W) float in [0, 1], C in {1, 3}, any device, any H, W.
        severity: 1..5, (a, b) = (1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75).
        seeds: N integers; photograph and crop of image i depend only on ``seeds[i]``.
    Returns:
        (N, C, H, W) tensor, same dtype and device, in [0, 1].

    References: Hendrycks & Dietterich, ICLR 2019; ``imagecorruptions`` 1.1.2 ``frost``.
    """
    s = check_input(x, severity, seeds) + 1
    if x.shape[0] == 0:
        return x.clone()
    return frost_with_draws(x, s, draw_frost(seeds, x.shape[-2], x.shape[-1]))


__all__ = ["frost", "frost_with_draws", "frost_layer", "draw_frost", "scaled_size", "frost_dir"]
