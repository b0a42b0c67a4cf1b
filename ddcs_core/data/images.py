"""Image datasets from a class-per-subfolder tree or an ``.npz``, decoded to one uint8 RGB array.

Every image becomes 8-bit RGB here, once, so later stages (LPIPS, classifiers, metrics) never
have to care about grey, palette, alpha, CMYK or 16-bit sources.
"""

from __future__ import annotations

import os
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from ddcs_core.errors import DDCSInputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

# Everything PIL raises on a corrupt, truncated or hostile file.
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError,
)
_WORKERS = min(16, (os.cpu_count() or 1) + 2)  # PIL releases the GIL while decoding

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ImageSet:
    """Images with their labels and provenance, so every reported sample can be traced to a file."""

    images: np.ndarray  # uint8 (N, H, W, 3) RGB
    labels: np.ndarray  # int64 (N,), indices into class_names
    class_names: list[str]
    paths: list[str]  # per image: its source file, or "FILE.npz#i"
    source: str  # the folder or file the set came from

    def __post_init__(self) -> None:
        imgs, labels = self.images, self.labels
        if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[3] != 3:
            raise DDCSInputError(
                f"{self.source}: images must be uint8 (N, H, W, 3), got {imgs.dtype} {imgs.shape}"
            )
        if labels.dtype != np.int64 or labels.shape != (len(imgs),) or len(self.paths) != len(imgs):
            raise DDCSInputError(
                f"{self.source}: need one int64 label and one path per image, got {len(imgs)} images, "
                f"labels {labels.dtype} {labels.shape}, {len(self.paths)} paths"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DDCSInputError(
                f"{self.source}: labels must lie in [0, {len(self.class_names)}), "
                f"got [{labels.min()}, {labels.max()}]"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, mask_or_idx: np.ndarray | Sequence[int] | Sequence[bool]) -> ImageSet:
        """The selected images (boolean mask or indices), keeping the class list so labels stay valid."""
        sel = np.asarray(mask_or_idx)
        if sel.dtype == bool:
            if sel.shape != (len(self),):
                raise DDCSInputError(f"subset mask has shape {sel.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(sel)
        elif sel.size == 0:
            idx = np.zeros(0, dtype=np.int64)
        elif np.issubdtype(sel.dtype, np.integer) and sel.ndim == 1:
            idx = sel.astype(np.int64)
            if idx.min() < -len(self) or idx.max() >= len(self):
                raise DDCSInputError(f"subset index out of range for {len(self)} images")
        else:
            raise DDCSInputError(f"subset needs a boolean mask or 1-D integer indices, got {sel.dtype}")
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=list(self.class_names),
            paths=[self.paths[i] for i in idx],
            source=self.source,
        )


def load_images(path: str | Path, *, size: int | None = None, progress: bool = True) -> ImageSet:
    """Load a class-per-subfolder image tree or an ``.npz`` (uint8 ``images`` + int ``labels``).

    ``size=None`` keeps the native size and requires all images to share it; ``size=N`` resizes every
    image to N×N with PIL bilinear.
    """
    path = Path(path)
    _check_size(size)
    if not path.exists():
        raise DDCSInputError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".npz":
        return _load_npz(path, size, progress)
    if not path.is_dir():
        raise DDCSInputError(f"{path}: expected a folder of class subfolders or an .npz file")
    files, labels, class_names = list_image_folder(path)
    images = read_images(files, size=size, progress=progress, desc=f"reading {path.name}")
    return ImageSet(images, labels, class_names, [str(f) for f in files], str(path))


def list_image_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files of a ``root/<class>/<image>`` tree (sorted), their labels and the class names."""
    root = Path(root)
    class_names, stray = _scan(root)
    layout = f"expected {root}/<class name>/<image file>, one subfolder per class"
    if not class_names:
        if stray:
            raise DDCSInputError(
                f"{root}: images lie directly in the folder but no class subfolders; {layout}"
            )
        raise DDCSInputError(f"{root}: empty folder, no class subfolders; {layout}")
    if stray:
        raise DDCSInputError(f"{root}: image {stray[0]} lies outside any class subfolder; {layout}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        folder = root / name
        members = _scan(folder)[1]
        if not members:
            raise DDCSInputError(f"{folder}: class folder '{name}' holds no images")
        files.extend(folder / m for m in members)
        labels.extend([label] * len(members))
    return files, np.asarray(labels, dtype=np.int64), class_names


def _scan(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted non-hidden subfolder names and image file names of one folder (scandir: no stat per file)."""
    dirs: list[str] = []
    images: list[str] = []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                dirs.append(e.name)
            elif e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(e.name)
    return sorted(dirs), sorted(images)


def read_images(
    files: Sequence[Path],
    *,
    size: int | None = None,
    transform: Callable[[Image.Image], Image.Image] | None = None,
    progress: bool = True,
    desc: str = "reading images",
) -> np.ndarray:
    """Decode files in parallel into one uint8 (N, H, W, 3) array, in order.

    ``transform`` runs on each RGB image before the optional resize to ``size``×``size``; without
    either, all images must share one size.
    """
    _check_size(size)

    def one(f: Path) -> np.ndarray:
        img = open_rgb(f)
        if transform is not None:
            try:
                img = transform(img)
            except DDCSInputError as e:
                raise DDCSInputError(f"{f}: {e}") from e
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)

    out: np.ndarray | None = None
    with closing(_ordered_map(one, list(files), progress, desc)) as arrays:
        for i, arr in enumerate(arrays):
            if out is None:
                out = np.empty((len(files),) + arr.shape, dtype=np.uint8)
            elif arr.shape != out.shape[1:]:
                raise DDCSInputError(
                    f"images differ in size: {files[0]} is {out.shape[2]}x{out.shape[1]}, "
                    f"{files[i]} is {arr.shape[1]}x{arr.shape[0]}; pass --size N to resize all to N×N"
                )
            out[i] = arr
    if out is None:
        raise DDCSInputError("no image files to read")
    return out


