"""Image files to float arrays in [0, 1]: the decoding and size protocol of ``folder:`` data.

One decision per folder, made from the files' headers (PIL reads sizes and modes without decoding):

- **Channels**: the model's channel count when known (1 or 3), else 3 when any image has colour,
  else 1. Grey images are repeated to RGB; colour images become grey by ITU-R 601 luma
  (0.299 R + 0.587 G + 0.114 B, as :func:`robustlab.data.base.adapt_images`).
- **Size**: images that all share one size are used at their native size unless the model asks for
  another; otherwise (the model's size differs, or the sizes vary) the ImageNet protocol to the
  target (H, W): resize (bilinear, antialiased) so the image covers ``round(H / 0.875) x
  round(W / 0.875)`` (for a square target S: shorter side to ``round(S / 0.875)``, as torchvision's
  ``Resize(256)``), then centre-crop (H, W). The target is the model's size, else 224x224.
- **Value range** by PIL mode: 8-bit modes / 255; 16-bit ``I;16*`` / 65535; 32-bit integer ``I``
  / 65535 as well (PIL's mode for 16-bit PNGs and TIFFs; values outside 0..65535 are refused);
  32-bit float ``F`` is taken as already in [0, 1] (as ``npz:`` float images; values outside are
  refused). Alpha is dropped (``LA``, ``RGBA``, ``PA``), palettes are expanded (``P``), ``1`` is 0/1,
  ``CMYK``/``YCbCr`` are converted to RGB by PIL.

References: the ImageNet evaluation protocol of torchvision's reference scripts
(``Resize(256)``, ``CenterCrop(224)``), checked against ``torchvision.transforms`` in
tests/test_folder_data.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import DataError, printable

if TYPE_CHECKING:
    from PIL import Image

#: PIL modes without colour (alpha aside)
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
#: the ImageNet protocol: crop / resize = 0.875 (224 of 256)
CROP_FRACTION = 0.875
DEFAULT_SIZE = 224


@dataclass(frozen=True)
class FolderProtocol:
    """How every image of a folder is decoded: ``channels`` (1 or 3), ``size`` (H, W) of the result,
    ``resize`` (the ImageNet resize-and-centre-crop to ``size``; False: native size) and ``why``."""

    channels: int
    size: tuple[int, int]
    resize: bool
    why: str = ""

    def describe(self) -> str:
        """One line for the data description and the scorecard (``data.preprocessing``); also hashed
        into ``content_sha256``, so results at another size or channel count are never reused."""
        colour = "RGB (3 channels)" if self.channels == 3 else "grey (1 channel)"
        h, w = self.size
        if not self.resize:
            return f"native size {h}x{w}, {colour}"
        rh, rw = resize_target(h, w)
        cover = f"shorter side resized to {rh}" if rh == rw else f"resized to cover {rh}x{rw}"
        return f"ImageNet protocol to {h}x{w} ({self.why}): {cover} (bilinear), centre crop {h}x{w}; {colour}"


def resize_target(h: int, w: int) -> tuple[int, int]:
    return round(h / CROP_FRACTION), round(w / CROP_FRACTION)


def scan(files: Sequence[Path], *, spec: str) -> tuple[set[tuple[int, int]], bool]:
    """The distinct (H, W) sizes of ``files`` and whether any has colour, from the headers only
    (``Image.open`` does not decode). Unreadable files are refused, naming the file."""
    from PIL import Image

    sizes: set[tuple[int, int]] = set()
    colour = False
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
                colour = colour or im.mode not in GREY_MODES
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
            raise unreadable(f, exc, spec) from exc
        sizes.add((h, w))
    return sizes, colour


def choose_protocol(sizes: set[tuple[int, int]], colour: bool, input_shape: Sequence[int] | None) -> FolderProtocol:
    """The :class:`FolderProtocol` for images of ``sizes`` for a model of ``input_shape`` (C, H, W) or None."""
    c = int(input_shape[0]) if input_shape is not None else None
    channels = c if c in (1, 3) else (3 if colour else 1)
    if input_shape is not None:
        target = (int(input_shape[1]), int(input_shape[2]))
        if sizes == {target}:
            return FolderProtocol(channels, target, False)
        return FolderProtocol(channels, target, True, "the model's input size")
    if len(sizes) == 1:
        return FolderProtocol(channels, next(iter(sizes)), False)
    return FolderProtocol(channels, (DEFAULT_SIZE, DEFAULT_SIZE), True, "image sizes differ and the model's input size is unknown: the default")


def decode(src: "Image.Image", protocol: FolderProtocol, *, name: Path, spec: str) -> np.ndarray:
    """One image as a (C, H, W) float32 array in [0, 1] under ``protocol``."""
    im, scale = _canonical(src, name=name, spec=spec)
    if protocol.resize:
        im = resize_crop(im, *protocol.size)
    a = np.array(im, dtype=np.float32)  # a writable copy (a float image's array may be a read-only view)
    if scale != 1.0:
        a = a / np.float32(scale)
    if a.ndim == 2:
        a = a[None]
    else:
        a = a.transpose(2, 0, 1)
    if a.shape[0] != protocol.channels:
        if protocol.channels == 3:
            a = np.repeat(a, 3, axis=0)
        else:
            a = (np.float32(0.299) * a[0] + np.float32(0.587) * a[1] + np.float32(0.114) * a[2])[None]
    if im.mode == "F":  # resampling float images can overshoot by rounding: keep the [0, 1] contract
        np.clip(a, 0.0, 1.0, out=a)
    return np.ascontiguousarray(a, dtype=np.float32)


def _canonical(src: "Image.Image", *, name: Path, spec: str) -> tuple["Image.Image", float]:
    """``src`` as an ``L``, ``RGB`` or ``F`` image and the divisor that maps it to [0, 1]."""
    from PIL import Image

    mode = src.mode
    if mode in ("L", "RGB"):
        return src, 255.0
    if mode in ("1", "LA", "La"):
        return src.convert("L"), 255.0
    if mode.startswith("I;16"):
        return Image.fromarray(np.asarray(src).astype(np.float32) / np.float32(65535.0), mode="F"), 1.0
    if mode in ("I", "F"):
        a = np.asarray(src)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if mode == "I":
            if lo < 0 or hi > 65535:
                raise DataError(f"data {spec}: image {printable(str(name))} is a 32-bit integer image with values in [{lo:g}, {hi:g}]; "
                                "robustlab reads 32-bit integer images as 16-bit (0..65535); save it as an 8- or 16-bit image.")
            return Image.fromarray(a.astype(np.float32) / np.float32(65535.0), mode="F"), 1.0
        if not np.isfinite(a).all() or lo < -1e-6 or hi > 1 + 1e-6:
            shown = "NaN or infinite values" if not np.isfinite(a).all() else f"values in [{lo:.4g}, {hi:.4g}]"
            raise DataError(f"data {spec}: image {printable(str(name))} is a float image with {shown}; float images must be in [0, 1] "
                            "(or save it as an 8- or 16-bit image).")
        return src if src.mode == "F" else src.convert("F"), 1.0
    return src.convert("RGB"), 255.0  # RGBA/RGBa/RGBX (alpha dropped), P/PA (palette expanded), CMYK, YCbCr, ...


def resize_crop(im: "Image.Image", h: int, w: int) -> "Image.Image":
    """The ImageNet protocol to (h, w): bilinear (antialiased) resize so the image covers
    ``round(h / 0.875) x round(w / 0.875)``, keeping its aspect ratio, then the centre (h, w) crop.
    For a square target this is torchvision's ``CenterCrop(S)(Resize(round(S / 0.875))(im))``."""
    from PIL import Image

    rh, rw = resize_target(h, w)
    iw, ih = im.size
    if rh * iw >= rw * ih:  # the height binds (for a square target: the shorter side is the height)
        nh, nw = rh, max(rw, int(rh * iw / ih))
    else:
        nh, nw = max(rh, int(rw * ih / iw)), rw
    if (nw, nh) != (iw, ih):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
    return im.crop((left, top, left + w, top + h))


def unreadable(f: Path, exc: BaseException, spec: str) -> DataError:
    return DataError(f"data {spec}: cannot read image {printable(str(f))} ({' '.join(str(exc).split())[:120]}); remove or replace it.")
