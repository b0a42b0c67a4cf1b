"""Benchmarks that time the alternatives side by side in one run and print ratios (not tests)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddcs_core.data.transforms import to_tensor
from ddcs_core.errors import DDCSInputError
from ddcs_core.perceptual import PerceptualDistance


def _reference_lpips(net: str, ours: PerceptualDistance):
    """The lpips package's own model, carrying the same offline backbone weights as ours."""
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's notice about `pretrained`
        ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    ref_convs = [m for m in ref.net.modules() if isinstance(m, torch.nn.Conv2d)]
    our_convs = [m for m in ours.model.modules() if isinstance(m, torch.nn.Conv2d)]
    for a, b in zip(ref_convs, our_convs):
        a.weight.data.copy_(b.weight)
        a.bias.data.copy_(b.bias)
    return ref.to(ours.device)


@torch.no_grad()
def _naive(ref, rec: torch.Tensor, tar: torch.Tensor, pairs: np.ndarray, batch: int = 256) -> np.ndarray:
    """(a) the package's forward on every (reconstruction, target) pair."""
    out = []
    for i in range(0, len(pairs), batch):
        p = pairs[i:i + batch]
        out.append(ref(rec[p[:, 0]], tar[p[:, 1]]).flatten().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def _cached(ref, rec: torch.Tensor, tar: torch.Tensor, batch: int = 64) -> np.ndarray:
    """(b) the reference implementation's way: cache target activations, one forward per reconstruction,
    elementwise distance to every target."""
    import lpips

    def feats(x):
        return [lpips.normalize_tensor(f) for f in ref.net(ref.scaling_layer(x))]

    tf = [torch.cat(parts) for parts in zip(*(feats(tar[i:i + batch]) for i in range(0, len(tar), batch)))]
    out = np.empty((len(rec), len(tar)), np.float32)
    for r in range(len(rec)):
        rf = feats(rec[r:r + 1])
        d = sum(ref.lins[l]((rf[l] - tf[l]) ** 2).mean(dim=(1, 2, 3)) for l in range(len(tf)))
        out[r] = d.cpu().numpy()
    return out


def lpips_bench(n: int = 200, m: int = 200, size: int = 64, net: str = "alex", naive_pairs: int | None = None,
                seed: int = 0) -> dict:
    """Time naive / cached / ours on n reconstructions x m targets; errors against the naive values."""
    rng = np.random.default_rng(seed)
    rec_u8 = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    tar_u8 = rng.integers(0, 256, (m, size, size, 3), dtype=np.uint8)
    ours = PerceptualDistance(net, cache=False)
    ref = _reference_lpips(net, ours)
    rec, tar = to_tensor(rec_u8).to(ours.device), to_tensor(tar_u8).to(ours.device)
    all_pairs = np.stack(np.meshgrid(np.arange(n), np.arange(m), indexing="ij"), -1).reshape(-1, 2)
    k = len(all_pairs) if not naive_pairs else min(naive_pairs, len(all_pairs))
    pairs = all_pairs[rng.permutation(len(all_pairs))[:k]]

    t = time.perf_counter()
    naive = _naive(ref, rec, tar, pairs)
    t_naive = (time.perf_counter() - t) * len(all_pairs) / k
    t = time.perf_counter()
    cached = _cached(ref, rec, tar)
    t_cached = time.perf_counter() - t
    t = time.perf_counter()
    mine = ours.pairwise(rec_u8, tar_u8)
    t_ours = time.perf_counter() - t
    return {
        "net": net, "size": size, "reconstructions": n, "targets": m, "device": str(ours.device),
        "threads": torch.get_num_threads(),
        "naive_pairs_timed": int(k), "naive_extrapolated": k < len(all_pairs),
        "seconds": {"naive": round(t_naive, 3), "cached": round(t_cached, 3), "ours": round(t_ours, 3)},
        "speedup_vs_naive": round(t_naive / t_ours, 1),
        "speedup_vs_cached": round(t_cached / t_ours, 2),
        "max_abs_error_vs_naive": float(np.abs(mine[pairs[:, 0], pairs[:, 1]] - naive).max()),
        "max_abs_error_cached_vs_naive": float(np.abs(cached[pairs[:, 0], pairs[:, 1]] - naive).max()),
    }


def evaluate_bench(n_targets: int = 3000, n_recon: int = 5000, n_classes: int = 62, size: int = 64,
                   seed: int = 0) -> dict:
    """`evaluate` end to end (npz in, report out; fast profile) on synthetic class-structured images,
    with a cold and then a warm target-embedding cache."""
    from ddcs_core.evaluate import EvalConfig, evaluate

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n_classes, 8, 8, 3)).astype(np.float32)

    def make(n):
        labels = rng.integers(0, n_classes, n)
        low = base[labels] + rng.normal(0, 40, (n, 8, 8, 3))
        img = torch.nn.functional.interpolate(torch.from_numpy(low).permute(0, 3, 1, 2), size=(size, size), mode="bilinear")
        return img.permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8).numpy(), labels

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, n in (("targets", n_targets), ("recon", n_recon)):
            images, labels = make(n)
            np.savez(tmp / f"{name}.npz", images=images, labels=labels)
        old_cache = os.environ.get("DDCS_CACHE")
        os.environ["DDCS_CACHE"] = str(tmp / "cache")
        try:
            times = []
            for run in ("cold", "warm"):
                t = time.perf_counter()
                ev = evaluate(tmp / "targets.npz", tmp / "recon.npz", tmp / f"out-{run}", EvalConfig(), progress=False)
                times.append(time.perf_counter() - t)
        finally:
            if old_cache is None:
                os.environ.pop("DDCS_CACHE", None)
            else:
                os.environ["DDCS_CACHE"] = old_cache
    return {"targets": n_targets, "reconstructions": n_recon, "classes": n_classes, "size": size,
            "profile": "fast", "device": ev.report["device"], "threads": torch.get_num_threads(),
            "seconds": {"cold_cache": round(times[0], 2), "warm_cache": round(times[1], 2)},
            "lpips_search_s": ev.report["timing_s"]["lpips_search"], "ddcs": ev.report["ddcs"],
            "matched_fraction": ev.report["matched_fraction"]}


