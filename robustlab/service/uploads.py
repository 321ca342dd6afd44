"""What a request may send: model files that cannot run code, bounded in size, and names that
never become paths.

Model uploads are accepted only as **safetensors** or a **weights-only state dict** (a torch zip
archive holding one ``data.pkl`` and tensor storages, nothing else: TorchScript, ``torch.export``
archives, legacy pickles and anything else are refused with 415). The worker then loads the file
with robustlab's own loader, which reads state dicts with ``torch.load(weights_only=True)`` and
never gets ``--trust-code``: a pickle that slipped past the sniffing would still not run.
Architectures must be built in (``zoo-arch:``, ``torchvision:``, ``timm:``); ``factory:`` would
import code named by the request and is refused. Uploads are streamed to a temporary file with a
byte count, so an oversized body is cut off at the limit (413), whatever Content-Length says.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

SPEC_RE = re.compile(r"^zoo:[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")
ARCH_RE = re.compile(r"^(zoo-arch|torchvision|timm):[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DATA_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")  # a built-in data set name, never a path
CHUNK = 1 << 20


class UploadError(Exception):
    """A refused upload: ``status`` is 400, 413 (too large) or 415 (format not accepted)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelFormat(str, Enum):
    SAFETENSORS = "safetensors"
    STATE_DICT = "state-dict"

    @property
    def suffix(self) -> str:
        return ".safetensors" if self is ModelFormat.SAFETENSORS else ".pt"


@dataclass(frozen=True)
class Received:
    path: Path
    size: int
    sha256: str


#: what sets each upload limit, named in the 413 answer: ``serve --max-upload-mb`` for model files,
#: ``serve --max-document-mb`` for scorecards and policies
MODEL_LIMIT = "the server's --max-upload-mb, which its operator can raise"
DOCUMENT_LIMIT = "the server's --max-document-mb, which its operator can raise (--max-upload-mb is for model files only)"


def public_message(exc: BaseException, data_dir: Path, path: Path | None, name: str) -> str:
    """``exc``'s message on one line for a client: the upload's temporary file ``path`` is called
    ``name`` and any other path under the service's data folder starts with ``DATA``."""
    msg = " ".join(str(exc).split())
    if path is not None:
        msg = msg.replace(str(path), name)
    return msg.replace(str(data_dir), "DATA")[:200]


def receive(stream: BinaryIO, folder: Path, *, limit: int, what: str, governed_by: str) -> Received:
    """Copy ``stream`` to a new file in ``folder``, refusing (413) more than ``limit`` bytes; the
    refusal names ``what`` was too large and the setting that ``governed_by`` the limit."""
    folder.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(dir=folder, prefix="upload-")
    path = Path(name)
    try:
        with open(fd, "wb") as out:
            while True:
                block = stream.read(CHUNK)
                if not block:
                    break
                size += len(block)
                if size > limit:
                    raise UploadError(413, f"{what} larger than the limit of {limit} bytes ({_size(limit)}), set by {governed_by}; send a smaller {what}")
                h.update(block)
                out.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Received(path, size, h.hexdigest())


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


