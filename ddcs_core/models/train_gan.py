"""Pre-training of the StyleGAN2 generator on public faces, resumable after a kill.

StyleGAN2 recipe at small scale: non-saturating logistic loss, lazy R1 on reals (its own D step
every `r1_every` steps, Adam adjusted as in StyleGAN2), style mixing, an EMA copy of G (`G_ema`,
the one to sample from and to attack with) and DiffAugment so a few thousand public images suffice.
All randomness comes from the seed (a CPU generator plus torch's global RNG for noise inputs), and
the whole state is written atomically every `ckpt_every` steps, so a rerun after an interruption
continues exactly where the last state left off.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ddcs_core import atomic
from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import HEAD_SHAPE, arrays_sha256
from ddcs_core.models.checkpoints import save_model
from ddcs_core.models.gan_losses import (
    d_logistic_loss,
    diff_augment,
    g_nonsaturating_loss,
    lazy_r1_loss,
    parse_policy,
    r1_penalty,
)
from ddcs_core.models.stylegan2 import Discriminator, Generator, noise_share

DEFAULT_GAN_CONFIG: dict = {
    "G": {"z_dim": 256, "w_dim": 256, "mapping_layers": 4, "channel_base": 2048, "channel_max": 256},
    "D": {"channel_base": 2048, "channel_max": 256, "mbstd_group": 4},
    "lr_g": 0.0025,
    "lr_d": 0.0025,
    "betas": [0.0, 0.99],
    # ~ the StyleGAN2-ADA heuristic 0.0002·res²/batch at 64 px, batch 32, doubled for small data.
    "r1_gamma": 0.05,
    "r1_every": 16,
    "ema_kimg": 10.0,
    "ema_rampup": 0.05,
    "style_mixing": 0.9,
    "diffaugment": "color,translation,cutout",
    "xflip": True,
    "grid": 8,
}
STATE_NAME = "train-state.pt"
SAMPLES_DIR = "samples"


def gan_config(config: dict | None) -> dict:
    """DEFAULT_GAN_CONFIG updated by `config` (G and D sub-dicts merged); unknown keys are refused."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULT_GAN_CONFIG))
    if unknown:
        raise DDCSInputError(f"unknown GAN config keys {unknown} (known: {sorted(DEFAULT_GAN_CONFIG)})")
    merged = copy.deepcopy(DEFAULT_GAN_CONFIG)
    for key, value in config.items():
        merged[key] = {**merged[key], **value} if key in ("G", "D") else value
    merged["betas"] = [float(b) for b in merged["betas"]]
    return merged


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DDCSInputError(f"public_images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    if h != w or h < 4 or h & (h - 1):
        raise DDCSInputError(f"public_images must be square with a power-of-two side, got {h}×{w}")
    if n == 0:
        raise DDCSInputError("public_images is empty")
    return images


def image_grid(images: torch.Tensor, cols: int) -> Image.Image:
    """A [-1, 1] NCHW batch as one PIL image, `cols` per row (grey images shown as RGB)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, c, h, w = x.shape
    rows = -(-n // cols)
    pad = torch.zeros(rows * cols - n, c, h, w, dtype=torch.uint8)
    x = torch.cat([x, pad]).reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)
    return Image.fromarray(x.numpy())


def save_grid(path: Path, images: torch.Tensor, cols: int) -> None:
    buf = io.BytesIO()
    image_grid(images, cols).save(buf, format="PNG")
    atomic.write_bytes(path, buf.getvalue())


def mbstd_group(D: torch.nn.Module, batch: int) -> int:
    """The minibatch-stddev group size of D (ours, or an imported StyleGAN2-ADA one; group None there
    means the whole batch); 1 when D has no such layer."""
    if hasattr(D, "mbstd_group"):
        return int(D.mbstd_group)
    epilogue = getattr(D, "b4", None)
    if epilogue is None or not hasattr(epilogue, "mbstd"):
        raise DDCSInputError(f"cannot tell the minibatch-stddev group of a {type(D).__name__} discriminator; "
                             "run its transfer in one process")
    layer = epilogue.mbstd
    return 1 if layer is None else batch if layer.group_size is None else int(layer.group_size)


@dataclass(frozen=True)
class BatchShare:
    """One rank's share of a global batch under torchrun (DDP over G and D).

    Every rank draws the whole batch's randomness (latents, real indices, flips, augmentations, noise)
    from the shared generators, so all RNGs stay in lockstep, and computes on its `rows` only; the
    gradients of every loss (a mean over the batch) are then averaged over the ranks before each
    optimiser step. The result is the one-process step up to float rounding, whatever N. The rows are
    whole minibatch-stddev groups (D groups image i with i ± batch/group), so D sees the same groups.
    """

    batch: int
    rows: torch.Tensor
    world_size: int
    device: torch.device = torch.device("cpu")  # where collectives run (CUDA under NCCL)

    @classmethod
    def for_rank(cls, batch: int, mbstd_group: int, rank: int, world_size: int,
                 device: torch.device = torch.device("cpu")) -> BatchShare:
        """Rank `rank`'s rows; refuses batches that do not split into whole minibatch-stddev groups."""
        group = max(d for d in range(1, min(mbstd_group, batch) + 1) if batch % d == 0)
        if batch % (group * world_size):
            raise DDCSInputError(f"batch_size {batch} does not split over {world_size} processes in whole "
                                 f"minibatch-stddev groups of {group}: use a multiple of {group * world_size}")
        cols = batch // group // world_size
        rows = torch.arange(batch).view(group, -1)[:, rank * cols:(rank + 1) * cols].reshape(-1)
        return cls(batch, rows, world_size, device)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global-batch tensor."""
        return x[self.rows.to(x.device)]

    def per_image(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """fn (a per-image random transform drawing for its whole input) on this rank's images x, with
        the draws the whole batch gets: x is placed at its rows of a zero batch (differentiably)."""
        rows = self.rows.to(x.device)
        return fn(x.new_zeros(self.batch, *x.shape[1:]).index_put((rows,), x))[rows]

    def synthesis(self, G: Generator, ws: torch.Tensor) -> torch.Tensor:
        """G's images at this rank's rows of the global ws, with the whole batch's noise draws."""
        with noise_share(self.batch, self.rows):
            return G.synthesis(self.take(ws))

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Every rank's gradients replaced by their mean over the ranks (one all_reduce)."""
        import torch.distributed as dist

        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def reduce(self, values: list[float], op: str = "mean") -> list[float]:
        """Per-rank numbers (losses for the log) combined over the ranks: mean or sum."""
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.world_size if op == "mean" else t).tolist()


