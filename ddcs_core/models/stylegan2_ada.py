"""NVIDIA's StyleGAN2-ADA generator and discriminator, re-implemented in pure PyTorch.

The point is to run networks trained with NVlabs/stylegan2-ada-pytorch without running their code:
`network_pickle` reads a pickle's init arguments and tensors and builds these modules. To make that a
plain tensor copy, every module has the same constructor arguments, submodule names and parameter /
buffer names as the original, so `state_dict()` keys equal the original's.

Numerics follow the original (sg2ada_ops: per-sample modulated weights in one grouped convolution, as
its inference path); differences: every layer runs in float32 unless `set_fp16(True)` (then the blocks
marked fp16 run in half precision with the original's op sequence), and the minibatch-std group falls back to a divisor of the batch where the
original would fail. Arguments that only steer training or memory layout (`channels_last`,
`fp16_channels_last`, `trainable`, `freeze_layers`, `first_layer_idx`, `fused_modconv_default`) are accepted
so that every recorded configuration builds, and change no number.

Interface: besides NVIDIA's arguments the generator speaks the demo generator's interface
(`ddcs_core.models.stylegan2.Generator`): `mapping(z, truncation_psi)` returns one w per sample
(N, w_dim), `synthesis(w, noise_mode)` takes (N, w_dim) or W+ (N, num_ws, w_dim), `G(z, ...)`,
`truncate`, `w_avg`, `mean_w`, `const`, `config`, and `D(img)` returns one logit per image (N,), so
transfer learning and inversion run on an imported world unchanged. Conditional networks take a
one-hot `c=` or use the class chosen with `set_class(k)`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ddcs_core.choices import NOISE_MODES
from ddcs_core.errors import DDCSInputError
from ddcs_core.models import sg2ada_ops as ops
from ddcs_core.models.checkpoints import register
from ddcs_core.models.stylegan2 import random_noise

ARCHITECTURES = ("orig", "skip", "resnet")
_DEFAULT_FILTER = (1, 3, 3, 1)
# The generator arguments train.py writes for --cfg=paper256 (FFHQ 256 px, as in Plug-and-Play Attacks):
# fmaps 0.5 → channel_base 16384, 8 mapping layers, mixed precision on the 4 highest resolutions.
PAPER256_G = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                  mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256))


def _check_activation(act: str) -> str:
    if act not in ops.ACTIVATIONS:
        raise ValueError(f"activation {act!r} is not supported (known: {sorted(ops.ACTIVATIONS)})")
    return act


def _check_architecture(architecture: str) -> str:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r} is not supported (known: {list(ARCHITECTURES)})")
    return architecture


def _check_resolution(img_resolution: int) -> int:
    r = int(img_resolution)
    if r < 4 or r & (r - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return r


def one_hot(k: int, c_dim: int) -> torch.Tensor:
    if not 0 <= int(k) < c_dim:
        raise DDCSInputError(f"class {k} is out of range for a network with {c_dim} classes")
    return torch.eye(c_dim)[int(k)]


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate (`lr_multiplier` scales weight and bias at run time)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1, bias_init: float = 0):
        super().__init__()
        self.activation = _check_activation(activation)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = None if self.bias is None else self.bias * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Conv with equalised learning rate, optional FIR up/downsampling, bias_act with clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=_DEFAULT_FILTER,
                 conv_clamp: float | None = None, channels_last: bool = False, trainable: bool = True):
        super().__init__()
        self.activation = _check_activation(activation)
        self.up, self.down, self.conv_clamp = up, down, conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ops.default_gain(activation)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        x = ops.conv2d_resample(x, (self.weight * self.weight_gain).to(x.dtype), self.resample_filter, up=self.up,
                                down=self.down, padding=self.padding, flip_weight=self.up == 1)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        b = None if self.bias is None else self.bias.to(x.dtype)
        return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (and the embedded label c) → w; tracks `w_avg` for truncation when `num_ws` and `w_avg_beta` are set.

    A conditional network called without `c` uses the class chosen with `set_class` (so callers written
    for unconditional generators work unchanged)."""

    _fixed_c: torch.Tensor | None = None

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, activation: str = "lrelu",
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation=activation,
                                                        lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def set_class(self, k: int | None) -> None:
        """Condition every later call without `c` on class `k` (None: require `c`)."""
        self._fixed_c = None if k is None else one_hot(k, self.c_dim)

    def _labels(self, c: torch.Tensor | None, n: int) -> torch.Tensor:
        if c is None:
            if self._fixed_c is None:
                raise DDCSInputError(f"this network is class-conditional ({self.c_dim} classes): pass c or a class")
            c = self._fixed_c[None].expand(n, -1)
        if c.ndim != 2 or c.shape[1] != self.c_dim:
            raise ValueError(f"c must have shape (N, {self.c_dim}), got {tuple(c.shape)}")
        return c.to(device=self.embed.weight.device, dtype=torch.float32)

    def forward(self, z: torch.Tensor | None, truncation_psi: float = 1.0, update_w_avg: bool = False, *,
                c: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        """One w per sample (N, w_dim); `truncation_psi` < 1 pulls it toward `w_avg`."""
        parts = []
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape (N, {self.z_dim}), got {None if z is None else tuple(z.shape)}")
            parts.append(ops.normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            c = self._labels(c, z.shape[0] if z is not None else int(batch_size))
            parts.append(ops.normalize_2nd_moment(self.embed(c)))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated conv (optional 2× up), per-pixel noise, bias, activation with gain and clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=_DEFAULT_FILTER,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = _check_activation(activation), conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ops.default_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", gain: float = 1,
                fused: bool = True) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = random_noise(x.shape[0], self.resolution, self.resolution, x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = ops.modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                                 f=self.resample_filter, flip_weight=self.up == 1, fused=fused)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return ops.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv to image channels, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, padding=self.weight.shape[-1] // 2,
                                 fused=fused)
        return ops.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const or 2× up conv0) + conv1, and the RGB output per `architecture`."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter=_DEFAULT_FILTER,
                 conv_clamp: float | None = None, use_fp16: bool = False, fp16_channels_last: bool = False,
                 fused_modconv_default: bool = True, **layer_kwargs):
        super().__init__()
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last = img_channels, is_last
        self.architecture = _check_architecture(architecture)
        self.use_fp16 = use_fp16  # half precision only when enabled with `Generator.set_fp16(True)`
        self.fp16_enabled = False
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.num_conv = self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = iter(ws.unbind(dim=1))
        dtype = torch.float16 if self.use_fp16 and self.fp16_enabled else torch.float32
        fused = dtype == torch.float32 or ws.shape[0] == 1  # as the original's inference path
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w), noise_mode, fused=fused)
        elif self.architecture == "resnet":
            x = x.to(dtype)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w), noise_mode, fused=fused)
            x = y + self.conv1(x, next(w), noise_mode, gain=math.sqrt(0.5), fused=fused)
        else:
            x = self.conv0(x.to(dtype), next(w), noise_mode, fused=fused)
            x = self.conv1(x, next(w), noise_mode, fused=fused)
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w), fused=fused).to(torch.float32)
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """Blocks from 4×4 to `img_resolution`; ws (N, num_ws, w_dim) → images (N, img_channels, R, R)."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, **block_kwargs):
        super().__init__()
        self.w_dim, self.img_channels = w_dim, img_channels
        self.img_resolution = _check_resolution(img_resolution)
        log2 = int(np.log2(self.img_resolution))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=res == self.img_resolution,
                                   use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if block.is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """ws: (N, w_dim), broadcast to every layer, or W+ (N, num_ws, w_dim)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim == 2:
            ws = ws[:, None, :].expand(-1, self.num_ws, -1)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"w must be (N, {self.w_dim}) or (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        i = 0  # a block's ws start at its first conv; its toRGB shares the next block's first w
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, i, block.num_conv + block.num_torgb), noise_mode)
            i += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2-ADA generator. Images on the [-1, 1] scale, not clamped."""

    arch = "stylegan2-ada-g"

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.img_resolution, self.img_channels = _check_resolution(img_resolution), int(img_channels)
        mapping_kwargs, synthesis_kwargs = dict(mapping_kwargs or {}), dict(synthesis_kwargs or {})
        self.config = dict(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, img_resolution=self.img_resolution,
                           img_channels=self.img_channels, mapping_kwargs=mapping_kwargs,
                           synthesis_kwargs=synthesis_kwargs)
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def set_class(self, k: int | None) -> None:
        """The class a conditional generator draws when called without `c`."""
        self.mapping.set_class(k)

    def set_fp16(self, enabled: bool) -> None:
        """Run the blocks the pickle marks fp16 (`num_fp16_res`) in half precision, as NVIDIA's code does
        without `force_fp32` (faster on a GPU; about 1e-2 from float32). Default: float32 everywhere."""
        _set_fp16(self, enabled)

    @property
    def const(self) -> torch.Tensor:
        """The learned 4×4 input (its `.device` is where the generator lives)."""
        return self.synthesis.b4.const

    def truncate(self, w: torch.Tensor, truncation_psi: float) -> torch.Tensor:
        """Truncation of given ws, (N, w_dim) or (N, num_ws, w_dim)."""
        return self.w_avg.lerp(w, truncation_psi)

    def ws(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
           truncation_cutoff: int | None = None) -> torch.Tensor:
        """W+ (N, num_ws, w_dim) as NVIDIA's mapping returns it: truncation only on the first
        `truncation_cutoff` layers when that is given."""
        w = self.mapping(z, c=c)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws

    def forward(self, z: torch.Tensor, *, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random") -> torch.Tensor:
        return self.synthesis(self.ws(z, c, truncation_psi, truncation_cutoff), noise_mode=noise_mode)

    def mean_w(self, n: int = 10000, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
        """Mean of mapping(z) over `n` seeded random z (for the fixed class of a conditional network)."""
        from ddcs_core.models.stylegan2 import mean_w

        return mean_w(self, n, seed, batch_size)


def _set_fp16(net: nn.Module, enabled: bool) -> None:
    for m in net.modules():
        if hasattr(m, "fp16_enabled"):
            m.fp16_enabled = bool(enabled)


class DiscriminatorBlock(nn.Module):
    """One resolution of D: (fromRGB) conv0, conv1 with 2× FIR down, and a residual skip or an image skip."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 first_layer_idx: int, architecture: str = "resnet", activation: str = "lrelu",
                 resample_filter=_DEFAULT_FILTER, conv_clamp: float | None = None, use_fp16: bool = False,
                 fp16_channels_last: bool = False, freeze_layers: int = 0):
        super().__init__()
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.architecture = _check_architecture(architecture)
        self.use_fp16, self.fp16_enabled = use_fp16, False
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = torch.float16 if self.use_fp16 and self.fp16_enabled else torch.float32
        x = None if x is None else x.to(dtype)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype)
            y = self.fromrgb(img)
            x = y if x is None else x + y
            img = ops.downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStdLayer(nn.Module):
    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.minibatch_std(x, self.group_size, self.num_channels)


