"""Plug-and-Play's two selections: good starting latents before optimisation, robust results after.

Initial selection scores one shared pool of random latents for every class at once (a victim pass
gives all class probabilities), then keeps per class the latents the victim is most confident on:
the same as sampling per class, at 1/C of the cost. Final selection keeps per class the optimised
latents whose images stay confidently classified under random transforms, which filters out
results that only fool the victim through fragile pixel patterns.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ddcs_core.attacks.augment import AugmentConfig, random_transform
from ddcs_core.errors import DDCSInputError
from ddcs_core.models.stylegan2 import Generator


@torch.no_grad()
def class_confidence(
    victim: torch.nn.Module, images: torch.Tensor, augment: AugmentConfig, gen: torch.Generator, views: int
) -> torch.Tensor:
    """Softmax probabilities (N, C) averaged over `views` random transforms of each image (view 0 is
    the image itself)."""
    if views < 1:
        raise DDCSInputError(f"views must be >= 1, got {views}")
    total = victim(images).softmax(dim=1)
    for _ in range(views - 1):
        total += victim(random_transform(images, augment, gen)).softmax(dim=1)
    return total / views


@torch.no_grad()
def initial_selection(
    G: Generator,
    victim: torch.nn.Module,
    classes: Sequence[int],
    per_class: int,
    search_size: int,
    *,
    truncation_psi: float,
    augment: AugmentConfig,
    views: int,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class in `classes`, the `per_class` latents w (of `search_size` random ones) the victim is
    most confident on. Returns (w (K·per_class, w_dim), labels, confidences), grouped by class."""
    classes = [int(c) for c in classes]
    if not classes:
        raise DDCSInputError("classes is empty: nothing to attack")
    if not 1 <= per_class <= search_size:
        raise DDCSInputError(f"candidates_per_class={per_class} must lie in [1, search_size={search_size}]")
    device = G.const.device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(search_size, G.z_dim, generator=gen)
    ws, confs = [], []
    for zb in tqdm(z.split(batch_size), desc="initial selection", disable=not progress, leave=False):
        w = G.mapping(zb.to(device), truncation_psi=truncation_psi)
        images = G.synthesis(w, noise_mode="const").clamp(-1, 1)
        confs.append(class_confidence(victim, images, augment, gen, views).cpu())
        ws.append(w.cpu())
    w_all, conf = torch.cat(ws), torch.cat(confs)
    if max(classes) >= conf.shape[1] or min(classes) < 0:
        raise DDCSInputError(f"classes must lie in [0, {conf.shape[1]}) for this victim, got {min(classes)}..{max(classes)}")
    idx = torch.stack([conf[:, c].topk(per_class).indices for c in classes])  # (K, per_class)
    labels = torch.tensor(classes).repeat_interleave(per_class)
    flat = idx.reshape(-1)
    return w_all[flat], labels, conf[flat, labels]


@torch.no_grad()
def transform_scores(
    G: Generator,
    victim: torch.nn.Module,
    w: torch.Tensor,
    labels: torch.Tensor,
    *,
    augment: AugmentConfig,
    views: int,
    batch_size: int,
    seed: int,
) -> torch.Tensor:
    """Each latent's mean target-class confidence over `views` random transforms of its (clamped) image."""
    device = G.const.device
    gen = torch.Generator().manual_seed(seed)
    out = []
    for wb, yb in zip(w.split(batch_size), labels.split(batch_size)):
        images = G.synthesis(wb.to(device), noise_mode="const").clamp(-1, 1)
        conf = class_confidence(victim, images, augment, gen, views)
        out.append(conf.gather(1, yb.to(device)[:, None]).squeeze(1).cpu())
    return torch.cat(out)


def final_selection(scores: torch.Tensor, labels: torch.Tensor, per_class: int) -> np.ndarray:
    """Indices of the `per_class` best-scoring latents of every class, by class, best first
    (a class with fewer candidates keeps them all)."""
    if per_class < 1:
        raise DDCSInputError(f"final_per_class must be >= 1, got {per_class}")
    scores, labels = scores.cpu().numpy(), labels.cpu().numpy()
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        order = idx[np.lexsort((idx, -scores[idx]))]
        keep.append(order[:per_class])
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)
