"""How far `--profile paper` is from `--profile official` on 64 px faces, and official from the official logic.

Targets: the first T photos of P LFW people (250x250); reconstruction stand-ins: their next R photos at
64 px (PIL bilinear), as a 64 px generator would hand them over. Prints one JSON line per profile and the
relative gaps. `--reference` also runs the independent re-implementation of the official evaluate.py
from tests/test_official_profile.py (LPIPS-VGG at 256 px: about a second per image on a CPU).

    python benchmarks/profile_gap.py --people 8 --targets 3 --recon 3 --reference
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddcs_core.evaluate import EvalConfig, evaluate  # noqa: E402

RES = 64


def build_world(lfw: Path, root: Path, people: int, n_targets: int, n_recon: int) -> tuple[Path, Path]:
    names = [d.name for d in sorted(lfw.iterdir()) if d.is_dir() and len(os.listdir(d)) >= n_targets + n_recon]
    for name in names[:people]:
        photos = sorted((lfw / name).iterdir())
        for sub, files in (("targets", photos[:n_targets]), ("recon", photos[n_targets:n_targets + n_recon])):
            (root / sub / name).mkdir(parents=True)
            for f in files:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if sub == "recon":
                        im.resize((RES, RES), Image.BILINEAR).save(root / sub / name / f"{f.stem}.png")
                    else:
                        im.save(root / sub / name / f"{f.stem}.png")
    return root / "targets", root / "recon"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DDCS_DATA", "data"))
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--targets", type=int, default=3)
    ap.add_argument("--recon", type=int, default=3)
    ap.add_argument("--reference", action="store_true", help="also run the official logic's re-implementation")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets, recon = build_world(Path(args.data_root) / "lfw-deepfunneled", Path(tmp), args.people,
                                     args.targets, args.recon)
        out = {}
        for profile in ("paper", "official"):
            t0 = time.perf_counter()
            r = evaluate(targets, recon, Path(tmp) / profile, EvalConfig(profile=profile, features="lpips"),
                         progress=False).report
            out[profile] = {"ddcs": r["ddcs"], "ddcs_avg": r["ddcs_avg"], "matched": r["matched"],
                            "targets": r["counts"]["targets"], "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps({"profile": profile, **out[profile]}), flush=True)
        gap = {k: out["paper"][k] / out["official"][k] - 1 for k in ("ddcs", "ddcs_avg")}
        print(json.dumps({"paper_vs_official_relative": gap}), flush=True)
        if args.reference:
            from tests.test_official_profile import official_ddcs

            ddcs, ddcs_avg, matched = official_ddcs(targets, recon, "vgg")
            print(json.dumps({"official_logic": {"ddcs": ddcs, "ddcs_avg": ddcs_avg, "matched": len(matched)},
                              "official_vs_logic_relative": {"ddcs": out["official"]["ddcs"] / ddcs - 1,
                                                             "ddcs_avg": out["official"]["ddcs_avg"] / ddcs_avg - 1}}))


if __name__ == "__main__":
    main()
