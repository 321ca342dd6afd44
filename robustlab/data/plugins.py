"""Built-in data plugins and ``load_dataset``."""

from __future__ import annotations

import json
import logging
import re
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import DataError, UnknownNameError
from ..registry import Registry
from .base import Dataset

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetPlugin:
    """A data plugin: ``load(arg, split=, root=, download=) -> Dataset`` plus a one-line description.
    With ``takes_input_shape``, ``load`` also takes ``input_shape=`` (the model's (C, H, W) or None)."""

    load: Callable[..., Dataset]
    description: str
    needs_arg: bool = False
    takes_input_shape: bool = False


#: Data sources by spec prefix. Built-ins are registered with :func:`data_source` in the modules of
#: ``robustlab.data``; third parties use the entry-point group ``robustlab.datasets`` (a
#: :class:`DatasetPlugin` or a bare ``load(arg, split=, root=, download=) -> Dataset``).
DATASETS: Registry[DatasetPlugin] = Registry("data plugin", group="robustlab.datasets", package="robustlab.data")


def data_source(name: str, description: str, *, needs_arg: bool = False,
                takes_input_shape: bool = False) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: register ``load(arg, *, split, root=None, download=False) -> Dataset`` as the data
    spec ``name`` (``name:ARG`` when ``needs_arg``; ``load`` also takes ``input_shape=`` when
    ``takes_input_shape``)."""

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS.add(name, DatasetPlugin(fn, description, needs_arg=needs_arg, takes_input_shape=takes_input_shape))
        return fn

    return deco


def class_names(name: str) -> list[str]:
    table = json.loads(resources.files("robustlab.data").joinpath("classes.json").read_text())
    return list(table[name])


def load_dataset(spec: str, *, split: str = "test", root: str | Path | None = None, download: bool = False,
                 input_shape: Sequence[int] | None = None) -> Dataset:
    """Resolve a data spec (``NAME`` or ``NAME:ARG``) to a :class:`Dataset` with images in [0, 1].

    ``input_shape``: the (C, H, W) of the model the data is for, when known (``model.input_shape``).
    Plugins whose images have no fixed size (``folder:``) decode to it; the others ignore it (their
    images are checked against the model by the caller).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    name, _, arg = spec.partition(":")
    try:
        plugin = DATASETS.get(name)
    except UnknownNameError as exc:
        if Path(spec).exists():
            raise DataError(f"{spec} is a path; say what it is: npz:{spec} or folder:{spec}.") from exc
        raise
    if not isinstance(plugin, DatasetPlugin):  # an entry point may register a bare callable
        plugin = DatasetPlugin(load=plugin, description="third-party plugin", needs_arg=False)
    if plugin.needs_arg and not arg:
        raise DataError(f"data spec {name!r} needs an argument, e.g. {name}:PATH_OR_NAME.")
    if plugin.takes_input_shape:
        if input_shape is not None and (len(input_shape) != 3 or any(int(s) < 1 for s in input_shape)):
            raise DataError(f"input shape {tuple(input_shape)} is not (C, H, W) of positive sizes; fix --input-shape or the model's metadata.")
        ds = plugin.load(arg, split=split, root=root, download=download, input_shape=tuple(int(s) for s in input_shape) if input_shape is not None else None)
    else:
        ds = plugin.load(arg, split=split, root=root, download=download)
    if len(ds) == 0:
        raise DataError(f"data {spec} ({split}) is empty.")
    _check_unique(ds.ids, f"data {spec} ({split})", "sample id", "every sample needs its own id, or per-sample comparisons pair the wrong images")
    _check_unique(ds.classes, f"data {spec}", "class name", "per-class metrics would merge those classes")
    if ds.y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise DataError(f"data {spec}: labels have dtype {ds.y.dtype}; labels must be integers.")
    if ds.x is not None and (not ds.x.is_floating_point() or ds.x.is_complex()):
        raise DataError(f"data {spec}: images have dtype {ds.x.dtype}; data plugins must yield real floating-point images in [0, 1].")
    return ds


