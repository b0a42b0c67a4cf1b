"""A compact StyleGAN2 (generator and residual discriminator) in pure PyTorch.

Pure PyTorch so it runs on CPU and any GPU without compiling custom ops: upsampling and
downsampling are plain bilinear interpolation / average pooling instead of upfirdn2d, and
modulated convolutions modulate activations rather than weights (one ordinary conv per layer,
exactly equivalent to the grouped-conv form). Everything else follows StyleGAN2: equalised
learning rate, pixel-normed z, a mapping network with a tracked `w_avg` for truncation, a learned
constant input, weight demodulation, per-layer noise and a toRGB skip generator.

Latent convention: `mapping` returns one w per sample, shape (N, w_dim). `synthesis` takes either
that (broadcast to all `num_ws` layers) or per-layer ws of shape (N, num_ws, w_dim) (W+), so attacks
can optimise in W or W+.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ddcs_core.choices import NOISE_MODES
from ddcs_core.errors import DDCSInputError
from ddcs_core.models.checkpoints import register

SQRT2 = math.sqrt(2.0)
_NOISE_SHARE: ContextVar[tuple[int, torch.Tensor] | None] = ContextVar("noise_share", default=None)


@contextmanager
def noise_share(batch: int, rows: torch.Tensor) -> Iterator[None]:
    """Within: random noise inputs are drawn for a batch of `batch` images and only `rows` kept, so a
    rank synthesising its share of a global batch (distributed training) gets the very noise one process
    drawing the whole batch gives those images, and torch's RNG advances alike on every rank."""
    token = _NOISE_SHARE.set((batch, rows))
    try:
        yield
    finally:
        _NOISE_SHARE.reset(token)


