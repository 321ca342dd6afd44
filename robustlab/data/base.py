"""The data contract: images in [0, 1] (mapped to the model's bounds by the runner), integer labels,
and stable sample ids so that two runs can be compared sample by sample."""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch

from ..errors import DataError, printable

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """A labelled image set.

    Attributes:
        spec: the data spec that produced it (``digits``, ``npz:PATH``, ...).
        split: ``train``, ``val`` or ``test``.
        ids: (N,) stable sample ids, e.g. ``digits/1234``.
        y: (N,) int64 labels in ``0..len(classes)-1`` (``-1`` for unlabelled OOD sets).
        classes: class names.
        x: (N, C, H, W) float32 images in ``bounds``, or None when loaded lazily through ``loader``.
        bounds: the value range of ``x`` (data plugins yield [0, 1]).
        hash_pixels: ``loader`` is cheap (e.g. memory-mapped), so :meth:`content_sha256` hashes the
            pixels of a lazy set too, streamed in chunks; otherwise only ids and labels are hashed.
        files: (N,) paths of the files the samples are decoded from (``folder:`` sets), or None. A lazy
            set with files is fingerprinted by the files' bytes (reading is far cheaper than decoding).
        relabel_by_name: the labels are only the positions of ``classes`` (ImageFolder: class folders
            sorted by name), so :meth:`match_classes` may map them to a model's classes by name.
        preprocessing: how a plugin decoded and sized the images when it chose (``folder:``: native
            size, or the resize/crop protocol and its target), else empty. Recorded in the scorecard
            (``data.preprocessing``) and part of :meth:`content_sha256`.
    """

    spec: str
    split: str
    ids: list[str]
    y: torch.Tensor
    classes: list[str]
    x: torch.Tensor | None = None
    loader: Callable[[Sequence[int]], torch.Tensor] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    hash_pixels: bool = False
    files: list[str] | None = None
    relabel_by_name: bool = False
    preprocessing: str = ""
    _files_sha256: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.x is None and self.loader is None:
            raise ValueError("Dataset needs x or a loader")
        if len(self.ids) != int(self.y.shape[0]) or (self.x is not None and self.x.shape[0] != len(self.ids)) or (self.files is not None and len(self.files) != len(self.ids)):
            counts = [f"{len(self.ids)} ids", f"{self.y.shape[0]} labels"] + ([f"{self.x.shape[0]} images"] if self.x is not None else []) + (
                [f"{len(self.files)} files"] if self.files is not None else [])
            raise DataError(f"data {self.spec}: {', '.join(counts[:-1])} and {counts[-1]} differ; give every image one id and one label.")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def images(self, indices: Sequence[int] | slice | None = None) -> torch.Tensor:
        """Images (n, C, H, W) in ``bounds`` for the given indices (all when None)."""
        if self.x is not None:
            return self.x if indices is None else self.x[indices if isinstance(indices, slice) else list(indices)]
        assert self.loader is not None
        if indices is None:
            idx: Sequence[int] = range(len(self))
        elif isinstance(indices, slice):
            idx = range(*indices.indices(len(self)))
        else:
            idx = indices
        return self.loader(list(idx))

    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.images([0]).shape[1:]) if len(self) else ()

    def batches(self, batch_size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(start, x, y)`` batches in order."""
        for s in range(0, len(self), batch_size):
            yield s, self.images(slice(s, s + batch_size)), self.y[s : s + batch_size]

    def subset(self, indices: Sequence[int]) -> "Dataset":
        idx = list(indices)
        x = self.x[idx] if self.x is not None else None
        loader = None
        if self.x is None:
            base = self.loader
            assert base is not None
            loader = lambda sub: base([idx[i] for i in sub])  # noqa: E731
        files = [self.files[i] for i in idx] if self.files is not None else None
        return replace(self, ids=[self.ids[i] for i in idx], y=self.y[idx], x=x, loader=loader, files=files)

    def limit(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise DataError(f"--limit must be positive, got {n}.")
        return self.subset(range(n))

    def to_bounds(self, bounds: tuple[float, float]) -> "Dataset":
        """Map the images linearly from the current bounds to ``bounds``."""
        lo, hi = map(float, self.bounds)
        nlo, nhi = map(float, bounds)
        if (lo, hi) == (nlo, nhi):
            return self

        def f(t: torch.Tensor) -> torch.Tensor:
            return (t - lo) / (hi - lo) * (nhi - nlo) + nlo

        if self.x is not None:
            return replace(self, x=f(self.x), bounds=(nlo, nhi))
        base = self.loader
        assert base is not None
        return replace(self, loader=lambda idx: f(base(idx)), bounds=(nlo, nhi))

    def ids_sha256(self) -> str:
        h = hashlib.sha256()
        for i in self.ids:
            h.update(i.encode("utf-8", "surrogatepass"))  # ids named after non-UTF-8 file names
            h.update(b"\n")
        return h.hexdigest()

    def content_sha256(self) -> str:
        """Hash of ids, labels and the content: the pixels of in-memory data and ``hash_pixels`` sets,
        the bytes of the files of sets read from ``files``, and ``preprocessing`` when set (the same
        files decoded at another size or channel count are other images).

        Lazy sets are hashed in chunks of about 16 MB, never loaded whole; the digest equals that of
        the same images held in memory. Files are read (not decoded) once per :class:`Dataset`
        object, so the resume fingerprint and the scorecard of a run agree.
        """
        h = hashlib.sha256(self.ids_sha256().encode())
        h.update(self.y.numpy().tobytes())
        if self.x is not None:
            h.update(self.x.contiguous().numpy().tobytes())
        elif self.files is not None:
            if self._files_sha256 is None:
                self._files_sha256 = _files_sha256(self.files, self.spec)
            h.update(self._files_sha256.encode())
        elif self.hash_pixels and len(self):
            step = max(1, (16 << 20) // max(1, self.images([0]).numpy().nbytes))
            for s in range(0, len(self), step):
                h.update(self.images(slice(s, s + step)).contiguous().numpy().data)  # a buffer view, no bytes copy
        if self.preprocessing:
            h.update(b"\npreprocessing: " + self.preprocessing.encode())
        return h.hexdigest()

    def match_classes(self, class_names: Sequence[str] | None, num_classes: int) -> "Dataset":
        """This set with labels that index the model's classes.

        Only sets whose labels are positions of their ``classes`` (``relabel_by_name``, e.g. the sorted
        class folders of ``folder:``) change: when the model's class names are known (``class_names``,
        None when it has none) and every folder is named after one, each image gets the index of its
        folder's name; otherwise the sorted folders must be one per class (torchvision's ImageFolder
        convention, e.g. ImageNet wnid folders for a 1000-class model). Anything else is refused.
        """
        if not self.relabel_by_name:
            return self
        index = {_nfc(c): i for i, c in enumerate(class_names or ())}  # a folder copied from a Mac spells "é" as "e" + accent (NFD)
        names = self.classes
        keys = [_nfc(c) for c in names]
        if index and all(k in index for k in keys):
            lut = torch.tensor([index[k] for k in keys], dtype=torch.int64)
            return replace(self, y=lut[self.y], classes=list(class_names or ()), relabel_by_name=False)
        shown = ", ".join(ascii(c)[:40] for c in names[:5]) + (", ..." if len(names) > 5 else "")
        known = ", ".join(ascii(c)[:40] for c in list(index)[:5]) + (", ..." if len(index) > 5 else "")
        if not self.spec.startswith("folder:"):  # npz 'classes' naming other classes than the model's: labels by position, as before
            if index:
                log.warning("data %s names its classes %s, not the model's (%s): its labels are taken as the model's class indices", self.spec, shown, known)
            return replace(self, relabel_by_name=False)
        if len(names) != num_classes:
            if index:
                strangers = [ascii(c)[:40] for c, k in zip(names, keys) if k not in index]
                why = (f"not every folder is named after a class of the model ({known}): {', '.join(strangers[:3])}"
                       f"{f' and {len(strangers) - 3} more' if len(strangers) > 3 else ''} {'is' if len(strangers) == 1 else 'are'} not")
                how = "name the folders after the model's classes (or pass --class-names with its class names in label order)"
            else:
                why = "the model has no class names"
                how = "pass --class-names with the model's class names in label order and name the folders after them"
            raise DataError(f"data {self.spec}: {len(names)} class folder(s) ({shown}) for a model with {num_classes} classes, and {why}, "
                            f"so the labels are unknown; {how}, or give one folder per class (sorted folder names = class indices).")
        moved = [i for i, k in enumerate(keys) if index.get(k, i) != i]
        if moved:
            raise DataError(f"data {self.spec}: class folder {ascii(names[moved[0]])[:40]} is named after the model's class {index[keys[moved[0]]]} but sorts to "
                            f"position {moved[0]} of the folders; name every class folder after a class of the model ({known}), or none.")
        return replace(self, relabel_by_name=False)

    def check_labels(self, num_classes: int) -> None:
        bad = (self.y < 0) | (self.y >= num_classes)
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            raise DataError(
                f"data {self.spec}: label {int(self.y[j])} of sample {self.ids[j]} is outside the model's {num_classes} classes; use data that matches the model or set --num-classes."
            )


def _nfc(name: str) -> str:
    """``name`` in Unicode normal form C, so that names that look the same compare equal."""
    return unicodedata.normalize("NFC", name)


def _files_sha256(files: Sequence[str], spec: str) -> str:
    """sha256 over the sha256 of each file's bytes, in order (streamed in 1 MiB reads)."""
    h = hashlib.sha256()
    for f in files:
        fh = hashlib.sha256()
        try:
            with open(f, "rb") as src:
                while chunk := src.read(1 << 20):
                    fh.update(chunk)
        except OSError as exc:
            raise DataError(f"data {spec}: cannot read {printable(f)} ({exc.strerror or exc}); restore the file or remove it from the data.") from exc
        h.update(fh.digest())
    return h.hexdigest()


def adapt_images(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resize (bilinear, antialiased) and convert channels (grey <-> RGB) to ``shape`` = (C, H, W).

    Used to feed data of another domain to a model (e.g. MNIST as OOD data for a CIFAR model).
    """
    c, h, w = (int(s) for s in shape)
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x.mean(1, keepdim=True)
        else:
            raise DataError(f"cannot convert {x.shape[1]}-channel images to {c} channels.")
    if tuple(x.shape[2:]) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x.contiguous()
