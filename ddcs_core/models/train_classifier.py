"""Training of the victim and evaluation classifiers on the private faces, resumable after a kill.

Face identities are few images each and very imbalanced (LFW: 530 of George W Bush, ~20 of most),
so the loop samples classes with a tempered balance, smooths labels and augments every batch with
cheap tensor ops (crop, flip, colour) that keep CPU training within minutes. All randomness comes
from the seed through a CPU generator, and the state is saved atomically each epoch, so an
interrupted run continues to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import HEAD_TUPLE, arrays_sha256
from ddcs_core.models.checkpoints import save_model
from ddcs_core.models.classifiers import build_classifier

Split = tuple[np.ndarray, np.ndarray]


def augment_faces(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.1) -> torch.Tensor:
    """Random resized crop (area 0.8–1, near-square), horizontal flip and small brightness/contrast/
    saturation jitter of a [-1, 1] NCHW batch, with one `grid_sample` for all geometric changes."""
    n = x.shape[0]
    u = torch.rand(n, 7, generator=generator).to(x.device)
    area = 0.8 + 0.2 * u[:, 0]
    ratio = torch.exp((u[:, 1] - 0.5) * 2 * math.log(1.1))
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (2 * u[:, 2] - 1) * (1 - sx)
    ty = (2 * u[:, 3] - 1) * (1 - sy)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    c = (2 * u[:, 5:7] - 1) * jitter
    x = x + c[:, 0].view(-1, 1, 1, 1) * 2  # brightness, in [-1, 1] units
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + c[:, 1]).view(-1, 1, 1, 1) + mean  # contrast
    grey = x.mean(dim=1, keepdim=True)
    sat = 1 + (2 * torch.rand(n, generator=generator) - 1).to(x.device) * jitter
    x = (x - grey) * sat.view(-1, 1, 1, 1) + grey
    return x.clamp(-1, 1)


def _check_split(name: str, split: Any) -> Split:
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise DDCSInputError(f"{name} must be a pair (images uint8 NHWC, labels)")
    images, labels = np.asarray(split[0]), np.asarray(split[1])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DDCSInputError(f"{name} images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise DDCSInputError(f"{name} images must be square, got {images.shape[1]}×{images.shape[2]}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise DDCSInputError(f"{name} labels must be {len(images)} integers, got {labels.dtype} {labels.shape}")
    if len(images) == 0:
        raise DDCSInputError(f"{name} split is empty")
    if labels.min() < 0:
        raise DDCSInputError(f"{name} labels must be >= 0")
    return images, labels.astype(np.int64)


def _to_float(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = batch_u8.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over 5 % of the steps, then cosine decay to 1 % of `base`."""
    warm = max(1, int(0.05 * total))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


