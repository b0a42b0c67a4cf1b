"""`bench distributed`: inversion and evaluation throughput with 1 process and with N under torchrun.

On the CPU the comparison holds the cores fixed: 1 process x T threads against N processes x T/N
threads (the issue's "2 x 1 thread vs 1 x 2 threads"); on GPUs, 1 GPU against N. Each setting is a
fresh `torchrun` of this module's worker, which times only the work (barrier to barrier), not
start-up or model loading, and rank 0 writes its timings to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddcs_core import distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _synthetic_sets(n_classes: int, per_class_targets: int, per_class_recon: int, size: int, seed: int):
    """Class-structured images (a per-class colour field plus noise), the same on every rank."""
    from ddcs_core.data.images import ImageSet

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n_classes, 8, 8, 3)).astype(np.float32)

    def make(per_class: int, source: str) -> ImageSet:
        labels = np.repeat(np.arange(n_classes), per_class)
        low = torch.from_numpy(base[labels] + rng.normal(0, 40, (len(labels), 8, 8, 3)).astype(np.float32))
        img = torch.nn.functional.interpolate(low.permute(0, 3, 1, 2), size=(size, size), mode="bilinear")
        images = img.permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8).numpy()
        names = [f"class_{c:03d}" for c in range(n_classes)]
        return ImageSet(images, labels.astype(np.int64), names, [f"{source}/{i}" for i in range(len(labels))], source)

    return make(per_class_targets, "targets"), make(per_class_recon, "recon")


def _timed(fn) -> float:
    distributed.barrier()
    t = time.perf_counter()
    fn()
    distributed.barrier()
    return time.perf_counter() - t


def worker(args: argparse.Namespace) -> None:
    """One rank of one setting: time an inversion and an evaluation, rank 0 writes the seconds."""
    from ddcs_core.attacks import InversionConfig, invert
    from ddcs_core.bench import _transfer_models
    from ddcs_core.evaluate import EvalConfig, evaluate_sets

    ctx, device = distributed.setup(args.device)
    os.environ["DDCS_CACHE"] = args.cache  # a cold target-embedding cache for every setting
    G, _, victim, _, source = _transfer_models(torch.device(device), 0)
    classes = list(range(min(args.classes, getattr(victim, "num_classes", args.classes))))
    inv = InversionConfig(search_size=args.search_size, candidates_per_class=4, steps=args.steps, final_per_class=2,
                          final_views=4, batch_size=16, seed=0)
    t_inv = _timed(lambda: invert(G, victim, classes, inv, name="bench", progress=False))
    targets, recon = _synthetic_sets(args.eval_classes, 10, 10, args.size, 0)
    config = EvalConfig(device=device, features="lpips")
    t_eval = _timed(lambda: evaluate_sets(targets, recon, config))
    if distributed.is_main():
        Path(args.out).write_text(json.dumps({
            "processes": max(1, ctx.world_size), "threads_per_process": torch.get_num_threads(),
            "device": device, "backend": ctx.backend, "models": source,
            "inversion": {"classes": len(classes), "seconds": round(t_inv, 3),
                          "classes_per_s": round(len(classes) / t_inv, 4)},
            "evaluation": {"targets": len(targets), "reconstructions": len(recon), "classes": args.eval_classes,
                           "size": args.size, "seconds": round(t_eval, 3),
                           "reconstructions_per_s": round(len(recon) / t_eval, 3)}}))
    distributed.teardown()


def distributed_bench(nproc: int | None = None, threads: int | None = None, device: str = "auto", classes: int = 8,
                      steps: int = 10, search_size: int = 256, eval_classes: int = 8, size: int = 64,
                      timeout: float = 1800) -> dict:
    """Throughput with 1 process and with `nproc` (default: every GPU, or 2 on the CPU), same total threads."""
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available() or str(device).startswith("cuda")
    nproc = nproc or (torch.cuda.device_count() if use_cuda else 2)
    threads = threads or max(1, min(os.cpu_count() or 1, torch.get_num_threads()))
    settings = [(1, threads), (nproc, max(1, threads // nproc))] if not use_cuda else [(1, threads), (nproc, threads)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, t in settings:
            out = Path(tmp) / f"bench-{n}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--nnodes", "1",
                   "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "ddcs_core.bench_distributed",
                   "--out", str(out), "--cache", str(Path(tmp) / f"cache-{n}"), "--device", device,
                   "--classes", str(classes), "--steps", str(steps), "--search-size", str(search_size),
                   "--eval-classes", str(eval_classes), "--size", str(size)]
            env = {**os.environ, "OMP_NUM_THREADS": str(t)}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise RuntimeError(f"bench worker ({n} process(es)) failed:\n{done.stderr[-4000:]}")
            results.append(json.loads(out.read_text()))
    one, many = results
    return {"settings": results,
            "speedup": {"inversion": round(one["inversion"]["seconds"] / many["inversion"]["seconds"], 3),
                        "evaluation": round(one["evaluation"]["seconds"] / many["evaluation"]["seconds"], 3)},
            "ideal": 1.0 if not use_cuda else float(nproc),
            "note": "CPU: the same cores either way (1 x T threads vs N x T/N), so 1.0 is parity; GPU: ideal is N"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="bench distributed worker (run by torchrun)")
    p.add_argument("--out", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--search-size", type=int, default=256)
    p.add_argument("--eval-classes", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    return p


if __name__ == "__main__":
    worker(_parser().parse_args())