def sniff_model(path: Path) -> ModelFormat:
    """The accepted format of an uploaded model file, judged by its content (never its name)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if 2 <= n <= 100 * 1024 * 1024:
                blob = f.read(n)
                if len(blob) == n and blob[:1] == b"{":
                    try:
                        meta = json.loads(blob.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError):
                        meta = None
                    if isinstance(meta, dict):
                        why = _safetensors_problem(meta, path.stat().st_size - 8 - n)
                        if why is None:
                            return ModelFormat.SAFETENSORS
                        raise UploadError(415, f"not a valid safetensors file: {why}; the file is corrupt or truncated, save it again "
                                               "with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise UploadError(415, f"corrupt zip archive ({exc}); upload a .safetensors file") from exc
        roots = {n.split("/", 1)[0] for n in names}
        pkls = [n for n in names if n.endswith(".pkl")]
        code = [n for n in names if "/code/" in n or n.endswith((".py", "constants.pkl")) or "serialized_" in n or "/models/" in n]
        if len(roots) == 1 and len(pkls) == 1 and pkls[0].endswith("/data.pkl") and not code:
            with zipfile.ZipFile(path) as z:
                info = z.getinfo(pkls[0])  # the pickle of a state dict is small; a huge one is a zip bomb or not weights
                names_code = _pickled_code(z.read(info)) if info.file_size <= 64 * CHUNK else "more than 64 MiB of pickle"
            if names_code is None:
                return ModelFormat.STATE_DICT
            raise UploadError(415, f"this archive's pickle names {names_code[:80]}, which a weights-only state dict never does (it holds a pickled "
                                   "object or module, which can run code); upload model.state_dict() as .safetensors (or torch.save it) with --arch")
        raise UploadError(415, "this archive is TorchScript, torch.export or another code-carrying format, which the service never loads; "
                               "upload the weights as .safetensors (or a state dict saved with torch.save(model.state_dict())) with --arch")
    raise UploadError(415, "not a safetensors file or a torch state-dict archive (pickles and other formats that can run code are refused "
                           "over the network); convert with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')")


def _safetensors_problem(header: dict[str, object], body: int) -> str | None:
    """Why a safetensors header (its JSON) does not describe tensors in a ``body`` of that many bytes, else None."""
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        return "its header lists no tensors"
    for name, t in tensors.items():
        offsets = t.get("data_offsets") if isinstance(t, dict) else None
        shape = t.get("shape") if isinstance(t, dict) else None
        if not (isinstance(t, dict) and isinstance(t.get("dtype"), str) and isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
                and isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1] <= body):
            return f"tensor {name[:60]!r} has no dtype, shape and data_offsets within the file"
    return None


#: what the pickle of a weights-only state dict may name (``torch.load(weights_only=True)`` allows these)
_SAFE_GLOBALS = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                 "torch._utils._rebuild_parameter_with_state", "torch.Size", "torch.device", "builtins.set", "__builtin__.set"}
_TORCH_NAME = re.compile(r"^torch\.([A-Za-z0-9]*Storage|u?int(8|16|32|64)|float(16|32|64)|bfloat16|complex(64|128)|bool|half|float|double|long|int)$")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_NO_STACK_OPS = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME", "PROTO"}


def _pickled_code(blob: bytes) -> str | None:
    """The first global a pickle names that a weights-only state dict never names (``module.name``),
    else None; read with :mod:`pickletools`, never unpickled. ``STACK_GLOBAL`` is resolved only
    when its two names were pushed as strings just before (else it counts as code)."""
    import pickletools

    stack: list[str | None] = []  # what the last stack-changing ops pushed: a string, or None
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _pos in pickletools.genops(blob):
            name = op.name
            if name in ("GLOBAL", "INST"):
                ref = str(arg).replace(" ", ".", 1)
                if ref not in _SAFE_GLOBALS and not _TORCH_NAME.match(ref):
                    return ref
            elif name == "STACK_GLOBAL":
                mod, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                ref = f"{mod}.{attr}" if mod is not None and attr is not None else "an unresolved global"
                if ref not in _SAFE_GLOBALS and not _TORCH_NAME.match(ref):
                    return ref
            if name in _STRING_OPS:
                stack.append(str(arg))
            elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if name == "MEMOIZE" else int(str(arg))] = stack[-1] if stack else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(str(arg))))
            elif name not in _NO_STACK_OPS:
                stack.append(None)
            del stack[:-2]
    except (ValueError, struct.error, EOFError) as exc:  # pickletools: a truncated or corrupt pickle
        return f"nothing readable ({' '.join(str(exc).split())[:60]})"
    return None


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise UploadError(400, f"{what} {value[:60]!r} must be 1-100 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    return value


def check_spec(spec: str) -> str:
    if not SPEC_RE.match(spec):
        raise UploadError(400, f"model spec {spec[:60]!r} is not accepted over the network: upload a weights file, or name a bundled model as zoo:NAME")
    return spec


def check_arch(arch: str) -> str:
    if not ARCH_RE.match(arch):
        raise UploadError(400, f"architecture {arch[:60]!r} is not accepted: use a built-in one (zoo-arch:NAME, torchvision:NAME, timm:NAME); "
                               "factory: and --trust-code formats are refused over the network")
    return arch


def check_data(name: str) -> str:
    if not DATA_RE.match(name):
        raise UploadError(400, f"data {name[:60]!r} must be a built-in data set name (see `robustlab datasets`), never a path")
    return name


def _library_names(prefix: str) -> list[str] | None:
    """The architecture names torchvision or timm can build here (imported on the first such check;
    None when the library is not installed)."""
    try:
        if prefix == "torchvision:":
            import torchvision.models as tvm

            return list(tvm.list_models())
        import timm

        return list(timm.list_models()) + list(timm.list_pretrained())  # bare names and name.tag
    except ImportError:
        return None


def check_known(*, spec: str | None, arch: str | None, data: str | None) -> None:
    """Refuse (400) a ``zoo:`` model, a ``zoo-arch:``, ``torchvision:`` or ``timm:`` architecture or a
    data set name this installation does not have, when it is sent rather than when its job runs."""
    import difflib

    for prefix in ("torchvision:", "timm:"):
        if arch is not None and arch.startswith(prefix):
            names = _library_names(prefix)
            wanted = arch[len(prefix):]
            if names is None:
                raise UploadError(400, f"architecture {arch!r}: {prefix.rstrip(':')} is not installed on this service; use zoo-arch:NAME or "
                                       f"{'timm:' if prefix == 'torchvision:' else 'torchvision:'}NAME")
            if wanted not in names:
                close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
                hint = f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
                raise UploadError(400, f"unknown architecture {arch!r}; {hint}see {prefix.rstrip(':')}'s list_models()")
    if spec is not None or (arch or "").startswith("zoo-arch:"):
        from ..models.architectures import ARCHITECTURES
        from ..models.zoo import ZOO

        for what, prefix, value, known in (("model", "zoo:", spec, list(ZOO)), ("architecture", "zoo-arch:", arch, list(ARCHITECTURES))):
            name = value[len(prefix):] if value and value.startswith(prefix) else None
            if name is not None and name not in known:
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
                hint = f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
                raise UploadError(400, f"unknown {what} {value!r}; {hint}known: {', '.join(prefix + k for k in known)}")
    if data is not None:
        from ..data.plugins import DATASETS

        if data not in DATASETS:
            raise UploadError(400, " ".join(DATASETS.unknown_message(data).split())[:300])
