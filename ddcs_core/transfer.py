"""Transfer learning of a pre-trained generator toward a victim: vanilla | entropy | ngd (DESIGN §2).

G and D keep training on the public images with their GAN losses (train_gan's step: non-saturating
loss, lazy R1, DiffAugment, EMA). `entropy` adds λ·L_adv, L_adv = −Σ_i Σ_c p_ic log p_ic with
p = softmax(victim(aug(G(z)))): the victim becomes confident on generated faces, so inversion starts
from images that already carry identity. `ngd` takes the image gradient g_i = ∂L_adv/∂x_i, projects
it with the LPIPS-Hessian natural gradient P (geometry.ngd) and feeds it to G through the surrogate
λ·Σ_i ⟨x_i, stopgrad(P̂ g_i)⟩, whose gradient in x_i is exactly λ·P̂ g_i.

Scale of the projected gradient. P = V Λ⁻¹ Vᵀ (or the damped form) multiplies by inverse
eigenvalues that span orders of magnitude (LPIPS curvature per squared pixel step), so ‖P g‖ has no
fixed relation to ‖g‖ and λ would mean something different in every mode, projection, k and μ.
The default (`ngd_scale: spectral`) divides P by its largest eigenvalue, i.e. uses P̂ = P/‖P‖₂:
λ_min(kept)·V Λ⁻¹ Vᵀ for `reference`, μ·(H_k + μI)⁻¹ for `damped`. P̂ is then a contraction with
eigenvalues in (0, 1]: directions LPIPS barely sees keep the plain gradient's full weight (damped),
perceptually sensitive ones are shrunk in proportion to their curvature, nothing is ever amplified,
so ‖λ P̂ g‖ ≤ ‖λ g‖ and λ is the same upper bound on the step in `entropy` and `ngd`. The factor is
fixed per basis (not per image), so images keep their relative gradient sizes. Alternatives:
`grad-norm` rescales each P g_i to ‖g_i‖ (same pixel step; it pours the whole step into the few
kept, perceptually most sensitive directions, which shows as texture artifacts), `none` keeps the
raw P g (the paper's code; its size depends on the eigenvalues' units).

The paper preset (`ngd_preset: paper`) sets the official code's choices, each its own field so one
can be flipped at a time; PAPER_PRESET lists them with an "arguably an accident" flag and the reason,
`paper_preset_table()` renders that as markdown. The accidents: raw Λ⁻¹ (`ngd_scale: none`, units of
LPIPS per squared pixel step that change with backbone and resolution), one basis per batch slot (an
unrelated image's Hessian), bases at `torch.rand` latents (not the prior), and, probably, the Hessian
taken at G(z + 1e-4·ε) rather than at x' = x; λ = 1 on the batch-summed entropy is one in part (its
strength grows with batch_size). LPIPS-VGG and ARPACK are deliberate (ARPACK and our Lanczos agree).
The preset fills the fields its mapping does not set (`{ngd_preset: paper, lam: 0.03}` is the paper
at λ=0.03); `--set transfer.ngd_preset=paper` on the command line replaces the file's values of those
fields (config.load_config), later `--set`s still win. The stored config holds every value.

Diagnostics (ngd): every step logs what the applied step keeps of the plain gradient g
(geometry.ngd.projection_diagnostics: ‖VVᵀg‖/‖g‖, cos(g, P̂g), the first-order L_adv gain relative to
the entropy step, ‖P̂g‖/‖g‖); the summary holds their means and the basis's eigenvalue scale.

Fixed evaluation latents: every mode draws the same grid latents (from `grid_seed`) and saves
`<out>/grids/<mode>/step-XXXX.png` at step 0 and at every checkpoint, plus the latest as
`<out>/grids/<mode>.png`, so artifacts compare side by side. State (`<out>/transfer/<mode>/state.pt`)
is written atomically at every checkpoint; a rerun resumes from it and, with deterministic CPU kernels,
ends bit-identical to an uninterrupted run (see experiment.py on oneDNN). The loop itself is
training.Trainer's; `TransferLoop` gives its step.

Under torchrun every rank trains on its share of each batch (train_gan.BatchShare: the whole batch's
random draws, this rank's rows, gradients averaged before each optimiser step), so the run is the
one-process run up to float rounding whatever the number of ranks; rank 0 alone writes state, grids,
G and summary, and a state resumes with any number of ranks.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ddcs_core import atomic, distributed
from ddcs_core.choices import LPIPS_NETS
from ddcs_core.attacks.augment import AugmentConfig, random_transform
from ddcs_core.attacks.losses import entropy_loss
from ddcs_core.errors import DDCSInputError, config_from_dict
from ddcs_core.hashing import array_digest, module_digest
from ddcs_core.geometry.hvp import EmbedFn
from ddcs_core.geometry.lanczos import LanczosNotConverged
from ddcs_core.geometry.ngd import NGDBasis, NGDConfig, NGDProjector, project_reference, projection_diagnostics
from ddcs_core.control import Report, ShouldStop, silent
from ddcs_core.models.checkpoints import save_model
from ddcs_core.models.stylegan2 import Discriminator, Generator
from ddcs_core.models.train_gan import (
    BatchShare,
    ema_update,
    gan_config,
    gan_step,
    load_gan_state,
    make_optimizers,
    mbstd_group,
    real_batch,
    save_grid,
)
from ddcs_core.training import Trainer, parse_device

log = logging.getLogger(__name__)

MODES = ("vanilla", "entropy", "ngd")
PROJECTIONS = ("reference", "damped")
NGD_SCALES = ("spectral", "grad-norm", "none")
NGD_PRESETS = ("paper",)
BASIS_LATENTS = ("normal", "uniform")
EIGENSOLVERS = {"lanczos": "torch", "arpack": "scipy"}  # name in the config → geometry.lanczos method
# The official code's choices (see the table above); `accident` marks the arguably unintended ones.
PAPER_PRESET = {
    "lam": (1.0, "partly", "λ = 1 on the entropy summed over the batch (strength grows with batch_size)"),
    "projection": ("reference", "no", "P g = V Λ⁻¹ Vᵀ g with bases computed once"),
    "k": (20, "no", "top-20 eigenpairs"),
    "ngd_scale": ("none", "yes", "raw Λ⁻¹: LPIPS-per-squared-pixel units, which change with backbone and resolution"),
    "basis_per_slot": (True, "yes", "image i of every batch uses basis i (an unrelated image's Hessian)"),
    "basis_latents": ("uniform", "yes", "bases at latents drawn torch.rand, uniform [0, 1), not the prior"),
    "hessian_offset": (1e-4, "probably", "Hessian at x' = G(z + 1e-4·ε), slightly off x' = x"),
    "lpips_net": ("vgg", "no", "LPIPS-VGG"),
    "eigensolver": ("arpack", "no", "ARPACK (scipy eigsh) over the HVP"),
}
DIAGNOSTICS = ("kept", "cos", "gain", "step_ratio")  # logged per ngd step (geometry.ngd.projection_diagnostics)
_GAN_KEYS = ("lr_g", "lr_d", "betas", "r1_gamma", "r1_every", "ema_kimg", "ema_rampup", "style_mixing",
             "diffaugment", "xflip")


@dataclass(frozen=True)
class TransferConfig:
    """One transfer run. `gan` overrides train_gan's optimiser/regulariser settings (`_GAN_KEYS`)."""

    mode: str = "entropy"
    steps: int = 300
    batch_size: int = 8
    lam: float = 0.03  # one default for every caller (see ddcs_core/config.py on the old 1.0)
    projection: str = "reference"
    k: int = 20
    mu: float = 1e-2
    refresh_every: int = 10
    reference_latents: int = 4
    lanczos_tol: float = 1e-3
    lanczos_maxiter: int | None = None
    ngd_scale: str = "spectral"
    ngd_preset: str | None = None
    lpips_net: str = "alex"
    eigensolver: str = "lanczos"
    basis_latents: str = "normal"
    hessian_offset: float = 0.0
    basis_per_slot: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    gan: dict = field(default_factory=dict)
    grid: int = 6
    grid_seed: int = 1234
    ckpt_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {"mode": MODES, "projection": PROJECTIONS, "ngd_scale": NGD_SCALES, "ngd_preset": (None, *NGD_PRESETS),
                   "lpips_net": LPIPS_NETS, "eigensolver": tuple(EIGENSOLVERS), "basis_latents": BASIS_LATENTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise DDCSInputError(f"transfer.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("steps", "batch_size", "k", "refresh_every", "reference_latents", "grid", "ckpt_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise DDCSInputError(f"transfer.{name} must be an int >= 1, got {value!r}")
        for name in ("lam", "mu", "lanczos_tol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (name != "lam" and value == 0):
                raise DDCSInputError(f"transfer.{name} must be a finite number {'>= 0' if name == 'lam' else '> 0'}, got {value!r}")
        offset = self.hessian_offset
        if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset) or offset < 0:
            raise DDCSInputError(f"transfer.hessian_offset must be a finite number >= 0, got {offset!r}")
        if not isinstance(self.basis_per_slot, bool):
            raise DDCSInputError(f"transfer.basis_per_slot must be true or false, got {self.basis_per_slot!r}")
        if self.projection != "reference":
            off = [f"{name}={getattr(self, name)!r}" for name, default in _REFERENCE_ONLY.items()
                   if getattr(self, name) != default]
            if off:
                raise DDCSInputError(f"transfer.{', '.join(off)} apply to the bases of projection 'reference' "
                                     f"(computed once at latents), not {self.projection!r}")
        unknown = sorted(set(self.gan) - set(_GAN_KEYS))
        if unknown:
            raise DDCSInputError(f"transfer.gan: unknown keys {unknown} (known: {list(_GAN_KEYS)})")

    @classmethod
    def from_dict(cls, d: dict | None) -> TransferConfig:
        """The config of a mapping; a preset (`ngd_preset`) fills the fields the mapping leaves out."""
        d = config_from_dict(cls, d, "transfer")
        preset = d.get("ngd_preset")
        if preset is not None:
            if preset not in NGD_PRESETS:
                raise DDCSInputError(f"transfer.ngd_preset must be one of {(None, *NGD_PRESETS)}, got {preset!r}")
            d = {**preset_values(preset), **d}
        if "augment" in d:
            d["augment"] = AugmentConfig.from_dict(d["augment"])
        return cls(**d)

    def preset_deviations(self) -> dict:
        """The fields that differ from the named preset's value ({} without a preset)."""
        if self.ngd_preset is None:
            return {}
        return {k: getattr(self, k) for k, v in preset_values(self.ngd_preset).items() if getattr(self, k) != v}

    def method_label(self) -> str:
        """How tables name this transfer: mode, projection, scale, and the preset with its deviations."""
        if self.mode != "ngd":
            return self.mode
        if self.ngd_preset is not None:
            dev = ", ".join(f"{k}={v}" for k, v in self.preset_deviations().items())
            return f"ngd ({self.ngd_preset}{'; ' + dev if dev else ''})"
        extra = [f"{k}={getattr(self, k)}" for k, v in _REFERENCE_ONLY.items() if getattr(self, k) != v]
        extra += [f"{k}={getattr(self, k)}" for k in ("lpips_net", "eigensolver") if getattr(self, k) != _DEFAULTS[k]]
        return f"ngd ({', '.join([self.projection, self.ngd_scale, *extra])})"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def ngd(self) -> NGDConfig:
        mode = "reference" if self.projection == "reference" else "damped"
        return NGDConfig(mode=mode, k=self.k, mu=float(self.mu), refresh_every=self.refresh_every,
                         method=EIGENSOLVERS[self.eigensolver], tol=float(self.lanczos_tol),
                         maxiter=self.lanczos_maxiter, seed=self.seed)

    def signature_dict(self) -> dict:
        """to_dict() without the preset fields at their defaults, so runs written before they existed
        keep their signature (and resume or stay done)."""
        return {k: v for k, v in self.to_dict().items() if k not in _PRESET_FIELDS or v != _DEFAULTS[k]}


_REFERENCE_ONLY = {"basis_latents": "normal", "hessian_offset": 0.0, "basis_per_slot": False}
_DEFAULTS = {f: getattr(TransferConfig, f) for f in ("ngd_preset", "lpips_net", "eigensolver", *_REFERENCE_ONLY)}
_PRESET_FIELDS = tuple(_DEFAULTS)


def preset_values(name: str) -> dict:
    """The field values a preset sets (`paper`: PAPER_PRESET's)."""
    if name != "paper":
        raise DDCSInputError(f"transfer.ngd_preset must be one of {NGD_PRESETS}, got {name!r}")
    return {k: v[0] for k, v in PAPER_PRESET.items()}


def paper_preset_table(config: TransferConfig | None = None) -> str:
    """The paper preset as a markdown table: each choice, our default, the paper's, the accident flag
    (and the value in `config` when given)."""
    ours = TransferConfig()
    head = "| Field | Ours (default) | Paper | Arguably an accident | What |"
    lines = [head + (" In force |" if config else ""), "|---" * (6 if config else 5) + "|"]
    for k, (value, accident, what) in PAPER_PRESET.items():
        row = f"| `{k}` | {getattr(ours, k)} | {value} | {accident} | {what} |"
        lines.append(row + (f" {getattr(config, k)} |" if config else ""))
    return "\n".join(lines) + "\n"


def rescale_to_gradient(pg: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """P g_i · ‖g_i‖ / ‖P g_i‖ per image (0 where P g_i = 0): the NGD direction at the plain step size."""
    pn = pg.flatten(1).norm(dim=1)
    gn = g.flatten(1).norm(dim=1)
    factor = torch.where(pn > 0, gn / pn.clamp_min(torch.finfo(pg.dtype).tiny), torch.zeros_like(pn))
    return pg * factor.view(-1, *([1] * (pg.ndim - 1)))


def spectral_factor(basis: NGDBasis, n: int, projection: str, mu: float, eps: float) -> torch.Tensor:
    """1/‖P‖₂ per image (n,): the smallest kept eigenvalue of the image's basis (`reference`, image i
    uses basis i % B) or μ (`damped`, whose largest eigenvalue 1/μ lives on the complement)."""
    if projection == "damped":
        return torch.full((n,), float(mu))
    vals = basis.eigvals
    keep = (vals > 0) & (vals > eps * vals.amax(-1, keepdim=True))
    lam_min = torch.where(keep, vals, torch.inf).amin(-1)
    lam_min = torch.where(torch.isfinite(lam_min), lam_min, torch.zeros_like(lam_min))
    return lam_min[torch.arange(n) % vals.shape[0]]


def _victim_view(x: torch.Tensor, augment: AugmentConfig, gen: torch.Generator,
                 share: BatchShare | None) -> torch.Tensor:
    if share is None:
        return random_transform(x, augment, gen)
    return share.per_image(lambda y: random_transform(y, augment, gen), x)


def image_gradient(victim: torch.nn.Module, x: torch.Tensor, augment: AugmentConfig,
                   gen: torch.Generator, share: BatchShare | None = None) -> tuple[torch.Tensor, float]:
    """(g = ∂L_adv/∂x at images x (N, C, H, W), L_adv) with L_adv = entropy of victim(aug(x)); with
    `share`, x are this rank's rows and the augmentation draws are the whole batch's."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = entropy_loss(victim(_victim_view(x, augment, gen, share)))
        (g,) = torch.autograd.grad(loss, x)
    return g, loss.item()


class AdversarialTerm:
    """The λ·L_adv part of G's loss for one mode; `last` holds the latest L_adv value for the log.

    With `share` (torchrun) the fakes are this rank's rows: L_adv is a sum over images, so the term is
    scaled by N (the ranks' gradients are averaged), `last` is this rank's part (summed by the loop),
    reference bases are paired with images by their index in the whole batch, and damped bases are
    computed by each rank for its own images."""

    def __init__(self, config: TransferConfig, victim: torch.nn.Module, embed_fn: EmbedFn | None,
                 gen: torch.Generator, share: BatchShare | None = None) -> None:
        self.c, self.victim, self.embed_fn, self.gen, self.share = config, victim, embed_fn, gen, share
        self.scale = 1 if share is None else share.world_size
        self.projector = NGDProjector(config.ngd()) if config.mode == "ngd" else None
        self.step = 0
        self.last = float("nan")
        self.projection_seconds = 0.0
        self.refresh_seconds = 0.0
        self.unconverged = 0
        self.diagnostics: dict[str, float] = {}  # the latest step's projection_diagnostics (ngd)

    def reference_points(self, G: Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x, at): the images the reference bases belong to, and where their Hessians are taken
        (None: at x' = x). One per batch slot (`basis_per_slot`) or `reference_latents` of them, at
        latents from the prior (`normal`) or uniform in [0, 1) (`uniform`, the paper's torch.rand);
        `hessian_offset` > 0 takes each Hessian at G(z + offset·ε), ε standard normal."""
        c = self.c
        n = c.batch_size if c.basis_per_slot else c.reference_latents
        gen = torch.Generator().manual_seed(c.seed + 2)
        draw = torch.rand if c.basis_latents == "uniform" else torch.randn
        z = draw(n, G.z_dim, generator=gen).to(G.const.device)
        with torch.no_grad():
            x = G(z, noise_mode="const")
            if not c.hessian_offset:
                return x, None
            eps = torch.randn(n, G.z_dim, generator=gen).to(G.const.device)
            return x, G(z + c.hessian_offset * eps, noise_mode="const")

    def prepare_reference(self, G: Generator) -> None:
        """reference projection: bases at fixed latents of the initial G (`reference_points`); under
        torchrun computed by rank 0 and broadcast."""
        t = time.perf_counter()
        if distributed.is_main():
            x, at = self.reference_points(G)
            try:
                self.projector.prepare(self.embed_fn, x, at)
            except LanczosNotConverged as err:
                self._accept(err, x, None)
        if self.share is not None:
            self.load(distributed.broadcast({k: v.cpu() if torch.is_tensor(v) else v for k, v in self.state().items()}
                                            if distributed.is_main() else None))
            self.unconverged = int(distributed.broadcast(self.unconverged))
        self.refresh_seconds += time.perf_counter() - t

    def _accept(self, err: LanczosNotConverged, x: torch.Tensor, step: int | None) -> None:
        """Use Lanczos' best Ritz pairs when `tol` was missed (they still span the top curvature)."""
        p = self.projector
        p.basis = NGDBasis(err.eigvals, err.eigvecs, tuple(x.shape[1:]))
        p.refreshes += 1
        if step is not None:
            p.last_refresh_step = step
        self.unconverged += 1
        log.warning("NGD basis: %s; using the best Ritz pairs found", err)

    def __call__(self, fake: torch.Tensor) -> torch.Tensor:
        c = self.c
        if c.mode == "entropy":
            loss = entropy_loss(self.victim(_victim_view(fake, c.augment, self.gen, self.share)))
            self.last = loss.item()
            return c.lam * self.scale * loss
        g, self.last = image_gradient(self.victim, fake, c.augment, self.gen, self.share)
        t = time.perf_counter()
        refreshes = self.projector.refreshes
        try:
            pg, basis = self._project(fake, g)
        except LanczosNotConverged as err:
            self._accept(err, fake, self.step)
            pg, basis = self._project(fake, g)
        if c.ngd_scale == "grad-norm":
            pg = rescale_to_gradient(pg, g)
        elif c.ngd_scale == "spectral":
            factor = spectral_factor(basis, len(pg), c.projection, c.mu, self.projector.config.eps)
            pg = pg * factor.to(pg.device, pg.dtype).view(-1, *([1] * (pg.ndim - 1)))
        self.diagnostics = projection_diagnostics(g, pg, basis)
        elapsed = time.perf_counter() - t
        if self.projector.refreshes != refreshes:
            self.refresh_seconds += elapsed
        else:
            self.projection_seconds += elapsed
        return c.lam * self.scale * (fake * pg.detach()).sum()

    def _project(self, fake: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, NGDBasis]:
        """(P g, the bases used, paired with the images) for this rank's images."""
        p = self.projector
        if self.share is None or self.c.projection == "damped":
            return p(self.embed_fn, fake.detach(), g, self.step), p.basis
        pick = self.share.rows % p.basis.eigvals.shape[0]  # the basis one process pairs with each image
        basis = NGDBasis(p.basis.eigvals[pick], p.basis.eigvecs[pick], p.basis.image_shape)
        return project_reference(g, basis, p.config.eps), basis

    def state(self) -> dict:
        p = self.projector
        if p is None or p.basis is None:
            return {}
        return {"eigvals": p.basis.eigvals, "eigvecs": p.basis.eigvecs, "image_shape": torch.tensor(p.basis.image_shape),
                "refreshes": p.refreshes, "last_refresh_step": -1 if p.last_refresh_step is None else p.last_refresh_step}

    def load(self, state: dict) -> None:
        if self.projector is None or not state:
            return
        p = self.projector
        p.basis = NGDBasis(state["eigvals"], state["eigvecs"], tuple(state["image_shape"].tolist()))
        p.refreshes = int(state["refreshes"])
        p.last_refresh_step = None if state["last_refresh_step"] < 0 else int(state["last_refresh_step"])


def default_embed_fn(device: torch.device, net: str = "alex") -> EmbedFn:
    """LPIPS's exact embedding (DESIGN §2): d(x, y) = ‖e(x) − e(y)‖², backbone `net` (alex | vgg)."""
    from ddcs_core.perceptual import LPIPSNetwork

    return LPIPSNetwork(net).to(device).embed


def basis_scale(basis: NGDBasis) -> dict[str, float]:
    """The eigenvalue scale of a basis (medians over its images): λ_max, λ_k and their ratio. The
    units (LPIPS per squared pixel step) change with backbone and resolution."""
    vals = basis.eigvals.double()
    top, low = vals[:, 0].median().item(), vals[:, -1].median().item()
    return {"eigval_max": top, "eigval_min": low, "condition": top / low if low > 0 else None}


def _check_images(images: np.ndarray, resolution: int) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (resolution, resolution, 3) or not len(images):
        raise DDCSInputError(f"public_images must be non-empty uint8 (N, {resolution}, {resolution}, 3) to match the "
                             f"generator, got {images.dtype} {images.shape}")
    return images


def grid_latents(config: TransferConfig, z_dim: int) -> torch.Tensor:
    """The fixed evaluation latents (grid² of them, from `grid_seed`) every mode's grid is drawn at."""
    return torch.randn(config.grid**2, z_dim, generator=torch.Generator().manual_seed(config.grid_seed))


def transfer_paths(out_dir: str | Path, mode: str) -> dict[str, Path]:
    out = Path(out_dir)
    work = out / "transfer" / mode
    return {"work": work, "state": work / "state.pt", "G": work / "G.safetensors", "summary": work / "summary.json",
            "grids": out / "grids" / mode, "latest_grid": out / "grids" / f"{mode}.png"}


class TransferLoop:
    """transfer's step for the Trainer: train_gan's step on copies of G and D plus λ·L_adv."""

    def __init__(self, G: Generator, D: Discriminator, victim: torch.nn.Module | None, images: np.ndarray,
                 c: TransferConfig, cfg: dict, device: torch.device, embed_fn: EmbedFn | None, paths: dict) -> None:
        torch.manual_seed(c.seed)
        self.gen = torch.Generator().manual_seed(c.seed)
        self.c, self.cfg, self.device, self.paths = c, cfg, device, paths
        self.G = copy.deepcopy(G).to(device).train().requires_grad_(True)
        self.D = copy.deepcopy(D).to(device).train().requires_grad_(True)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g, self.opt_d = make_optimizers(self.G, self.D, cfg)
        if c.mode == "ngd" and embed_fn is None:
            embed_fn = default_embed_fn(device, c.lpips_net)
        ctx = distributed.context()
        self.share = BatchShare.for_rank(c.batch_size, mbstd_group(self.D, c.batch_size), ctx.rank, ctx.world_size, device) \
            if ctx.active else None
        self.adv = AdversarialTerm(c, victim, embed_fn, self.gen, self.share) if c.mode != "vanilla" else None
        self.log: dict[str, list[float]] = {"loss_g": [], "loss_d": [], "r1": [], "adv": [],
                                            **({k: [] for k in DIAGNOSTICS} if c.mode == "ngd" else {})}
        self.data = torch.from_numpy(images).to(device)
        self.fixed_z = grid_latents(c, self.G.z_dim).to(device)

    def state(self) -> dict:
        adv = self.adv
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "ngd": adv.state() if adv is not None else {},
                "adv_stats": torch.tensor([adv.refresh_seconds, adv.projection_seconds, adv.unconverged]
                                          if adv is not None else [0.0, 0.0, 0.0], dtype=torch.float64),
                "log": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.log.items()}}

    def load(self, state: dict) -> None:
        load_gan_state(state, self.G, self.D, self.G_ema, self.opt_g, self.opt_d)
        self.log = {**{k: [] for k in self.log}, **{k: v.tolist() for k, v in state["log"].items()}}
        if self.adv is not None:
            self.adv.load(state["ngd"])
            self.adv.refresh_seconds, self.adv.projection_seconds, unconverged = state["adv_stats"].tolist()
            self.adv.unconverged = int(unconverged)

    def begin(self, step: int, resumed: bool) -> None:
        c = self.c
        if not resumed and self.adv is not None and c.mode == "ngd" and c.projection == "reference":
            self.adv.prepare_reference(self.G)
        if step == 0:
            self.grid(step)

    def grid(self, step: int) -> None:
        if not distributed.is_main():
            return
        with torch.no_grad():
            x = torch.cat([self.G_ema(z, noise_mode="const") for z in self.fixed_z.split(64)])
        save_grid(self.paths["grids"] / f"step-{step:04d}.png", x, self.c.grid)
        save_grid(self.paths["latest_grid"], x, self.c.grid)

    def step(self, step: int) -> dict[str, float]:
        c, cfg, adv = self.c, self.cfg, self.adv
        if adv is not None:
            adv.step = step
        share = self.share
        losses = gan_step(self.G, self.D, self.opt_g, self.opt_d,
                          lambda: real_batch(self.data, c.batch_size, self.gen, cfg["xflip"], share), cfg, step,
                          c.batch_size, self.gen, g_extra=adv, share=share)
        ema_update(self.G_ema, self.G, cfg, step + 1, c.batch_size)
        for key in ("loss_g", "loss_d", "r1"):
            self.log[key].append(losses[key])
        adv_value = adv.last if adv is not None else float("nan")
        self.log["adv"].append(adv_value if share is None or adv is None else share.reduce([adv_value], "sum")[0])
        if c.mode == "ngd":
            for key in DIAGNOSTICS:
                self.log[key].append(adv.diagnostics.get(key, float("nan")))
        return {"g": losses["loss_g"], "d": losses["loss_d"], "adv": self.log["adv"][-1]}

    def after(self, step: int) -> None:
        if step % self.c.ckpt_every == 0 or step == self.c.steps:
            self.grid(step)


def transfer(
    G: Generator,
    D: Discriminator,
    victim: torch.nn.Module | None,
    public_images: np.ndarray,
    config: TransferConfig,
    out_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    embed_fn: EmbedFn | None = None,
    progress: bool = True,
    report: Report | None = None,
    should_stop: ShouldStop | None = None,
) -> dict:
    """Fine-tune copies of G and D (the originals are untouched); returns the summary, also written to
    `<out>/transfer/<mode>/summary.json`, with the EMA generator in `G.safetensors` there.

    The victim is frozen (eval mode, no parameter gradients) and unused in `vanilla` mode (may be None).
    `embed_fn` (ngd only) defaults to LPIPS-alex. Raises control.Cancelled when `should_stop()` turned
    true; the state saved at that step resumes the run. A finished run is returned from its summary.
    """
    c = config
    device = parse_device(device)
    images = _check_images(public_images, G.img_resolution)
    paths = transfer_paths(out_dir, c.mode)
    # the training settings only: G and D come in as modules (their digests sign the architecture)
    cfg = {k: v for k, v in gan_config(c.gan).items() if k in _GAN_KEYS}
    if c.mode != "vanilla":
        if victim is None:
            raise DDCSInputError(f"transfer mode {c.mode!r} needs a victim")
        victim = victim.to(device).eval().requires_grad_(False)
    signature = {"config": c.signature_dict(), "gan": cfg, "data": array_digest(images), "G": module_digest(G),
                 "D": module_digest(D), "victim": module_digest(victim) if c.mode != "vanilla" else None}
    if paths["summary"].is_file() and paths["G"].is_file():
        summary = json.loads(paths["summary"].read_text())
        if summary.get("signature") == signature:
            return summary

    loop = TransferLoop(G, D, victim, images, c, cfg, device, embed_fn, paths)
    trainer = Trainer(c.steps, signature, paths["state"], ckpt_every=c.ckpt_every, desc=f"transfer {c.mode}",
                      progress=progress and distributed.is_main(), report=report or silent, should_stop=should_stop, what="transfer state",
                      restart_hint=f"delete {paths['work']} to start over")
    result = trainer.fit(loop)
    step, log, adv = result.steps, loop.log, loop.adv
    if not distributed.is_main():  # under torchrun rank 0 alone writes; the others' G_ema is the same
        return {"signature": signature, "mode": c.mode, "steps": step, "generator": str(paths["G"])}
    # the generator's own arch (stylegan2-g, stylegan2-ada-g, ...), so load_model rebuilds what was trained
    sha = save_model(paths["G"], loop.G_ema, getattr(loop.G_ema, "arch", "stylegan2-g"), loop.G_ema.config,
                     meta={"mode": c.mode, "step": step, "seed": c.seed})
    tail = slice(-50, None)

    def mean(values: list[float]) -> float | None:
        v = [x for x in values[tail] if x == x]
        return float(np.mean(v)) if v else None

    def mean_all(values: list[float]) -> float | None:
        v = [x for x in values if x == x]
        return float(np.mean(v)) if v else None

    summary = {
        "signature": signature, "mode": c.mode, "steps": step, "generator": str(paths["G"]), "sha256": sha,
        "grid": str(paths["latest_grid"]), "loss_g": mean(log["loss_g"]), "loss_d": mean(log["loss_d"]),
        "adv_first": mean(log["adv"][:50]) if c.mode != "vanilla" else None, "adv_last": mean(log["adv"]),
        "sec_per_step": result.seconds / max(step, 1), "device": str(device),
        "distributed": distributed.context().describe("batch" if loop.share is not None else "none"),
        "ngd": None if adv is None or adv.projector is None else {
            "projection": c.projection, "refreshes": adv.projector.refreshes,
            "refresh_seconds": round(adv.refresh_seconds, 3), "projection_seconds": round(adv.projection_seconds, 3),
            "unconverged_refreshes": adv.unconverged, "method": c.method_label(),
            "basis": basis_scale(adv.projector.basis) if adv.projector.basis is not None else None,
            # means over every step (the projection's effect on the plain gradient, see projection_diagnostics)
            "diagnostics": {k: mean_all(log[k]) for k in DIAGNOSTICS}},
    }
    atomic.write_json(paths["summary"], summary)
    return summary
