"""Bounded-memory access to the arrays of an ``.npz`` archive.

``numpy.load`` reads a whole member of an ``.npz`` into memory (it ignores ``mmap_mode`` for
archives). For an evaluation set of 10,000 CIFAR images that is 30 MB of uint8 and 123 MB once
converted to float32; for 50,000 ImageNet images it is 7.5 GB / 30 GB. :func:`open_member` instead
memory-maps the member: a stored (uncompressed, ``numpy.savez``) member is mapped in place; a
compressed one (``numpy.savez_compressed``) is first inflated, in chunks, into an anonymous
temporary file that is mapped and deleted when the last reference goes. Either way only the pages
a batch touches are read, and the operating system may drop them again. A stored member is checked
against the archive's CRC-32 once per file and process, and a header that claims more bytes than the
member holds is refused. :func:`image_layout`, :func:`warn_if_dim` and :func:`read_batch` read the image
array of the ``npz:`` data source.
"""

from __future__ import annotations

import errno
import logging
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Sequence

import numpy as np
import torch

from ..errors import DataError

log = logging.getLogger(__name__)

#: bytes copied per chunk when inflating a compressed member
_CHUNK = 16 << 20
#: what reading a damaged member raises (zlib, bz2: OSError, lzma: LZMAError)
_DAMAGED: tuple[type[BaseException], ...] = (zipfile.BadZipFile, EOFError, OSError, zlib.error)
try:
    import lzma

    _DAMAGED += (lzma.LZMAError,)
except ImportError:  # a Python built without lzma: zipfile cannot read such members either
    pass
#: ... and what reading a damaged .npy header raises
_UNREADABLE_HEADER: tuple[type[BaseException], ...] = (*_DAMAGED, ValueError)
#: compression methods zipfile reads
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


def _member_info(zf: zipfile.ZipFile, path: Path, name: str) -> zipfile.ZipInfo:
    """The zip entry of ``name.npy``; ``DataError`` for an encrypted member or a compression method zipfile cannot read."""
    info = zf.getinfo(f"{name}.npy")
    if info.flag_bits & 0x1:
        raise DataError(f"{path}: member {name}.npy is encrypted; save the arrays again with numpy.savez (no password).")
    if info.compress_type not in _METHODS:
        raise DataError(f"{path}: member {name}.npy is compressed with zip method {info.compress_type}, which Python cannot read; "
                        "save the arrays again with numpy.savez or numpy.savez_compressed.")
    return info


def members(path: Path) -> list[str]:
    """Array names in the archive (``x``, ``y``, ...)."""
    with zipfile.ZipFile(path) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def open_member(path: Path, name: str) -> np.ndarray:
    """Memory-map array ``name`` of the ``.npz`` at ``path`` (read-only).

    Object arrays (which need pickle) are refused. Small arrays (labels, ids) may be copied into
    memory by the caller with ``np.array``.
    """
    with zipfile.ZipFile(path) as zf:
        info = _member_info(zf, path, name)
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fh:
                start = _stored_start(fh, path, name, info)
                _check_crc(fh, path, name, start, info)
                fh.seek(start)
                return _map_npy(fh, path, name, start + info.file_size)
        _check_inflation(zf, path, name, info)
        tmp = tempfile.TemporaryFile(prefix="robustlab-npz-")
        try:
            with zf.open(info) as src:
                shutil.copyfileobj(src, tmp, _CHUNK)  # zipfile checks the CRC at the end of the member
        except _DAMAGED as exc:
            tmp.close()
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise DataError(f"{path}: no disk space left to inflate member {name}.npy ({info.file_size / 2**30:.2f} GiB) in {tempfile.gettempdir()}; "
                                "set TMPDIR to a folder with room, or save the arrays with numpy.savez (uncompressed, read in place).") from exc
            raise DataError(f"{path}: member {name}.npy is damaged ({exc}); save the arrays again with numpy.savez_compressed.") from exc
        end = tmp.tell()
        tmp.seek(0)
        try:
            return _map_npy(tmp, path, name, end)
        finally:
            tmp.close()  # the mapping keeps its own handle; the file disappears with the mapping


#: a compressed member that inflates to more than this ...
_BOMB_BYTES = 1 << 30
#: ... and more than this many times its compressed size is refused as a zip bomb (image arrays compress far less)
_BOMB_RATIO = 200
#: bytes a member may hold after its array (numpy writes none)
_SLACK = 1 << 20


