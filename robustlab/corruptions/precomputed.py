"""Readers for pre-rendered corruption sets: CIFAR-10-C / CIFAR-100-C and ImageNet-C.

The authors of the benchmarks recommend evaluating on their saved files for deterministic, comparable
numbers. Two layouts are recognised:

* **CIFAR-C** (Hendrycks & Dietterich's CIFAR-10-C and CIFAR-100-C releases): a folder with one
  ``<corruption>.npy`` per corruption, (5 n, 32, 32, 3) uint8 with the five severities stacked in
  order (rows ``(s - 1) n .. s n - 1`` are severity s of the n test images), and ``labels.npy``
  (5 n,) int. Arrays are memory-mapped. Folders written by ``robustlab corrupt`` have the same
  layout plus ``manifest.json`` (protocol, seed, hashes; exposed as ``manifest``) and ``ids.json``
  (the sample ids).
* **ImageNet-C**: ``<root>/<corruption>/<severity>/<class folder>/<image>`` (JPEG). Labels are the
  index of the class folder in the sorted list of class folders (the standard ImageNet order for the
  1000 WordNet ids).

References: Hendrycks & Dietterich, ICLR 2019 (https://github.com/hendrycks/robustness, the
CIFAR-10-C / CIFAR-100-C / ImageNet-C releases and their ``make_*_c.py`` scripts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, cast

import json

import numpy as np
import torch

from ..errors import DataError

_IMAGE_EXT = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


@dataclass
class PrecomputedCorruptions:
    """A pre-rendered corruption set on disk.

    Attributes:
        root: the folder.
        layout: ``cifar-c`` or ``imagenet-c``.
        corruptions: corruption names found.
    """

    root: Path
    layout: str
    corruptions: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    _cache: dict[tuple[str, int], tuple[list[Path], np.ndarray]] = field(default_factory=dict, repr=False)

    def count(self, name: str, severity: int) -> int:
        """Number of images of one (corruption, severity)."""
        if self.layout == "cifar-c":
            return int(self._labels_all().shape[0]) // 5
        return len(self._imagenet_index(name, severity)[0])

    def labels(self, name: str, severity: int) -> torch.Tensor:
        """(n,) int64 labels of one (corruption, severity)."""
        if self.layout == "cifar-c":
            y = self._labels_all()
            n = y.shape[0] // 5
            return torch.from_numpy(np.array(y[(severity - 1) * n : severity * n], dtype=np.int64))
        return torch.from_numpy(self._imagenet_index(name, severity)[1].copy())

    def ids(self, name: str, severity: int) -> list[str]:
        """Stable ids of the underlying clean images (the same for every corruption)."""
        if self.layout == "cifar-c":
            if (self.root / "ids.json").is_file():
                return [str(i) for i in json.loads((self.root / "ids.json").read_text())]
            return [f"{self.root.name}/{i}" for i in range(self.count(name, severity))]
        return [f"{p.parent.name}/{p.name}" for p in self._imagenet_index(name, severity)[0]]

    def images(self, name: str, severity: int, indices: Sequence[int]) -> torch.Tensor:
        """(len(indices), 3, H, W) float32 in [0, 1]."""
        idx = list(indices)
        if self.layout == "cifar-c":
            arr = np.load(self.root / f"{name}.npy", mmap_mode="r")
            n = arr.shape[0] // 5
            rows = np.asarray(arr[[(severity - 1) * n + i for i in idx]])
            if rows.ndim == 3:
                rows = rows[..., None]
            return torch.from_numpy(np.ascontiguousarray(rows)).permute(0, 3, 1, 2).float() / 255.0
        from PIL import Image

        paths = self._imagenet_index(name, severity)[0]
        out = []
        for i in idx:
            try:
                with Image.open(paths[i]) as im:
                    out.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
                raise DataError(f"cannot read ImageNet-C image {paths[i]} ({' '.join(str(exc).split())[:100]}); re-extract the set or remove the file.") from exc
        if len({tuple(t.shape) for t in out}) > 1:
            raise DataError(f"ImageNet-C images in {self.root / name / str(severity)} differ in size; the released set is 224x224 throughout, re-extract it.")
        return torch.stack(out).float() / 255.0

    def cell_fingerprint(self, name: str, severity: int) -> str:
        """sha256 over the name, size and modification time of every file one (corruption, severity)
        cell reads: stored results of a cell whose files were replaced are not reused on ``--resume``
        (the files themselves are not read: ImageNet-C holds 3.75 million of them)."""
        import hashlib

        if self.layout == "cifar-c":
            files = [self.root / f"{name}.npy", self.root / "labels.npy"]
        else:
            files = list(self._imagenet_index(name, severity)[0])
        h = hashlib.sha256(f"{self.layout}|{name}|{severity}".encode())
        for f in files:
            st = f.stat()
            h.update(f"\n{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()

    def _labels_all(self) -> np.ndarray:
        return cast("np.ndarray", np.load(self.root / "labels.npy", mmap_mode="r"))

    def _imagenet_index(self, name: str, severity: int) -> tuple[list[Path], np.ndarray]:
        key = (name, int(severity))
        if key not in self._cache:
            self._cache.clear()  # one cell at a time: 50,000 paths per cell x 75 cells would hold GBs
            d = self.root / name / str(severity)
            if not d.is_dir():
                raise DataError(f"ImageNet-C folder {d} is missing; the precomputed set needs <root>/<corruption>/<severity>/<class>/ folders for every corruption and severity of the suite.")
            classes = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))  # hidden: .DS_Store, ._x.JPEG, ...
            paths: list[Path] = []
            labels: list[int] = []
            for ci, c in enumerate(classes):
                files = sorted(p for p in (d / c).iterdir() if p.suffix.lower() in _IMAGE_EXT and not p.name.startswith("."))
                paths += files
                labels += [ci] * len(files)
            self._cache[key] = (paths, np.asarray(labels, dtype=np.int64))
        return self._cache[key]


def _npy(path: Path) -> np.ndarray:
    """Memory-map the ``.npy`` file ``path`` of a CIFAR-C set; never unpickles."""
    try:
        return cast("np.ndarray", np.load(path, mmap_mode="r", allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a NumPy array of numbers (a damaged file, a pickle or an array of Python objects); restore it "
                        "or render the set again with robustlab corrupt.") from exc


def _check_cifar_c(p: Path, corruptions: Sequence[str]) -> int:
    """The number of labels (5 severities x n images) of the CIFAR-C folder ``p``, whose ``labels.npy`` must hold
    class indices and whose ``<corruption>.npy`` files must be uint8 (5 n, H, W[, C]) images, as the releases are
    (a float file was read as 0..255 and a channels-first one as other images: wrong numbers without an error)."""
    labels = _npy(p / "labels.npy")
    fix = "restore it or render the set again with robustlab corrupt"
    if labels.dtype.kind not in "iu" or labels.ndim != 1 or not labels.shape[0]:
        raise DataError(f"{p / 'labels.npy'} holds {labels.dtype} of shape {labels.shape}; CIFAR-C labels are (5 n,) integers; {fix}.")
    n = int(labels.shape[0])
    if n % 5:
        raise DataError(f"{p / 'labels.npy'} has {n} labels, not 5 severities x n images; is this a CIFAR-C release?")
    if int(labels.min()) < 0:
        raise DataError(f"{p / 'labels.npy'} has the label {int(labels.min())}; labels are class indices 0..K-1; {fix}.")
    for c in corruptions:
        x = _npy(p / f"{c}.npy")
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)) or x.shape[0] != n:
            raise DataError(f"{p / (c + '.npy')} holds {x.dtype} of shape {x.shape}; a CIFAR-C file holds uint8 images (5 n, H, W, 3) (or (5 n, H, W) "
                            f"grey), one per label of labels.npy ({n}); {fix}.")
    return n


def open_precomputed(root: str | Path, corruptions: Sequence[str] = ()) -> PrecomputedCorruptions:
    """Recognise a CIFAR-C or ImageNet-C folder and check that it holds ``corruptions``.

    Raises:
        DataError: the folder is missing, has neither layout, or lacks a requested corruption.
    """
    p = Path(root).expanduser()
    if not p.is_dir():
        raise DataError(f"precomputed corruption folder {p} does not exist; pass the extracted CIFAR-10-C / CIFAR-100-C / ImageNet-C folder.")
    if (p / "labels.npy").is_file():
        found = sorted(f.stem for f in p.glob("*.npy") if f.stem != "labels")
        missing = [c for c in corruptions if c not in found]
        if missing:
            raise DataError(f"{p} (CIFAR-C layout) has no {', '.join(m + '.npy' for m in missing)}; remove those corruptions from the suite or complete the folder.")
        n = _check_cifar_c(p, corruptions)
        manifest: dict[str, Any] = {}
        if (p / "manifest.json").is_file():
            try:
                manifest = json.loads((p / "manifest.json").read_text())
            except (OSError, ValueError, RecursionError) as exc:
                raise DataError(f"{p / 'manifest.json'} is not readable JSON ({' '.join(str(exc).split())[:100]}); restore it or delete it to read the folder as a plain CIFAR-C set.") from exc
            if not isinstance(manifest, dict) or not isinstance(manifest.get("n", 0), (int, type(None))) or isinstance(manifest.get("n"), bool):
                raise DataError(f"{p / 'manifest.json'} is not a robustlab corrupt manifest (a JSON object with an integer n); restore it or delete it "
                                "to read the folder as a plain CIFAR-C set.")
            if manifest.get("n") is not None and int(manifest["n"]) * 5 != int(n):
                raise DataError(f"{p}: manifest.json says {manifest['n']} images per severity but labels.npy has {n} labels; the folder is incomplete or mixed, render it again.")
        return PrecomputedCorruptions(root=p, layout="cifar-c", corruptions=found, manifest=manifest)
    found = sorted(d.name for d in p.iterdir() if d.is_dir() and any((d / str(s)).is_dir() for s in range(1, 6)))
    if not found:
        raise DataError(f"{p} is neither a CIFAR-C folder (<corruption>.npy + labels.npy) nor an ImageNet-C folder (<corruption>/<severity>/<class>/); check the path.")
    missing = [c for c in corruptions if c not in found]
    if missing:
        raise DataError(f"{p} (ImageNet-C layout) has no folder for {', '.join(missing)}; remove those corruptions from the suite or complete the folder.")
    return PrecomputedCorruptions(root=p, layout="imagenet-c", corruptions=found)