@torch.no_grad()
def evaluate_classifier(
    model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> dict[str, float]:
    """Top-1, top-5 and class-balanced top-1 accuracy of `model` on uint8 NHWC images."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    k = min(5, model.num_classes)
    hit1, hit5 = [], []
    imgs = torch.from_numpy(images)
    for i in range(0, len(images), batch_size):
        logits = model(_to_float(imgs[i : i + batch_size], device)).float().cpu()
        top = logits.topk(k, dim=1).indices
        y = torch.from_numpy(labels[i : i + batch_size])
        hit1.append(top[:, 0] == y)
        hit5.append((top == y[:, None]).any(dim=1))
    model.train(was_training)
    h1, h5 = torch.cat(hit1).double(), torch.cat(hit5).double()
    per_class = [h1[torch.from_numpy(labels == c)].mean().item() for c in np.unique(labels)]
    return {"top1": h1.mean().item(), "top5": h5.mean().item(), "top1_balanced": float(np.mean(per_class))}


def state_path_for(checkpoint_path: str | Path) -> Path:
    """Where the resumable training state of a checkpoint lives (beside it)."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + ".train-state.pt")


def train_classifier(
    arch: str,
    train: Split,
    test: Split,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device,
    progress: bool = True,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    config: dict | None = None,
    weight_decay: float = 0.05,
    label_smoothing: float = 0.1,
    balance: float = 0.5,
    half: bool = False,
) -> dict:
    """Train a classifier from scratch; returns metrics (held-out top-1/top-5, loss history, timing).

    `balance` tempers class-balanced sampling: images are drawn with probability ∝ count(class)^-balance
    (0 = natural frequencies, 1 = every class equally often). With `checkpoint_path`, the state is saved
    each epoch beside it and a rerun resumes from it; the final model goes to `checkpoint_path`
    (safetensors, `half` for fp16). Raising `epochs` on a finished run continues it with the schedule
    stretched to the new total.
    """
    from ddcs_core.training import Trainer, parse_device

    x_tr, y_tr = _check_split("train", train)
    x_te, y_te = _check_split("test", test)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise DDCSInputError(f"need epochs >= 1, batch_size >= 1, lr > 0 (got {epochs}, {batch_size}, {lr})")
    if not 0 <= balance <= 1:
        raise DDCSInputError(f"balance must be in [0, 1], got {balance}")
    device = parse_device(device)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    cfg = {"num_classes": num_classes, "input_size": int(x_tr.shape[1]), **(config or {})}
    if cfg["num_classes"] < num_classes:
        raise DDCSInputError(f"config num_classes={cfg['num_classes']} but labels go up to {num_classes - 1}")

    loop = ClassifierLoop(arch, cfg, x_tr, y_tr, x_te, y_te, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                          device=device, weight_decay=weight_decay, label_smoothing=label_smoothing, balance=balance,
                          progress=progress)
    signature = {
        "arch": arch, "config": loop.model.config, "seed": seed, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "label_smoothing": label_smoothing, "balance": balance,
        "data": arrays_sha256(x_tr, y_tr, head=HEAD_TUPLE),
    }
    state_path = state_path_for(checkpoint_path) if checkpoint_path is not None else None
    trainer = Trainer(epochs, signature, state_path, desc=arch, unit="epoch", progress=progress, resume=resume,
                      bar_leave=False)
    result = trainer.fit(loop)
    model, epoch = loop.model, result.steps
    acc = evaluate_classifier(model, x_te, y_te, device)
    seen = epoch * loop.steps_per_epoch * min(batch_size, len(x_tr))
    metrics = {
        "arch": arch, "config": model.config, "epochs": epoch, "num_params": sum(p.numel() for p in model.parameters()),
        "test_top1": acc["top1"], "test_top5": acc["top5"], "test_top1_balanced": acc["top1_balanced"],
        "train_images_per_s": seen / result.seconds if result.seconds > 0 else None, "train_seconds": result.seconds,
        "history": loop.history, "seed": seed, "n_train": len(x_tr), "n_test": len(x_te),
    }
    if checkpoint_path is not None:
        metrics["sha256"] = save_model(checkpoint_path, model, arch, model.config, meta=metrics, half=half)
        metrics["checkpoint"] = str(checkpoint_path)
    return metrics


class ClassifierLoop:
    """train_classifier's step for the Trainer: one epoch of tempered class-balanced batches."""

    def __init__(self, arch: str, cfg: dict, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, *,
                 epochs: int, batch_size: int, lr: float, seed: int, device: torch.device, weight_decay: float,
                 label_smoothing: float, balance: float, progress: bool) -> None:
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.device, self.arch, self.epochs, self.batch_size, self.lr = device, arch, epochs, batch_size, lr
        self.label_smoothing, self.balance, self.progress = label_smoothing, balance, progress
        self.model = build_classifier(arch, **cfg).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        counts = np.bincount(y_tr, minlength=cfg["num_classes"]).astype(np.float64)
        self.sample_w = torch.from_numpy(counts[y_tr] ** -balance)
        self.steps_per_epoch = max(1, len(x_tr) // batch_size)
        self.total_steps = epochs * self.steps_per_epoch
        self.data, self.labels = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        self.x_te, self.y_te = x_te, y_te
        self.history: list[dict] = []
        self.losses: list[float] = []

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "history": self.history}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.history = state["history"]

    def begin(self, step: int, resumed: bool) -> None:
        pass

    def step(self, epoch: int) -> dict[str, float]:
        model, opt, gen, n = self.model, self.opt, self.gen, len(self.data)
        model.train()
        if self.balance > 0:
            order = torch.multinomial(self.sample_w, n, replacement=True, generator=gen)
        else:
            order = torch.randperm(n, generator=gen)
        self.losses = []
        bar = tqdm(range(self.steps_per_epoch), desc=f"{self.arch} epoch {epoch + 1}/{self.epochs}",
                   disable=not self.progress, leave=False)
        for i in bar:
            step = epoch * self.steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, self.total_steps, self.lr)
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = augment_faces(_to_float(self.data[idx], self.device), gen)
            loss = F.cross_entropy(model(x), self.labels[idx].to(self.device), label_smoothing=self.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.losses.append(loss.item())
            bar.set_postfix(loss=f"{self.losses[-1]:.3f}")
        return {"loss": float(np.mean(self.losses))}

    def after(self, epoch: int) -> None:
        acc = evaluate_classifier(self.model, self.x_te, self.y_te, self.device)
        self.history.append({"epoch": epoch, "loss": float(np.mean(self.losses)), "lr": self.opt.param_groups[0]["lr"],
                             **acc})
        if self.progress:
            tqdm.write(f"{self.arch} epoch {epoch}/{self.epochs}: loss {self.history[-1]['loss']:.4f} top1 {acc['top1']:.3f}")
