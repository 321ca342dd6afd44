"""Factories used by the tests through ``factory:rl_test_models:NAME`` (tests/plugins on PYTHONPATH)."""

import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes: int = 10, out: int | None = None, nan: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = nn.Linear(64, out or num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) * 0.1)
            self.fc.bias.zero_()
        self.nan = nan

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.nan else out


def tiny(num_classes: int = 10) -> nn.Module:
    return Tiny(num_classes)


def wrong_shape() -> nn.Module:
    return Tiny(out=7)


def nan_logits() -> nn.Module:
    return Tiny(nan=True)


def not_a_module():
    return 42


def plugin_load(arg: str, **options):
    """Entry point of a fake third-party model plugin (group robustlab.models)."""
    if arg != "tiny":
        raise ValueError(arg)
    return Tiny()


class TinyCifar(nn.Module):
    """A small seeded CNN on 3x32x32 inputs: its activations are large enough per image (64 KB a
    layer) that holding them, or adversarial examples, for every image shows in peak RSS."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.0))

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.nn.functional.avg_pool2d(torch.relu(self.c2(h)), 4)
        return self.fc(h.flatten(1))


def tiny_cifar() -> nn.Module:
    return TinyCifar()


class _FailsOnRank1(Tiny):
    """A model that misbehaves only in torchrun's rank 1 (a fault on one worker: a bad device, a bug
    that one shard of the data triggers)."""

    def __init__(self, how: str, every_rank: bool = False) -> None:
        super().__init__()
        self.how = how
        self.every_rank = every_rank
        self.calls = 0

    def forward(self, x):
        import os

        out = super().forward(x)
        self.calls += 1
        if (os.environ.get("RANK") != "1" and not self.every_rank) or self.calls == 1:  # the loader's probe batch passes: fail inside a check
            return out
        if self.how == "nan":
            return out * float("nan")
        raise RuntimeError("simulated failure of a batch on rank 1")


def nan_on_rank1() -> nn.Module:
    return _FailsOnRank1("nan")


def raises_on_rank1() -> nn.Module:
    return _FailsOnRank1("raise")


def raises_in_checks() -> nn.Module:
    """Passes the loader's probe batch, then raises in every check (a single-process run's errored check)."""
    return _FailsOnRank1("raise", every_rank=True)


class _Slow(Tiny):
    """Tiny, with a pause in every forward after the loader's probe (a run long enough to be killed)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.calls = 0

    def forward(self, x):
        import time

        self.calls += 1
        if self.calls > 1:
            time.sleep(self.seconds)
        return super().forward(x)


def slow_tiny() -> nn.Module:
    return _Slow(0.5)


class _NaNOffGrid(nn.Module):
    """The zoo digits CNN, with finite logits on the digits data (pixels on the 1/16 grid) and NaN for
    any input off it: every perturbed (adversarial or noisy) input gets NaN logits."""

    def __init__(self) -> None:
        super().__init__()
        from robustlab.models import load_model

        self.net = load_model("zoo:digits-cnn", device="cpu").net

    def forward(self, x):
        out = self.net(x)
        off = ((x * 16 - (x * 16).round()).abs() > 1e-3).flatten(1).any(1)
        return torch.where(off.unsqueeze(1), torch.full_like(out, float("nan")), out)


def nan_off_grid() -> nn.Module:
    return _NaNOffGrid()


