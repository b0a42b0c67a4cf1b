"""Image datasets from a class-per-subfolder tree or an ``.npz``, decoded to one uint8 RGB array.

Every image becomes 8-bit RGB here, once, so later stages (LPIPS, classifiers, metrics) never
have to care about grey, palette, alpha, CMYK or 16-bit sources. A file is an image when PIL
recognises its content (the extension is only a shortcut), and every size is checked against
`Limits` from the file headers before anything is decoded, so a small hostile file cannot take the
machine's memory.
"""

from __future__ import annotations

import os
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from ddcs_core.choices import RESIZE_POLICIES
from ddcs_core.data.transforms import fit_square
from ddcs_core.errors import DDCSInputError

# Files with these extensions are taken as images without sniffing their content first.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

# Everything PIL raises on a corrupt, truncated or hostile file.
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError,
)
_WORKERS = min(16, (os.cpu_count() or 1) + 2)  # PIL releases the GIL while decoding

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_MAX_SET_GB = 4.0


@dataclass(frozen=True)
class Limits:
    """Caps on decoded sizes, checked from headers before decoding; flags or env vars raise them.

    max_image_pixels: width x height of one image (default 4096 x 4096);
    max_set_bytes: decoded bytes of one image set or .npz (default 4 GB).
    """

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_set_bytes: int = int(DEFAULT_MAX_SET_GB * 1e9)

    @classmethod
    def resolve(cls, max_image_pixels: int | None = None, max_set_gb: float | None = None) -> Limits:
        """Explicit values, else $DDCS_MAX_IMAGE_PIXELS / $DDCS_MAX_SET_GB, else the defaults."""
        pixels = max_image_pixels if max_image_pixels is not None else _env_number(
            "DDCS_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)
        gb = max_set_gb if max_set_gb is not None else _env_number("DDCS_MAX_SET_GB", DEFAULT_MAX_SET_GB)
        if not pixels > 0 or not gb > 0:
            raise DDCSInputError(f"image caps must be positive: max image pixels {pixels}, max set GB {gb}")
        return cls(int(pixels), int(float(gb) * 1e9))

    def check_pixels(self, where: str, width: int, height: int) -> None:
        if width * height > self.max_image_pixels:
            raise DDCSInputError(
                f"{where}: declares {width}x{height} = {width * height / 1e6:.1f} megapixels, over the cap of "
                f"{self.max_image_pixels / 1e6:.1f}; raise it with --max-image-pixels N (or DDCS_MAX_IMAGE_PIXELS)"
            )

    def check_bytes(self, where: str, nbytes: int, what: str) -> None:
        if nbytes > self.max_set_bytes:
            raise DDCSInputError(
                f"{where}: {what} decode to {nbytes / 1e9:.2f} GB, over the cap of {self.max_set_bytes / 1e9:.2f} GB; "
                "raise it with --max-set-gb X (or DDCS_MAX_SET_GB)"
            )


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise DDCSInputError(f"${name} must be a number, got {raw!r}") from None


@dataclass
class ImageSet:
    """Images with their labels and provenance, so every reported sample can be traced to a file.

    Args:
        images: uint8 (N, H, W, 3) RGB.
        labels: int64 (N,), indices into `class_names`.
        class_names: the class of each label index (folder names when loaded from a tree).
        paths: per image, its source file, or "FILE.npz#i".
        source: the folder or file the set came from.
        warnings: what loading skipped or changed, for the report.
        resize: how the images were brought to one size (policy, counts), for the report.

    Raises:
        DDCSInputError: arrays of the wrong dtype or shape, or labels outside the class list.
    """

    images: np.ndarray  # uint8 (N, H, W, 3) RGB
    labels: np.ndarray  # int64 (N,), indices into class_names
    class_names: list[str]
    paths: list[str]  # per image: its source file, or "FILE.npz#i"
    source: str  # the folder or file the set came from
    warnings: list[str] = field(default_factory=list)  # what loading skipped or changed, for the report
    resize: dict | None = None  # how the images were brought to one size (policy, counts), for the report

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
        return replace(self, images=self.images[idx], labels=self.labels[idx], class_names=list(self.class_names),
                       paths=[self.paths[i] for i in idx], warnings=list(self.warnings))


def load_images(path: str | Path, *, size: int | None = None, progress: bool = True, resize: str = "stretch",
                limits: Limits | None = None) -> ImageSet:
    """Load a class-per-subfolder image tree or an ``.npz`` (uint8 ``images`` + int ``labels``).

    ``size=None`` keeps the native size and requires all images to share it; ``size=N`` brings every
    image to N×N by the ``resize`` policy (stretch, center-crop or pad; PIL bilinear). ``limits``
    (default: `Limits.resolve()`) caps pixels per image and decoded bytes of the set.

    Args:
        path: a folder with one subfolder per class (any image format PIL reads, found by content),
            or an ``.npz`` with uint8 ``images`` (N, H, W, 3), int ``labels`` and optional ``class_names``.
        size: bring every image to size x size (None: keep the native size).
        progress: show a progress bar while decoding.
        resize: "stretch", "center-crop" or "pad".
        limits: caps on pixels per image and decoded bytes (default: the env/default caps).

    Returns:
        The ImageSet, classes sorted by folder name; what was skipped is in its ``warnings``.

    Raises:
        DDCSInputError: a missing path, an empty or unreadable set, mixed native sizes without
            ``size``, a bad ``resize`` or ``size``, or an image or set over the caps.
    """
    path = Path(path)
    _check_size(size)
    _check_policy(resize)
    limits = limits or Limits.resolve()
    if not path.exists():
        if path.is_symlink():
            raise DDCSInputError(f"{_shown(path)}: dangling symbolic link (to {os.readlink(path)})")
        raise DDCSInputError(f"{_shown(path)}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".npz":
        return _load_npz(path, size, progress, resize, limits)
    if not path.is_dir():
        raise DDCSInputError(f"{_shown(path)}: expected a folder of class subfolders or an .npz file")
    warnings: list[str] = []
    files, labels, class_names = list_image_folder(path, warnings)
    images, native = _read(files, size, None, progress, f"reading {path.name}", resize, limits)
    paths = [_display_path(f, warnings) for f in files]
    return ImageSet(images, labels, class_names, paths, _shown(path), warnings,
                    _resize_summary(native, size, resize, _shown(path), warnings))


def _resize_summary(native: list[tuple[int, int]], size: int | None, policy: str, source: str,
                    warnings: list[str]) -> dict:
    """What resizing did to a set, for the report; a stretch that changed aspect ratios is a warning."""
    resized = sum(1 for wh in native if size is not None and wh != (size, size))
    non_square = sum(1 for w, h in native if w != h)
    if size is not None and policy == "stretch" and non_square:
        warnings.append(f"{source}: {non_square} non-square image(s) were stretched to {size}x{size}, changing their "
                        "aspect ratio; --resize center-crop or --resize pad keeps it")
    sizes = sorted({f"{w}x{h}" for w, h in native})
    return {"policy": policy if resized else "none", "to": size, "resized": resized, "non_square": non_square,
            "native_sizes": sizes[:8] + (["..."] if len(sizes) > 8 else [])}


def _display_path(path: Path, warnings: list[str]) -> str:
    """The path as text that every writer can encode; a non-UTF-8 name is escaped (\\xNN) and reported."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = _shown(path)
        warnings.append(f"{shown}: file name is not valid UTF-8; reported with \\xNN escapes")
        return shown
    return text


def _shown(path: Path | str) -> str:
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def list_image_folder(root: Path, warnings: list[str] | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files of a ``root/<class>/<image>`` tree (sorted), their labels and the class names.

    Files are images when PIL recognises their content; other files are skipped and, with dangling
    symbolic links, reported in ``warnings``.
    """
    root = Path(root)
    warnings = [] if warnings is None else warnings
    top = _scan(root)
    class_names, stray = top.dirs, top.images
    layout = f"expected {_shown(root)}/<class name>/<image file>, one subfolder per class"
    warnings += top.dangling_warnings(root)
    if not class_names:
        if stray:
            raise DDCSInputError(
                f"{_shown(root)}: images lie directly in the folder but no class subfolders; {layout}"
            )
        what = "no class subfolders" + top.found() if top.others else "empty folder, no class subfolders"
        raise DDCSInputError(f"{_shown(root)}: {what}; {layout}")
    if stray:
        raise DDCSInputError(f"{_shown(root)}: image {_shown(stray[0])} lies outside any class subfolder; {layout}")
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, name in enumerate(class_names):
        folder = root / name
        listing = _scan(folder)
        warnings += listing.dangling_warnings(folder)
        if not listing.images:
            raise DDCSInputError(f"{_shown(folder)}: class folder '{_shown(name)}' holds no images{listing.found()}")
        skipped += listing.others
        files.extend(folder / m for m in listing.images)
        labels.extend([label] * len(listing.images))
    if skipped:
        warnings.append(f"{_shown(root)}: skipped {len(skipped)} file(s) that are not images ({_extensions(skipped)})")
    return files, np.asarray(labels, dtype=np.int64), [_display_path(Path(n), warnings) for n in class_names]


@dataclass
class _Listing:
    dirs: list[str]
    images: list[str]
    others: list[str]  # regular files PIL does not recognise
    dangling: list[str]  # symbolic links to nothing

    def found(self) -> str:
        if not self.others:
            return ""
        return f" (found {len(self.others)} other file(s): {_extensions(self.others)}; none is an image PIL can read)"

    def dangling_warnings(self, folder: Path) -> list[str]:
        return [f"{_shown(folder / n)}: dangling symbolic link (to {_shown(os.readlink(folder / n))}), skipped"
                for n in self.dangling]


def _extensions(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for n in names:
        ext = os.path.splitext(n)[1].lower() or "(no extension)"
        counts[ext] = counts.get(ext, 0) + 1
    return ", ".join(f"{_shown(e)} x{c}" for e, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _scan(folder: Path) -> _Listing:
    """Sorted non-hidden subfolders, image files (by extension, else by content), other files, dangling links."""
    listing = _Listing([], [], [], [])
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    listing.dirs.append(e.name)
                elif e.is_file():
                    is_image = os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS or _sniff(Path(e.path))
                    (listing.images if is_image else listing.others).append(e.name)
                elif e.is_symlink() and not os.path.exists(e.path):
                    listing.dangling.append(e.name)
    except OSError as e:
        raise DDCSInputError(f"{_shown(folder)}: cannot read folder ({e.strerror or e})") from e
    for names in (listing.dirs, listing.images, listing.others, listing.dangling):
        names.sort()
    return listing


def _sniff(path: Path) -> bool:
    """True when PIL recognises the file's content as an image format (reads the header only)."""
    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True  # an image, refused with the caps' message when it is read
    except _DECODE_ERRORS:
        return False


def read_images(
    files: Sequence[Path],
    *,
    size: int | None = None,
    transform: Callable[[Image.Image], Image.Image] | None = None,
    progress: bool = True,
    desc: str = "reading images",
    resize: str = "stretch",
    limits: Limits | None = None,
) -> np.ndarray:
    """Decode files in parallel into one uint8 (N, H, W, 3) array, in order.

    ``transform`` runs on each RGB image before the optional resize to ``size``×``size`` (by the
    ``resize`` policy); without either, all images must share one size.
    """
    _check_size(size)
    _check_policy(resize)
    return _read(files, size, transform, progress, desc, resize, limits or Limits.resolve())[0]


def _read(files: Sequence[Path], size: int | None, transform, progress: bool, desc: str, policy: str,
          limits: Limits) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The decoded array and each file's native (width, height)."""
    files = list(files)
    if size is not None:
        limits.check_bytes(desc, len(files) * size * size * 3, f"{len(files)} images of {size}x{size}")

    def one(f: Path) -> tuple[np.ndarray, tuple[int, int]]:
        img = open_rgb(f, limits)
        native = img.size
        if transform is not None:
            try:
                img = transform(img)
            except DDCSInputError as e:
                raise DDCSInputError(f"{_shown(f)}: {e}") from e
        if size is not None:
            img = fit_square(img, size, policy)
        return np.asarray(img, dtype=np.uint8), native

    out: np.ndarray | None = None
    natives: list[tuple[int, int]] = []
    with closing(_ordered_map(one, files, progress, desc)) as arrays:
        for i, (arr, native) in enumerate(arrays):
            if out is None:
                limits.check_bytes(desc, len(files) * arr.nbytes,
                                   f"{len(files)} images of {arr.shape[1]}x{arr.shape[0]}")
                out = np.empty((len(files),) + arr.shape, dtype=np.uint8)
            elif arr.shape != out.shape[1:]:
                raise DDCSInputError(
                    f"images differ in size: {_shown(files[0])} is {out.shape[2]}x{out.shape[1]}, "
                    f"{_shown(files[i])} is {arr.shape[1]}x{arr.shape[0]}; pass --size N to resize all to N×N"
                )
            out[i] = arr
            natives.append(native)
    if out is None:
        raise DDCSInputError("no image files to read")
    return out, natives


def open_rgb(path: Path, limits: Limits | None = None) -> Image.Image:
    """Fully decode one image file to 8-bit RGB; a corrupt, truncated or oversized file raises naming it.

    The pixel cap is checked from the header, before decoding.
    """
    limits = limits or Limits.resolve()
    _allow_pil_pixels(limits.max_image_pixels)
    try:
        with Image.open(path) as img:
            limits.check_pixels(_shown(path), *img.size)
            img.load()
            return _to_rgb(img, path)
    except DDCSInputError:
        raise
    except _DECODE_ERRORS as e:
        raise DDCSInputError(f"{_shown(path)}: cannot read image ({type(e).__name__}: {e})") from e


def _allow_pil_pixels(cap: int) -> None:
    """PIL refuses images over twice its own MAX_IMAGE_PIXELS; a cap raised past it must be honoured."""
    if Image.MAX_IMAGE_PIXELS is not None and cap > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = cap


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


def _load_npz(path: Path, size: int | None, progress: bool, policy: str, limits: Limits) -> ImageSet:
    _check_npz_headers(path, limits)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, MemoryError) as e:
        raise DDCSInputError(f"{_shown(path)}: cannot read npz ({type(e).__name__}: {e})") from e
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise DDCSInputError(f"{_shown(path)}: missing key(s) {missing}; an npz needs 'images' and 'labels'")
    images = _npz_images(path, arrays["images"])
    labels, class_names = _npz_labels(path, arrays["labels"], arrays.get("class_names"), len(images))
    native = [(int(images.shape[2]), int(images.shape[1]))] * len(images)
    if size is not None and images.shape[1:3] != (size, size):
        images = np.stack(list(_ordered_map(
            lambda a: np.asarray(fit_square(Image.fromarray(a), size, policy)),
            list(images), progress, f"resizing {path.name}",
        )))
    warnings: list[str] = []
    summary = _resize_summary(native, size, policy, _shown(path), warnings)
    return ImageSet(images, labels, class_names, [f"{_shown(path)}#{i}" for i in range(len(images))], _shown(path),
                    warnings, summary)


def _check_npz_headers(path: Path, limits: Limits) -> None:
    """Refuse a non-zip file and arrays whose headers declare more than the caps, before numpy allocates them."""
    try:
        with open(path, "rb") as fh:
            is_zip = zipfile.is_zipfile(fh)
    except OSError as e:
        raise DDCSInputError(f"{_shown(path)}: cannot read file ({e.strerror or e})") from e
    if not is_zip:
        raise DDCSInputError(f"{_shown(path)}: not an .npz archive (not a zip file); save it with numpy.savez")
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[:-4]
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)  # 3.0 differs only in text encoding
                    shape, _, dtype = read_header(f)
                    header_len = f.tell()
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes > info.file_size - header_len:
                    raise DDCSInputError(
                        f"{_shown(path)}: array '{key}' declares {shape} {dtype} ({nbytes / 1e9:.3g} GB) but holds "
                        f"{max(0, info.file_size - header_len)} bytes; the file is corrupt or forged"
                    )
                if key == "images" and len(shape) >= 3:
                    limits.check_pixels(f"{_shown(path)}: 'images'", int(shape[2]), int(shape[1]))
                total += nbytes
    except DDCSInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, SyntaxError, TypeError) as e:
        raise DDCSInputError(f"{_shown(path)}: cannot read npz ({type(e).__name__}: {e})") from e
    limits.check_bytes(_shown(path), total, "its arrays")


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


def _check_policy(policy: str) -> None:
    if policy not in RESIZE_POLICIES:
        raise DDCSInputError(f"--resize must be one of {', '.join(RESIZE_POLICIES)}, got {policy!r}")


def _check_size(size: int | None) -> None:
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise DDCSInputError(f"size must be a positive integer or None, got {size!r}")
