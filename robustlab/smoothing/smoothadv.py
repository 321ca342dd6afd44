"""SmoothAdv: L2 PGD against the smoothed classifier with Monte-Carlo gradients.

Used for the *upper* end of the robustness interval: the attack looks for x' in the L2 ball around x
(inside ``model.bounds``) that changes the smoothed classifier's prediction. Its success rate is an
empirical estimate, not a guarantee; the certificate gives the lower end.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..attacks.base import Norm, normalize_gradient, project
from ..seeding import derive_seed


def smoothadv_pgd_l2(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    *,
    eps: float,
    sigma: float,
    bounds: tuple[float, float],
    steps: int = 20,
    samples: int = 32,
    step_size: float | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """PGD (L2) on the soft smoothed classifier ``G(x) = E_delta softmax(f(x + delta))``.

    Each step draws ``samples`` fresh noise vectors per image (from that image's seed and the step
    number), ascends ``-log G(x')_y`` along the L2-normalised gradient, projects onto the eps ball
    and clips to ``bounds``. No random start; the last iterate is returned.

    Args:
        model: base classifier, (b, C, H, W) in ``bounds`` -> (b, K) logits.
        x: (B, C, H, W) clean images in ``bounds``. y: (B,) labels.
        seeds: B per-image seeds (results do not depend on the batch size).
        eps: L2 radius. sigma: smoothing noise level. steps: PGD steps.
        samples: noise vectors per image and step (m in Salman et al.).
        step_size: L2 step; default ``2 * eps / steps`` (Salman et al.).
        batch_size: noisy inputs per forward/backward pass (images are grouped accordingly).
    Returns:
        (B, C, H, W) adversarial images, ``||x' - x||_2 <= eps``, inside ``bounds``, on x's device.
    References: Salman et al., "Provably Robust Deep Learning via Adversarially Trained Smoothed
        Classifiers", NeurIPS 2019 (SmoothAdv-PGD; Hadisalman/smoothing-adversarial ``attacks.py``).
        Unlike that code, noise is re-drawn at every step. Projection and the L2 step direction are
        ``robustlab.attacks.base.project`` / ``normalize_gradient`` (shared with PGD).
    """
    dev = _device(model, x)
    x = x.to(dev)
    y = y.to(dev)
    if eps <= 0 or steps <= 0 or x.shape[0] == 0:
        return x.clone()
    lo, hi = float(bounds[0]), float(bounds[1])
    step = float(step_size) if step_size is not None else 2.0 * eps / steps
    m = max(1, int(samples))
    group = max(1, int(batch_size) // m)
    shape = tuple(x.shape[1:])
    out = torch.empty_like(x)
    for s in range(0, x.shape[0], group):
        x0, y0, sd = x[s : s + group], y[s : s + group], seeds[s : s + group]
        g = x0.shape[0]
        delta = torch.zeros_like(x0)
        for t in range(steps):
            noise = torch.stack([_noise(int(sd[i]), t, (m, *shape), dev, x.dtype) for i in range(g)])  # (g, m, C, H, W)
            xa = (x0 + delta).requires_grad_(True)
            with torch.enable_grad():
                logits = model((xa[:, None] + sigma * noise).reshape(g * m, *shape))
                probs = torch.softmax(logits.float(), dim=1).view(g, m, -1).mean(1)
                loss = -torch.log(probs.gather(1, y0[:, None]).clamp_min(1e-20)).sum()
                (grad,) = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                delta = project(delta + step * normalize_gradient(grad, Norm.L2), eps, Norm.L2)
                delta = (x0 + delta).clamp(lo, hi) - x0
        out[s : s + group] = (x0 + delta).detach()
    return out


def _device(model: torch.nn.Module, x: torch.Tensor) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else x.device


def _noise(seed: int, step: int, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, "smoothadv", step))
    return torch.randn(shape, generator=gen, device=device, dtype=dtype)
