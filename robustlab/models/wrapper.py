"""The model wrapper: the one place that owns a classifier's input contract.

Attacks, corruptions and detectors see only a :class:`RobustModel`: inputs live in ``model.bounds``
(e.g. ``(0, 1)``), normalisation ``(x - mean) / std`` is applied inside :meth:`RobustModel.forward`,
the output is ``(N, num_classes)`` logits, and :meth:`RobustModel.features` gives penultimate
features (the input of the last linear layer unless a named layer is configured). This follows
foolbox's ``PyTorchModel(bounds=..., preprocessing=...)``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import nn

from ..buckets import bucket_size
from ..errors import DataError, ModelLoadError, ModelOutputError
from .graph_tap import GraphLinear

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """Metadata and provenance of a loaded model (recorded in the scorecard).

    ``bounds`` is the input range the model expects *before* its own normalisation; ``mean`` and
    ``std`` are per-channel and applied inside the forward pass.
    """

    spec: str
    format: str
    num_classes: int
    input_shape: tuple[int, int, int] | None = None  # (C, H, W)
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None
    dataset: str | None = None  # default data spec for this model
    feature_layer: str | None = None
    architecture: str | None = None
    sha256: str | None = None
    path: str | None = None
    trusted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, **kw: Any) -> "ModelInfo":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("input_shape", "bounds", "mean", "std", "class_names"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


class FeaturesUnavailable(ModelLoadError):
    """The network's penultimate features cannot be read (a TorchScript module takes no forward hooks):
    feature-based OOD detectors are skipped, the rest of the run stands."""


_SCRIPTED = ("the layers of a TorchScript model take no forward hooks, so its penultimate features (for the OOD detectors mahalanobis, "
             "knn, vim) cannot be read; for them, load its weights as a state dict with --arch, or save it with torch.export (.pt2).")


def _padding_enabled() -> bool:
    """On unless ``ROBUSTLAB_PAD_BATCHES=0`` (the opt-out, e.g. for a model whose outputs depend on the batch)."""
    return os.environ.get("ROBUSTLAB_PAD_BATCHES", "1") != "0"


class RobustModel(nn.Module):
    """A classifier with an explicit input contract.

    Args:
        net: any ``nn.Module`` mapping normalised inputs (N, C, H, W) to logits (N, K).
        info: the contract and provenance (:class:`ModelInfo`).

    Shapes: ``forward(x)``: x (N, C, H, W) in ``bounds`` -> logits (N, K).
    ``features(x)`` -> (N, D) penultimate features.
    """

    _mean: torch.Tensor
    _std: torch.Tensor

    def __init__(self, net: nn.Module, info: ModelInfo) -> None:
        super().__init__()
        try:
            net = net.eval()
        except NotImplementedError:  # torch.export's module has no eval(); it is traced in eval mode
            pass
        if info.num_classes < 2:
            raise ModelLoadError(
                f"the model has {info.num_classes} class(es); a classifier needs at least 2 (accuracy, attacks and OOD scores are meaningless "
                "with one). For a single-logit binary model z, wrap it to return the two logits (-z/2, z/2), or fix --num-classes."
            )
        self.net = net
        self.apply_info(info)
        #: the dtype the network's weights all share when it is not float32 (a ``.half()``, bf16 or
        #: float64 model): inputs are cast to it, as the logits are cast back to float32
        dtypes = {p.dtype for p in net.parameters() if p.is_floating_point()} if hasattr(net, "parameters") else set()
        self._input_dtype: torch.dtype | None = next(iter(dtypes)) if len(dtypes) == 1 and dtypes != {torch.float32} else None
        self._feature_module: nn.Module | None = None
        self._feature_is_input = True
        #: "logits", or "probabilities" for a network whose last layer is a softmax: its log is then
        #: returned as the logits (softmax(log p) = p), so confidences, ECE and losses are the model's own
        self.output_kind = "logits"
        for p in self.net.parameters():
            p.requires_grad_(False)

    def apply_info(self, info: ModelInfo) -> None:
        """Take ``info`` as the model's contract (its normalisation buffers follow). Used by
        ``__init__`` and to apply CLI overrides to a plugin's own :class:`RobustModel` subclass,
        which keeps its ``forward`` and ``features``."""
        if info.num_classes < 2:
            raise ModelLoadError(f"the model has {info.num_classes} class(es); a classifier needs at least 2.")
        c = len(info.mean) if info.mean is not None else (info.input_shape[0] if info.input_shape else 1)
        mean = torch.tensor(info.mean if info.mean is not None else [0.0] * c, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(info.std if info.std is not None else [1.0] * c, dtype=torch.float32).view(1, -1, 1, 1)
        if (std <= 0).any():
            raise ModelLoadError(f"normalisation std must be positive, got {info.std}; fix --std or the sidecar file.")
        self.info = info
        self.register_buffer("_mean", mean, persistent=False)
        self.register_buffer("_std", std, persistent=False)
        self._normalise = info.mean is not None or info.std is not None

    # -- contract ------------------------------------------------------------------------
    @property
    def bounds(self) -> tuple[float, float]:
        return self.info.bounds

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self.info.input_shape

    @property
    def class_names(self) -> list[str]:
        if self.info.class_names is not None:
            return list(self.info.class_names)
        return [str(i) for i in range(self.num_classes)]

    @property
    def device(self) -> torch.device:
        for p in self.net.parameters():
            return p.device
        for b in self.net.buffers():
            return b.device
        return self._mean.device

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if not self._normalise:
            return x
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) for inputs (N, C, H, W) in ``bounds``.

        On a CPU, a gradient pass (input that requires grad) whose batch size is not a *bucket size*
        (:func:`bucket_size`) is padded to the next one with copies of its first row, and the logits of
        the padding are dropped. Attacks with early exit shrink their batch by a few points per
        iteration; every new size left holes in glibc's heap that no later request fit, so the peak
        memory of an attack grew batch after batch (measured: ResNet-18, batches of 128 shrinking over
        12 steps, peak 1.6 -> 3.0 GB over 5 batches; with buckets 1.32 -> 1.38 GB). With a few fixed
        sizes the freed blocks are reused. Per-sample logits and input gradients are bitwise the same
        (tested); the cost is at most 25% more rows in those passes. Never in training mode (padding
        rows would enter batch-norm statistics). On by default; ``ROBUSTLAB_PAD_BATCHES=0`` turns it
        off, for a model whose per-sample outputs depend on the rest of the batch.
        """
        return self._forward(x, pad=True)

    def _forward(self, x: torch.Tensor, *, pad: bool) -> torch.Tensor:
        n = x.shape[0]
        if (pad and n > 8 and x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled() and not self.net.training
                and _padding_enabled()):
            k = bucket_size(n)
            if k != n:
                filler = x[:1].detach().expand(k - n, *x.shape[1:])
                return self._logits(self.net(self._as_input(self.normalise(torch.cat([x, filler])))))[:n]
        z = self.normalise(x)
        if z is x:
            # The network gets its own copy: a model that edits its input in place (``x /= 255``,
            # ``Normalize(inplace=True)``) would otherwise rewrite the caller's tensor, i.e. the data
            # set's stored images, for every later check (and attacks' clean points).
            z = x.clone()
        return self._logits(self.net(self._as_input(z)))

    def _as_input(self, z: torch.Tensor) -> torch.Tensor:
        dt = getattr(self, "_input_dtype", None)
        return z.to(dt) if dt is not None and z.is_floating_point() and z.dtype != dt else z

    def _logits(self, out: Any) -> torch.Tensor:
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            self._raw_dtype = out.dtype  # what :meth:`detect_probabilities` allows for rounding
        z = _float_logits(out)
        if self.output_kind == "probabilities" and isinstance(z, torch.Tensor):
            return torch.log(z.clamp_min(torch.finfo(z.dtype).tiny))
        return z

    def detect_probabilities(self, raw: torch.Tensor, *, tol: float = 1e-4) -> bool:
        """Whether the network's outputs ``raw`` (as it returned them: 2 rows or more, or one row of 3 classes
        or more) are probabilities: every entry in [0, 1] and every row summing to 1, within ``tol`` or the
        rounding of the dtype the network returned (4 ulps of 1: 3.9e-3 in float16, 3.1e-2 in bfloat16). If so,
        from now on their log is the logits (recorded in ``info.extra["outputs"]``). Logits never pass this
        test on a real batch."""
        if self.output_kind != "logits" or raw.ndim != 2 or raw.shape[1] < 2 or raw.shape[0] < (1 if raw.shape[1] >= 3 else 2):
            return False
        dtype = getattr(self, "_raw_dtype", raw.dtype)
        tol = max(tol, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else tol
        if not are_probabilities(raw, tol=tol):
            return False
        self.output_kind = "probabilities"
        self.info.extra["outputs"] = "probabilities (each row sums to 1): robustlab uses their log as the logits"
        return True

    # -- features ------------------------------------------------------------------------
    def _resolve_feature_module(self) -> nn.Module:
        if self._feature_module is not None:
            return self._feature_module
        name = self.info.feature_layer
        modules = dict(self.net.named_modules())
        if name:
            if name not in modules:
                close = [m for m in modules if m and name.split(".")[-1] in m][:5]
                raise ModelLoadError(
                    f"feature layer {name!r} not found in the model; pass --feature-layer with one of its module names (e.g. {', '.join(close) or 'see model.named_modules()'})."
                )
            if isinstance(modules[name], torch.jit.ScriptModule):
                raise FeaturesUnavailable(f"--feature-layer {name}: {_SCRIPTED}")
            if isinstance(modules.get("feature_tap"), GraphLinear) and name != "feature_tap":
                raise ModelLoadError(f"--feature-layer {name}: the layers of a torch.export model are never called as modules (its graph calls "
                                     "their weights), so no layer's output can be read; leave --feature-layer out: the features are then the input of its last linear op.")
            self._feature_module = modules[name]
            self._feature_is_input = False
        else:
            self._feature_module = self.head_linear()
            self._feature_is_input = True
        return self._feature_module

    def head_linear(self) -> nn.Linear:
        """The classifier head: the last registered ``nn.Linear`` with one output per class (a module
        may register its head before the layers that feed it), else the last registered one."""
        linears = [m for m in self.net.modules() if isinstance(m, nn.Linear)]
        if not linears and any(isinstance(m, torch.jit.ScriptModule) for m in self.net.modules()):
            raise FeaturesUnavailable(_SCRIPTED)
        if not linears:
            raise ModelLoadError("cannot find penultimate features: the model has no nn.Linear layer; pass --feature-layer NAME.")
        heads = [m for m in linears if m.out_features == self.info.num_classes]
        return heads[-1] if heads else linears[-1]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, K) and penultimate features (N, D) in one forward pass."""
        mod = self._resolve_feature_module()
        store: dict[str, torch.Tensor] = {}

        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            store["f"] = inp[0] if self._feature_is_input else out

        h = mod.register_forward_hook(hook)
        try:
            logits = self._forward(x, pad=False)  # the hook must see this batch's rows only
        finally:
            h.remove()
        if "f" not in store:
            raise ModelOutputError("the feature layer was not called during the forward pass; pass --feature-layer with a layer on the path to the output.")
        return logits, store["f"].flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[1]

    # -- checks of the contract -----------------------------------------------------------
    def check_output(self, logits: torch.Tensor, n: int) -> None:
        """Raise :class:`ModelOutputError` unless ``logits`` is finite (n, num_classes)."""
        if not isinstance(logits, torch.Tensor):
            raise ModelOutputError(
                f"the model returned {type(logits).__name__}, not a tensor of logits; wrap it so forward() returns (N, {self.num_classes}) logits."
            )
        if not logits.is_floating_point():
            raise ModelOutputError(
                f"the model returned {str(logits.dtype).removeprefix('torch.')} values, not floating-point logits; "
                "return the scores before argmax (attacks need their gradients)."
            )
        if logits.ndim == 2 and logits.shape[0] == n and logits.shape[1] != self.num_classes:
            w = int(logits.shape[1])
            raise ModelOutputError(
                f"the model's output has shape {tuple(logits.shape)}: it outputs {w} scores per input, but {self.num_classes} classes were expected (from --num-classes, the sidecar, or "
                f"the model's last registered nn.Linear when neither says); pass --num-classes {w} if the model has {w} classes, else fix its head."
            )
        if logits.ndim != 2 or logits.shape[0] != n or logits.shape[1] != self.num_classes:
            raise ModelOutputError(
                f"the model output has shape {tuple(logits.shape)}, expected ({n}, {self.num_classes}); check --num-classes or the model's head."
            )
        if not torch.isfinite(logits).all():
            bad = int((~torch.isfinite(logits)).any(dim=1).sum())
            raise ModelOutputError(f"the model produced NaN or infinite logits for {bad} of {n} inputs; check the weights and the input normalisation (--mean/--std, --bounds).")

    def check_inputs(self, x: torch.Tensor, *, tol: float = 1e-5) -> None:
        lo, hi = self.bounds
        if x.ndim != 4:
            raise DataError(f"inputs must be (N, C, H, W) images, got shape {tuple(x.shape)}.")
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            got = tuple(int(d) for d in x.shape[1:])
            raise DataError(  # the input shape may be a guess (a torchvision architecture says 3x224x224): offer the data's own
                f"the data has images of shape {got} but the model expects {tuple(self.input_shape)} (its input shape from --input-shape, a sidecar, the "
                f"model file or its architecture); give data of that shape (folder: images are resized and converted to it; npz: and built-in sets are not), "
                f"or pass --input-shape {','.join(map(str, got))} if the model takes images of the data's shape."
            )
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo - tol or xmax > hi + tol:
            raise DataError(
                f"the data lies in [{xmin:.4g}, {xmax:.4g}], outside the model's bounds [{lo:g}, {hi:g}]; fix --bounds, or give data in that range."
            )

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Logits for a whole tensor, in batches, on the model's device (returned on CPU)."""
        outs = []
        dev = self.device
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(dev)
            out = self.forward(xb)
            self.check_output(out, xb.shape[0])
            outs.append(out.float().cpu())
        return torch.cat(outs) if outs else torch.empty(0, self.num_classes)


def are_probabilities(out: torch.Tensor, *, tol: float) -> bool:
    """Whether every row of ``out`` (n, K) lies in [0, 1] and sums to 1, within ``tol``: a softmax output, not logits."""
    r = out.detach().float()
    return bool((r >= -tol).all()) and bool((r <= 1 + tol).all()) and bool(((r.sum(-1) - 1).abs() <= tol).all())


def _float_logits(out: Any) -> torch.Tensor:
    """Floating-point logits of any other precision (fp16 / bf16 from a half-precision model or
    autocast, float64 from a double model) as float32, so that every consumer (losses, margins, index
    assignment into float32 buffers) sees one dtype; anything else unchanged (a non-tensor or
    integer output is reported by :meth:`RobustModel.check_output`)."""
    if isinstance(out, torch.Tensor) and out.is_floating_point() and out.dtype != torch.float32:
        return out.float()
    return out  # type: ignore[no-any-return]


def to_bounds(x01: torch.Tensor, bounds: Sequence[float]) -> torch.Tensor:
    """Map images in [0, 1] linearly to ``bounds``."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if (lo, hi) == (0.0, 1.0):
        return x01
    return x01 * (hi - lo) + lo
