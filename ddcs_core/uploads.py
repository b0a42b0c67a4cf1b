"""Image sets brought from a browser: an uploaded .zip (one folder per class) or .npz, unpacked safely.

An upload is hostile until checked: its member names must stay inside the folder they are unpacked into
(no absolute names, no `..`, no symlinks), and its member count, total unpacked size and per-member
compression ratio are capped before a byte is written, so a small archive cannot fill the disk.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ddcs_core.errors import DDCSInputError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadLimits:
    """Caps on one upload; raise them (app.py --max-upload-gb) for real large data."""

    max_members: int = 100_000
    max_total_bytes: int = 2 << 30
    max_ratio: float = 200.0  # unpacked / packed size of one member
    ratio_exempt_bytes: int = 1 << 20  # members smaller than this are never refused for their ratio

    @classmethod
    def for_gb(cls, gb: float) -> UploadLimits:
        return cls(max_total_bytes=int(gb * (1 << 30)))


def unpack_upload(upload: str | Path, dest: Path, limits: UploadLimits = UploadLimits(),
                  label: str | None = None) -> Path:
    """The image source an uploaded file holds, unpacked into the new folder `dest`: the class-per-folder
    tree of a .zip, or the .npz itself. Errors name the upload by `label` (its file name by default)."""
    upload = Path(upload)
    label = label or upload.name
    suffix = upload.suffix.lower()
    if suffix not in (".zip", ".npz"):
        raise DDCSInputError(f"upload {label}: must be a .zip (one folder per class) or an .npz file")
    try:
        with zipfile.ZipFile(upload) as archive:
            members = _checked_members(archive, label, limits, allow_folders=suffix == ".zip")
            dest.mkdir(parents=True)
            if suffix == ".npz":
                target = dest / "images.npz"
                shutil.copyfile(upload, target)
                return target
            for info in members:
                _extract(archive, info, dest, label)
    except zipfile.BadZipFile as exc:
        raise DDCSInputError(f"upload {label}: not a valid {suffix[1:]} archive ({exc})") from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, or a compression zipfile cannot read
        raise DDCSInputError(f"upload {label}: cannot unpack ({exc})") from None
    except OSError as exc:
        raise DDCSInputError(f"upload {label}: cannot be read or unpacked ({exc.strerror or exc})") from None
    return _class_root(dest, label)


def _checked_members(archive: zipfile.ZipFile, label: str, limits: UploadLimits,
                     allow_folders: bool) -> list[zipfile.ZipInfo]:
    """The members to unpack, after every name, type and size check; nothing is written before this."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise DDCSInputError(f"upload {label}: {len(infos):,} members, more than the cap of "
                             f"{limits.max_members:,}")
    total = 0
    kept = []
    for info in infos:
        name = info.filename
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise DDCSInputError(f"upload {label}: member {name!r} is a symlink; symlinks are refused")
        parts = PurePosixPath(name).parts
        if (not name or name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":")
                or any(p == ".." for p in parts)):
            raise DDCSInputError(f"upload {label}: member {name!r} is an absolute path or leaves the archive's "
                                 "folder; refused")
        if not allow_folders and (len(parts) != 1 or info.is_dir()):
            raise DDCSInputError(f"upload {label}: an .npz holds arrays only, found member {name!r}")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise DDCSInputError(f"upload {label}: unpacks to more than {_size(limits.max_total_bytes)}, the cap "
                                 "(app.py --max-upload-gb raises it)")
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > limits.ratio_exempt_bytes and ratio > limits.max_ratio:
            raise DDCSInputError(f"upload {label}: member {name!r} unpacks {ratio:.0f} times its packed size "
                                 f"(cap {limits.max_ratio:.0f}); refused as a likely zip bomb")
        if info.is_dir() or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue
        kept.append(info)
    return kept


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, label: str) -> None:
    target = dest.joinpath(*PurePosixPath(info.filename).parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise DDCSInputError(f"upload {label}: member {info.filename!r} leaves the archive's folder; refused")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as src, open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise DDCSInputError(f"upload {label}: member {info.filename!r} is larger than it declares")
            out.write(chunk)


def _class_root(dest: Path, label: str) -> Path:
    """The folder holding the class folders: `dest`, or the single folder the archive wraps them in."""
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DDCSInputError(f"upload {label}: the archive holds no files")
    if len(entries) == 1 and entries[0].is_dir() and any(p.is_dir() for p in entries[0].iterdir()):
        return entries[0]
    return dest


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"
