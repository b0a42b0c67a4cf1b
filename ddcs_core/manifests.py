"""Reading a sha256 manifest (`manifest.json` with a `files` mapping), torch-free: the demo world, imported
generators and the shipped demo run all verify their files against one."""

from __future__ import annotations

import json
from pathlib import Path

from ddcs_core.errors import DDCSInputError


def read_manifest(path: Path, missing_hint: str = "") -> tuple[dict, dict]:
    """(the manifest, its `files` mapping); a missing, non-JSON or file-less manifest is a DDCSInputError
    naming `path` (`missing_hint` says how to make a missing one)."""
    if not path.is_file():
        raise DDCSInputError(f"manifest {path} not found" + (f"; {missing_hint}" if missing_hint else ""))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DDCSInputError(f"manifest {path} is not valid JSON ({exc})") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise DDCSInputError(f"manifest {path} has no 'files' mapping")
    return manifest, files