def _transfer_models(device: torch.device, seed: int) -> tuple:
    """The demo world's G, D and victim when shipped, else freshly initialised ones of the same shapes
    (step time depends on the architecture, not on the weights), plus 256 public-like images."""
    from ddcs_core import pipeline
    from ddcs_core.models.classifiers import build_classifier
    from ddcs_core.models.stylegan2 import Discriminator, Generator

    torch.manual_seed(seed)
    if (pipeline.SHIPPED / "manifest.json").is_file():
        world = pipeline.load_world(device=device)
        G, D, victim, source = world.generator, world.discriminator, world.victim, "demo world"
    else:
        gcfg = pipeline.DEMO_CONFIG["gan"]["config"]
        G = Generator(img_resolution=64, **gcfg["G"])
        D = Discriminator(img_resolution=64, **gcfg["D"])
        victim = build_classifier(pipeline.DEMO_CONFIG["victim"]["arch"], num_classes=62)
        source = "random init, demo architecture (no shipped world)"
    images = np.random.default_rng(seed).integers(0, 256, (256, G.img_resolution, G.img_resolution, 3), dtype=np.uint8)
    return G.to(device), D.to(device), victim.to(device).eval().requires_grad_(False), images, source


def _sg2ada256_models(device: torch.device, seed: int) -> tuple:
    """The paper's 256 px world with random weights: an imported StyleGAN2-ADA paper256 G and its D,
    an IR-SE-50 face victim behind CenterCrop(200) -> Resize(112), and 64 public-like images."""
    from ddcs_core.bench_generator import imported_paper256_generator
    from ddcs_core.models.irse import build_ir
    from ddcs_core.models.stylegan2_ada import Discriminator
    from ddcs_core.models.victims import ClassifierSpec, load_classifier

    G = imported_paper256_generator(seed)
    torch.manual_seed(seed + 1)
    D = Discriminator(c_dim=0, img_resolution=256, img_channels=3, channel_base=16384, channel_max=512,
                      num_fp16_res=4, conv_clamp=256)  # StyleGAN2-ADA's paper256 D
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "irse50.pt"
        torch.save(build_ir("irse50", num_classes=530).state_dict(), weights)
        spec = ClassifierSpec.from_dict({"arch": "irse50", "weights": str(weights), "num_classes": 530,
                                         "preprocess": "paper-faces-112"}, "bench victim")
        victim = load_classifier(spec, device, resolution=256)
    images = np.random.default_rng(seed).integers(0, 256, (64, 256, 256, 3), dtype=np.uint8)
    source = "random init: StyleGAN2-ADA paper256 G (imported via a network pickle) and D, irse50 victim at 112 px"
    return G.to(device), D.to(device), victim.requires_grad_(False), images, source


TRANSFER_WORLDS = {"demo": _transfer_models, "sg2ada-256": _sg2ada256_models}