def random_noise(n: int, height: int, width: int, device: torch.device, dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """(n, 1, height, width) standard normal noise inputs; within `noise_share`, these images' rows of the
    whole batch's draw (used by this generator and the StyleGAN2-ADA one)."""
    share = _NOISE_SHARE.get()
    if share is None:
        return torch.randn(n, 1, height, width, device=device, dtype=dtype)
    batch, rows = share
    return torch.randn(batch, 1, height, width, device=device, dtype=dtype)[rows.to(device)]


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU scaled by √2 to keep activations' variance (StyleGAN's 'lrelu' gain)."""
    return F.leaky_relu(x, 0.2) * SQRT2


def channel_dict(resolution: int, channel_base: int, channel_max: int, channels: dict | None) -> dict[int, int]:
    """Channels per resolution: `min(channel_base // res, channel_max)`, or an explicit mapping
    (keys may be strings, as after a JSON round trip)."""
    if channels is not None:
        chans = {int(k): int(v) for k, v in channels.items()}
    else:
        chans = {4 * 2**i: min(channel_base // (4 * 2**i), channel_max) for i in range(int(math.log2(resolution)) - 1)}
    needed = [4 * 2**i for i in range(int(math.log2(resolution)) - 1)]
    missing = [r for r in needed if chans.get(r, 0) < 1]
    if missing:
        raise DDCSInputError(f"no channel count for resolutions {missing}")
    return {r: chans[r] for r in needed}


def _check_resolution(resolution: int) -> int:
    if resolution < 4 or resolution & (resolution - 1):
        raise DDCSInputError(f"img_resolution must be a power of two >= 4, got {resolution}")
    return int(resolution)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored ~N(0, 1/lr_mul²), scaled at run time."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(cin)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return _lrelu(x) if self.activate else x


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate (discriminator)."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True, activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1 / math.sqrt(cin * kernel * kernel)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)
        return _lrelu(x) if self.activate else x


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float, w_avg_beta: float):
        super().__init__()
        self.layers = nn.Sequential(
            *[EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mul, activate=True) for i in range(num_layers)]
        )
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        w = self.layers(z)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            w = self.w_avg.lerp(w, truncation_psi)
        return w


class ModulatedConv2d(nn.Module):
    """Style-modulated conv with optional demodulation and 2× bilinear upsampling before the conv.

    conv(x·s, W)·d equals conv(x, W·s·d) per sample, so one shared-weight conv serves the batch;
    d = 1/‖W·s‖ per output channel is computed as a (N, cin)×(cin, cout) product.
    """

    def __init__(self, cin: int, cout: int, kernel: int, w_dim: int, demodulate: bool = True, up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)
        self.scale = 1 / math.sqrt(cin * kernel * kernel)
        self.demodulate = demodulate
        self.up = up

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        weight = self.weight * self.scale
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            d = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)
            x = x * d[:, :, None, None]
        return x


class StyledConv(nn.Module):
    """Modulated 3×3 conv + scaled per-pixel noise + bias + lrelu."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        x = self.conv(x, w)
        if noise_mode == "random":
            x = x + random_noise(x.shape[0], *x.shape[2:], x.device, x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return _lrelu(x + self.bias[:, None, None])


class ToRGB(nn.Module):
    def __init__(self, cin: int, w_dim: int, channels: int = 3):
        super().__init__()
        self.conv = ModulatedConv2d(cin, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[:, None, None]


class SynthesisBlock(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int):
        super().__init__()
        self.conv0 = StyledConv(cin, cout, w_dim, resolution, up=True)
        self.conv1 = StyledConv(cout, cout, w_dim, resolution)
        self.torgb = ToRGB(cout, w_dim)

    def forward(
        self, x: torch.Tensor, img: torch.Tensor, ws: torch.Tensor, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and RGB skip image at twice the resolution; `ws` holds this block's 3 ws."""
        x = self.conv0(x, ws[:, 0], noise_mode)
        x = self.conv1(x, ws[:, 1], noise_mode)
        img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, img + self.torgb(x, ws[:, 2])


class Generator(nn.Module):
    """StyleGAN2 generator. Outputs images on the [-1, 1] scale, not clamped (as StyleGAN2, so training
    gradients stay intact); clamp for display or saving."""

    def __init__(
        self,
        z_dim: int = 256,
        w_dim: int = 256,
        img_resolution: int = 64,
        mapping_layers: int = 4,
        channel_base: int = 2048,
        channel_max: int = 256,
        channels: dict | None = None,
        mapping_lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
    ):
        super().__init__()
        self.z_dim, self.w_dim = int(z_dim), int(w_dim)
        self.img_resolution = _check_resolution(img_resolution)
        self.img_channels = 3
        chans = channel_dict(self.img_resolution, channel_base, channel_max, channels)
        self.config = dict(
            z_dim=z_dim, w_dim=w_dim, img_resolution=img_resolution, mapping_layers=mapping_layers,
            channel_base=channel_base, channel_max=channel_max,
            channels=None if channels is None else {str(k): v for k, v in chans.items()},
            mapping_lr_mul=mapping_lr_mul, w_avg_beta=w_avg_beta,
        )
        self.mapping_net = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul, w_avg_beta)
        self.const = nn.Parameter(torch.randn(1, chans[4], 4, 4))
        self.conv4 = StyledConv(chans[4], chans[4], w_dim, 4)
        self.torgb4 = ToRGB(chans[4], w_dim)
        self.blocks = nn.ModuleList(
            SynthesisBlock(chans[r // 2], chans[r], w_dim, r) for r in sorted(chans) if r > 4
        )
        self.num_ws = 2 + 2 * len(self.blocks)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping_net.w_avg

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        """z (N, z_dim) → w (N, w_dim); `truncation_psi` < 1 pulls w toward `w_avg`."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        return self.mapping_net(z, truncation_psi, update_w_avg)

    def truncate(self, w: torch.Tensor, truncation_psi: float) -> torch.Tensor:
        """Truncation applied to given ws, (N, w_dim) or (N, num_ws, w_dim)."""
        return self.w_avg.lerp(w, truncation_psi)

    def synthesis(self, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """w (N, w_dim) or per-layer ws (N, num_ws, w_dim) → images (N, 3, R, R)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if w.ndim == 2:
            w = w[:, None, :].expand(-1, self.num_ws, -1)
        if w.ndim != 3 or w.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"w must be (N, {self.w_dim}) or (N, {self.num_ws}, {self.w_dim}), got {tuple(w.shape)}")
        x = self.conv4(self.const.expand(w.shape[0], -1, -1, -1), w[:, 0], noise_mode)
        img = self.torgb4(x, w[:, 1])
        for i, block in enumerate(self.blocks):  # block i uses ws 1+2i (conv0), 2+2i (conv1), 3+2i (toRGB)
            x, img = block(x, img, w[:, 1 + 2 * i : 4 + 2 * i], noise_mode)
        return img

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "random") -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode)

    def mean_w(self, n: int = 10000, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
        """Mean of mapping(z) over `n` seeded random z: a w_avg estimate for untracked checkpoints."""
        return mean_w(self, n, seed, batch_size)


@torch.no_grad()
def mean_w(G: nn.Module, n: int = 10000, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
    """Mean of G.mapping(z) over `n` seeded random z, accumulated in float64 (any generator with
    `mapping`, `z_dim`, `w_dim` and a `const` input: ours and the imported StyleGAN2-ADA)."""
    gen = torch.Generator().manual_seed(seed)
    device = G.const.device
    total = torch.zeros(G.w_dim, device=device, dtype=torch.float64)
    for i in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - i), G.z_dim, generator=gen).to(device)
        total += G.mapping(z).double().sum(dim=0)
    return (total / n).float()


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3×3 convs with a 2× average-pool between them, 1×1 skip, sum / √2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqualConv2d(cin, cin, 3)
        self.conv1 = EqualConv2d(cin, cout, 3)
        self.skip = EqualConv2d(cin, cout, 1, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = self.conv1(F.avg_pool2d(self.conv0(x), 2))
        return (x + skip) / SQRT2


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the per-group feature standard deviation as extra channels (a cue for sample diversity).
    The group is the largest divisor of the batch not above `group_size`."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.reshape(g, -1, num_channels, c // num_channels, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
    y = y.mean(dim=(2, 3, 4)).reshape(-1, num_channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: fromRGB, residual blocks down to 4×4, minibatch stddev,
    conv, FC head. Returns one logit per image, shape (N,)."""

    def __init__(
        self,
        img_resolution: int = 64,
        channel_base: int = 2048,
        channel_max: int = 256,
        channels: dict | None = None,
        mbstd_group: int = 4,
    ):
        super().__init__()
        self.img_resolution = _check_resolution(img_resolution)
        chans = channel_dict(self.img_resolution, channel_base, channel_max, channels)
        self.config = dict(
            img_resolution=img_resolution, channel_base=channel_base, channel_max=channel_max,
            channels=None if channels is None else {str(k): v for k, v in chans.items()}, mbstd_group=mbstd_group,
        )
        self.mbstd_group = mbstd_group
        self.fromrgb = EqualConv2d(3, chans[self.img_resolution], 1)
        self.blocks = nn.Sequential(
            *[DiscriminatorBlock(chans[r], chans[r // 2]) for r in sorted(chans, reverse=True) if r > 4]
        )
        c4 = chans[4]
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, activate=True)
        self.out = EqualLinear(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.img_resolution
        if img.ndim != 4 or img.shape[1:] != (3, r, r):
            raise ValueError(f"expected images (N, 3, {r}, {r}), got {tuple(img.shape)}")
        x = self.blocks(self.fromrgb(img))
        x = self.conv(minibatch_stddev(x, self.mbstd_group))
        return self.out(self.fc(x.flatten(1))).squeeze(1)


register("stylegan2-g")(Generator)
register("stylegan2-d")(Discriminator)