@torch.no_grad()
def _update_ema(g_ema: Generator, g: Generator, beta: float) -> None:
    for p_ema, p in zip(g_ema.parameters(), g.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(g_ema.buffers(), g.buffers()):
        b_ema.copy_(b)


def _latents(
    g: Generator, n: int, gen: torch.Generator, device: torch.device, mixing: float, track: bool
) -> torch.Tensor:
    """ws (N, num_ws, w_dim) with style mixing: with probability `mixing` the layers from a random
    cutoff on take the w of a second z. Always the whole batch (w_avg tracks the whole batch's mean)."""
    z = torch.randn(2, n, g.z_dim, generator=gen).to(device)
    draw = torch.rand(2, generator=gen)
    ws = g.mapping(z[0], update_w_avg=track)[:, None].repeat(1, g.num_ws, 1)
    if draw[0] < mixing and g.num_ws > 1:
        cutoff = 1 + int(draw[1] * (g.num_ws - 1))
        ws[:, cutoff:] = g.mapping(z[1])[:, None]
    return ws


def make_optimizers(G: Generator, D: Discriminator, cfg: dict) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for G and D; D's is adjusted for lazy R1 (it gets `every + 1` updates per `every` steps)."""
    betas = tuple(cfg["betas"])
    every = cfg["r1_every"]
    ratio = every / (every + 1) if cfg["r1_gamma"] > 0 and every > 0 else 1.0
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg["lr_g"], betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg["lr_d"] * ratio, betas=tuple(b**ratio for b in betas))
    return opt_g, opt_d


