"""The demo world's data: LFW deep-funneled, split by identity into private (victim) and public (GAN).

Private = people with at least ``min_images`` images (62 people, 3,023 images on the real data), a
few held out per person to measure classifier accuracy; public = everybody else (10,210 images).
No identity is in both, as the attack's threat model requires.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from ddcs_core.atomic import write_npz
from ddcs_core.data.images import ImageSet, list_image_folder, read_images
from ddcs_core.data.transforms import center_crop_face
from ddcs_core.errors import DDCSInputError

LFW_URL = "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz"
LFW_MD5 = "68331da3eb755a505a502b5aacb3c201"  # published on the LFW site for lfw-deepfunneled.tgz
LFW_IMAGES = 13233
LFW_DIRNAME = "lfw-deepfunneled"
# Deep-funneled faces are centred in the 250×250 frame; the central 128 px hold the whole face,
# hairline to chin, with little background (checked on sample grids; 110 cuts chins, 150 adds shoulders).
DEFAULT_CROP = 128
PARTS = ("private_train", "private_test", "public")
_CACHE_VERSION = 1  # part of the fingerprint: bump when the preprocessing changes


def default_data_root() -> Path:
    """``$DDCS_DATA``, else ``./data``."""
    return Path(os.environ.get("DDCS_DATA", "data"))


def lfw_dir(data_root: Path | None = None) -> Path:
    """``<data_root>/lfw-deepfunneled``; missing → an error saying how to get it."""
    root = Path(data_root) if data_root is not None else default_data_root()
    path = root / LFW_DIRNAME
    if not path.is_dir():
        raise DDCSInputError(
            f"LFW not found: looked for {path.resolve()}. Run `python -m ddcs_core data download-lfw` "
            f"or set DDCS_DATA to a folder that contains {LFW_DIRNAME}/"
        )
    return path


def download_lfw(data_root: Path | None = None) -> Path:
    """Download the official deep-funneled tarball, check its MD5, extract it atomically."""
    root = Path(data_root) if data_root is not None else default_data_root()
    target = root / LFW_DIRNAME
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".lfw-", suffix=".tgz.part", dir=root)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            md5 = _fetch(LFW_URL, f, root)
        if md5 != LFW_MD5:
            raise DDCSInputError(
                f"downloaded {LFW_URL} has MD5 {md5}, expected {LFW_MD5}; the download is corrupt, try again"
            )
        return extract_lfw(tmp, root, expected_images=LFW_IMAGES)
    finally:
        tmp.unlink(missing_ok=True)


def extract_lfw(archive: Path, data_root: Path, *, expected_images: int | None = LFW_IMAGES) -> Path:
    """Check a deep-funneled tarball's layout and image count, then extract it to
    ``<data_root>/lfw-deepfunneled`` via a temporary folder and one rename, so a half extraction never
    looks like a dataset."""
    archive, data_root = Path(archive), Path(data_root)
    target = data_root / LFW_DIRNAME
    if not archive.is_file():
        raise DDCSInputError(f"{archive}: archive not found")
    if target.exists():
        raise DDCSInputError(f"{target} already exists; remove it to extract again")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            _check_lfw_members(archive, members, expected_images)
            data_root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".lfw-extract-", dir=data_root))
            try:
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **extra)
                os.replace(tmp / LFW_DIRNAME, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError) as e:
        raise DDCSInputError(f"{archive}: not a readable tar archive ({type(e).__name__}: {e})") from e
    return target


def _check_lfw_members(archive: Path, members: list[tarfile.TarInfo], expected: int | None) -> None:
    images = 0
    for m in members:
        parts = Path(m.name).parts
        ok_kind = m.isfile() or m.isdir()
        if not ok_kind or not parts or parts[0] != LFW_DIRNAME or ".." in parts or len(parts) > 3:
            raise DDCSInputError(
                f"{archive}: unexpected entry {m.name!r}; expected {LFW_DIRNAME}/<Person>/<Person>_NNNN.jpg"
            )
        images += m.isfile() and len(parts) == 3 and m.name.lower().endswith(".jpg")
    if expected is not None and images != expected:
        raise DDCSInputError(f"{archive}: holds {images} images, expected {expected} for LFW deep-funneled")


def _fetch(url: str, out: BinaryIO, root: Path) -> str:
    """Stream url into the open file ``out`` with a progress bar; returns the MD5 of the bytes."""
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="LFW", file=sys.stderr) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise DDCSInputError(
            f"could not download {url} ({e}). Download it manually (e.g. in a browser), then extract it "
            f"with `tar -xzf lfw-deepfunneled.tgz -C {root.resolve()}` so that "
            f"{(root / LFW_DIRNAME).resolve()}/<Person>/<Person>_0001.jpg exist, or set DDCS_DATA to a "
            f"folder that contains {LFW_DIRNAME}/"
        ) from e
    return md5.hexdigest()


@dataclass(frozen=True)
class LFWSplit:
    """Which LFW files go where; labels index ``people(part)``, file paths are relative to ``root``."""

    root: Path
    private_people: list[str]
    public_people: list[str]
    files: dict[str, list[str]]  # part -> "Person/Person_0001.jpg"
    labels: dict[str, np.ndarray]  # part -> int64 person index

    def people(self, part: str) -> list[str]:
        """The class names for a part: private people for both private parts, public people for public."""
        if part not in PARTS:
            raise DDCSInputError(f"unknown part {part!r}; one of {PARTS}")
        return self.public_people if part == "public" else self.private_people


def make_split(
    lfw_root: Path, min_images: int = 20, holdout_per_person: int = 3, seed: int = 0
) -> LFWSplit:
    """Identity-disjoint split from the file listing only (no decoding), deterministic in ``seed``."""
    if min_images < 1 or not 0 <= holdout_per_person < min_images:
        raise DDCSInputError(
            f"need min_images >= 1 and 0 <= holdout_per_person < min_images, "
            f"got min_images={min_images}, holdout_per_person={holdout_per_person}"
        )
    lfw_root = Path(lfw_root)
    if not lfw_root.is_dir():
        raise DDCSInputError(f"{lfw_root}: LFW folder not found")
    files, labels, names = list_image_folder(lfw_root)
    per_person = [[] for _ in names]
    for f, lab in zip(files, labels):
        per_person[lab].append(f"{names[lab]}/{f.name}")
    private = [i for i, fs in enumerate(per_person) if len(fs) >= min_images]
    public = [i for i, fs in enumerate(per_person) if len(fs) < min_images]
    if not private or not public:
        raise DDCSInputError(
            f"{lfw_root}: {len(private)} people with >= {min_images} images and {len(public)} with fewer; "
            "both the private and the public set need people"
        )
    assert not set(private) & set(public), "an identity is both private and public"
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[list[str], list[int]]] = {p: ([], []) for p in PARTS}
    for label, i in enumerate(private):
        test = set(rng.choice(len(per_person[i]), size=holdout_per_person, replace=False).tolist())
        for k, rel in enumerate(per_person[i]):
            part = out["private_test" if k in test else "private_train"]
            part[0].append(rel)
            part[1].append(label)
    for label, i in enumerate(public):
        out["public"][0].extend(per_person[i])
        out["public"][1].extend([label] * len(per_person[i]))
    return LFWSplit(
        root=lfw_root,
        private_people=[names[i] for i in private],
        public_people=[names[i] for i in public],
        files={p: fs for p, (fs, _) in out.items()},
        labels={p: np.asarray(ls, dtype=np.int64) for p, (_, ls) in out.items()},
    )


class LFWData(dict[str, ImageSet]):
    """The prepared parts by name ("private_train", "private_test", "public"), plus the cache's
    ``fingerprint`` so later steps (trained models, attacks) can key their own caches on it."""

    def __init__(self, parts: dict[str, ImageSet], fingerprint: str, cache_path: Path, split: LFWSplit):
        super().__init__(parts)
        self.fingerprint = fingerprint
        self.cache_path = cache_path
        self.split = split


def prepare_lfw(
    lfw_root: Path,
    cache_dir: Path,
    size: int = 64,
    crop: int = DEFAULT_CROP,
    min_images: int = 20,
    holdout_per_person: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> LFWData:
    """Split LFW, centre-crop and resize the faces, cache them as one npz keyed by a fingerprint of
    the file list (names and byte sizes) and the parameters; a second call decodes nothing."""
    split = make_split(lfw_root, min_images, holdout_per_person, seed)
    params = {"size": size, "crop": crop, "min_images": min_images, "holdout_per_person": holdout_per_person,
              "seed": seed, "version": _CACHE_VERSION}
    fingerprint = _fingerprint(split, params)
    cache_path = Path(cache_dir) / f"lfw-{fingerprint[:16]}.npz"
    arrays = _read_cache(cache_path, fingerprint)
    if arrays is None:
        rels = [rel for part in PARTS for rel in split.files[part]]
        images = read_images(
            [split.root / r for r in rels],
            transform=lambda img: center_crop_face(img, crop, size),
            progress=progress,
            desc="preparing LFW",
        )
        arrays, start = {}, 0
        for part in PARTS:
            n = len(split.files[part])
            arrays[f"{part}_images"] = images[start:start + n]
            start += n
        meta = {"fingerprint": np.asarray(fingerprint), "params": np.asarray(json.dumps(params))}
        write_npz(cache_path, **meta, **arrays)
    parts = {
        part: ImageSet(
            images=arrays[f"{part}_images"],
            labels=split.labels[part],
            class_names=list(split.people(part)),
            paths=[os.path.join(split.root, r) for r in split.files[part]],
            source=str(split.root),
        )
        for part in PARTS
    }
    return LFWData(parts, fingerprint, cache_path, split)


def _fingerprint(split: LFWSplit, params: dict) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for rel in sorted(rel for part in PARTS for rel in split.files[part]):
        h.update(f"{rel}\0{os.stat(os.path.join(split.root, rel)).st_size}\n".encode())
    return h.hexdigest()


def _read_cache(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent, unreadable or for other inputs (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            return {f"{p}_images": z[f"{p}_images"] for p in PARTS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