def header(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``name`` from its ``.npy`` header alone (a compressed member is not inflated)."""
    with zipfile.ZipFile(path) as zf:
        info = _member_info(zf, path, name)
        try:
            if info.compress_type == zipfile.ZIP_STORED:  # read in place (the CRC is checked when the member is mapped)
                with open(path, "rb") as fh:
                    fh.seek(_stored_start(fh, path, name, info))
                    shape, _fortran, dtype, _size = _read_header(fh, path, name)
            else:
                with zf.open(info) as src:
                    shape, _fortran, dtype, _size = _read_header(src, path, name)
        except _DAMAGED as exc:
            raise DataError(f"{path}: member {name}.npy is damaged ({exc}); save the arrays again with numpy.savez.") from exc
    return shape, dtype


def _stored_start(fh: IO[bytes], path: Path, name: str, info: zipfile.ZipInfo) -> int:
    """Offset in the archive of the bytes of stored member ``info`` (after its local header)."""
    fh.seek(info.header_offset)
    local = fh.read(30)
    if local[:4] != b"PK\x03\x04":
        raise DataError(f"{path}: member {name}.npy has a damaged zip header; save the arrays again with numpy.savez.")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return int(info.header_offset + 30 + name_len + extra_len)


def _read_header(fh: IO[bytes], path: Path, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, bytes read) of the ``.npy`` header at ``fh``'s position."""
    from numpy.lib import format as npformat

    start = fh.tell()
    version = npformat.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = npformat.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = npformat.read_array_header_2_0(fh)
    else:
        raise DataError(f"{path}: member {name}.npy has .npy format version {version}; save it again with numpy.savez.")
    return tuple(int(d) for d in shape), bool(fortran), dtype, fh.tell() - start


def _check_inflation(zf: zipfile.ZipFile, path: Path, name: str, info: zipfile.ZipInfo) -> None:
    """Refuse, before inflating anything, a compressed member that would fill the temporary folder: one that
    holds far more bytes than its array needs, a zip bomb (a huge member that compresses absurdly well), or
    one larger than the free space where it is inflated."""
    try:
        with zf.open(info) as src:
            shape, _fortran, dtype, offset = _read_header(src, path, name)
    except _UNREADABLE_HEADER:
        return  # a damaged or unreadable header is reported by the full read
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if info.file_size > need + _SLACK:
        raise DataError(f"{path}: member {name}.npy inflates to {info.file_size} bytes but its array {tuple(shape)} of {dtype} needs {need}; "
                        "the file is damaged or a zip bomb; save the arrays again with numpy.savez_compressed.")
    gib = info.file_size / 2**30
    if info.file_size > _BOMB_BYTES and info.file_size > _BOMB_RATIO * max(1, info.compress_size):
        raise DataError(f"{path}: member {name}.npy inflates {info.file_size // max(1, info.compress_size)}-fold to {gib:.1f} GiB, as a zip bomb does; "
                        "if the array is genuine, save it with numpy.savez (uncompressed: read in place, never inflated).")
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if info.file_size > free:
        raise DataError(f"{path}: member {name}.npy inflates to {gib:.1f} GiB but {tempfile.gettempdir()} has {free / 2**30:.1f} GiB free; "
                        "set TMPDIR to a folder with room, or save the arrays with numpy.savez (uncompressed, read in place).")


#: stored members whose CRC matched: (path, size, mtime, member) -> True, so a member is read once per process
_CRC_OK: set[tuple[str, int, int, str]] = set()


def _check_crc(fh: IO[bytes], path: Path, name: str, start: int, info: zipfile.ZipInfo) -> None:
    """Raise ``DataError`` unless the stored member's bytes match the CRC-32 the archive records (a damaged
    or hand-edited file would otherwise be mapped as images). Reads the member once, in chunks."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, name)
    if key in _CRC_OK:
        return
    fh.seek(start)
    crc, left = 0, info.file_size
    while left > 0:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    if left > 0 or crc != info.CRC:
        what = f"{left} of its {info.file_size} bytes are missing" if left > 0 else "its bytes do not match the archive's CRC-32"
        raise DataError(f"{path}: member {name}.npy is damaged ({what}); save the arrays again with numpy.savez.")
    _CRC_OK.add(key)


def _map_npy(fh: IO[bytes], path: Path, name: str, end: int) -> np.ndarray:
    """Map the ``.npy`` at ``fh``'s position, whose bytes end at offset ``end`` of ``fh``."""
    shape, fortran, dtype, _size = _read_header(fh, path, name)
    if dtype.hasobject:
        raise DataError(f"{path}: array {name!r} holds Python objects; store images as uint8 or float arrays and ids as fixed-width strings.")
    offset = fh.tell()
    need = int(np.prod(shape)) * dtype.itemsize
    if end - offset < need:
        raise DataError(f"{path}: array {name!r} of shape {tuple(shape)} needs {need} bytes but its member holds {max(0, end - offset)}; "
                        "the file is truncated or damaged, save the arrays again with numpy.savez.")
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def image_layout(x: np.ndarray, p: Path, kx: str) -> str:
    """The layout of image array ``x`` (``nhw``, ``nhwc`` or ``nchw``); ``DataError`` for what holds no images:
    another number of dimensions, 4 channels last (RGBA), a dimension of size 0."""
    if x.ndim == 3:
        layout = "nhw"
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        layout = "nhwc"
    elif x.ndim == 4:
        layout = "nchw"
    else:
        raise DataError(f"{p}: '{kx}' has shape {x.shape}; expected (N,H,W), (N,H,W,C) or (N,C,H,W).")
    if layout == "nchw" and x.shape[-1] == 4 and x.shape[1] not in (1, 3, 4):
        raise DataError(f"{p}: '{kx}' has shape {x.shape}, images with 4 channels last (RGBA); drop the alpha channel (x[..., :3]) and save again.")
    if any(d == 0 for d in x.shape[1:]):
        raise DataError(f"{p}: '{kx}' has shape {x.shape}: images with no pixels; save the images themselves.")
    if layout == "nchw" and x.shape[-1] in (1, 3) and str(p) not in _AMBIGUOUS_WARNED:  # e.g. (N, 3, 3, 3): either order fits
        _AMBIGUOUS_WARNED.add(str(p))
        log.warning("%s: '%s' has shape %s, which fits both (N, C, H, W) and (N, H, W, C); it is read as (N, C, H, W), %d channel(s) of %dx%d. "
                    "If its channels are last, save x.transpose(0, 3, 1, 2) instead.", p, kx, tuple(x.shape), x.shape[1], x.shape[2], x.shape[3])
    return layout


#: npz files already warned about for an image shape that fits both channel orders
_AMBIGUOUS_WARNED: set[str] = set()


#: npz files already warned about for dim uint8 images (a command may open its data twice)
_DIM_WARNED: set[str] = set()


def warn_if_dim(x: np.ndarray, p: Path) -> None:
    """Warn (once per file) when the first images reach only 16 of 255: uint8 images on another scale (0..16, 0..1)
    read as 0..255, or float images divided by 255 twice."""
    if x.dtype.kind not in "uf" or not x.shape[0] or str(p) in _DIM_WARNED:
        return
    first = np.asarray(x[: max(1, (4 << 20) // max(1, x[:1].nbytes))])
    if x.dtype == np.uint8 and int(first.max()) <= 16:
        _DIM_WARNED.add(str(p))
        log.warning("%s: uint8 images reach only %d (uint8 images are read as 0..255); if they are on another scale, "
                    "scale them to 0..255 or store floats in [0, 1].", p, int(first.max()))
    elif x.dtype.kind == "f" and 0 < float(first.max()) <= 16 / 255:
        _DIM_WARNED.add(str(p))
        log.warning("%s: float images reach only %.4g (float images are read as 0..1, so they are nearly black); if they were divided "
                    "by 255 twice or are on another scale, scale them to 0..1.", p, float(first.max()))


def read_batch(x: np.ndarray, idx: Sequence[int], layout: str, p: Path) -> torch.Tensor:
    """Images ``idx`` of a memory-mapped npz array as (n, C, H, W) float32 in [0, 1]."""
    idx = list(idx)
    if idx and idx == list(range(idx[0], idx[0] + len(idx))):
        a = np.array(x[idx[0] : idx[0] + len(idx)])  # a contiguous run: one sequential read
    else:
        a = np.array(x[idx]) if idx else np.zeros((0, *x.shape[1:]), dtype=x.dtype)
    if layout == "nhw":
        a = a[:, None]
    elif layout == "nhwc":
        a = a.transpose(0, 3, 1, 2)
    if a.dtype == np.uint8:
        xf = a.astype(np.float32) / 255.0
    else:  # checked in the stored dtype: a float64 1e300 is out of range, not "infinite" as its float32 would be
        finite = np.isfinite(a)
        if a.size and not finite.all():
            bad = np.nonzero(~finite.reshape(len(a), -1).all(axis=1))[0]
            more = f" ({len(bad)} such images among images {idx[0]}-{idx[-1]})" if len(bad) > 1 else ""
            raise DataError(f"data npz:{p}: image {idx[int(bad[0])]} has NaN or infinite values{more}; images must be finite, in [0, 1] (uint8 0..255 or float 0..1).")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise DataError(f"data npz:{p} has values in [{lo:.4g}, {hi:.4g}]; images must be in [0, 1] (uint8 0..255 or float 0..1).")
        xf = a.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(xf))
