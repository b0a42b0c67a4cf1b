"""Atomic writes: a reader never sees a half-written file, an interrupted write loses nothing.

`write_set` extends this to several files that belong together (an evaluation's report, table and
arrays): they are written into a fresh hidden folder, and one symbolic link, switched by a single
rename, says which folder is current. The files' usual names are fixed links through it, so readers
open `report.json` as before and never see a new report beside old arrays.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ddcs_core.errors import DDCSInputError


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    def _save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    return _atomic(path, _save)


def check_writable(folder: str | Path, what: str) -> Path:
    """Fail now, naming `what`, when `folder` cannot be created or written (before any expensive work).

    Probes by creating and removing a file in the folder, or in its nearest existing parent, so a
    read-only mount or a missing permission is caught whoever runs it.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DDCSInputError(f"{what} {folder}: exists and is not a folder")
    probe = folder
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DDCSInputError(f"{what} {folder}: {probe} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ddcs-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise DDCSInputError(f"{what} {folder}: cannot write in {probe} ({e.strerror or e})") from None
    return folder


def write_set(folder: str | Path, name: str, writers: dict[str, Callable[[Path], None]]) -> Path:
    """Write files that belong together so that readers see all old or all new ones.

    Layout in `folder`: `.<name>-<id>/` (one complete set), `.<name>` (link to the current set) and,
    for each file, `<file>` -> `.<name>/<file>`. Leftovers of an interrupted earlier write are removed
    first; files of the older layout (plain files) are moved into a set before the switch.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pointer = folder / f".{name}"
    clean_set_leftovers(folder, name, list(writers))
    staging = _new_set_folder(folder, name)
    try:
        for file, write in writers.items():
            write(staging / file)
        _adopt_plain_files(folder, name, list(writers))
        for file in writers:
            _link(folder / file, f".{name}/{file}")
        previous = _current(pointer)
        _link(pointer, staging.name)  # the commit: one rename
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is not None and previous.name != staging.name:
        shutil.rmtree(previous, ignore_errors=True)
    return staging


def _new_set_folder(folder: Path, name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
    os.chmod(path, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the folder the mode mkdir would
    return path


def current_set(folder: str | Path, name: str) -> Path | None:
    """The folder holding the current complete set, or None when `folder` has none in this layout."""
    return _current(Path(folder) / f".{name}")


def clean_set_leftovers(folder: str | Path, name: str, files: list[str]) -> list[Path]:
    """Remove what an interrupted `write_set` (or an older one-file-at-a-time writer) left behind."""
    folder = Path(folder)
    current = _current(folder / f".{name}")
    removed = []
    for entry in folder.glob(f".{name}-*"):
        if current is not None and entry.name == current.name:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    for pattern in [f"..{name}.*.tmp"] + [f".{f}.*.tmp" for f in files]:
        for entry in folder.glob(pattern):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _current(pointer: Path) -> Path | None:
    if not pointer.is_symlink():
        return None
    target = pointer.parent / os.readlink(pointer)
    return target if target.is_dir() else None


def _link(path: Path, target: str) -> None:
    """Make `path` a symbolic link to `target` (relative), replacing whatever is there in one rename."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _adopt_plain_files(folder: Path, name: str, files: list[str]) -> None:
    """Move a set written as plain files (the older layout) into a set folder, link by link.

    Each step replaces a file by a link to identical content, so readers never see a mix.
    """
    if _current(folder / f".{name}") is not None:
        return
    plain = [f for f in files if (folder / f).is_file() and not (folder / f).is_symlink()]
    if not plain:
        return
    old = _new_set_folder(folder, name)
    for f in plain:
        try:
            os.link(folder / f, old / f)
        except OSError:
            shutil.copy2(folder / f, old / f)
    _link(folder / f".{name}", old.name)
    for f in plain:
        _link(folder / f, f".{name}/{f}")
