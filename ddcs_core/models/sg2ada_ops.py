"""The numerical primitives of StyleGAN2-ADA, written in plain PyTorch (no compiled extensions).

NVIDIA's networks call fused CUDA kernels (`upfirdn2d`, `bias_act`) with reference fallbacks; these are
our own implementations of the same mathematics, so an imported network computes the same images on
any device. Conventions that decide the numbers (and so must match): FIR filters are applied as true
convolutions, upsampling inserts zeros after each sample, padding is counted on the upsampled grid,
layers that upsample convolve with their weight (flipped relative to `F.conv2d`'s correlation) while
all other layers correlate, and `bias_act` adds the bias, activates, scales by the gain, then clamps.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

_SQRT2 = math.sqrt(2.0)

# name -> (function of (x, alpha), default alpha, default gain)
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], float, float]] = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, _SQRT2),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, _SQRT2),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: torch.sigmoid(x) * x, 0.0, _SQRT2),
}


def default_gain(act: str) -> float:
    return ACTIVATIONS[act][2]


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, alpha: float | None = None) -> torch.Tensor:
    """x + b (along dim 1), activation, times `gain` (default: the activation's), clamped to ±clamp."""
    func, def_alpha, def_gain = ACTIVATIONS[act]
    if b is not None:
        x = x + b.reshape(1, -1, *([1] * (x.ndim - 2)))
    x = func(x, def_alpha if alpha is None else float(alpha))
    gain = def_gain if gain is None else float(gain)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(taps: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A normalised 2-D FIR filter from 1-D taps (outer product; sums to 1), or a given 2-D kernel."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


def _pad4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from one int, (x, y) or four values."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding: int | Sequence[int] = 0,
              gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), convolve every channel with FIR `f`, keep every
    `down`-th sample. `f` is 2-D (or 1-D separable); the filter is scaled by gain^(ndim/2)."""
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x0, x1, y0, y1 = _pad4(padding)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    k = (f * gain ** (f.ndim / 2)).to(x.dtype).flip(list(range(f.ndim)))  # convolution, not correlation
    if f.ndim == 2:
        x = F.conv2d(x, k[None, None].expand(c, 1, *k.shape), groups=c, stride=down)
    else:
        x = F.conv2d(x, k[None, None, None].expand(c, 1, 1, -1), groups=c, stride=(1, down))
        x = F.conv2d(x, k[None, None, :, None].expand(c, 1, -1, 1), groups=c, stride=(down, 1))
    return x


def _filter_size(f: torch.Tensor) -> tuple[int, int]:
    return int(f.shape[-1]), int(f.shape[0])


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR upsampling to exactly `up` times the size (the skip image path)."""
    fw, fh = _filter_size(f)
    return upfirdn2d(x, f, up=up, padding=[(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2],
                     gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """FIR downsampling to exactly 1/`down` of the size."""
    fw, fh = _filter_size(f)
    return upfirdn2d(x, f, down=down, padding=[(fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2,
                                               (fh - down) // 2])


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: int = 0, flip_weight: bool = True, groups: int = 1) -> torch.Tensor:
    """Convolution with FIR up- or downsampling; `flip_weight=False` convolves (weight flipped).

    Upsampling is a stride-2 transposed convolution followed by the FIR filter; downsampling filters
    first and convolves with stride 2: the same linear map as zero insertion + filter + conv (resp. conv +
    filter + decimation), at a quarter of the cost. `groups` as in `F.conv2d`.
    """
    kh, kw = int(w.shape[2]), int(w.shape[3])
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up and down together are not used by StyleGAN2-ADA")
    if up == 1 and down == 1:
        return F.conv2d(x, w if flip_weight else w.flip([2, 3]), padding=padding, groups=groups)
    fw, fh = _filter_size(f)
    if down > 1:
        px0, px1 = padding + (fw - down + 1) // 2, padding + (fw - down) // 2
        py0, py1 = padding + (fh - down + 1) // 2, padding + (fh - down) // 2
        w = w if flip_weight else w.flip([2, 3])
        if kh == 1 and kw == 1:
            return F.conv2d(upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1]), w, groups=groups)
        return F.conv2d(upfirdn2d(x, f, padding=[px0, px1, py0, py1]), w, stride=down, groups=groups)
    px0, px1 = padding + (fw + up - 1) // 2, padding + (fw - up) // 2
    py0, py1 = padding + (fh + up - 1) // 2, padding + (fh - up) // 2
    if kh == 1 and kw == 1:
        return upfirdn2d(F.conv2d(x, w, groups=groups), f, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    w = w.flip([2, 3]) if flip_weight else w  # a transposed conv convolves
    o, i = w.shape[0] // groups, w.shape[1]
    wt = w.reshape(groups, o, i, kh, kw).transpose(1, 2).reshape(groups * i, o, kh, kw)
    x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
    return upfirdn2d(x, f, padding=[px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)], gain=up * up)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, f: torch.Tensor | None = None, demodulate: bool = True,
                     flip_weight: bool = True, fused: bool = True) -> torch.Tensor:
    """conv(x, W_n) + noise per sample n with W_n = W·s_n, demodulated to unit norm over (in, kh, kw) per
    output channel. `fused`: one grouped convolution with per-sample weights; otherwise the activations are
    scaled before and after one shared-weight convolution (the original's half-precision batch path, whose
    rounding it reproduces: weight and styles pre-normalised, then a fused multiply-add with the noise)."""
    n, cin, h, w_ = x.shape
    cout, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    if x.dtype == torch.float16 and demodulate:  # keeps fp16 in range; cancels in the demodulation
        weight = weight * (1 / math.sqrt(cin * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    wn = weight[None] * styles[:, None, :, None, None]
    d = torch.rsqrt(wn.square().sum(dim=(2, 3, 4)) + 1e-8) if demodulate else None
    if not fused:
        x = conv2d_resample(x * styles.to(x.dtype)[:, :, None, None], weight.to(x.dtype), f, up=up, padding=padding,
                            flip_weight=flip_weight)
        if d is not None and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, d.to(x.dtype)[:, :, None, None])
        if d is not None:
            return x * d.to(x.dtype)[:, :, None, None]
        return x if noise is None else x + noise.to(x.dtype)
    if d is not None:
        wn = wn * d[:, :, None, None, None]
    x = conv2d_resample(x.reshape(1, n * cin, h, w_), wn.reshape(n * cout, cin, kh, kw).to(x.dtype), f,
                        up=up, padding=padding, flip_weight=flip_weight, groups=n)
    x = x.reshape(n, cout, *x.shape[2:])
    return x if noise is None else (x + noise).to(x.dtype)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def minibatch_std(x: torch.Tensor, group_size: int | None, num_channels: int = 1) -> torch.Tensor:
    """Append the std over groups of samples (averaged over channels and pixels) as `num_channels` maps.

    The group is min(group_size, N) as in the original; when that does not divide N (where the
    original fails) the largest divisor of N below it is used.
    """
    n, c, h, w = x.shape
    g = n if group_size is None else min(int(group_size), n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, num_channels, c // num_channels, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
    y = y.mean(dim=(2, 3, 4)).reshape(-1, num_channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)
