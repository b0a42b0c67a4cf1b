"""Embedding throughput against the machine's limit: our LPIPS embedding vs a bare torchvision backbone.

Both run the same convolutions on the same batches (embed_batch(dim) images per pass), interleaved rep by
rep so a shared or throttling CPU slows both alike. Ours adds the uint8 -> float conversion, the LPIPS
input scaling, the per-layer normalisation and weighting, the padding of the last pass and the copy of
the embeddings to host memory; the ratio says what that costs (target >= 0.8). `forward_only_ratio`
times our network's forward alone on the same float batches, to tell the network's extra work from the
wrapper's. The 1-minute load average before and after is recorded: on a shared machine, read the
ratio with it.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from ddcs_core.perceptual.pairwise import PerceptualDistance, embed_batch


def _bare_backbone(net: str) -> torch.nn.Module:
    from torchvision import models

    model = models.vgg16(weights=None) if net == "vgg" else models.alexnet(weights=None)
    return model.features.eval().requires_grad_(False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_device(net: str, size: int, n: int, reps: int, device: torch.device) -> dict:
    ours = PerceptualDistance(net, device=str(device), cache=False)
    bare = _bare_backbone(net).to(device)
    batch = embed_batch(ours.embedding_dim(size, size))
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    passes = -(-n // batch)

    def run_ours() -> None:
        ours.embed(images)

    @torch.no_grad()
    def run_forward() -> None:
        for _ in range(passes):
            ours.model(x)

    @torch.no_grad()
    def run_bare() -> None:
        for _ in range(passes):
            bare(x)

    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"ours": [], "ours_forward": [], "bare": []}
    sides = (("ours", run_ours), ("ours_forward", run_forward), ("bare", run_bare))
    for _, fn in sides:  # warm-up: kernel selection, allocations
        fn()
    for _ in range(reps):
        for name, fn in sides:
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    ours_s, bare_s = statistics.median(times["ours"]), statistics.median(times["bare"])
    forward_s = statistics.median(times["ours_forward"])
    return {"device": str(device), "batch": batch, "passes": passes, "threads": torch.get_num_threads(),
            "ours_images_per_s": round(n / ours_s, 3),
            "bare_images_per_s": round(passes * batch / bare_s, 3),
            "ratio": round((n / ours_s) / (passes * batch / bare_s), 3),
            "forward_only_ratio": round(bare_s / forward_s, 3),
            "ratio_best_reps": round(min(times["bare"]) * passes * batch / n / min(times["ours"]), 3),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def embed_bench(net: str = "vgg", size: int = 256, n: int = 16, reps: int = 3, device: str = "auto") -> dict:
    """images/s of PerceptualDistance.embed vs torchvision's bare `features` forward (random weights: the
    speed does not depend on them), on the CPU and, with device "auto", on CUDA when available."""
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []) \
        if device == "auto" else [torch.device(device)]
    bare_name = "torchvision vgg16().features" if net == "vgg" else "torchvision alexnet().features"
    return {"net": net, "size": size, "n": n, "reps": reps, "bare": bare_name,
            "ratio_is": "ours images/s / bare images/s (median over interleaved reps; bare counts full passes); "
                        "ratio_best_reps: the same from each side's fastest rep, steadier on a shared CPU",
            "results": [_one_device(net, size, n, reps, d) for d in devices]}
