"""Generator throughput of an imported StyleGAN2-ADA-sized network (benchmark, not a test)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from ddcs_core.models.network_pickle import load_network_pickle
from ddcs_core.models.network_pickle_writer import write_network_pickle
from ddcs_core.models.stylegan2_ada import PAPER256_G, Generator


def imported_paper256_generator(seed: int = 0) -> Generator:
    """A random-weight generator of the paper256 architecture, written as a network pickle and imported
    back through the restricted loader (what a user's FFHQ-256 snapshot becomes)."""
    torch.manual_seed(seed)
    G = Generator(**PAPER256_G)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_network_pickle(Path(tmp) / "network-snapshot-paper256.pkl", G_ema=G)
        return load_network_pickle(path, keys=("G_ema",)).G_ema


def _time(fn, sync, budget_s: float, min_reps: int = 2) -> tuple[float, int]:
    fn()  # warm-up
    sync()
    reps, t0 = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < budget_s:
        fn()
        sync()
        reps += 1
    return (time.perf_counter() - t0) / reps, reps


def generator_bench(batch_size: int = 2, seconds: float = 20.0, device: str = "auto", seed: int = 0) -> dict:
    """images/s of G(z) (mapping + synthesis, noise const) and of forward + backward to w (an inversion
    step's generator part) at 256 px, on the CPU and on CUDA when there is one (`device='auto'`; there
    also with the pickle's fp16 layers in half precision)."""
    G = imported_paper256_generator(seed).requires_grad_(False)  # inversion: gradients to w only
    devices = ["cpu", "cuda"] if device == "auto" and torch.cuda.is_available() else ["cpu" if device == "auto" else device]
    out = {"architecture": "stylegan2-ada paper256 (z/w 512, 8 mapping layers, channel_base 16384, 256 px), "
                           "random weights, imported via a network pickle",
           "num_params": sum(p.numel() for p in G.parameters()), "batch_size": batch_size,
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "results": {}}
    runs = [(dev, False) for dev in devices] + [("cuda", True)] * ("cuda" in devices)
    for dev, fp16 in runs:
        d = torch.device(dev)
        G.to(d)
        G.set_fp16(fp16)
        bs = batch_size if d.type == "cpu" else max(batch_size, 16)
        z = torch.randn(bs, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(d)
        sync = (lambda: torch.cuda.synchronize(d)) if d.type == "cuda" else (lambda: None)

        def forward() -> None:
            with torch.no_grad():
                G(z, noise_mode="const")

        def backward() -> None:
            w = G.mapping(z).detach().requires_grad_(True)
            G.synthesis(w, noise_mode="const").square().mean().backward()

        budget = seconds / 2
        t_fwd, n_fwd = _time(forward, sync, budget)
        t_bwd, n_bwd = _time(backward, sync, budget)
        out["results"][dev + ("-fp16" if fp16 else "")] = {
            "batch_size": bs, "forward_images_per_s": bs / t_fwd, "forward_s_per_batch": t_fwd, "forward_reps": n_fwd,
            "fwd_bwd_images_per_s": bs / t_bwd, "fwd_bwd_s_per_batch": t_bwd, "fwd_bwd_reps": n_bwd,
            "device_name": torch.cuda.get_device_name(d) if d.type == "cuda" else "cpu",
        }
    G.cpu().set_fp16(False)
    return out