def _peak_memory(dev: torch.device) -> dict:
    import resource

    out = {"cpu_max_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if dev.type == "cuda":
        out["cuda_max_allocated_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return out


def transfer_bench(steps: int = 20, batch_size: int = 8, k: int = 20, refresh_every: int = 10, warmup: int = 3,
                   device: str = "auto", seed: int = 0, world: str = "demo", reference_latents: int = 4,
                   damped: bool = True, lanczos_maxiter: int | None = None) -> dict:
    """Transfer step time, entropy vs ngd (reference projection, basis precomputed), interleaved step by
    step in one process so machine load hits both alike; plus the damped projection's refresh cost
    (`damped=False` skips it). `world`: `demo` (64 px) or `sg2ada-256` (the paper's 256 px sizes).
    `lanczos_maxiter` caps the Hessian-vector products per basis (the step time does not depend on it;
    the basis setup time does, about linearly)."""
    import copy
    import statistics

    from ddcs_core.models.train_gan import gan_config, gan_step, make_optimizers, real_batch
    from ddcs_core.perceptual import resolve_device
    from ddcs_core.transfer import AdversarialTerm, TransferConfig, default_embed_fn

    if world not in TRANSFER_WORLDS:
        raise DDCSInputError(f"--world must be one of {sorted(TRANSFER_WORLDS)}, got {world!r}")
    dev = resolve_device(device)
    G0, D0, victim, images, source = TRANSFER_WORLDS[world](dev, seed)
    embed_fn = default_embed_fn(dev)
    data = torch.from_numpy(images).to(dev)
    cfg = gan_config({})

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def trainer(mode: str, projection: str = "reference") -> dict:
        c = TransferConfig(mode=mode, batch_size=batch_size, k=k, projection=projection, refresh_every=refresh_every,
                           reference_latents=reference_latents, lanczos_maxiter=lanczos_maxiter, seed=seed)
        G, D = copy.deepcopy(G0).train(), copy.deepcopy(D0).train()
        gen = torch.Generator().manual_seed(seed)
        adv = AdversarialTerm(c, victim, embed_fn, gen)
        t = time.perf_counter()
        if mode == "ngd" and projection == "reference":
            adv.prepare_reference(G)
        sync()
        note(f"{mode} ({projection}): setup {time.perf_counter() - t:.1f} s")
        return {"G": G, "D": D, "opt": make_optimizers(G, D, cfg), "gen": gen, "adv": adv, "times": [],
                "setup_s": time.perf_counter() - t, "mode": mode}

    def note(text: str) -> None:  # progress on stderr, so a long 256 px run shows figures as it goes
        print(f"bench transfer: {text}", file=sys.stderr, flush=True)

    def step(t: dict, i: int) -> float:
        t["adv"].step = i
        sync()
        start = time.perf_counter()
        gan_step(t["G"], t["D"], *t["opt"], lambda: real_batch(data, batch_size, t["gen"], True), cfg, i,
                 batch_size, t["gen"], g_extra=t["adv"])
        sync()
        return time.perf_counter() - start

    ent, ngd = trainer("entropy"), trainer("ngd")
    for i in range(warmup + steps):
        for t in (ent, ngd) if i % 2 == 0 else (ngd, ent):
            elapsed = step(t, i)
            note(f"{t['mode']} step {i}{' (warm-up)' if i < warmup else ''}: {elapsed:.2f} s")
            if i >= warmup:
                t["times"].append(elapsed)
    med = {name: statistics.median(t["times"]) for name, t in (("entropy", ent), ("ngd", ngd))}
    dim = 3 * G0.img_resolution ** 2  # one basis vector per image pixel value
    out = {
        "world": world, "models": source, "device": str(dev), "threads": torch.get_num_threads(),
        "batch_size": batch_size, "resolution": G0.img_resolution, "k": k, "timed_steps": steps,
        "warmup_steps": warmup,
        "images_per_s": {"entropy": round(batch_size / med["entropy"], 4), "ngd_reference": round(batch_size / med["ngd"], 4)},
        "seconds_per_step": {"entropy": round(med["entropy"], 4), "ngd_reference": round(med["ngd"], 4)},
        "ratio_ngd_over_entropy": round(med["ngd"] / med["entropy"], 3), "target_ratio": 1.3,
        "ngd_reference_projection_s_per_step": round(ngd["adv"].projection_seconds / (warmup + steps), 5),
        "ngd_reference_basis_setup_s": round(ngd["setup_s"], 2), "reference_latents": reference_latents,
        "lanczos_maxiter": lanczos_maxiter, "unconverged_bases": ngd["adv"].unconverged,
        "basis_dim": dim, "basis_mb_each": round(k * dim * 4 / 2**20, 1),
        "peak_memory": _peak_memory(dev),
    }
    if not damped:
        return out
    damped = trainer("ngd", "damped")
    for i in range(refresh_every + 1):  # refreshes at steps 0 and refresh_every
        damped["times"].append(step(damped, i))
    adv = damped["adv"]
    between = statistics.median(damped["times"][1:refresh_every])
    refresh = adv.refresh_seconds / max(adv.projector.refreshes, 1)
    return {
        "models": source, "device": str(dev), "threads": torch.get_num_threads(), "batch_size": batch_size,
        "resolution": G0.img_resolution, "k": k, "timed_steps": steps, "warmup_steps": warmup,
        "seconds_per_step": {"entropy": round(med["entropy"], 4), "ngd_reference": round(med["ngd"], 4)},
        "ratio_ngd_over_entropy": round(med["ngd"] / med["entropy"], 3), "target_ratio": 1.3,
        "ngd_reference_projection_s_per_step": round(ngd["adv"].projection_seconds / (warmup + steps), 5),
        "ngd_reference_basis_setup_s": round(ngd["setup_s"], 2),
        "damped": {"refresh_every": refresh_every, "seconds_per_refresh": round(refresh, 2),
                   "step_between_refreshes_s": round(between, 4),
                   "amortised_s_per_step": round(between + refresh / refresh_every, 4),
                   "lanczos": "torch batched Lanczos, tol 1e-3, one basis per image of the batch"},
    }