class DiscriminatorEpilogue(nn.Module):
    """4×4 head: minibatch std, conv, fc, output (projected on the mapped label when conditional)."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 architecture: str = "resnet", mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 activation: str = "lrelu", conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.architecture = _check_architecture(architecture)
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """StyleGAN2-ADA discriminator; `D(img)` returns one logit per image, shape (N,)."""

    arch = "stylegan2-ada-d"

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 0,
                 conv_clamp: float | None = None, cmap_dim: int | None = None, block_kwargs: dict | None = None,
                 mapping_kwargs: dict | None = None, epilogue_kwargs: dict | None = None):
        super().__init__()
        self.c_dim, self.img_channels = int(c_dim), int(img_channels)
        self.img_resolution = _check_resolution(img_resolution)
        block_kwargs, mapping_kwargs = dict(block_kwargs or {}), dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.config = dict(c_dim=self.c_dim, img_resolution=self.img_resolution, img_channels=self.img_channels,
                           architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                           num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                           block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs)
        log2 = int(np.log2(self.img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        cmap_dim = 0 if self.c_dim == 0 else (channels[4] if cmap_dim is None else cmap_dim)
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < self.img_resolution else 0, channels[res],
                                       channels[res // 2], resolution=res, first_layer_idx=layer_idx,
                                       use_fp16=res >= fp16_resolution, **block_kwargs, **common)
            setattr(self, f"b{res}", block)
            layer_idx += 2 + int(hasattr(block, "fromrgb")) + int(hasattr(block, "skip"))
        if self.c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=self.c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        r = self.img_resolution
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, r, r):
            raise ValueError(f"expected images (N, {self.img_channels}, {r}, {r}), got {tuple(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img)
        cmap = self.mapping(None, c=c, batch_size=x.shape[0]) if self.c_dim > 0 else None
        return self.b4(x, img, cmap).squeeze(1)

    def set_class(self, k: int | None) -> None:
        """The class a conditional discriminator judges against when called without `c`."""
        self.mapping.set_class(k)

    def set_fp16(self, enabled: bool) -> None:
        """Half precision in the blocks marked fp16, as NVIDIA's code without `force_fp32`."""
        _set_fp16(self, enabled)


register(Generator.arch)(Generator)
register(Discriminator.arch)(Discriminator)
