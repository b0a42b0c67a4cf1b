"""Images for the browser as inline PNG data URIs, made from the run's arrays.

The app never hands the browser a file path for an image: thumbnails come from the uint8 arrays in the
run's npz files, and a grid PNG is decoded and re-encoded before it is shown, so nothing outside the
run store can be served by asking for it.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ddcs_core.errors import DDCSInputError

MAX_GRID_BYTES = 64 * 2**20
MAX_GRID_PIXELS = 40_000_000


def png_data_uri(image: np.ndarray, max_side: int | None = None, lossless: bool = True) -> str:
    """A uint8 (H, W, 3) array as a data URI, shrunk (never enlarged) to max_side.

    Lossless PNG where pixels are compared (detail, map preview); JPEG (q=90) for gallery thumbnails,
    about 7x faster to encode and 4x smaller, which keeps a 40-card page light.
    """
    img = Image.fromarray(np.ascontiguousarray(image))
    if max_side is not None and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.BILINEAR)
    buf = io.BytesIO()
    if lossless:
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=90)
    mime = "image/png" if lossless else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def grid_data_uri(path: Path) -> str:
    """A grid image file of the run, decoded and re-encoded as PNG; bad files raise naming the file."""
    if not path.is_file():
        raise DDCSInputError(f"{path}: missing")
    if path.stat().st_size > MAX_GRID_BYTES:
        raise DDCSInputError(f"{path}: larger than {MAX_GRID_BYTES >> 20} MiB, not shown")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_GRID_PIXELS:
                raise DDCSInputError(f"{path}: {img.width}x{img.height} is too large to show")
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DDCSInputError(f"{path}: not a readable image ({exc})") from exc
    return png_data_uri(rgb)
