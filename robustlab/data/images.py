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

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import DataError, printable

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

#: PIL modes without colour (alpha aside)
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
#: the ImageNet protocol: crop / resize = 0.875 (224 of 256)
CROP_FRACTION = 0.875
DEFAULT_SIZE = 224
#: file names read as images
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})  # torchvision's IMG_EXTENSIONS
#: image formats that are not read (animated or not decoded the same everywhere): named in a warning when left out
OTHER_IMAGES = frozenset({".gif", ".pbm", ".pnm", ".heic", ".heif", ".avif", ".jfif", ".jp2", ".j2k", ".tga", ".ico", ".svg", ".dng", ".cr2", ".nef", ".exr"})


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


def class_folders(base: Path, *, spec: str) -> list[str]:
    """The names of the class folders of ``base``, sorted. Hidden folders (``.ipynb_checkpoints``, ``.git``) are
    no classes; a link back to ``base`` or above it (a loop) is refused: it would hold every image again."""
    names: list[str] = []
    for d in base.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        target, top = d.resolve(), base.resolve()
        if target == top or target in top.parents:
            raise DataError(f"data {spec}: class folder {printable(d.name)} links back to {printable(str(target))}, so it would hold the "
                            "folder's images again under another label; remove the link.")
        names.append(d.name)
    return sorted(names)


def list_images(base: Path, classes: Sequence[str], *, spec: str) -> list[tuple[Path, int]]:
    """(file, class index) of every image of the class folders ``classes`` of ``base``; files in other image
    formats (GIF, HEIC, ...) are left out with one warning, so a half-read folder does not pass unnoticed."""
    files: list[tuple[Path, int]] = []
    other: list[Path] = []
    for ci, c in enumerate(classes):
        files += [(f, ci) for f in image_files(base / c, spec=spec, other=other)]
    if other:
        log.warning("data %s: %d image(s) in a format robustlab does not read (e.g. %s) are left out; convert them to PNG or JPEG to "
                    "evaluate them (read: %s).", spec, len(other), printable(str(other[0])), " ".join(sorted(IMAGE_EXTENSIONS)))
    return files


def image_files(folder: Path, *, spec: str, other: list[Path] | None = None) -> list[Path]:
    """The image files under ``folder`` (recursively, not through linked folders), sorted. Hidden entries are
    skipped (``.DS_Store``, the ``._NAME.png`` files macOS leaves on other disks, ``.ipynb_checkpoints/``); an
    image name that is no regular file (a pipe, which would block the read forever, a device, a broken link) is
    refused. Files of :data:`OTHER_IMAGES` formats are appended to ``other``."""
    out: list[Path] = []
    for f in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in f.relative_to(folder).parts):
            continue
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            if other is not None and f.suffix.lower() in OTHER_IMAGES and f.is_file():
                other.append(f)
            continue
        if f.is_file():
            out.append(f)
        elif not f.is_dir():
            raise DataError(f"data {spec}: {printable(str(f))} is not a regular file (a pipe, a device or a broken link); remove it from the image folder.")
    return out


def scan(files: Sequence[Path], *, spec: str) -> tuple[set[tuple[int, int]], bool]:
    """The distinct (H, W) sizes of ``files`` and whether any has colour, from the headers only
    (``Image.open`` does not decode). Unreadable files are refused, naming the file."""
    from PIL import Image

    sizes: set[tuple[int, int]] = set()
    colour = False
    turned: list[Path] = []
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
                colour = colour or im.mode not in GREY_MODES
                if "exif" in im.info and _orientation(im) not in (None, 1):  # JPEG/WebP: parsed at open, nothing decoded
                    turned.append(f)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
            raise unreadable(f, exc, spec) from exc
        sizes.add((h, w))
    if turned:
        log.warning("data %s: %d image(s) (e.g. %s) carry an EXIF orientation tag; they are read as stored, as torchvision's ImageFolder reads "
                    "them, not turned upright as photo viewers show them; to have the model see them upright, save them turned "
                    "(PIL.ImageOps.exif_transpose).", spec, len(turned), printable(str(turned[0])))
    return sizes, colour


def _orientation(im: "Image.Image") -> int | None:
    """The EXIF orientation tag (1: upright; 2-8: mirrored or turned), None when unreadable."""
    try:
        value = im.getexif().get(0x0112)
    except (OSError, ValueError, SyntaxError, KeyError, IndexError, TypeError, struct.error):  # a damaged EXIF block: the pixels may still be fine
        return None
    return value if isinstance(value, int) else None


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
        a16 = np.asarray(src)
        _warn_if_8_bit(a16, name, spec)
        return Image.fromarray(a16.astype(np.float32) / np.float32(65535.0), mode="F"), 1.0
    if mode in ("I", "F"):
        a = np.asarray(src)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if mode == "I":
            if lo < 0 or hi > 65535:
                raise DataError(f"data {spec}: image {printable(str(name))} is a 32-bit integer image with values in [{lo:g}, {hi:g}]; "
                                "robustlab reads 32-bit integer images as 16-bit (0..65535); save it as an 8- or 16-bit image.")
            _warn_if_8_bit(a, name, spec)
            return Image.fromarray(a.astype(np.float32) / np.float32(65535.0), mode="F"), 1.0
        if not np.isfinite(a).all() or lo < -1e-6 or hi > 1 + 1e-6:
            shown = "NaN or infinite values" if not np.isfinite(a).all() else f"values in [{lo:.4g}, {hi:.4g}]"
            raise DataError(f"data {spec}: image {printable(str(name))} is a float image with {shown}; float images must be in [0, 1] "
                            "(or save it as an 8- or 16-bit image).")
        return src if src.mode == "F" else src.convert("F"), 1.0
    return src.convert("RGB"), 255.0  # RGBA/RGBa/RGBX (alpha dropped), P/PA (palette expanded), CMYK, YCbCr, ...


#: folder specs already warned about for 16-bit images holding 8-bit values
_EIGHT_BIT_WARNED: set[str] = set()


def _warn_if_8_bit(a: np.ndarray, name: Path, spec: str) -> None:
    """Warn (once per folder) when a 16-bit image reaches only 255: 8-bit values saved as 16-bit (a uint16 array
    written by PIL or OpenCV) are read as 0..65535 and come out nearly black."""
    top = int(a.max()) if a.size else 0
    if 0 < top <= 255 and spec not in _EIGHT_BIT_WARNED:
        _EIGHT_BIT_WARNED.add(spec)
        log.warning("data %s: 16-bit image %s reaches only %d of 65535 (16-bit images are read as 0..65535, so it is nearly black); "
                    "if the folder holds 8-bit values saved as 16-bit, save them as 8-bit images (e.g. from a uint8 array).", spec, printable(str(name)), top)


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
    top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
    if nw * nh > _MAX_COVER * rh * rw:
        # a sliver (e.g. 1 x 1,000,000 pixels): the whole resized image would be huge (gigabytes at 224x224),
        # so only its centre crop is resampled, from the same source pixels (within 1/255 of the full resize)
        sx, sy = iw / nw, ih / nh
        return im.resize((w, h), Image.Resampling.BILINEAR, box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
    if (nw, nh) != (iw, ih):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    return im.crop((left, top, left + w, top + h))


#: the resized image may cover at most this many times the target's cover area before only the crop is resampled
_MAX_COVER = 64


def unreadable(f: Path, exc: BaseException, spec: str) -> DataError:
    return DataError(f"data {spec}: cannot read image {printable(str(f))} ({' '.join(str(exc).split())[:120]}); remove or replace it.")