def real_batch(data: torch.Tensor, batch_size: int, gen: torch.Generator, xflip: bool,
               share: BatchShare | None = None) -> torch.Tensor:
    """A random batch of uint8 NHWC `data` as [-1, 1] NCHW, optionally x-flipped per image (with
    `share`: this rank's rows of it)."""
    idx = torch.randint(len(data), (batch_size,), generator=gen).to(data.device)
    flip = (torch.rand(batch_size, generator=gen) < 0.5).to(data.device) if xflip else None
    if share is not None:
        idx, flip = share.take(idx), None if flip is None else share.take(flip)
    x = data[idx].permute(0, 3, 1, 2).float() / 127.5 - 1
    if flip is not None:
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def gan_step(
    G: Generator,
    D: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    reals: Callable[[], torch.Tensor],
    cfg: dict,
    step: int,
    batch_size: int,
    gen: torch.Generator,
    g_extra: Callable[[torch.Tensor], torch.Tensor] | None = None,
    share: BatchShare | None = None,
) -> dict[str, float]:
    """One D update (plus lazy R1 every `r1_every` steps) and one G update; returns the losses.

    `g_extra(fake)` may add a term to G's loss computed from the same fake batch (transfer learning's
    adversarial loss); it is called after D's augmentation draws, so RNG order stays fixed. With
    `share` (torchrun) this rank computes its rows of the batch (`reals()` must give those too),
    gradients are averaged over the ranks before each optimiser step and the losses returned are the
    whole batch's; `g_extra` must then be scaled so that the ranks' mean is the whole batch's term.
    """
    device = G.const.device
    aug, every = cfg["diffaugment"], cfg["r1_every"]

    def augment(x: torch.Tensor) -> torch.Tensor:
        if share is None:
            return diff_augment(x, aug, gen)
        return share.per_image(lambda y: diff_augment(y, aug, gen), x)

    def synthesis(ws: torch.Tensor) -> torch.Tensor:
        return G.synthesis(ws) if share is None else share.synthesis(G, ws)

    def step_opt(opt: torch.optim.Optimizer, module: torch.nn.Module) -> None:
        if share is not None:
            share.average_gradients(module)
        opt.step()

    # D: logistic loss on augmented reals and fakes.
    with torch.no_grad():
        fake = synthesis(_latents(G, batch_size, gen, device, cfg["style_mixing"], False))
    real = reals()
    loss_d = d_logistic_loss(D(augment(real)), D(augment(fake)))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    step_opt(opt_d, D)
    # Lazy R1: its own D step on fresh reals, gradient taken through the augmentation.
    r1 = float("nan")
    if cfg["r1_gamma"] > 0 and every > 0 and step % every == 0:
        real = reals().requires_grad_(True)
        penalty = r1_penalty(real, D(augment(real)))
        opt_d.zero_grad(set_to_none=True)
        lazy_r1_loss(penalty, cfg["r1_gamma"], every).backward()
        step_opt(opt_d, D)
        r1 = penalty.item()
    # G: non-saturating loss; D frozen so no D gradients are computed.
    D.requires_grad_(False)
    fake = synthesis(_latents(G, batch_size, gen, device, cfg["style_mixing"], True))
    loss_g = g_nonsaturating_loss(D(augment(fake)))
    extra = g_extra(fake) if g_extra is not None else None
    opt_g.zero_grad(set_to_none=True)
    (loss_g if extra is None else loss_g + extra).backward()
    step_opt(opt_g, G)
    D.requires_grad_(True)
    losses = {"loss_g": loss_g.item(), "loss_d": loss_d.item(), "r1": r1,
              "extra": float("nan") if extra is None else extra.item()}
    if share is not None:
        losses = dict(zip(losses, share.reduce(list(losses.values()))))
    return losses


def load_gan_state(state: dict, G: Generator, D: Discriminator, G_ema: Generator, opt_g: torch.optim.Optimizer,
                   opt_d: torch.optim.Optimizer) -> None:
    """Weights and optimiser moments of a saved GAN training state, in place (KeyError if incomplete);
    the Trainer restores the RNG."""
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    G_ema.load_state_dict(state["G_ema"])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])


def ema_update(G_ema: Generator, G: Generator, cfg: dict, step: int, batch_size: int) -> None:
    """EMA of G after `step` steps, with StyleGAN2's ramp-up of the half-life."""
    ema_nimg = min(cfg["ema_kimg"] * 1000, step * batch_size * cfg["ema_rampup"])
    _update_ema(G_ema, G, 0.5 ** (batch_size / max(ema_nimg, 1e-8)))