def open_rgb(path: Path) -> Image.Image:
    """Fully decode one image file to 8-bit RGB; a corrupt or truncated file raises naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img, path)
    except DDCSInputError:
        raise
    except _DECODE_ERRORS as e:
        raise DDCSInputError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """8-bit RGB from any PIL mode: 16-bit grey is rescaled (not clipped), alpha is dropped."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DDCSInputError(f"{path}: integer image outside the 16-bit range [0, 65535]")
        grey = ((a * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    if img.mode == "F":
        raise DDCSInputError(
            f"{path}: floating-point images (PIL mode F) are not supported; save as 8 or 16 bit"
        )
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # honours palette transparency without PIL's warning
    return img if img.mode == "RGB" else img.convert("RGB")


def _load_npz(path: Path, size: int | None, progress: bool) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DDCSInputError(f"{path}: cannot read npz ({type(e).__name__}: {e})") from e
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise DDCSInputError(f"{path}: missing key(s) {missing}; an npz needs 'images' and 'labels'")
    images = _npz_images(path, arrays["images"])
    labels, class_names = _npz_labels(path, arrays["labels"], arrays.get("class_names"), len(images))
    if size is not None and images.shape[1:3] != (size, size):
        images = np.stack(list(_ordered_map(
            lambda a: np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)),
            list(images), progress, f"resizing {path.name}",
        )))
    return ImageSet(images, labels, class_names, [f"{path}#{i}" for i in range(len(images))], str(path))


def _npz_images(path: Path, images: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB only: a float array's range ([0,1]? [-1,1]?) cannot be guessed safely."""
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
            raise DDCSInputError(f"{path}: 'images' contains NaN or inf")
        raise DDCSInputError(
            f"{path}: 'images' must be uint8 in [0, 255], got {images.dtype}; "
            "convert e.g. floats in [0, 1] with (x * 255).round().astype(np.uint8)"
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3, 4):
        raise DDCSInputError(
            f"{path}: 'images' must be N×H×W or N×H×W×C with C in 1, 3, 4 (channels last), "
            f"got {images.shape}"
        )
    if len(images) == 0:
        raise DDCSInputError(f"{path}: 'images' holds no images")
    if images.shape[3] == 1:
        return np.ascontiguousarray(np.repeat(images, 3, axis=3))
    return np.ascontiguousarray(images[..., :3])


def _npz_labels(
    path: Path, labels: np.ndarray, names: np.ndarray | None, n: int
) -> tuple[np.ndarray, list[str]]:
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        raise DDCSInputError(
            f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != n:
        raise DDCSInputError(f"{path}: {len(labels)} labels for {n} images")
    if names is None:
        uniq = np.unique(labels)
        return np.searchsorted(uniq, labels).astype(np.int64), [str(u) for u in uniq]
    if names.dtype.kind != "U" or names.ndim != 1:
        raise DDCSInputError(
            f"{path}: 'class_names' must be a 1-D str array, got {names.dtype} {names.shape}"
        )
    class_names = [str(s) for s in names]
    if len(set(class_names)) != len(class_names):
        raise DDCSInputError(f"{path}: 'class_names' has duplicates")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise DDCSInputError(
            f"{path}: labels must index 'class_names' (0..{len(class_names) - 1}), "
            f"got [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64), class_names


def _ordered_map(fn: Callable[[T], R], items: list[T], progress: bool, desc: str) -> Iterator[R]:
    """fn over items on a thread pool, yielded in order; on error the pending work is cancelled."""
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=None if progress else True, file=sys.stderr)
    pool = ThreadPoolExecutor(max_workers=_WORKERS)
    try:
        futures: list[Future[R]] = [pool.submit(fn, x) for x in items]
        for fut in futures:
            yield fut.result()
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _check_size(size: int | None) -> None:
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise DDCSInputError(f"size must be a positive integer or None, got {size!r}")
