"""LPIPS v0.1 as an explicit embedding: d(x, y) = |e(x) - e(y)|^2 exactly.

e(x) = concat_l( sqrt(w_l) * f_l(x) / |f_l(x)|_channels / sqrt(H_l W_l) ), flattened. One forward pass
per image then gives every pairwise distance by matrix products (DESIGN.md §2).
"""

from __future__ import annotations

import torch
from torch import nn

from ddcs_core.errors import DDCSInputError
from ddcs_core.perceptual.weights import load_backbone_state, load_linear_weights

_EPS = 1e-10  # as lpips.normalize_tensor
# Each stage ends at a ReLU whose output LPIPS taps. "M" = max-pool, (cin, cout, k, stride, pad) = conv.
_STAGES = {
    "alex": [
        [(3, 64, 11, 4, 2)],
        ["M3", (64, 192, 5, 1, 2)],
        ["M3", (192, 384, 3, 1, 1)],
        [(384, 256, 3, 1, 1)],
        [(256, 256, 3, 1, 1)],
    ],
    "vgg": [
        [(3, 64, 3, 1, 1), (64, 64, 3, 1, 1)],
        ["M2", (64, 128, 3, 1, 1), (128, 128, 3, 1, 1)],
        ["M2", (128, 256, 3, 1, 1), (256, 256, 3, 1, 1), (256, 256, 3, 1, 1)],
        ["M2", (256, 512, 3, 1, 1), (512, 512, 3, 1, 1), (512, 512, 3, 1, 1)],
        ["M2", (512, 512, 3, 1, 1), (512, 512, 3, 1, 1), (512, 512, 3, 1, 1)],
    ],
}
MIN_SIZE = {"alex": 31, "vgg": 16}


def _build_stage(spec: list, convs: list[nn.Conv2d]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for item in spec:
        if isinstance(item, str):
            k = int(item[1:])
            layers.append(nn.MaxPool2d(k, 2))
        else:
            cin, cout, k, stride, pad = item
            conv = nn.Conv2d(cin, cout, k, stride, pad)
            convs.append(conv)
            layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class LPIPSNetwork(nn.Module):
    """Backbone + calibrated weights; `forward(x)` returns (embedding (N, D), pooled features (N, C_last)).

    The pooled features (global average of the last tapped ReLU) come free with the same pass and
    serve as the named fallback feature extractor for FID and PRDC.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in _STAGES:
            raise DDCSInputError(f"--net must be one of {', '.join(_STAGES)}, got {net!r}")
        self.net = net
        convs: list[nn.Conv2d] = []
        self.stages = nn.ModuleList(_build_stage(s, convs) for s in _STAGES[net])
        state = load_backbone_state(net)
        with torch.no_grad():
            for i, conv in enumerate(convs):
                conv.weight.copy_(state[f"Conv_{i}.weight"])
                conv.bias.copy_(state[f"Conv_{i}.bias"])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for i, w in enumerate(load_linear_weights(net)):
            self.register_buffer(f"sqrt_w{i}", w.sqrt().view(1, -1, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @property
    def feature_name(self) -> str:
        return f"lpips-{self.net}-imagenet-last-relu-gap{self.stages[-1][-2].out_channels}"

    def check_size(self, height: int, width: int) -> None:
        if min(height, width) < MIN_SIZE[self.net]:
            raise DDCSInputError(f"images of {height}x{width} are too small for LPIPS-{self.net} (needs at least {MIN_SIZE[self.net]} px); pass --size")

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`out`, when given (inference only): a (N, D) float32 tensor the embeddings are written into."""
        self.check_size(x.shape[-2], x.shape[-1])
        h = (x - self.shift) / self.scale
        taps = []
        for stage in self.stages:
            h = stage(h)
            taps.append(h)
        if torch.is_grad_enabled():
            parts = [torch.mul(t, self._coef(i, t)).div_(self._norm(t)).flatten(1) for i, t in enumerate(taps)]
            return torch.cat(parts, dim=1), h.mean(dim=(2, 3))
        # inference: each scaled tap is written straight into its slice of the embedding (no concatenation
        # copy), with the same operations in the same order, so the numbers are those of the path above
        if out is None:
            out = h.new_empty(len(h), sum(t[0].numel() for t in taps))
        start = 0
        for i, t in enumerate(taps):
            part = out[:, start:start + t[0].numel()].view(t.shape)
            torch.mul(t, self._coef(i, t), out=part).div_(self._norm(t))
            start += t[0].numel()
        return out, h.mean(dim=(2, 3))

    def _coef(self, i: int, tap: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"sqrt_w{i}") / (tap.shape[-2] * tap.shape[-1]) ** 0.5

    @staticmethod
    def _norm(tap: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(tap, dim=1, keepdim=True) + _EPS

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable embedding only, for geometry (Hessian-vector products)."""
        return self.forward(x)[0]

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-pair LPIPS distance (N,) between two batches of the same size."""
        return (self.embed(x) - self.embed(y)).pow(2).sum(dim=1)