class GANLoop:
    """train_gan's step for the Trainer: one D and one G update, the EMA, sample grids."""

    def __init__(self, images: np.ndarray, cfg: dict, batch_size: int, seed: int, device: torch.device,
                 out_dir: Path, sample_every: int, steps: int) -> None:
        res = images.shape[1]
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.device, self.cfg, self.batch_size = device, cfg, batch_size
        self.out_dir, self.sample_every, self.steps = out_dir, sample_every, steps
        try:
            self.G = Generator(img_resolution=res, **cfg["G"]).to(device)
            self.D = Discriminator(img_resolution=res, **cfg["D"]).to(device)
        except (TypeError, ValueError) as e:
            raise DDCSInputError(f"bad G/D config: {e}") from e
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g, self.opt_d = make_optimizers(self.G, self.D, cfg)
        self.log: dict[str, list[float]] = {"loss_g": [], "loss_d": [], "r1": []}
        self.data = torch.from_numpy(images).to(device)
        self.fixed_z = torch.randn(cfg["grid"] ** 2, self.G.z_dim,
                                   generator=torch.Generator().manual_seed(seed + 1)).to(device)
        self.grid_path: Path | None = None

    def state(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "log": {k: torch.tensor(v, dtype=torch.float32) for k, v in self.log.items()}}

    def load(self, state: dict) -> None:
        load_gan_state(state, self.G, self.D, self.G_ema, self.opt_g, self.opt_d)
        self.log = {k: v.tolist() for k, v in state["log"].items()}

    def begin(self, step: int, resumed: bool) -> None:
        pass

    def step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        losses = gan_step(self.G, self.D, self.opt_g, self.opt_d,
                          lambda: real_batch(self.data, self.batch_size, self.gen, cfg["xflip"]),
                          cfg, step, self.batch_size, self.gen)
        ema_update(self.G_ema, self.G, cfg, step + 1, self.batch_size)
        for key in self.log:
            self.log[key].append(losses[key])
        return {"g": losses["loss_g"], "d": losses["loss_d"]}

    def after(self, step: int) -> None:
        if step % self.sample_every == 0 or step == self.steps:
            self.sample(step)

    def sample(self, step: int) -> None:
        with torch.no_grad():
            imgs = torch.cat([self.G_ema(z, noise_mode="const") for z in self.fixed_z.split(16)])
        self.grid_path = self.out_dir / SAMPLES_DIR / f"step-{step:07d}.png"
        save_grid(self.grid_path, imgs, self.cfg["grid"])


def train_gan(
    public_images: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    config: dict | None,
    seed: int,
    device: str | torch.device,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool = True,
    sample_every: int = 500,
    ckpt_every: int = 500,
) -> dict:
    """Train G and D for `steps` steps (one D, one G update each); returns a summary dict.

    `out_dir` receives `train-state.pt` (every `ckpt_every` steps and at the end), sample grids of
    G_ema on fixed latents (`samples/step-XXXXXXX.png`, every `sample_every` steps and at the end)
    and the final `G.safetensors`, `G_ema.safetensors`, `D.safetensors`. With `resume`, a state in
    `out_dir` from the same images, config, seed and batch size is continued.
    """
    from ddcs_core.training import Trainer, parse_device

    images = _check_images(public_images)
    cfg = gan_config(config)
    parse_policy(cfg["diffaugment"])
    if steps < 1 or batch_size < 1 or sample_every < 1 or ckpt_every < 1:
        raise DDCSInputError("steps, batch_size, sample_every and ckpt_every must be >= 1")
    device = parse_device(device)
    out_dir = Path(out_dir)
    loop = GANLoop(images, cfg, batch_size, seed, device, out_dir, sample_every, steps)
    signature = {"config": cfg, "seed": seed, "batch_size": batch_size, "data": arrays_sha256(images, head=HEAD_SHAPE)}
    state_path = out_dir / STATE_NAME
    trainer = Trainer(steps, signature, state_path, ckpt_every=ckpt_every, desc="GAN", progress=progress,
                      resume=resume, restart_hint="delete it (or use another output folder) to start this training over")
    result = trainer.fit(loop)
    step, log, G, D, G_ema = result.steps, loop.log, loop.G, loop.D, loop.G_ema
    if loop.grid_path is None:
        loop.sample(step)
    shas = {
        name: save_model(out_dir / f"{name}.safetensors", model, arch, model.config, meta={"step": step, "seed": seed})
        for name, model, arch in (("G", G, "stylegan2-g"), ("G_ema", G_ema, "stylegan2-g"), ("D", D, "stylegan2-d"))
    }
    tail = slice(-100, None)
    r1_tail = [v for v in log["r1"][tail] if v == v]
    return {
        "step": step,
        "steps": steps,
        "out_dir": str(out_dir),
        "grid": str(loop.grid_path),
        "state": str(state_path),
        "checkpoints": {name: str(out_dir / f"{name}.safetensors") for name in shas},
        "sha256": shas,
        "loss_g": float(np.mean(log["loss_g"][tail])) if log["loss_g"] else None,
        "loss_d": float(np.mean(log["loss_d"][tail])) if log["loss_d"] else None,
        "r1": float(np.mean(r1_tail)) if r1_tail else None,
        **result.summary(),  # train_seconds: the training loop's, summed over resumes
        "num_params": {"G": sum(p.numel() for p in G.parameters()), "D": sum(p.numel() for p in D.parameters())},
        "config": cfg,
    }
