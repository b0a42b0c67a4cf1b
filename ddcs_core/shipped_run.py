"""The shipped demo run: a finished demo attack stored compactly in `checkpoints/demo-run/`, so that
`make run` opens onto results at once instead of an empty store while the attack runs.

What is shipped, and what is rebuilt on the user's machine (and checked against the manifest):

    manifest.json                  sha256 + size of every shipped file, how the run was made, and the
                                   content digests of everything rebuilt
    config.json steps.json         the run's own files, verbatim (steps.json: every step done, with its time)
    reproduction.{json,md} map.npz
    generators/*.json grids/*.png
    pools/<pool>/report.json       each pool's evaluation, verbatim
    pools/<pool>/evaluation.npz
    pools/<pool>/confidence.npz
    pools/<pool>/images.png        reconstructions as one lossless PNG grid (exact uint8 pixels)
    pools/<pool>/recon-meta.npz    their labels, latents, class names and names
    rebuilt: targets.npz           the private LFW split, decoded again from the data root (the split is
                                   deterministic; its fingerprint and a pixel digest must match)
    rebuilt: dual-<mode> pools     vanilla ∪ transfer-<mode>, as the experiment builds them
    rebuilt: pools/*/targets.csv   from the evaluation arrays, with this machine's file paths

Installing is all-or-nothing: the run is assembled in a hidden folder of the store and renamed into
place. A file in the shipped folder that the manifest does not list, or whose sha256 differs, is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import ddcs_core
from ddcs_core import atomic
from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import HEAD_SHAPE, sha256_file, update_with_arrays
from ddcs_core.manifests import read_manifest
from ddcs_core.pool_names import VANILLA_POOL
from ddcs_core.runs import Run, RunStore

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RUN = REPO / "checkpoints" / "demo-run"
MANIFEST = "manifest.json"
PRECOMPUTED = "precomputed.json"  # in an installed run: where it came from (the app labels it with this)
FORMAT = "1"
ATTACK_COMMAND = "python -m ddcs_core run --config assets/configs/demo.yaml"
SHIP_COMMAND = "python -m ddcs_core demo ship-run"
# `demo check --run`: how far a re-evaluated pool's DDCS and DDCS avg may be from the shipped numbers,
# relative. Float summation order differs across machines and BLAS builds; the assignment itself
# must not change.
CHECK_RTOL = 1e-5
GRID_COLUMNS = 16
VERBATIM = ("config.json", "steps.json", "reproduction.json", "reproduction.md", "map.npz")
VERBATIM_GLOBS = ("generators/*.json", "grids/*.png")
POOL_VERBATIM = ("report.json", "evaluation.npz", "confidence.npz")


# digests ---------------------------------------------------------------------------------------------
def images_digest(images: ImageSet, latents: np.ndarray | None = None, with_paths: bool = True) -> str:
    """sha256 over pixels, labels, class names (and the per-image names and latents when given)."""
    h = hashlib.sha256()
    update_with_arrays(h, (images.images, images.labels.astype(np.int64)), HEAD_SHAPE)
    h.update(json.dumps(list(images.class_names)).encode())
    if with_paths:
        h.update(json.dumps(list(images.paths)).encode())
    if latents is not None:
        update_with_arrays(h, (latents.astype(np.float32),), HEAD_SHAPE)
    return h.hexdigest()


# image packing ---------------------------------------------------------------------------------------
def pack_png(images: np.ndarray, columns: int = GRID_COLUMNS) -> bytes:
    """uint8 (N, H, W, 3) as one PNG grid, row-major; lossless, so unpacking gives the same bytes."""
    from PIL import Image

    n, h, w, _ = images.shape
    rows = max(1, -(-n // columns))
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def unpack_png(path: Path, n: int, size: tuple[int, int], columns: int = GRID_COLUMNS) -> np.ndarray:
    from PIL import Image

    h, w = size
    with Image.open(path) as im:
        grid = np.asarray(im.convert("RGB"))
    rows = max(1, -(-n // columns))
    if grid.shape != (rows * h, columns * w, 3):
        raise DDCSInputError(f"{path}: a {grid.shape[1]}x{grid.shape[0]} grid, expected {columns * w}x{rows * h} "
                             f"for {n} images of {w}x{h}")
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        out[i] = grid[r * h:(r + 1) * h, c * w:(c + 1) * w]
    return out


# export ----------------------------------------------------------------------------------------------
def _dual_parts(run: Run, pool: str) -> list[str] | None:
    """The two pools a dual pool is the union of, when it is exactly that (else None: ship it whole)."""
    if not pool.startswith("dual-"):
        return None
    parts = [VANILLA_POOL, f"transfer-{pool.removeprefix('dual-')}"]
    if any(p not in run.pools() for p in parts):
        return None
    built = _concat(*(run.recon(p) for p in parts), source=pool)
    recon, latents = run.recon(pool)
    return parts if images_digest(*built) == images_digest(recon, latents) else None


def _concat(first: tuple[ImageSet, np.ndarray], second: tuple[ImageSet, np.ndarray],
            source: str) -> tuple[ImageSet, np.ndarray]:
    """As attacks.dual_pool builds the dual pool's ImageSet: every image of both, in order."""
    (a, la), (b, lb) = first, second
    images = ImageSet(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]),
                      list(a.class_names), list(a.paths) + list(b.paths), source)
    return images, np.concatenate([la, lb])


