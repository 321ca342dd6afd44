"""The data contract: images in [0, 1] (mapped to the model's bounds by the runner), integer labels,
and stable sample ids so that two runs can be compared sample by sample."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import torch

from ..errors import DataError


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

    def __post_init__(self) -> None:
        if self.x is None and self.loader is None:
            raise ValueError("Dataset needs x or a loader")
        if len(self.ids) != int(self.y.shape[0]) or (self.x is not None and self.x.shape[0] != len(self.ids)):
            raise DataError(f"data {self.spec}: {len(self.ids)} ids, {self.y.shape[0]} labels and {0 if self.x is None else self.x.shape[0]} images differ; every image needs one label.")

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
        return replace(self, ids=[self.ids[i] for i in idx], y=self.y[idx], x=x, loader=loader)

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
        """Hash of ids, labels and (for in-memory data and ``hash_pixels`` sets) pixels.

        Lazy sets are hashed in chunks of about 16 MB, never loaded whole; the digest equals that of
        the same images held in memory.
        """
        h = hashlib.sha256(self.ids_sha256().encode())
        h.update(self.y.numpy().tobytes())
        if self.x is not None:
            h.update(self.x.contiguous().numpy().tobytes())
        elif self.hash_pixels and len(self):
            step = max(1, (16 << 20) // max(1, self.images([0]).numpy().nbytes))
            for s in range(0, len(self), step):
                h.update(self.images(slice(s, s + step)).contiguous().numpy().data)  # a buffer view, no bytes copy
        return h.hexdigest()

    def check_labels(self, num_classes: int) -> None:
        bad = (self.y < 0) | (self.y >= num_classes)
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            raise DataError(
                f"data {self.spec}: label {int(self.y[j])} of sample {self.ids[j]} is outside the model's {num_classes} classes; use data that matches the model or set --num-classes."
            )


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
