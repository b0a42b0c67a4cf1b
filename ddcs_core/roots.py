"""Which server folders a path typed into the app may name: only those under explicit data roots.

The app may face a network, so a typed path is never trusted: it is resolved (symlinks followed, `..`
collapsed) and must then lie under a root, and so must every class folder and image file a folder holds.
A refusal outside the roots reads the same whether the path exists, is unreadable or is missing, and
never carries an OS error text, so the app cannot be used to learn what exists elsewhere on the server.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ddcs_core.errors import DDCSInputError


class DataRoots:
    """The folders whose contents a user of the app may read (and copy into a run)."""

    def __init__(self, roots: Iterable[str | Path]) -> None:
        self.roots = tuple(dict.fromkeys(Path(os.path.realpath(r)) for r in roots))
        if not self.roots:
            raise DDCSInputError("no data roots: give at least one --data-root")

    @classmethod
    def for_store(cls, store: str | Path, data_roots: Iterable[str | Path] | None = None,
                  environ: Mapping[str, str] = os.environ) -> DataRoots:
        """The run store plus `data_roots` (each must be a folder), or plus $DDCS_DATA when none are given
        and it names a folder (a stale variable must not stop the app)."""
        extra = list(data_roots or [])
        for root in extra:
            if not Path(root).is_dir():
                raise DDCSInputError(f"--data-root {root}: not a folder")
        if not extra and environ.get("DDCS_DATA") and Path(environ["DDCS_DATA"]).is_dir():
            extra = [environ["DDCS_DATA"]]
        return cls([store, *extra])

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def contains(self, path: str | Path) -> bool:
        """Whether `path`, after resolving symlinks, lies under a root."""
        real = Path(os.path.realpath(path))
        return any(real.is_relative_to(root) for root in self.roots)

    def resolve(self, text: str, what: str) -> Path:
        """The existing path `text` names under a root, resolved; a relative path is tried under each root."""
        raw = (text or "").strip()
        if not raw:
            raise DDCSInputError(f"{what}: enter a path under the data roots ({self.describe()}) or upload a file")
        if "\0" in raw:
            raise self._outside(raw, what)
        given = Path(raw)
        candidates = [given] if given.is_absolute() else [root / given for root in self.roots]
        inside = [Path(os.path.realpath(c)) for c in candidates if self.contains(c)]
        if not inside:
            raise self._outside(raw, what)
        for path in inside:
            try:
                if path.exists():
                    return path
            except OSError as exc:
                raise DDCSInputError(f"{what} {raw}: cannot be read ({exc.strerror})") from None
        raise DDCSInputError(f"{what} {raw}: not found under the data roots ({self.describe()})")

    def image_source(self, text: str, what: str) -> Path:
        """A folder (one subfolder per class, every entry under a root) or an .npz file under a root."""
        path = self.resolve(text, what)
        if path.is_file():
            if path.suffix.lower() != ".npz":
                raise DDCSInputError(f"{what} {text.strip()}: must be a folder with one subfolder per class, "
                                     "or an .npz file")
            return path
        if not path.is_dir():
            raise DDCSInputError(f"{what} {text.strip()}: neither a folder nor a file")
        self._check_tree(path, text.strip(), what)
        return path

    def _check_tree(self, folder: Path, raw: str, what: str) -> None:
        """Refuse a class folder or image that a symlink leads outside the roots (the loader follows links)."""
        try:
            for entry in _entries(folder):
                if entry.is_symlink() and not self.contains(entry.path):
                    raise DDCSInputError(f"{what} {raw}: {entry.name} leads outside the data roots")
                if entry.is_dir():
                    for member in _entries(Path(entry.path)):
                        if member.is_symlink() and not self.contains(member.path):
                            raise DDCSInputError(f"{what} {raw}: {entry.name}/{member.name} leads outside "
                                                 "the data roots")
        except OSError:
            raise DDCSInputError(f"{what} {raw}: a class folder cannot be read") from None

    def _outside(self, raw: str, what: str) -> DDCSInputError:
        return DDCSInputError(f"{what} {raw}: not under the data roots ({self.describe()}); pick a path under "
                              "them or upload a .zip or .npz")


def _entries(folder: Path) -> list[os.DirEntry]:
    """Non-hidden entries of a folder, as the image loader sees them."""
    with os.scandir(folder) as it:
        return [e for e in it if not e.name.startswith(".")]
