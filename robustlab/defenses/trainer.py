"""The shared training loop of all defenses: shuffling, optimiser, schedule, validation,
per-epoch checkpoints and exact resume.

Determinism: the shuffle of epoch e comes from ``derive_seed(seed, "defend/shuffle", e)``, the
per-sample randomness of a method (attack starts, noise, AugMix chains) from
``sample_seeds(seed, "defend/<method>/epoch=e", ids)``, and any randomness inside the model
(dropout) from a generator forked and seeded per epoch (``torch.random.fork_rng``; the global
state is restored afterwards). The learning rate is a pure function of the global step. So a run
resumed from the checkpoint of epoch e continues exactly as the uninterrupted run would.

Checkpoints: ``CKPT_DIR/epoch-<e>.pt`` (``torch.save`` of plain tensors, numbers, strings, lists
and dicts: they load with ``torch.load(weights_only=True)``), plus ``best.pt`` (the weights of
the epoch with the highest validation robust accuracy).
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..data import Dataset
from ..errors import ModelOutputError, ResumeError, RobustlabError, SuiteError
from ..parsing import parse_enum
from ..seeding import derive_seed, sample_seeds
from .base import DefenseMethod
from .validation import ValResult, validate

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "robustlab-defend-checkpoint/1"
#: the largest learning rate accepted: orders of magnitude past any that trains, far below what overflows a float step
MAX_LR = 1e4


class OptimizerKind(str, enum.Enum):
    SGD = "sgd"
    ADAM = "adam"


class Schedule(str, enum.Enum):
    """Learning-rate schedules, as functions of the fraction t of training done.

    constant: lr. cosine: lr * (1 + cos(pi t)) / 2. cyclic: triangular 0 -> lr at t = 0.5 -> 0
    (Wong et al. 2020), read at the middle of each step (t = (step + 1/2) / steps), so no step trains
    at lr 0 (read at t = 0, a run's first step did, and a run of one step trained nothing); a run of
    one step takes the peak.
    multistep: lr, x0.1 at t = 0.5, x0.01 at t = 0.75 (Madry et al. / Rice et al.'s 100/150 of 200 epochs).
    """

    CONSTANT = "constant"
    COSINE = "cosine"
    CYCLIC = "cyclic"
    MULTISTEP = "multistep"


class Select(str, enum.Enum):
    """Which weights the run writes: the last epoch's, or the epoch with the best validation
    robust accuracy (early stopping, Rice et al. 2020; guards against catastrophic overfitting)."""

    LAST = "last"
    BEST = "best"


@dataclass(frozen=True)
class TrainConfig:
    """Training-loop settings (all keyword, all with defaults).

    ``lr=None`` picks 0.1 when training from scratch and 0.01 when fine-tuning (SGD), 1e-3 (Adam).
    ``val_limit``: validate on the first n validation images (None: all).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    seed: int = 0
    from_scratch: bool = False
    val_limit: int | None = 500
    val_pgd_steps: int = 10
    select: str = "last"

    def validate(self) -> None:
        if self.epochs < 1:
            raise SuiteError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise SuiteError(f"batch size must be at least 1, got {self.batch_size}.")
        parse_enum(OptimizerKind, self.optimizer, "optimizer")
        parse_enum(Schedule, self.schedule, "schedule")
        parse_enum(Select, self.select, "select")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise SuiteError(f"lr must be positive, got {self.lr}.")
        if self.lr is not None and self.lr > MAX_LR:  # beyond float32 (3.4e38) the optimiser step itself crashes
            raise SuiteError(f"lr must be at most {MAX_LR:g} (typical: 0.01-0.1 with SGD, 1e-3 with Adam), got {self.lr:g}.")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)) or not 0 <= self.momentum < 1:  # inf or NaN: NaN weights after one step
            raise SuiteError(f"weight_decay must be a finite number >= 0 (e.g. 5e-4) and momentum in [0, 1) (e.g. 0.9), got {self.weight_decay} and {self.momentum}.")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise SuiteError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}.")
        if self.val_limit is not None and self.val_limit < 1:
            raise SuiteError(f"val_limit must be at least 1 (or None for all), got {self.val_limit}.")
        if self.val_pgd_steps < 1:
            raise SuiteError(f"val_pgd_steps must be at least 1, got {self.val_pgd_steps}.")

    def base_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        if OptimizerKind(self.optimizer) is OptimizerKind.ADAM:
            return 1e-3
        return 0.1 if self.from_scratch else 0.01


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate of global step ``step`` of ``total`` (warmup, then the schedule)."""
    base = cfg.base_lr()
    steps_per_epoch = total / cfg.epochs
    warm = cfg.warmup_epochs * steps_per_epoch
    if warm > 0 and step < warm:  # never past the peak: a warmup of 2.5 steps gave its third step 1.2 x lr
        return base * min((step + 1) / warm, 1.0)
    t = (step - warm) / max(total - warm, 1)
    s = Schedule(cfg.schedule)
    if s is Schedule.CONSTANT:
        return base
    if s is Schedule.COSINE:
        return base * 0.5 * (1 + math.cos(math.pi * t))
    if s is Schedule.CYCLIC:  # at the step's middle: the triangle's ends (lr 0) fall between steps, never on one
        tm = (step + 0.5 - warm) / max(total - warm, 0.5)
        return base * (1 - abs(2 * min(max(tm, 0.0), 1.0) - 1))
    return base * (0.1 if t >= 0.5 else 1.0) * (0.1 if t >= 0.75 else 1.0)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training (fractions in [0, 1]; loss is the mean training loss)."""

    epoch: int
    loss: float
    train_accuracy: float
    val_clean_accuracy: float
    val_robust_accuracy: float
    val_robust_name: str
    lr: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`: the per-epoch history, the epoch whose weights were kept, and
    whether the run resumed from a checkpoint (and from which epoch)."""

    history: tuple[EpochRecord, ...]
    selected_epoch: int
    resumed_from: int | None
    collapse_warning: str | None = None


def _reinit(net: nn.Module, seed: int) -> None:
    """Re-initialise every module with ``reset_parameters`` from a seeded, forked RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "defend/init"))
        for m in net.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()


def latest_checkpoint(ckpt_dir: Path) -> tuple[int, Path] | None:
    found = []
    for p in ckpt_dir.glob("epoch-*.pt"):
        m = re.fullmatch(r"epoch-(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return max(found) if found else None


def _save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _fork_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def train(
    model: nn.Module,
    method: DefenseMethod,
    train_data: Dataset,
    val_data: Dataset | None,
    cfg: TrainConfig,
    *,
    ckpt_dir: Path,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
    progress: Callable[..., Iterable[Any]] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``method``; checkpoint after every epoch.

    Args:
        model: a ``RobustModel`` (its ``net`` is trained; inputs in ``model.bounds``).
        method: a resolved :class:`DefenseMethod` (budgets filled in).
        train_data, val_data: data already mapped to the model's bounds (``runner.prepare_data``).
        cfg: the loop's settings. ckpt_dir: where ``epoch-<e>.pt`` go.
        resume: continue from the latest checkpoint in ``ckpt_dir`` (settings must match).
        fingerprint: what must match for a resume (model hash, data, method params).
        progress: ``progress(iterable, total=, desc=)`` wrapper (e.g. tqdm); on_epoch: callback.

    Shapes: the data's images (N, C, H, W), labels (N,).
    """
    cfg.validate()
    net: nn.Module = getattr(model, "net", model)
    device = next(iter(net.parameters())).device
    bounds = tuple(float(b) for b in getattr(model, "bounds", (0.0, 1.0)))
    n = len(train_data)
    if n == 0:
        raise RobustlabError("the training split is empty; pass --data with a training split (e.g. digits, npz:PATH with x_train/y_train).")
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    # what must match for a resume: the validation size too, since it decides the `--select best` epoch and the
    # validation history recorded in the written model
    fp_cmp = {"method": method.name, "params": method.params.to_dict(), "n_train": n, **(fingerprint or {}), "config": asdict(cfg)}

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    latest = latest_checkpoint(ckpt_dir)
    if latest and not resume:
        raise ResumeError(f"{ckpt_dir} already holds checkpoints (up to epoch {latest[0]}); pass --resume to continue that run, or --overwrite to start over.")
    if cfg.from_scratch and not (resume and latest):
        _reinit(net, cfg.seed)
    for p in net.parameters():
        p.requires_grad_(True)
    params = [p for p in net.parameters() if p.requires_grad]
    if OptimizerKind(cfg.optimizer) is OptimizerKind.SGD:
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.base_lr(), momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    else:
        opt = torch.optim.Adam(params, lr=cfg.base_lr(), weight_decay=cfg.weight_decay)

    history: list[EpochRecord] = []
    start_epoch, step, resumed_from = 0, 0, None
    best_score, best_epoch = -1.0, 0
    if resume and latest:
        ck = torch.load(latest[1], map_location=device, weights_only=True)
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise ResumeError(f"{latest[1]} is not a robustlab defend checkpoint; remove {ckpt_dir} or pass --overwrite.")
        saved = ck.get("fingerprint_cmp", {})
        diff = _differences(saved, fp_cmp)
        if diff:
            raise ResumeError(f"cannot resume from {latest[1]}: {'; '.join(diff)} differ from the interrupted run (its value -> this one's); rerun with the same options, or pass --overwrite to start over.")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step = int(ck["epoch"]), int(ck["step"])
        history = [EpochRecord(**h) for h in ck["history"]]
        best_score, best_epoch = float(ck["best_score"]), int(ck["best_epoch"])
        resumed_from = start_epoch
        log.info("resuming from %s (epoch %d of %d)", latest[1], start_epoch, cfg.epochs)
    elif resume:
        log.info("--resume: no checkpoint in %s, starting from epoch 0", ckpt_dir)

    val = val_data.limit(cfg.val_limit) if val_data is not None else None
    scope = f"defend/{method.name}"
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "defend/shuffle", epoch))
        perm = torch.randperm(n, generator=g)
        batches = range(0, n, cfg.batch_size)
        it = progress(batches, total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}") if progress else batches
        loss_sum = correct = 0.0
        extra_sum: dict[str, float] = {}
        lr = cfg.base_lr()
        with torch.random.fork_rng(devices=_fork_devices(device)):
            torch.manual_seed(derive_seed(cfg.seed, "defend/model-rng", epoch))
            for i in it:
                idx = perm[i : i + cfg.batch_size].tolist()
                x = train_data.images(idx).to(device)
                y = train_data.y[idx].to(device)
                seeds = sample_seeds(cfg.seed, f"{scope}/epoch={epoch}", [train_data.ids[j] for j in idx])
                lr = lr_at(cfg, step, total)
                for group in opt.param_groups:
                    group["lr"] = lr
                model.train()  # the wrapper too: its flag is what eval_mode(model) restores
                out = method.loss(model, x, y, seeds=seeds, bounds=bounds)  # type: ignore[arg-type]
                if not torch.isfinite(out.loss):
                    raise RobustlabError(f"the training loss became {float(out.loss)} at epoch {epoch}, step {step}; lower --lr (now {lr:g}) or check the data.")
                opt.zero_grad(set_to_none=True)
                out.loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                step += 1
                loss_sum += float(out.loss.detach()) * len(idx)
                correct += float((out.logits.argmax(1) == y).sum())
                for k, v in out.extra.items():
                    extra_sum[k] = extra_sum.get(k, 0.0) + v * len(idx)
                if progress and hasattr(it, "set_postfix"):
                    it.set_postfix(loss=f"{float(out.loss.detach()):.3f}", lr=f"{lr:.3g}")
        kept = f" Epochs 1-{epoch - 1} are kept in {ckpt_dir}." if epoch > 1 else ""
        bad = next((name for name, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:  # the epoch's last update overflowed: validation would blame the model's outputs
            raise RobustlabError(f"training diverged at epoch {epoch}: the weights of {bad} became NaN or infinite; lower --lr (now {cfg.base_lr():g}).{kept}")
        model.eval()
        try:
            vr = validate(model, method, val, seed=cfg.seed, batch_size=max(cfg.batch_size, 256), pgd_steps=cfg.val_pgd_steps) if val is not None and len(val) else ValResult(float("nan"), float("nan"), method.val_metric.value, 0)
        except ModelOutputError as exc:  # the model gave finite logits while training: its weights overflowed in this epoch
            raise RobustlabError(f"training diverged at epoch {epoch}: the trained model's logits are NaN or infinite on the validation images; "
                                 f"lower --lr (now {cfg.base_lr():g}).{kept}") from exc
        rec = EpochRecord(epoch=epoch, loss=loss_sum / n, train_accuracy=correct / n, val_clean_accuracy=vr.clean_accuracy, val_robust_accuracy=vr.robust_accuracy,
                          val_robust_name=vr.robust_name, lr=lr, seconds=round(time.perf_counter() - t0, 3), extra={k: v / n for k, v in extra_sum.items()})
        history.append(rec)
        score = vr.robust_accuracy if math.isfinite(vr.robust_accuracy) else vr.clean_accuracy
        if math.isfinite(score) and score > best_score:
            best_score, best_epoch = score, epoch
            _save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": net.state_dict()}, ckpt_dir / "best.pt")
        _save({
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "step": step, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "history": [asdict(h) for h in history], "best_score": best_score, "best_epoch": best_epoch,
            "fingerprint_cmp": fp_cmp, "rng": {"shuffle_seed": derive_seed(cfg.seed, "defend/shuffle", epoch + 1)},
        }, ckpt_dir / f"epoch-{epoch}.pt")
        log.info("epoch %d/%d: loss %.4f, train acc %.4f, val clean %.4f, val %s %.4f (%.1fs)", epoch, cfg.epochs, rec.loss, rec.train_accuracy,
                 rec.val_clean_accuracy, rec.val_robust_name, rec.val_robust_accuracy, rec.seconds)
        if on_epoch:
            on_epoch(rec)

    warning = _collapse(history)
    selected = cfg.epochs
    if Select(cfg.select) is Select.BEST and best_epoch and best_epoch != cfg.epochs:
        ck = torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True)
        net.load_state_dict(ck["model"])
        selected = best_epoch
    for p in net.parameters():
        p.requires_grad_(False)
    model.eval()
    return TrainResult(tuple(history), selected, resumed_from, warning)


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between an interrupted run's fingerprint and this one's, down to the setting
    (``config.lr 0.01 -> 0.05``, not just ``config``), so the user knows which option to put back."""
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{s} {a.get(s)!r} -> {b.get(s)!r}" for s in sorted(set(a) | set(b)) if a.get(s) != b.get(s)]
        else:
            out.append(k)
    return out


def _collapse(history: list[EpochRecord], *, drop: float = 0.2) -> str | None:
    """A warning when validation robust accuracy fell by more than ``drop`` from its best: the
    catastrophic overfitting of FGSM training (Wong et al. 2020) or robust overfitting."""
    rob = [(h.epoch, h.val_robust_accuracy) for h in history if math.isfinite(h.val_robust_accuracy)]
    if len(rob) < 2:
        return None
    best_ep, best = max(rob, key=lambda t: t[1])
    last_ep, last = rob[-1]
    if best - last > drop:
        msg = (f"validation robust accuracy fell from {best:.3f} (epoch {best_ep}) to {last:.3f} (epoch {last_ep}): catastrophic or robust "
               "overfitting; use --select best, a smaller step or fewer epochs.")
        log.warning("%s", msg)
        return msg
    return None
