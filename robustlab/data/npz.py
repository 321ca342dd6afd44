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

import shutil
import logging
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
        info = zf.getinfo(f"{name}.npy")
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                if local[:4] != b"PK\x03\x04":
                    raise DataError(f"{path}: member {name}.npy has a damaged zip header; save the arrays again with numpy.savez.")
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                _check_crc(fh, path, name, start, info)
                fh.seek(start)
                return _map_npy(fh, path, name, start + info.file_size)
        tmp = tempfile.TemporaryFile(prefix="robustlab-npz-")
        try:
            with zf.open(info) as src:
                shutil.copyfileobj(src, tmp, _CHUNK)  # zipfile checks the CRC at the end of the member
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            tmp.close()
            raise DataError(f"{path}: member {name}.npy is damaged ({exc}); save the arrays again with numpy.savez_compressed.") from exc
        end = tmp.tell()
        tmp.seek(0)
        try:
            return _map_npy(tmp, path, name, end)
        finally:
            tmp.close()  # the mapping keeps its own handle; the file disappears with the mapping


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
    from numpy.lib import format as npformat

    version = npformat.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = npformat.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = npformat.read_array_header_2_0(fh)
    else:
        raise DataError(f"{path}: member {name}.npy has .npy format version {version}; save it again with numpy.savez.")
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
    return layout


#: npz files already warned about for dim uint8 images (a command may open its data twice)
_DIM_WARNED: set[str] = set()


def warn_if_dim(x: np.ndarray, p: Path) -> None:
    """Warn (once per file) when uint8 images reach only 16: another scale (0..16, 0..1) read as 0..255."""
    if x.dtype == np.uint8 and x.shape[0]:
        top = int(np.asarray(x[: max(1, (4 << 20) // max(1, x[:1].nbytes))]).max())
        if top <= 16 and str(p) not in _DIM_WARNED:
            _DIM_WARNED.add(str(p))
            log.warning("%s: uint8 images reach only %d (uint8 images are read as 0..255); if they are on another scale, "
                        "scale them to 0..255 or store floats in [0, 1].", p, top)


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
    else:
        xf = a.astype(np.float32)
        finite = np.isfinite(xf)
        if xf.size and not finite.all():
            bad = np.nonzero(~finite.reshape(len(xf), -1).all(axis=1))[0]
            more = f" ({len(bad)} such images among images {idx[0]}-{idx[-1]})" if len(bad) > 1 else ""
            raise DataError(f"data npz:{p}: image {idx[int(bad[0])]} has NaN or infinite values{more}; images must be finite, in [0, 1] (uint8 0..255 or float 0..1).")
        lo, hi = (float(xf.min()), float(xf.max())) if xf.size else (0.0, 1.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise DataError(f"data npz:{p} has values in [{lo:.4g}, {hi:.4g}]; images must be in [0, 1] (uint8 0..255 or float 0..1).")
    return torch.from_numpy(np.ascontiguousarray(xf))