class _NaNOffGridAfterFirst(_NaNOffGrid):
    """As nan_off_grid, but the first call with off-grid inputs is finite (the one that the output
    check at the start of sampling sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_off_grid = False

    def forward(self, x):
        if not self.seen_off_grid and ((x * 16 - (x * 16).round()).abs() > 1e-3).any():
            self.seen_off_grid = True
            return self.net(x)
        return super().forward(x)


def nan_off_grid_after_first() -> nn.Module:
    return _NaNOffGridAfterFirst()


class _HalvesInputInPlace(nn.Module):
    """f(x) = zoo digits CNN at x / 2, computed by halving its input in place (as ``x /= 2`` would)."""

    def __init__(self) -> None:
        super().__init__()
        from robustlab.models import load_model

        self.net = load_model("zoo:digits-cnn", device="cpu").net

    def forward(self, x):
        if not x.requires_grad:
            x.mul_(0.5)
        else:
            x = x * 0.5
        return self.net(x)


def halves_input_in_place() -> nn.Module:
    return _HalvesInputInPlace()


class _HalfLogits(Tiny):
    def forward(self, x):
        return super().forward(x).half()


def half_logits() -> nn.Module:
    return _HalfLogits()


class _ZooDigits(nn.Module):
    """The bundled digits CNN (a real model with a meaningful calibration), with a transformed output."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        from robustlab.models import load_model

        self.net = load_model("zoo:digits-cnn", device="cpu").net
        self.kind = kind
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        if self.kind == "fixed_batch":
            assert x.shape[0] == 16, f"batch {x.shape[0]}"
        if self.kind == "noisy":
            x = self.drop.train()(x)  # randomness left on at evaluation time
        if self.kind == "scaled255":
            x = x / 255.0  # the same function on inputs in 0..255 (run it with --bounds 0,255)
        z = self.net(x)
        if self.kind == "probabilities":
            return torch.softmax(z, dim=1)
        if self.kind == "sigmoid":  # one-vs-rest scores: in [0, 1], rows not summing to 1
            return torch.sigmoid(z)
        if self.kind in ("probabilities_fp16", "probabilities_bf16"):  # a half-precision model's softmax: rows sum to 1 within its rounding
            return torch.softmax(z, dim=1).to(torch.float16 if self.kind.endswith("fp16") else torch.bfloat16)
        if self.kind == "double":
            return z.double()
        if self.kind == "int":
            return z.round().long()
        return z


def zoo_digits() -> nn.Module:
    return _ZooDigits("logits")


def zoo_digits_255() -> nn.Module:
    return _ZooDigits("scaled255")


def probabilities_out() -> nn.Module:
    return _ZooDigits("probabilities")


def probabilities_fp16() -> nn.Module:
    return _ZooDigits("probabilities_fp16")


def probabilities_bf16() -> nn.Module:
    return _ZooDigits("probabilities_bf16")


def sigmoid_out() -> nn.Module:
    return _ZooDigits("sigmoid")


def double_out() -> nn.Module:
    return _ZooDigits("double")


def int_out() -> nn.Module:
    return _ZooDigits("int")


def fixed_batch() -> nn.Module:
    return _ZooDigits("fixed_batch")


def noisy() -> nn.Module:
    return _ZooDigits("noisy")


class _NoGradForward(_ZooDigits):
    def forward(self, x):
        with torch.no_grad():
            return self.net(x)


def no_grad_forward() -> nn.Module:
    return _NoGradForward("logits")


def quantized_dynamic() -> nn.Module:
    """The digits CNN with int8 dynamic linear layers (packed params in its state dict)."""
    return torch.ao.quantization.quantize_dynamic(_ZooDigits("logits").net, {nn.Linear}, dtype=torch.qint8)


class _ExtraState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _ZooDigits("logits").net

    def forward(self, x):
        return self.net(x)

    def get_extra_state(self):
        return {"note": "not a tensor", "version": 2}

    def set_extra_state(self, state):
        pass


def extra_state() -> nn.Module:
    return _ExtraState()


def half_weights() -> nn.Module:
    return _ZooDigits("logits").net.half()


class _NoBatchOfOne(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _ZooDigits("logits").net

    def forward(self, x):
        if x.shape[0] == 1:
            raise ValueError("batch size 1 not supported")
        return self.net(x)


def no_batch_of_one() -> nn.Module:
    return _NoBatchOfOne()
