"""GAN objectives as pure functions: non-saturating losses, lazy R1, DiffAugment.

DiffAugment (Zhao et al. 2020) lets the discriminator train on few images without leaking the
augmentations into the generator: the same differentiable colour/translation/cutout transforms
are applied to real and fake batches before D, and gradients flow back through them to G.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddcs_core.errors import DDCSInputError

AUGMENTS = ("color", "translation", "cutout")


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """−log σ(D(G(z))): the generator's non-saturating loss."""
    return F.softplus(-fake_logits).mean()


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−log σ(D(x)) − log(1 − σ(D(G(z)))): the discriminator's logistic loss."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ‖∇ₓ D(x)‖² at real images (`real_images` must require grad, and
    `real_logits` be computed from them); differentiable for the D update."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


def lazy_r1_loss(penalty: torch.Tensor, gamma: float, every: int) -> torch.Tensor:
    """R1 term for lazy regularisation: applied every `every` steps, so scaled by `every` to keep its
    average weight γ/2 per step."""
    return penalty * (gamma / 2) * every


def _rand(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the CPU so a seed gives the same augmentations on every device.
    return torch.rand(n, generator=generator).to(device)


def _randint(low: int, high: int, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator).to(device)


def _color(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_rand(n, x.device, generator) - 0.5).view(-1, 1, 1, 1)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(n, x.device, generator) * 2).view(-1, 1, 1, 1) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(n, x.device, generator) + 0.5).view(-1, 1, 1, 1) + mean


def _shift(x: torch.Tensor, shift: torch.Tensor, dim: int) -> torch.Tensor:
    """Shift each sample by its integer offset along `dim` (2 = rows, 3 = columns), zero-filled."""
    size = x.shape[dim]
    src = torch.arange(size, device=x.device)[None, :] - shift[:, None]  # (N, size)
    valid = ((src >= 0) & (src < size)).to(x.dtype)
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = size
    index = src.clamp(0, size - 1).view(shape).expand_as(x)
    return x.gather(dim, index) * valid.view(shape)


def _translation(x: torch.Tensor, generator: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    x = _shift(x, _randint(-sh, sh + 1, n, x.device, generator), 2)
    return _shift(x, _randint(-sw, sw + 1, n, x.device, generator), 3)


def _cutout(x: torch.Tensor, generator: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = _randint(0, h + (1 - ch % 2), n, x.device, generator) - ch // 2
    left = _randint(0, w + (1 - cw % 2), n, x.device, generator) - cw // 2
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_r = (rows >= top[:, None]) & (rows < top[:, None] + ch)
    in_c = (cols >= left[:, None]) & (cols < left[:, None] + cw)
    mask = ~(in_r[:, :, None] & in_c[:, None, :])
    return x * mask[:, None].to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def parse_policy(policy: str) -> list[str]:
    """The op names of a DiffAugment policy string; refuses unknown ones."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in _OPS]
    if unknown:
        raise DDCSInputError(f"DiffAugment policy {policy!r}: unknown ops {unknown} (known: {list(AUGMENTS)})")
    return names


def diff_augment(
    x: torch.Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Differentiable colour (brightness, saturation, contrast), translation (±1/8, zero-filled) and
    cutout (a half-size square zeroed) of a [-1, 1] NCHW batch, each with its own random draw per
    sample. `policy` is a comma list of those names ('' = identity)."""
    for name in parse_policy(policy):
        x = _OPS[name](x, generator)
    return x