def export_run(run_path: str | Path, out: str | Path = SHIPPED_RUN, made_with: str = ATTACK_COMMAND,
               log=print) -> dict:
    """Write the compact form of a finished demo run to `out` (replacing it whole); returns the manifest."""
    from ddcs_core.experiment import run_finished

    run = Run(run_path)
    if not run.exists():
        raise DDCSInputError(f"{run.path}: not a run (no config.json)")
    if run.config.get("kind") != "experiment" or not run_finished(run):
        raise DDCSInputError(f"{run.path}: not a finished attack run (its steps.json has no finished 'table' step)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel in VERBATIM:
            _copy(run.path / rel, tmp / rel)
        for pattern in VERBATIM_GLOBS:
            for src in sorted(run.path.glob(pattern)):
                _copy(src, tmp / src.relative_to(run.path))
        pools = {}
        for pool in run.pools():
            if not run.has_evaluation(pool):
                raise DDCSInputError(f"{run.pool_dir(pool)}: pool {pool} is not evaluated")
            for name in POOL_VERBATIM:
                _copy(run.pool_dir(pool) / name, tmp / "pools" / pool / name)
            recon, latents = run.recon(pool)
            entry = {"n": len(recon), "size": list(recon.size), "digest": images_digest(recon, latents)}
            parts = _dual_parts(run, pool)
            if parts:
                entry["union_of"] = parts
            else:
                atomic.write_bytes(tmp / "pools" / pool / "images.png", pack_png(recon.images))
                atomic.write_npz(tmp / "pools" / pool / "recon-meta.npz", labels=recon.labels, latents=latents,
                                 class_names=np.array(recon.class_names), paths=np.array(recon.paths),
                                 source=np.array(recon.source))
            pools[pool] = entry
        targets = run.targets()
        steps = json.loads((run.path / "steps.json").read_text())
        finished = max(s.get("finished", "") for s in steps.values())
        files = {str(p.relative_to(tmp)): {"sha256": sha256_file(p), "size": p.stat().st_size}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT, "kind": "demo-run", "run": run.name,
            "made": {"command": made_with, "finished": finished, "ddcs_explorer": ddcs_core.__version__,
                     "shipped_by": SHIP_COMMAND,
                     "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "attack_seconds": round(sum(float(s.get("seconds", 0)) for s in steps.values()), 1)},
            "targets": {"n": len(targets), "digest": images_digest(targets, with_paths=False),
                        "data_fingerprint": run.config["world"].get("data_fingerprint")},
            "pools": pools,
            "files": files,
            "total_bytes": sum(f["size"] for f in files.values()),
        }
        atomic.write_json(tmp / MANIFEST, manifest)
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"shipped run written to {out}: {manifest['total_bytes'] / 1e6:.1f} MB in {len(files) + 1} files")
    return manifest


def _copy(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise DDCSInputError(f"{src}: missing from the run")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


# verify and install ----------------------------------------------------------------------------------
def verify(folder: str | Path = SHIPPED_RUN) -> dict:
    """The manifest, after checking every shipped file: listed, present, same size and sha256, and no
    file the manifest does not list."""
    folder = Path(folder)
    path = folder / MANIFEST
    manifest, files = read_manifest(path, f"`{SHIP_COMMAND}` makes the shipped demo run")
    if manifest.get("format") != FORMAT:
        raise DDCSInputError(f"{path}: not a shipped-run manifest of format {FORMAT}")
    root = folder.resolve()
    for rel, entry in files.items():
        p = (folder / rel).resolve()
        if not p.is_relative_to(root) or rel == MANIFEST:
            raise DDCSInputError(f"{path}: entry {rel!r} points outside the folder")
        if not p.is_file():
            raise DDCSInputError(f"{folder / rel}: listed in {path} but missing")
        if p.stat().st_size != entry.get("size") or sha256_file(p) != entry.get("sha256"):
            raise DDCSInputError(f"{folder / rel}: does not match its sha256 in {path} (modified or corrupt); refused")
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if (p.is_file() or p.is_symlink()) and rel != MANIFEST and rel not in files:
            raise DDCSInputError(f"{p}: not listed in {path}; refused (remove it, or `{SHIP_COMMAND}` again)")
    return manifest


def shipped_targets(config: dict, manifest: dict, data_root: str | Path | None = None,
                    progress: bool = False) -> ImageSet:
    """The run's targets decoded again from LFW under the data root, refused unless they are the same
    images the run was made on (data fingerprint and pixel digest)."""
    from ddcs_core import pipeline

    world = config["world"]
    folder = Path(world["folder"])
    folder = folder if folder.is_absolute() else REPO / folder
    world_manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
    now = {name: entry.get("sha256") for name, entry in world_manifest.get("files", {}).items()}
    if now != world["files"]:
        raise DDCSInputError(f"the shipped demo run was made on another world than {folder}; "
                             f"make it again with `{SHIP_COMMAND}`")
    data = pipeline.demo_data(world_manifest["config"], data_root or config["experiment"]["world"].get("data_root"),
                              progress)
    targets = data["private_train"]
    expected = manifest["targets"]
    if data.fingerprint != expected["data_fingerprint"] or images_digest(targets, with_paths=False) != expected["digest"]:
        raise DDCSInputError(f"the LFW faces under {targets.source} differ from those the shipped demo run was made on "
                             "(fingerprint or pixels); re-run the demo attack instead")
    return targets


def install(store: RunStore, name: str = "demo", folder: str | Path = SHIPPED_RUN,
            data_root: str | Path | None = None, progress: bool = False, targets: ImageSet | None = None) -> Run:
    """The shipped run as a normal run `<store>/<name>`, assembled aside and renamed into place.

    The targets are decoded from LFW under the data root unless given (they must match either way).
    """
    folder = Path(folder)
    manifest = verify(folder)
    run = store.run(name)
    if run.path.exists():
        raise DDCSInputError(f"{run.path} exists; the shipped run installs only into a new run")
    config = json.loads((folder / "config.json").read_text())
    if targets is None:
        targets = shipped_targets(config, manifest, data_root, progress)
    elif images_digest(targets, with_paths=False) != manifest["targets"]["digest"]:
        raise DDCSInputError(f"the targets given differ from those the shipped run {folder} was made on")
    store.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.installing.", dir=store.root))
    try:
        staged = Run(tmp)
        for rel in manifest["files"]:
            if not rel.startswith("pools/") or rel.split("/")[-1] in POOL_VERBATIM:
                _copy(folder / rel, tmp / rel)
        staged.write_targets(targets)
        built: dict[str, tuple[ImageSet, np.ndarray]] = {}
        for pool, entry in sorted(manifest["pools"].items(), key=lambda kv: "union_of" in kv[1]):
            if "union_of" in entry:
                a, b = (built[p] for p in entry["union_of"])
                recon, latents = _concat(a, b, source=pool)
            else:
                recon, latents = _unpack_pool(folder / "pools" / pool, entry)
            if images_digest(recon, latents) != entry["digest"]:
                raise DDCSInputError(f"{folder / 'pools' / pool}: the rebuilt reconstructions differ from those "
                                     "evaluated; refused")
            built[pool] = (recon, latents)
            staged.write_recon(pool, recon, latents)
            atomic.write_text(staged.pool_dir(pool) / "targets.csv", targets_csv_of(staged, pool, targets, recon))
        _refresh_map_fingerprints(staged)
        atomic.write_json(tmp / PRECOMPUTED, {**manifest["made"], "from": str(folder)})
        tmp.rename(run.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run


def _unpack_pool(folder: Path, entry: dict) -> tuple[ImageSet, np.ndarray]:
    with np.load(folder / "recon-meta.npz", allow_pickle=False) as z:
        meta = {k: z[k] for k in z.files}
    images = unpack_png(folder / "images.png", int(entry["n"]), tuple(entry["size"]))
    recon = ImageSet(images, meta["labels"].astype(np.int64), [str(c) for c in meta["class_names"]],
                     [str(p) for p in meta["paths"]], str(meta["source"]))
    return recon, meta["latents"]


def targets_csv_of(run: Run, pool: str, targets: ImageSet, recon: ImageSet) -> str:
    """A pool's targets.csv from its stored evaluation, as the evaluation writes it."""
    from ddcs_core.evaluate import Evaluation, targets_csv
    from ddcs_core.metrics.ddcs import ddcs_from_assignment

    ev = run.evaluation(pool)
    a = ev.arrays
    result = ddcs_from_assignment(a["recon_assigned"], a["recon_dist"], len(targets))
    return targets_csv(Evaluation(ev.report, result, targets, recon, a["recon_assigned"], a["recon_dist"]))


def _refresh_map_fingerprints(run: Run) -> None:
    """The map was computed from these exact pixels (their digests were checked), but the rebuilt .npz
    files differ in bytes (zip timestamps): record the new files' fingerprints so it stays current."""
    arrays = run.map()
    if arrays is None:
        return
    arrays["targets_fingerprint"] = np.array(sha256_file(run.path / "targets.npz"))
    arrays["fingerprints"] = np.array([sha256_file(run.pool_dir(str(p)) / "recon.npz") for p in arrays["pools"]],
                                      dtype=str)
    run.write_map(**arrays)


def step_times(folder: str | Path | None = SHIPPED_RUN) -> dict[str, float]:
    """Seconds per step of the shipped run (the status line's reference for ETAs); {} without one."""
    path = Path(folder) / "steps.json" if folder else None
    try:
        steps = json.loads(path.read_text()) if path and path.is_file() else {}
        return {name: float(s["seconds"]) for name, s in steps.items() if s.get("done") and "seconds" in s}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def precomputed(run: Run) -> dict | None:
    """How an installed shipped run was made (command, dates), None for a run made here."""
    path = run.path / PRECOMPUTED
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


# check -----------------------------------------------------------------------------------------------
def check(folder: str | Path = SHIPPED_RUN, pool: str = VANILLA_POOL, data_root: str | Path | None = None,
          device: str = "auto", progress: bool = False, targets: ImageSet | None = None,
          eval_model: str | None = None) -> dict:
    """Re-evaluate one pool of the shipped run from its shipped reconstructions and compare with the
    numbers stored with it: DDCS and DDCS avg within CHECK_RTOL (relative), the others reported.

    `targets` and `eval_model` default to the LFW split and the world's evaluator the run was made with.
    """
    from ddcs_core.evaluate import EvalConfig, evaluate_sets
    from ddcs_core.pipeline import FILES

    folder = Path(folder)
    manifest = verify(folder)
    if pool not in manifest["pools"]:
        raise DDCSInputError(f"--pool {pool}: the shipped run has pools {', '.join(sorted(manifest['pools']))}")
    with tempfile.TemporaryDirectory() as tmp:
        run = install(RunStore(tmp), "check", folder, data_root, progress, targets)
        config = run.config
        recon, _ = run.recon(pool)
        world = Path(config["world"]["folder"])
        evaluator = eval_model or str((world if world.is_absolute() else REPO / world) / FILES["evaluator"])
        settings = EvalConfig(**config["experiment"]["evaluation"], eval_model=evaluator, device=device)
        now = evaluate_sets(run.targets(), recon, settings, progress=progress).report
        then = run.evaluation(pool).report
    figures = {}
    for key, get, strict in (("ddcs", lambda r: r["ddcs"], True), ("ddcs_avg", lambda r: r["ddcs_avg"], True),
                             ("matched", lambda r: r["matched"], False),
                             ("coverage", lambda r: r["prdc"].get("coverage"), False),
                             ("fid", lambda r: r["fid"]["value"], False),
                             ("top1", lambda r: (r.get("attack_accuracy") or {}).get("top1"), False)):
        a, b = get(now), get(then)
        rel = None if a is None or b is None else abs(a - b) / max(abs(b), 1e-300)
        figures[key] = {"now": a, "shipped": b, "relative_difference": rel,
                        **({"within_tolerance": rel is not None and rel <= CHECK_RTOL} if strict else {})}
    ok = all(f.get("within_tolerance", True) for f in figures.values())
    return {"ok": ok, "pool": pool, "tolerance": {"relative": CHECK_RTOL, "on": ["ddcs", "ddcs_avg"]},
            "made": manifest["made"], "figures": figures}