def _check_unique(values: Sequence[str], what: str, kind: str, why: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise DataError(f"{what}: the {kind} {ascii(v)[:60]} occurs more than once; {why}.")
        seen.add(v)


# -- digits ------------------------------------------------------------------------------------
@data_source("digits", "scikit-learn's 1,797 real 8x8 grey digits (train 1293 / val 144 / test 360), offline.")
def _digits(arg: str, *, split: str, root: object = None, download: bool = False) -> Dataset:
    """scikit-learn's 1,797 real 8x8 digits, values 0..16 scaled to [0, 1].

    Fixed stratified split (scikit-learn ``train_test_split``, random_state=0): 20% test (360),
    10% of the rest validation (144), the remaining 1,293 for training. Ids ``digits/<index>``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    rest, test = train_test_split(idx, test_size=360, stratify=d.target, random_state=0)
    train, val = train_test_split(rest, test_size=144, stratify=d.target[rest], random_state=0)
    sel = np.sort({"train": train, "val": val, "test": test}[split])
    x = torch.from_numpy(d.images[sel].astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target[sel].astype(np.int64))
    return Dataset(spec="digits", split=split, ids=[f"digits/{i}" for i in sel], y=y, classes=class_names("digits"), x=x, description="scikit-learn digits",
                   extra={"dataset": "digits"})




# -- foolbox samples ----------------------------------------------------------------------------
_SAMPLE_PREFIX = {"cifar10": "cifar10", "cifar100": "cifar100", "mnist": "mnist", "fashion-mnist": "fashionMNIST", "imagenet": "imagenet"}


@data_source("samples", "foolbox's 20 real images: samples:cifar10|cifar100|mnist|fashion-mnist|imagenet, offline.", needs_arg=True)
def _samples(arg: str, *, split: str, root: object = None, download: bool = False) -> Dataset:
    """foolbox's 20 real images per data set (``foolbox/data``). Every split gives the same 20 images."""
    from PIL import Image

    if arg not in _SAMPLE_PREFIX:
        import difflib

        close = difflib.get_close_matches(arg, list(_SAMPLE_PREFIX), 1)
        raise UnknownNameError(f"unknown sample set {arg!r}{f'; did you mean {close[0]!r}?' if close else ''} Known: {', '.join(_SAMPLE_PREFIX)}.")
    try:
        folder = resources.files("foolbox").joinpath("data")
    except ModuleNotFoundError as exc:
        raise DataError("samples: needs foolbox (pip install foolbox).") from exc
    prefix = _SAMPLE_PREFIX[arg]
    pat = re.compile(rf"^{prefix}_(\d+)_(\d+)\.(png|jpg)$")
    files = sorted((int(m.group(1)), int(m.group(2)), f.name) for f in folder.iterdir() if (m := pat.match(f.name)))
    imgs, labels, ids = [], [], []
    for i, label, fname in files:
        with Image.open(str(folder.joinpath(fname))) as src:
            im = src.convert("L" if arg in ("mnist", "fashion-mnist") else "RGB")
            if arg == "imagenet" and im.size != (224, 224):  # a few foolbox ImageNet samples are not 224x224
                from torchvision.transforms import functional as TF

                im = TF.center_crop(TF.resize(im, 224), [224, 224])
            a = np.asarray(im, dtype=np.float32) / 255.0
        imgs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        labels.append(label)
        ids.append(f"samples:{arg}/{i:02d}")
    if arg == "imagenet":
        classes = _imagenet_classes()
    else:
        classes = class_names(arg)
    return Dataset(spec=f"samples:{arg}", split=split, ids=ids, y=torch.tensor(labels, dtype=torch.int64), classes=classes, x=torch.from_numpy(np.stack(imgs)), description=f"foolbox's {len(ids)} {arg} samples",
                   extra={"dataset": arg})


def _imagenet_classes() -> list[str]:
    try:
        from torchvision.models import ResNet18_Weights

        return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    except (ImportError, KeyError, AttributeError):
        return [str(i) for i in range(1000)]




# -- npz -------------------------------------------------------------------------------------------
@data_source("npz", "npz:PATH, arrays x (images) and y (labels); optional x_train/y_train, ids, classes.", needs_arg=True)
def _npz(arg: str, *, split: str, root: object = None, download: bool = False) -> Dataset:
    """Arrays ``x`` (N,H,W[,C]) uint8 0..255 or float 0..1, or (N,C,H,W); ``y`` (N,) ints.

    Split-specific arrays ``x_train``/``y_train`` (etc.) are used when present; otherwise ``x``/``y``
    serve every split. Optional ``ids`` (N,) strings and ``classes``.
    """
    p = Path(arg).expanduser()
    if not p.is_file():
        if p.is_dir():
            raise DataError(f"{p} is a folder, not an npz file; pass the .npz file after npz: (a folder of class folders is folder:{p}).")
        raise DataError(f"npz file {p} does not exist; check the path after npz:.")
    import zipfile
    import zlib

    from .npz import header, image_layout, members, open_member, read_batch, warn_if_dim

    hint = "save it with numpy.savez(file, x=images, y=labels)"
    try:
        files = members(p)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if p.read_bytes()[:6] == b"\x93NUMPY":
            raise DataError(f"{p} is a single .npy array, not an .npz archive of 'x' and 'y'; {hint}.") from exc
        raise DataError(f"cannot read {p} as an .npz archive ({' '.join(str(exc).split())[:150]}); {hint}.") from exc
    kx, ky = (f"x_{split}", f"y_{split}") if f"x_{split}" in files else ("x", "y")
    if kx not in files or ky not in files:
        raise DataError(f"{p} has no {split} split: it needs arrays 'x_{split}' and 'y_{split}', or 'x' and 'y' for every split; "
                        f"it has {', '.join(map(ascii, files[:10]))}; {hint}.")

    def member(key: str) -> np.ndarray:
        try:
            return open_member(p, key)  # memory-mapped: images are never held whole
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"cannot read array {key!r} of {p} ({' '.join(str(exc).split())[:150]}); object arrays are refused; {hint}.") from exc

    def dtype_ok(dt: np.dtype) -> None:
        if dt.kind not in "uif" or dt.kind == "f" and dt.itemsize > 8:
            raise DataError(f"{p}: images '{kx}' have dtype {dt}; use uint8 0..255 or float 0..1 (real numbers, not {dt.kind!r} arrays).")

    try:  # the images' header first: a wrong dtype or count is refused before a compressed member is inflated
        xshape, xdtype = header(p, kx)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read array {kx!r} of {p} ({' '.join(str(exc).split())[:150]}); {hint}.") from exc
    dtype_ok(xdtype)
    y_raw = np.array(member(ky))
    if y_raw.dtype.kind not in "iu":
        raise DataError(f"{p}: labels '{ky}' have dtype {y_raw.dtype}; labels must be integers (e.g. y.astype('int64') if they are whole numbers).")
    if y_raw.ndim > 2 or (y_raw.ndim == 2 and y_raw.shape[1] != 1):
        raise DataError(f"{p}: labels '{ky}' have shape {y_raw.shape}; expected (N,) class indices, not one-hot or multi-label arrays.")
    if y_raw.dtype.kind == "u" and y_raw.size and int(y_raw.max()) > np.iinfo(np.int64).max:
        raise DataError(f"{p}: label {int(y_raw.max())} in '{ky}' is beyond any class index; labels are class indices 0..K-1.")
    y = y_raw.astype(np.int64).reshape(-1)
    if xshape and xshape[0] != len(y):
        raise DataError(f"data npz:{arg}: {len(y)} labels and {xshape[0]} images differ; every image needs one label.")
    x = member(kx)
    dtype_ok(x.dtype)

    def text(a: np.ndarray) -> list[str]:  # np.savez of b"..." names stores bytes ('S'): their text, not "b'cat'"
        return [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in a.reshape(-1)]

    ids = text(np.array(member("ids"))) if "ids" in files else [f"{p.name}/{kx}/{i}" for i in range(len(y))]
    if "classes" in files:
        classes = text(np.array(member("classes")))
        if len(y) and len(classes) <= int(y.max()):
            raise DataError(f"{p}: 'classes' has {len(classes)} name(s) but labels go up to {int(y.max())}; give one class name per label 0..{int(y.max())} "
                            f"(or more), in label order, or leave 'classes' out.")
    elif len(y) and int(y.max()) >= 1 << 20:  # the names '0'..str(max) would be built first: 10**9 of them filled the memory
        raise DataError(f"{p}: label {int(y.max())} in '{ky}' is beyond any class count; labels are class indices 0..K-1 (for over 2**20 classes, store their names as 'classes').")
    else:
        classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    extra: dict[str, object] = {}
    if "dataset" in files:  # the data set's name, stored once with the data (robustlab.data.naming)
        named = np.array(member("dataset")).reshape(-1)
        if named.size != 1 or named.dtype.kind not in "US" or not text(named)[0].strip():
            raise DataError(f"{p}: the 'dataset' entry must be one name, e.g. np.savez(..., dataset='cifar10'), not {ascii(named.tolist())[:60]}; "
                            "store one name or leave the entry out.")
        extra["dataset"] = text(named)[0]
    layout = image_layout(x, p, kx)
    if x.shape[0] != len(y):
        raise DataError(f"data npz:{arg}: {len(ids)} ids, {len(y)} labels and {x.shape[0]} images differ; every image needs one label.")
    warn_if_dim(x, p)

    def load(idx: Sequence[int]) -> torch.Tensor:
        return read_batch(x, idx, layout, p)

    if x.dtype != np.uint8:  # uint8 is in range by construction; check float images once, in chunks
        step = max(1, (4 << 20) // max(1, x[:1].nbytes))
        for s in range(0, x.shape[0], step):
            read_batch(x, range(s, min(s + step, x.shape[0])), layout, p)
    return Dataset(spec=f"npz:{arg}", split=split, ids=ids, y=torch.from_numpy(y), classes=classes, loader=load, hash_pixels=True,
                   description=f"arrays from {p.name}", extra=extra, relabel_by_name="classes" in files)


# -- image folder ------------------------------------------------------------------------------


@data_source("folder", "folder:PATH, ImageFolder layout PATH/<class>/<image> (lazy loading; native size, or the ImageNet protocol to the model's size).",
             needs_arg=True, takes_input_shape=True)
def _folder(arg: str, *, split: str, root: object = None, download: bool = False, input_shape: Sequence[int] | None = None) -> Dataset:
    """ImageFolder layout ``PATH/<class>/<image>`` (``PATH/<split>/<class>/...`` when split folders
    exist), loaded lazily. Channels, size and value range are decided once for the folder from every
    file's header (:mod:`robustlab.data.images`): images of one size keep it unless ``input_shape``
    (the model's (C, H, W), when known) asks for another; otherwise the ImageNet protocol (resize,
    centre crop) to the model's size, else 224x224. ``description`` and ``preprocessing`` say which."""
    from PIL import Image

    from .images import IMAGE_EXTENSIONS, choose_protocol, class_folders, decode, list_images, scan, unreadable

    spec = f"folder:{arg}"
    base = Path(arg).expanduser()
    if (base / split).is_dir():
        base = base / split
    if not base.is_dir():
        if base.is_file():
            raise DataError(f"{base} is a file, not an image folder; pass a folder PATH/<class>/<image files> after folder: (an .npz file is npz:{base}).")
        raise DataError(f"image folder {base} does not exist; expected PATH/<class>/<image files>.")
    classes = class_folders(base, spec=spec)
    if not classes:
        raise DataError(f"{base} has no class sub-folders; expected PATH/<class>/<image files>.")
    splits = [c for c in classes if c in SPLITS and any(d.is_dir() and not d.name.startswith(".") for d in (base / c).iterdir())]
    if splits and base == Path(arg).expanduser():  # else train/ and val/ would be read as two classes of a test split
        raise DataError(f"{base} holds split folders ({', '.join(splits)}) but no {split}/ folder; pass the folder of the split to use, e.g. folder:{base / splits[0]}.")
    files = list_images(base, classes, spec=spec)
    if not files:
        raise DataError(f"{base} has class folders but no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    sizes, colour = scan([f for f, _ in files], spec=spec)
    protocol = choose_protocol(sizes, colour, input_shape)
    if protocol.resize:
        log.info("data %s: %d image size(s); %s", spec, len(sizes), protocol.describe())

    def load(idx: Sequence[int]) -> torch.Tensor:
        out = []
        for i in idx:
            f = files[i][0]
            try:
                with Image.open(f) as src:
                    out.append(decode(src, protocol, name=f, spec=spec))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise unreadable(f, exc, spec) from exc
        try:
            return torch.from_numpy(np.stack(out)) if out else torch.zeros((0, protocol.channels, *protocol.size))
        except ValueError as exc:  # a file changed size after the scan
            raise DataError(f"images in {base} changed size while being read; run again on a folder that is not being written.") from exc

    ids = [f"{f.relative_to(base).as_posix()}" for f, _ in files]
    y = torch.tensor([c for _, c in files], dtype=torch.int64)
    extra: dict[str, object] = {}
    for mf in (base / "manifest.json", Path(arg).expanduser() / "manifest.json"):
        if mf.is_file():
            try:
                name = json.loads(mf.read_text()).get("dataset")
            except (OSError, ValueError, AttributeError, RecursionError) as exc:  # RecursionError: [[[[... nested too deeply
                raise DataError(f"{mf} is not a JSON object ({' '.join(str(exc).split())[:120]}); fix it or remove it.") from exc
            if name is not None and not isinstance(name, str):
                raise DataError(f"{mf}: \"dataset\" must be a name such as \"cifar10\", not {ascii(name)[:60]}; fix it or remove it.")
            if name:
                extra["dataset"] = str(name)
            break
    how = protocol.describe()
    return Dataset(spec=spec, split=split, ids=ids, y=y, classes=classes, loader=load, description=f"image folder {base}: {how}", extra=extra,
                   files=[str(f) for f, _ in files], relabel_by_name=True, preprocessing=how)




# -- torchvision data sets ------------------------------------------------------------------------
def _torchvision(name: str) -> Callable[..., Dataset]:
    def load(arg: str, *, split: str, root: str | Path | None = None, download: bool = False) -> Dataset:
        import torchvision.datasets as tvd

        r = Path(root or arg or "data").expanduser()
        train = split != "test"
        cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "svhn": tvd.SVHN}[name]
        try:
            if name == "svhn":
                ds = cls(str(r), split="train" if train else "test", download=download)
            else:
                ds = cls(str(r), train=train, download=download)
        except RuntimeError as exc:
            raise DataError(
                f"{name} not found under {r} ({exc}); pass --data-root with the folder that holds it, or --download to fetch it."
            ) from exc
        data = np.asarray(ds.data)  # uint8: kept as it is, converted to float32 per batch (4x less memory)
        if name == "svhn":
            labels = np.asarray(ds.labels)
        else:
            labels = np.asarray(ds.targets)
        idx = np.arange(len(labels))
        if train:  # the last 10% of the official training set is robustlab's validation split
            cut = int(len(idx) * 0.9)
            idx = idx[:cut] if split == "train" else idx[cut:]

        def images(sub: Sequence[int]) -> torch.Tensor:
            a = data[idx[np.asarray(list(sub), dtype=np.int64)]]
            t = torch.from_numpy(a.astype(np.float32) / 255.0)
            if a.ndim == 3:
                return t.unsqueeze(1)
            return t if name == "svhn" else t.permute(0, 3, 1, 2).contiguous()

        ids = [f"{name}/{'train' if train else 'test'}/{i}" for i in idx]
        return Dataset(spec=name, split=split, ids=ids, y=torch.from_numpy(labels[idx].astype(np.int64)), classes=class_names(name), loader=images, hash_pixels=True, description=f"torchvision {name}",
                       extra={"dataset": name})

    return load


for _n, _d in [("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"), ("svhn", "SVHN"), ("mnist", "MNIST"), ("fashion-mnist", "Fashion-MNIST")]:
    data_source(_n, f"torchvision {_d} under --data-root (downloads only with --download); val = last 10% of train.")(_torchvision(_n))
