"""The demo world: LFW split → victim and evaluation classifiers → StyleGAN2-style generator.

`build` runs the steps in order; each step trains into a work folder with its own resumable state,
so a killed build continues where it stopped. `export` writes the shipped world (fp16 safetensors
and a manifest with sha256, config, data fingerprint and metrics) to `checkpoints/demo/`; `check`
verifies the shipped world against the data and recomputes its figures.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddcs_core import atomic
from ddcs_core.data.lfw import LFWData, lfw_dir, prepare_lfw
from ddcs_core.errors import DDCSInputError
from ddcs_core.home import HINT, repo_root
from ddcs_core.perceptual.weights import cache_dir

REPO = repo_root()
SHIPPED = REPO / "checkpoints" / "demo"
DEMO_CONFIG: dict = {
    "data": {"size": 64, "crop": 128, "min_images": 20, "holdout_per_person": 3, "seed": 0},
    "victim": {"arch": "resnet-s", "epochs": 30, "batch_size": 64, "lr": 3e-3, "seed": 0},
    "evaluator": {"arch": "vggbn-s", "epochs": 30, "batch_size": 64, "lr": 3e-3, "seed": 1},
    "gan": {"steps": 4000, "batch_size": 16, "seed": 0,
            "config": {"G": {"z_dim": 128, "w_dim": 128, "channel_base": 1024, "channel_max": 128},
                       "D": {"channel_base": 1024, "channel_max": 128}}},
    "check": {"fid_samples": 2000, "seed": 123},
}
FILES = {"victim": "victim.safetensors", "evaluator": "evaluator.safetensors",
         "generator": "generator.safetensors", "discriminator": "discriminator.safetensors"}


def work_dir() -> Path:
    """Training state lives here (`DDCS_WORK`, default ./work/demo), outside the shipped folder."""
    return Path(os.environ.get("DDCS_WORK", REPO / "work" / "demo"))


def demo_data(config: dict | None = None, data_root: str | Path | None = None, progress: bool = True) -> LFWData:
    d = (config or DEMO_CONFIG)["data"]
    return prepare_lfw(lfw_dir(Path(data_root) if data_root else None), cache_dir() / "lfw", size=d["size"],
                       crop=d["crop"], min_images=d["min_images"], holdout_per_person=d["holdout_per_person"],
                       seed=d["seed"], progress=progress)


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


STEPS = ("victim", "evaluator", "gan")


def build(config: dict | None = None, *, work: Path | None = None, device: str = "auto", data_root=None,
          progress: bool = True, log=print, only: tuple[str, ...] = STEPS) -> dict:
    """Train every step not yet done (resuming interrupted ones).

    The steps form a steps.StepGraph with its ledger in `<work>/steps.json`; a step counts as done
    only for the config it was trained with (its hash is recorded). `only` limits the build to some
    steps, so independent steps can train in parallel processes (each keeps its own state in the work
    folder); the result is complete only when every step is done.
    """
    from ddcs_core.models.train_classifier import train_classifier
    from ddcs_core.models.train_gan import train_gan
    from ddcs_core.perceptual import resolve_device
    from ddcs_core.steps import Ledger, Step, StepGraph

    config = copy.deepcopy(config or DEMO_CONFIG)
    work = Path(work or work_dir())
    work.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    data = demo_data(config, data_root, progress)
    train = (data["private_train"].images, data["private_train"].labels)
    test = (data["private_test"].images, data["private_test"].labels)
    ledger = Ledger(work / "steps.json")
    _adopt_done_markers(work, ledger)

    def classifier(name: str) -> Step:
        c = config[name]

        def fn(report, should_stop) -> dict:
            log(f"[build] training the {name} ({c['arch']}, {c['epochs']} epochs) on {len(train[0])} private images")
            metrics = train_classifier(c["arch"], train, test, epochs=c["epochs"], batch_size=c["batch_size"],
                                       lr=c["lr"], seed=c["seed"], device=dev, progress=progress,
                                       checkpoint_path=work / f"{name}.safetensors", resume=True,
                                       config={"num_classes": len(data["private_train"].class_names)})
            return {"seconds": metrics["train_seconds"], "metrics": metrics}
        return Step(name, fn)

    def gan(report, should_stop) -> dict:
        c = config["gan"]
        log(f"[build] training the generator ({c['steps']} steps, batch {c['batch_size']}) on {len(data['public'])} public images")
        summary = train_gan(data["public"].images, steps=c["steps"], batch_size=c["batch_size"], config=c["config"],
                            seed=c["seed"], device=dev, out_dir=work / "gan", progress=progress, resume=True,
                            sample_every=250, ckpt_every=100)
        return {"seconds": summary["train_seconds"], "metrics": summary}

    graph = StepGraph([classifier("victim"), classifier("evaluator"), Step("gan", gan)], ledger)
    for name in graph.select(only):  # a step done for another config is trained again (resuming its state)
        graph.run(name, config_hash=_config_hash(config[name]))
    results, times = {}, {}
    for name in STEPS:
        done = ledger.entry(name, config_hash=_config_hash(config[name]))
        if done is None:
            continue
        results[name], times[name] = done["metrics"], done["seconds"]
        if name != "gan":
            log(f"[build] {name}: held-out top-1 {done['metrics']['test_top1']:.3f}, top-5 {done['metrics']['test_top5']:.3f}")
    complete = set(results) == set(STEPS)
    return {"config": config, "work": str(work), "results": results, "train_seconds": times, "complete": complete,
            "data_fingerprint": data.fingerprint, "class_names": data["private_train"].class_names,
            "data_root": str(data_root) if data_root else None}


def _adopt_done_markers(work: Path, ledger: Ledger) -> None:
    """Work folders built before the ledger kept one `<step>.done.json` per step: take them over."""
    for name in STEPS:
        path = work / f"{name}.done.json"
        if path.is_file() and name not in ledger.read():
            done = json.loads(path.read_text())
            ledger.record(name, done["seconds"], config_hash=done["config_hash"], metrics=done["metrics"])


def export(build_result: dict, out: Path = SHIPPED, progress: bool = True) -> dict:
    """Write the shipped world: fp16 safetensors + manifest (sha256, config, data fingerprint, metrics)."""
    from ddcs_core.models.checkpoints import load_model, save_model, write_manifest

    work = Path(build_result["work"])
    sources = {"victim": work / "victim.safetensors", "evaluator": work / "evaluator.safetensors",
               "generator": work / "gan" / "G_ema.safetensors", "discriminator": work / "gan" / "D.safetensors"}
    files = {}
    for role, src in sources.items():
        model, info = load_model(src)
        meta = {"role": role, "class_names": build_result["class_names"]} if role in ("victim", "evaluator") else {"role": role}
        sha = save_model(out / FILES[role], model, info["arch"], info["config"], meta=meta, half=True)
        files[FILES[role]] = {"role": role, "arch": info["arch"], "sha256": sha}
    world = load_world(out, verify=False)
    figures = measure(world, build_result["config"], build_result.get("data_root"), progress=progress)
    figures["train_seconds"] = build_result["train_seconds"]
    write_manifest(out, files, build_result["config"], build_result["data_fingerprint"], figures)
    return figures


@dataclass
class DemoWorld:
    victim: torch.nn.Module
    evaluator: torch.nn.Module
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    manifest: dict
    folder: Path

    @property
    def class_names(self) -> list[str]:
        return self.manifest["class_names"]


def load_world(folder: Path = SHIPPED, device: str | torch.device = "cpu", verify: bool = True) -> DemoWorld:
    """The shipped models, each refused unless its sha256 matches the manifest."""
    from ddcs_core.models.checkpoints import load_model, verify_manifest

    folder = Path(folder)
    if not folder.is_dir():
        raise DDCSInputError(f"{folder}: no demo world here; {HINT}")
    manifest = verify_manifest(folder) if verify else {"files": {}}
    expected = {name: entry.get("sha256") for name, entry in manifest.get("files", {}).items()}
    models, names = {}, None
    for role, fname in FILES.items():
        if not (folder / fname).is_file():
            raise DDCSInputError(f"{folder / fname}: missing; {HINT} (or train one with `python -m ddcs_core "
                                 "demo build --from-scratch`)")
        if verify and fname not in expected:
            raise DDCSInputError(f"{folder / fname}: not listed in {folder / 'manifest.json'}, so it cannot be "
                                 "verified; restore the manifest or rebuild with `python -m ddcs_core demo build "
                                 "--from-scratch`")
        models[role], info = load_model(folder / fname, expected_sha256=expected.get(fname), device=device,
                                        check_manifest=verify)
        names = names or (info.get("meta") or {}).get("class_names")
    manifest.setdefault("class_names", names)
    return DemoWorld(models["victim"], models["evaluator"], models["generator"], models["discriminator"], manifest, folder)


@torch.no_grad()
def generator_samples(generator: torch.nn.Module, n: int, seed: int, batch: int = 100, truncation_psi: float = 1.0) -> np.ndarray:
    """n uint8 samples from fixed latents (seeded on the CPU, so the same on every device)."""
    from ddcs_core.data.transforms import to_uint8

    device = next(generator.parameters()).device
    z_all = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    out = []
    for i in range(0, n, batch):
        z = z_all[i:i + batch].to(device)
        out.append(to_uint8(generator(z, truncation_psi=truncation_psi, noise_mode="const").clamp(-1, 1)))
    return np.concatenate(out)


def measure(world: DemoWorld, config: dict, data_root=None, progress: bool = True, grid_path: Path | None = None) -> dict:
    """Held-out accuracies of both classifiers, generator FID against the public split, a sample grid."""
    from ddcs_core.metrics import fid
    from ddcs_core.models.train_classifier import evaluate_classifier
    from ddcs_core.models.train_gan import image_grid
    from ddcs_core.perceptual import PerceptualDistance
    from ddcs_core.data.transforms import to_tensor

    data = demo_data(config, data_root, progress)
    test = data["private_test"]
    figures = {"class_names": data["private_train"].class_names, "counts": {k: len(v) for k, v in data.items()}}
    for role in ("victim", "evaluator"):
        acc = evaluate_classifier(getattr(world, role), test.images, test.labels)
        figures[f"{role}_test"] = {k: round(float(v), 4) for k, v in acc.items()}
    n = config["check"]["fid_samples"]
    samples = generator_samples(world.generator, n, config["check"]["seed"])
    metric = PerceptualDistance("alex", device="cpu")
    public = data["public"].images
    rng = np.random.default_rng(config["check"]["seed"])
    real = public[rng.choice(len(public), size=min(n, len(public)), replace=False)]
    f_real, f_fake = metric.embed(real).pooled, metric.embed(samples).pooled
    figures["generator_fid"] = {"value": round(fid(f_real, f_fake), 3), "features": metric.feature_name,
                                "samples": n, "against": f"{len(real)} public images",
                                "note": "FID with the named LPIPS-backbone features, not Inception-v3"}
    grid = image_grid(to_tensor(samples[:64]), 8)
    atomic.write_bytes(grid_path or (world.folder / "samples.png"), _png(grid))
    return figures


def _png(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def check(folder: Path = SHIPPED, data_root=None, progress: bool = True, tolerance: float = 0.02) -> dict:
    """Verify the shipped world: sha256, data fingerprint, and figures recomputed against the manifest."""
    world = load_world(folder)
    manifest = world.manifest
    data = demo_data(manifest["config"], data_root, progress)
    if data.fingerprint != manifest["data_fingerprint"]:
        raise DDCSInputError(f"{folder}: the data under the data root differ from those the world was built on "
                             f"(fingerprint {data.fingerprint[:12]} vs {manifest['data_fingerprint'][:12]})")
    figures = measure(world, manifest["config"], data_root, progress, grid_path=work_dir() / "check-samples.png")
    shipped = manifest["metrics"]
    rows = {}
    for key, now, then in (("victim top-1", figures["victim_test"]["top1"], shipped["victim_test"]["top1"]),
                           ("evaluator top-1", figures["evaluator_test"]["top1"], shipped["evaluator_test"]["top1"]),
                           ("generator FID", figures["generator_fid"]["value"], shipped["generator_fid"]["value"])):
        rows[key] = {"now": now, "manifest": then, "matches": abs(now - then) <= tolerance * max(1.0, abs(then))}
    return {"ok": all(r["matches"] for r in rows.values()), "figures": rows, "grid": str(work_dir() / "check-samples.png")}
