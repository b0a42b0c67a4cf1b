"""What each NGD projection keeps of the victim's entropy gradient, on a world's pre-trained generator.

For N images G(z), z from the prior, the plain gradient g = ∂L_adv/∂x (the same g for every method),
then each method's applied step P̂g as transfer computes it (same bases, same scaling). Prints one
JSON line per method: transfer.projection_diagnostics (kept ‖VVᵀg‖/‖g‖, cos(g, P̂g), first-order
L_adv gain vs the entropy step, ‖P̂g‖/‖g‖) and the basis's eigenvalue scale. A method is a list of
`transfer.` overrides, as in a config:

    python benchmarks/ngd_diagnostics.py --images 4 \\
        --method "reference-alex-spectral:" --method "reference-alex-none:ngd_scale=none" \\
        --method "damped:projection=damped" --method "paper:ngd_preset=paper"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddcs_core import pipeline  # noqa: E402
from ddcs_core.transfer import (AdversarialTerm, TransferConfig, basis_scale, default_embed_fn,  # noqa: E402
                                image_gradient)


def method_config(spec: str, images: int, k: int) -> tuple[str, TransferConfig]:
    """'name:key=value,key=value' → (name, the ngd TransferConfig with batch_size = images)."""
    name, _, rest = spec.partition(":")
    d = {"mode": "ngd", "batch_size": images, "reference_latents": images}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, _, value = item.partition("=")
        d[key.strip()] = yaml.safe_load(value)
    d.setdefault("k", k)
    return name, TransferConfig.from_dict(d)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default=str(pipeline.REPO / "checkpoints" / "demo"))
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--method", action="append", required=True)
    args = p.parse_args()
    world = pipeline.load_world(Path(args.world), device=torch.device("cpu"))
    G, victim = world.generator.eval(), world.victim.eval().requires_grad_(False)
    z = torch.randn(args.images, G.z_dim, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        x = G(z, noise_mode="const")
    for spec in args.method:
        name, c = method_config(spec, args.images, args.k)
        t = time.perf_counter()
        term = AdversarialTerm(c, victim, default_embed_fn(torch.device("cpu"), c.lpips_net),
                               torch.Generator().manual_seed(args.seed))
        if c.projection == "reference":
            term.prepare_reference(G)
        term(x.clone().requires_grad_(True))
        g, loss = image_gradient(victim, x, c.augment, torch.Generator().manual_seed(args.seed))
        print(json.dumps({"method": name, "label": c.method_label(), "lam": c.lam, "images": args.images,
                          "L_adv": loss, **term.diagnostics, **basis_scale(term.projector.basis),
                          "grad_norm": g.flatten(1).norm(dim=1).mean().item(),
                          "seconds": round(time.perf_counter() - t, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
