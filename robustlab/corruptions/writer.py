"""Render a data set under a corruption protocol into the CIFAR-10-C folder layout (``robustlab corrupt``).

Layout written to ``out`` (the layout of the published CIFAR-10-C / CIFAR-100-C releases, which
:func:`robustlab.corruptions.precomputed.open_precomputed` reads back)::

    <corruption>.npy   (5 n, H, W, C) uint8, severities 1..5 in blocks of n, images in data order
    labels.npy         (5 n,) uint8 (int64 when a label exceeds 255), the labels repeated 5 times
    ids.json           the n sample ids, in order
    manifest.json      protocol, its source, backend, seed, data spec and hashes, tool version,
                       and the sha256 of every file

Image i of (corruption c, severity s) is ``to_uint8(corrupt(x_i, c, s, seed_i))`` with
``seed_i = corruption_seeds(seed, c, s, [id_i])``: the same seeds and 8-bit levels as the
``corruption`` check uses on the fly, so evaluating the folder (``precomputed: <out>``) with the same
seed gives the same numbers. Work is saved per (corruption, severity) block under ``out/.partial``;
an interrupted run resumes from the blocks already written (only if protocol, seed, backend and
data are unchanged).

References: Hendrycks & Dietterich, ICLR 2019 (the CIFAR-10-C release format).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..data.base import Dataset
from ..errors import DataError
from ..signing import sha256_file
from .engine import Backend, corrupt, corruption_seeds, to_uint8
from .protocol import resolve

log = logging.getLogger(__name__)
FORMAT = "robustlab-corrupt/1"
SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class RenderConfig:
    """What is rendered (recorded in the manifest; a resumed run must match it)."""

    protocol: str
    protocol_source: str
    backend: str
    seed: int
    corruptions: tuple[str, ...]
    data_spec: str
    n: int
    ids_sha256: str
    content_sha256: str
    image_shape: tuple[int, ...] = field(default=())


def _config_dict(cfg: RenderConfig) -> dict[str, object]:
    d = asdict(cfg)
    d["corruptions"] = list(cfg.corruptions)
    d["image_shape"] = list(cfg.image_shape)
    return d


def render(
    data: Dataset,
    out: str | Path,
    *,
    corruptions: Sequence[str],
    protocol: str = "auto",
    backend: str = "fast",
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    tool_version: str = "",
) -> Path:
    """Write ``data`` (images in [0, 1]) corrupted under ``protocol`` to ``out``; returns the manifest path.

    Raises:
        DataError: ``out`` holds a partial or finished render of something else.
    """
    from .. import __version__

    root = Path(out).expanduser()
    shape = tuple(int(v) for v in data.sample_shape())
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 1:
        raise DataError(f"data {data.spec} has samples of shape {shape}; robustlab corrupt needs images (C, H, W) with 1 (grey) or 3 (RGB) "
                        "channels and at least one pixel.")
    proto = resolve(protocol, shape[1], shape[2])
    cfg = RenderConfig(
        protocol=proto.value, protocol_source=proto.source, backend=Backend.parse(backend).value, seed=int(seed),
        corruptions=tuple(corruptions), data_spec=data.spec, n=len(data), ids_sha256=data.ids_sha256(),
        content_sha256=data.content_sha256(), image_shape=shape,
    )
    partial = root / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    cfg_path = partial / "config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if old != _config_dict(cfg):
            diff = sorted(k for k in old if old.get(k) != _config_dict(cfg).get(k))
            raise DataError(f"{root} holds a partial render with other settings ({', '.join(diff)}); pass another --out or delete that folder.")
    elif (root / "manifest.json").is_file():
        raise DataError(f"{root} already holds a finished render (manifest.json); pass another --out or delete that folder.")
    cfg_path.write_text(json.dumps(_config_dict(cfg), indent=1))
    say = progress or (lambda msg: log.info("%s", msg))
    n = len(data)
    files: dict[str, dict[str, object]] = {}
    for ci, name in enumerate(corruptions):
        target = root / f"{name}.npy"
        for s in SEVERITIES:
            part = partial / f"{name}.s{s}.npy"
            if part.is_file():
                continue
            block = np.empty((n,) + (shape[1], shape[2], shape[0]), dtype=np.uint8)
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                x = data.images(slice(start, stop)).float().clamp(0.0, 1.0)
                x = x.to(device if cfg.backend == "fast" else "cpu")
                seeds = corruption_seeds(cfg.seed, name, s, data.ids[start:stop])
                y = to_uint8(corrupt(x, name, s, seeds, backend=cfg.backend, protocol=proto))
                block[start:stop] = y.permute(0, 2, 3, 1).cpu().numpy()
            tmp = part.with_suffix(".tmp.npy")
            np.save(tmp, block)
            tmp.replace(part)
            say(f"[{ci + 1}/{len(corruptions)}] {name} severity {s}: {n} images")
        arr = np.lib.format.open_memmap(root / f"{name}.npy.tmp", mode="w+", dtype=np.uint8, shape=(5 * n, shape[1], shape[2], shape[0]))
        for s in SEVERITIES:
            arr[(s - 1) * n : s * n] = np.load(partial / f"{name}.s{s}.npy")
        arr.flush()
        del arr
        (root / f"{name}.npy.tmp").replace(target)
        files[f"{name}.npy"] = {"sha256": sha256_file(target), "shape": [5 * n, shape[1], shape[2], shape[0]]}
    ys = data.y.cpu().numpy().astype(np.int64)
    labels = np.tile(ys, 5).astype(np.uint8 if ys.size == 0 or (ys.min() >= 0 and ys.max() < 256) else np.int64)
    np.save(root / "labels.npy", labels)
    files["labels.npy"] = {"sha256": sha256_file(root / "labels.npy"), "shape": [int(labels.shape[0])]}
    (root / "ids.json").write_text(json.dumps(list(data.ids)))
    files["ids.json"] = {"sha256": sha256_file(root / "ids.json")}
    manifest = {
        "format": FORMAT, "layout": "cifar-c", **_config_dict(cfg), "severities": list(SEVERITIES),
        "quantisation": "uint8 = floor(255 y) of the corrupted image y in [0, 1] (the reference scripts' np.uint8)",
        "seeding": "image i of (corruption c, severity s): seed = corruption_seeds(seed, c, s, [id_i]) (robustlab.corruptions.engine)",
        "tool": {"name": "robustlab", "version": tool_version or __version__}, "files": files,
    }
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(partial, ignore_errors=True)
    return path
