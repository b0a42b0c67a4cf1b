"""`python -m ddcs_core generator {import,sample}`: StyleGAN2-ADA network pickles without running their code."""

from __future__ import annotations

import io
import json
from pathlib import Path

from ddcs_core.choices import NOISE_MODES
from ddcs_core.errors import DDCSInputError


def add_generator(sub) -> None:
    p = sub.add_parser("generator", help="StyleGAN2-ADA network pickles: import to safetensors, sample images")
    gsub = p.add_subparsers(dest="what", required=True)
    i = gsub.add_parser("import", help="convert a network-snapshot-*.pkl into safetensors + config.json + manifest")
    i.add_argument("pkl", help="stylegan2-ada-pytorch network pickle (read without executing anything in it)")
    i.add_argument("--out", required=True, help="new folder for G/G_ema/D.safetensors, config.json, manifest.json")
    s = gsub.add_parser("sample", help="images of given latents: float32 NCHW .npy (raw [-1, 1]) or a .png grid")
    s.add_argument("--generator", required=True, help="network pickle, imported folder, or its G_ema.safetensors")
    s.add_argument("--latents", required=True, help="Z.npy, float32 (N, z_dim)")
    s.add_argument("--out", required=True, help="OUT.npy (raw output, no clamping) or OUT.png (a grid)")
    s.add_argument("--network", choices=["G_ema", "G"], default="G_ema", help="which generator of the file")
    s.add_argument("--truncation-psi", type=float, default=1.0)
    s.add_argument("--truncation-cutoff", type=int, help="truncate only the first N ws (default: all)")
    s.add_argument("--noise-mode", choices=NOISE_MODES, default="const")
    s.add_argument("--class", type=int, dest="class_index", help="class index of a conditional generator")
    s.add_argument("--fp16", action="store_true",
                   help="half precision in the layers the pickle marks fp16, as NVIDIA's code runs them (default: float32)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")


def _save(out: Path, images) -> None:
    import numpy as np
    import torch

    from ddcs_core import atomic
    from ddcs_core.models.train_gan import save_grid

    if out.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, images)
        atomic.write_bytes(out, buf.getvalue())
    elif out.suffix.lower() == ".png":
        x = torch.from_numpy(images)
        if x.shape[1] != 3:  # grey or RGBA: show the first channel as grey
            x = x[:, :1].repeat(1, 3, 1, 1)
        save_grid(out, x, int(np.ceil(np.sqrt(len(x)))))
    else:
        raise DDCSInputError(f"--out {out} must end in .npy or .png")


def run_generator(args) -> int:
    from ddcs_core.models import sg2ada_import as imp
    from ddcs_core.perceptual import resolve_device

    if args.what == "import":
        config = imp.import_network_pickle(args.pkl, args.out)
        print(json.dumps({"out": str(args.out), "networks": sorted(config["networks"]),
                          "source_sha256": config["source_sha256"], "summary": imp.describe(args.out)}, indent=2))
        return 0
    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".png"):
        raise DDCSInputError(f"--out {out} must end in .npy or .png")
    if args.batch_size < 1:
        raise DDCSInputError("--batch-size must be at least 1")
    G = imp.load_network(args.generator, args.network, device=resolve_device(args.device))
    G.set_fp16(args.fp16)
    z = imp.read_latents(args.latents, G.z_dim)
    images = imp.sample(G, z, args.truncation_psi, args.noise_mode, args.class_index, args.truncation_cutoff,
                        args.batch_size)
    _save(out, images)
    print(json.dumps({"out": str(out), "shape": list(images.shape), "min": float(images.min()),
                      "max": float(images.max())}))
    return 0
