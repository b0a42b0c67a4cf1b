"""Image loading (folders and npz), colour-mode normalisation, bad-input errors, tensor transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddcs_core.data.images import ImageSet, load_images
from ddcs_core.data.transforms import center_crop_face, resize, to_tensor, to_uint8
from ddcs_core.errors import DDCSInputError

RNG = np.random.default_rng(0)


def _rgb(h: int = 6, w: int = 6) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    (img.convert(mode) if mode else img).save(path)
    return path


# --- folders -----------------------------------------------------------------------------------


def test_folder_layout_formats_and_hidden_files(tmp_path: Path) -> None:
    a = _rgb()
    _save(tmp_path / "bob" / "x.png", a)
    _save(tmp_path / "bob" / "y.BMP", _rgb())
    _save(tmp_path / "bob" / "z.TIFF", _rgb())
    _save(tmp_path / "alice" / "p.jpg", _rgb())
    _save(tmp_path / "alice" / "q.webp", _rgb())
    _save(tmp_path / "alice" / ".hidden.png", _rgb())
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    _save(tmp_path / ".cache" / "c.png", _rgb())
    (tmp_path / ".DS_Store").write_bytes(b"\0")

    s = load_images(tmp_path, progress=False)
    assert s.class_names == ["alice", "bob"]
    assert s.labels.tolist() == [0, 0, 1, 1, 1]
    assert s.labels.dtype == np.int64
    assert [Path(p).name for p in s.paths] == ["p.jpg", "q.webp", "x.png", "y.BMP", "z.TIFF"]
    assert s.images.shape == (5, 6, 6, 3) and s.images.dtype == np.uint8
    assert len(s) == 5 and s.size == (6, 6) and s.source == str(tmp_path)
    np.testing.assert_array_equal(s.images[2], a)  # lossless png round trip


def _load_one(tmp_path: Path, name: str, img: Image.Image) -> np.ndarray:
    path = tmp_path / "c" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return load_images(tmp_path, progress=False).images[0]


def test_grey_becomes_three_equal_channels(tmp_path: Path) -> None:
    g = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    out = _load_one(tmp_path, "g.png", Image.fromarray(g))
    assert out.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped(tmp_path: Path, mode: str) -> None:
    a = _rgb()
    img = Image.fromarray(a).convert(mode)
    img.putalpha(0)  # fully transparent must not turn black
    out = _load_one(tmp_path, "a.png", img)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(a).convert(mode[:-1]).convert("RGB")))


def test_palette_becomes_rgb(tmp_path: Path) -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    a[:2] = (255, 0, 0)
    a[2:] = (0, 0, 255)
    out = _load_one(tmp_path, "p.png", Image.fromarray(a).convert("P", palette=Image.ADAPTIVE, colors=4))
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize(
    ("name", "dtype"), [("i16.png", np.uint16), ("i16b.tif", ">u2"), ("i32.tif", np.int32)]
)
def test_16_bit_is_rescaled_not_clipped(tmp_path: Path, name: str, dtype: str) -> None:
    v = np.array([[0, 257, 32768, 65535]], dtype=np.int64)
    img = Image.fromarray(v.astype(dtype))
    out = _load_one(tmp_path, name, img)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((4, 4, 3), (200, 30, 60), np.uint8)).convert("CMYK")
    out = _load_one(tmp_path, "k.tif", img)
    np.testing.assert_array_equal(out[0, 0], [200, 30, 60])


def test_mixed_sizes_need_size(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "small.png", _rgb(6, 6))
    _save(tmp_path / "a" / "wide.png", _rgb(6, 9))
    with pytest.raises(DDCSInputError, match=r"small\.png.*wide\.png.*--size"):
        load_images(tmp_path, progress=False)
    s = load_images(tmp_path, size=4, progress=False)
    assert s.images.shape == (2, 4, 4, 3)
    expected = Image.open(tmp_path / "a" / "wide.png").convert("RGB").resize((4, 4), Image.BILINEAR)
    np.testing.assert_array_equal(s.images[1], np.asarray(expected))


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DDCSInputError, match="nope"):
        load_images(tmp_path / "nope")


def test_neither_folder_nor_npz(tmp_path: Path) -> None:
    f = tmp_path / "data.csv"
    f.write_text("1,2")
    with pytest.raises(DDCSInputError, match=r"data\.csv.*folder.*npz"):
        load_images(f)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DDCSInputError, match="empty folder"):
        load_images(tmp_path)


def test_images_without_class_subfolders(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", _rgb())
    with pytest.raises(DDCSInputError, match="no class subfolders.*<class name>/<image file>"):
        load_images(tmp_path)


def test_stray_image_beside_class_folders(tmp_path: Path) -> None:
    _save(tmp_path / "c" / "a.png", _rgb())
    _save(tmp_path / "stray.png", _rgb())
    with pytest.raises(DDCSInputError, match="stray.png"):
        load_images(tmp_path)


def test_empty_class_folder(tmp_path: Path) -> None:
    _save(tmp_path / "full" / "a.png", _rgb())
    (tmp_path / "hollow").mkdir()
    (tmp_path / "hollow" / "readme.txt").write_text("x")
    with pytest.raises(DDCSInputError, match="'hollow' holds no images"):
        load_images(tmp_path)


def test_corrupt_image(tmp_path: Path) -> None:
    _save(tmp_path / "c" / "good.png", _rgb())
    (tmp_path / "c" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DDCSInputError, match=r"bad\.png"):
        load_images(tmp_path, progress=False)


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = _save(tmp_path / "c" / "cut.jpg", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(DDCSInputError, match=r"cut\.jpg"):
        load_images(tmp_path, progress=False)


def test_bad_size_argument(tmp_path: Path) -> None:
    _save(tmp_path / "c" / "a.png", _rgb())
    with pytest.raises(DDCSInputError, match="size"):
        load_images(tmp_path, size=0)


# --- npz ---------------------------------------------------------------------------------------


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "set.npz"
    np.savez(path, **arrays)
    return path


def test_npz_with_class_names(tmp_path: Path) -> None:
    imgs = RNG.integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    path = _npz(tmp_path, images=imgs, labels=np.array([1, 0, 1], np.int32), class_names=np.array(["a", "b"]))
    s = load_images(path, progress=False)
    np.testing.assert_array_equal(s.images, imgs)
    assert s.labels.tolist() == [1, 0, 1] and s.labels.dtype == np.int64
    assert s.class_names == ["a", "b"]
    assert s.paths == [f"{path}#0", f"{path}#1", f"{path}#2"] and s.source == str(path)


def test_npz_default_class_names_keep_label_order(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    s = load_images(_npz(tmp_path, images=grey, labels=np.array([7, 2, 7])), progress=False)
    assert s.class_names == ["2", "7"] and s.labels.tolist() == [1, 0, 1]
    assert s.images.shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(s.images[..., 2], grey)


@pytest.mark.parametrize("channels", [1, 4])
def test_npz_channels(tmp_path: Path, channels: int) -> None:
    imgs = RNG.integers(0, 256, (2, 4, 4, channels), dtype=np.uint8)
    s = load_images(_npz(tmp_path, images=imgs, labels=np.zeros(2, np.int64)), progress=False)
    assert s.images.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(s.images[..., 0], imgs[..., 0])


def test_npz_resize(tmp_path: Path) -> None:
    imgs = RNG.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    s = load_images(_npz(tmp_path, images=imgs, labels=np.zeros(2, np.int64)), size=4, progress=False)
    expected = np.asarray(Image.fromarray(imgs[1]).resize((4, 4), Image.BILINEAR))
    np.testing.assert_array_equal(s.images[1], expected)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((2, 4, 4, 3), np.uint8)}, "missing key.*labels"),
        ({"images": np.zeros((2, 4, 4, 3)), "labels": np.zeros(2, int)}, "must be uint8"),
        ({"images": np.full((2, 4, 4, 3), np.nan), "labels": np.zeros(2, int)}, "NaN or inf"),
        ({"images": np.full((2, 4, 4, 3), np.inf, np.float32), "labels": np.zeros(2, int)}, "NaN or inf"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.zeros(3, int)}, "3 labels for 2 images"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.zeros(2)}, "integer"),
        ({"images": np.zeros((2, 3, 8, 8), np.uint8), "labels": np.zeros(2, int)}, "channels last"),
        ({"images": np.zeros((0, 4, 4, 3), np.uint8), "labels": np.zeros(0, int)}, "no images"),
        (
            {
                "images": np.zeros((2, 4, 4, 3), np.uint8),
                "labels": np.array([0, 2]),
                "class_names": np.array(["a", "b"]),
            },
            "index 'class_names'",
        ),
        (
            {
                "images": np.zeros((1, 4, 4, 3), np.uint8),
                "labels": np.zeros(1, int),
                "class_names": np.array([1]),
            },
            "str array",
        ),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    path = _npz(tmp_path, **arrays)
    with pytest.raises(DDCSInputError, match=message) as err:
        load_images(path, progress=False)
    assert "set.npz" in str(err.value)


def test_npz_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DDCSInputError, match=r"broken\.npz"):
        load_images(path)


def test_npz_object_arrays_are_refused(tmp_path: Path) -> None:
    path = _npz(tmp_path, images=np.zeros((1, 2, 2, 3), np.uint8), labels=np.zeros(1, int),
                class_names=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DDCSInputError, match=r"set\.npz"):
        load_images(path)


# --- ImageSet ----------------------------------------------------------------------------------


def _set(n: int = 4) -> ImageSet:
    imgs = RNG.integers(0, 256, (n, 2, 2, 3), dtype=np.uint8)
    return ImageSet(imgs, np.arange(n, dtype=np.int64) % 2, ["a", "b"], [f"f{i}" for i in range(n)], "src")


def test_subset_by_mask_and_index() -> None:
    s = _set()
    by_mask = s.subset(np.array([True, False, True, False]))
    by_idx = s.subset([0, 2])
    for sub in (by_mask, by_idx):
        assert sub.paths == ["f0", "f2"] and sub.class_names == ["a", "b"] and len(sub) == 2
        np.testing.assert_array_equal(sub.images, s.images[[0, 2]])
    assert len(s.subset([])) == 0
    with pytest.raises(DDCSInputError, match="mask"):
        s.subset(np.array([True, False]))
    with pytest.raises(DDCSInputError, match="out of range"):
        s.subset([9])


def test_imageset_checks_consistency() -> None:
    with pytest.raises(DDCSInputError, match="one int64 label"):
        ImageSet(np.zeros((2, 2, 2, 3), np.uint8), np.zeros(3, np.int64), ["a"], ["p", "q"], "src")
    with pytest.raises(DDCSInputError, match="labels must lie"):
        ImageSet(np.zeros((1, 2, 2, 3), np.uint8), np.array([1]), ["a"], ["p"], "src")


# --- transforms --------------------------------------------------------------------------------


def test_to_tensor_and_back() -> None:
    imgs = RNG.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    imgs[0, 0, 0] = (0, 255, 128)
    x = to_tensor(imgs)
    assert x.shape == (2, 3, 5, 6) and x.dtype == torch.float32
    assert x[0, 0, 0, 0] == -1 and x[0, 1, 0, 0] == 1
    np.testing.assert_array_equal(to_uint8(x), imgs)


def test_to_uint8_rounds_and_clamps() -> None:
    x = torch.tensor([-3.0, 1.5, 0.0, 1 / 127.5 * 0.6 - 1]).view(1, 1, 2, 2)
    assert to_uint8(x).ravel().tolist() == [0, 255, 128, 1]


def test_transform_errors() -> None:
    with pytest.raises(DDCSInputError, match="uint8"):
        to_tensor(np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(DDCSInputError, match="NaN"):
        to_uint8(torch.full((1, 3, 2, 2), float("nan")))
    with pytest.raises(DDCSInputError, match=r"\(N, C, H, W\)"):
        to_uint8(torch.zeros(3, 2, 2))


def test_resize_is_plain_bilinear() -> None:
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    y = resize(x, 16)
    assert y.shape == (2, 3, 16, 16)
    torch.testing.assert_close(y, F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
    assert resize(x, (8, 8)) is x


def test_center_crop_face() -> None:
    a = np.zeros((10, 10, 3), np.uint8)
    a[3:7, 3:7] = 255  # a white 4x4 square right in the middle
    out = center_crop_face(Image.fromarray(a), crop=4, out=4)
    assert out.size == (4, 4)
    assert (np.asarray(out) == 255).all()
    with pytest.raises(DDCSInputError, match="crop"):
        center_crop_face(Image.fromarray(a), crop=11, out=4)


# --- formats by content, caps, resize policies, what loading reports ------------------------------


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width x height and holds no pixel data: tiny on disk, huge decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_pgm_ppm_and_images_with_any_name_are_read_by_content(tmp_path: Path) -> None:
    grey, colour = _rgb()[..., 0], _rgb()
    (tmp_path / "a").mkdir()
    Image.fromarray(grey).save(tmp_path / "a" / "g.pgm")
    Image.fromarray(colour).save(tmp_path / "a" / "c.ppm")
    Image.fromarray(colour).save(tmp_path / "a" / "no_extension", format="PNG")
    (tmp_path / "a" / "readme.txt").write_text("not an image")
    s = load_images(tmp_path, progress=False)
    assert [Path(p).name for p in s.paths] == ["c.ppm", "g.pgm", "no_extension"]
    np.testing.assert_array_equal(s.images[0], colour)
    np.testing.assert_array_equal(s.images[1], np.repeat(grey[..., None], 3, axis=2))
    assert any("skipped 1 file(s) that are not images (.txt x1)" in w for w in s.warnings)


def test_folder_without_images_names_the_extensions_found(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("x.txt", "y.txt", "z.csv"):
        (tmp_path / "a" / name).write_text("1,2,3")
    with pytest.raises(DDCSInputError, match=r"holds no images \(found 3 other file\(s\): \.txt x2, \.csv x1"):
        load_images(tmp_path, progress=False)
    (tmp_path / "notes.md").write_text("#")
    with pytest.raises(DDCSInputError, match=r"holds no images"):
        load_images(tmp_path, progress=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.json").write_text("{}")
    with pytest.raises(DDCSInputError, match=r"no class subfolders \(found 1 other file\(s\): \.json x1"):
        load_images(flat, progress=False)


def test_dangling_symlink_is_reported(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "x.png", _rgb())
    (tmp_path / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    s = load_images(tmp_path, progress=False)
    assert len(s) == 1
    assert any("gone.png: dangling symbolic link" in w and "nowhere.png" in w for w in s.warnings)
    with pytest.raises(DDCSInputError, match="dangling symbolic link"):
        load_images(tmp_path / "a" / "gone.png", progress=False)


def test_unreadable_class_folder_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    import os

    _save(tmp_path / "a" / "x.png", _rgb())
    real = os.scandir

    def refusing(path):
        if Path(path).name == "a":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(DDCSInputError, match=r"a: cannot read folder \(Permission denied\)"):
        load_images(tmp_path, progress=False)


def test_non_utf8_file_name_is_escaped_and_reported(tmp_path: Path) -> None:
    import os

    (tmp_path / "a").mkdir()
    Image.fromarray(_rgb()).save(os.path.join(os.fsencode(tmp_path / "a"), b"caf\xe9.png"), format="PNG")
    s = load_images(tmp_path, progress=False)
    assert s.paths[0].endswith("caf\\xe9.png")
    s.paths[0].encode("utf-8")  # every writer can encode it
    assert any("not valid UTF-8" in w for w in s.warnings)


def test_pixel_cap_is_checked_from_the_header(tmp_path: Path) -> None:
    from ddcs_core.data.images import Limits

    path = _png_header_only(tmp_path / "a" / "bomb.png", 9000, 9000)
    assert path.stat().st_size < 100
    with pytest.raises(DDCSInputError, match=r"bomb\.png: declares 9000x9000 = 81\.0 megapixels, over the cap of "
                                             r"16\.8; raise it with --max-image-pixels"):
        load_images(tmp_path, progress=False)
    small = _png_header_only(tmp_path / "b" / "a" / "small.png", 200, 100)
    with pytest.raises(DDCSInputError, match=r"small\.png: declares 200x100 = 0\.0 megapixels, over the cap"):
        load_images(tmp_path / "b", progress=False, limits=Limits.resolve(max_image_pixels=10_000))
    # a cap raised above the image: the header passes and decoding fails (there are no pixels), naming the file
    with pytest.raises(DDCSInputError, match=r"small\.png: cannot read image"):
        load_images(tmp_path / "b", progress=False, limits=Limits.resolve(max_image_pixels=20_000))


def test_set_cap_for_folders_and_npz_and_env_override(tmp_path: Path, monkeypatch) -> None:
    from ddcs_core.data.images import Limits

    for i in range(4):
        _save(tmp_path / "f" / "a" / f"{i}.png", _rgb(8, 8))
    tiny = Limits.resolve(max_set_gb=500 / 1e9)  # 500 bytes; the set decodes to 4 * 8 * 8 * 3 = 768
    with pytest.raises(DDCSInputError, match=r"4 images of 8x8 decode to 0\.00 GB, over the cap.*--max-set-gb"):
        load_images(tmp_path / "f", progress=False, limits=tiny)
    path = tmp_path / "z.npz"
    np.savez_compressed(path, images=np.zeros((400, 64, 64, 3), np.uint8), labels=np.zeros(400, np.int64))
    assert path.stat().st_size < 20_000  # ~4.9 MB once unpacked
    monkeypatch.setenv("DDCS_MAX_SET_GB", "0.001")
    with pytest.raises(DDCSInputError, match=r"z\.npz: its arrays decode to 0\.00 GB, over the cap of 0\.00 GB"):
        load_images(path, progress=False)
    monkeypatch.setenv("DDCS_MAX_SET_GB", "0.01")
    assert len(load_images(path, progress=False)) == 400
    monkeypatch.setenv("DDCS_MAX_SET_GB", "lots")
    with pytest.raises(DDCSInputError, match=r"\$DDCS_MAX_SET_GB must be a number"):
        load_images(path, progress=False)


def test_npz_with_forged_header_is_refused_before_allocation(tmp_path: Path) -> None:
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (100_000, 4096, 4096, 3)})  # 5 PB declared
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("images.npy", header.getvalue() + b"\0" * 64)
        buf = io.BytesIO()
        np.save(buf, np.zeros(1, np.int64))
        zf.writestr("labels.npy", buf.getvalue())
    with pytest.raises(DDCSInputError, match=r"forged\.npz: array 'images' declares .* but holds 64 bytes"):
        load_images(path, progress=False)


def test_non_zip_npz_says_so(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("just text, no zip")
    with pytest.raises(DDCSInputError, match=r"text\.npz: not an \.npz archive \(not a zip file\)") as err:
        load_images(path)
    assert "pickle" not in str(err.value)


def test_resize_policies_and_their_summary(tmp_path: Path) -> None:
    from ddcs_core.data.transforms import fit_square

    wide = np.zeros((4, 8, 3), np.uint8)
    wide[:, 2:6] = 255  # a white centre square, black at the sides
    img = Image.fromarray(wide)
    assert np.asarray(fit_square(img, 4, "center-crop")).min() == 255  # only the white centre is kept
    padded = np.asarray(fit_square(img, 8, "pad"))
    assert padded[:2].max() == 0 and padded[-2:].max() == 0 and padded[2:6, 2:6].min() == 255
    assert np.asarray(fit_square(img, 4, "stretch")).shape == (4, 4, 3)
    with pytest.raises(DDCSInputError, match="resize policy"):
        fit_square(img, 4, "squash")

    _save(tmp_path / "a" / "wide.png", wide)
    _save(tmp_path / "a" / "square.png", _rgb(4, 4))
    s = load_images(tmp_path, size=4, resize="center-crop", progress=False)
    assert s.resize == {"policy": "center-crop", "to": 4, "resized": 1, "non_square": 1,
                        "native_sizes": ["4x4", "8x4"]}
    assert not s.warnings
    stretched = load_images(tmp_path, size=4, progress=False)
    assert stretched.resize["policy"] == "stretch"
    assert any("1 non-square image(s) were stretched to 4x4" in w for w in stretched.warnings)
    with pytest.raises(DDCSInputError, match="--resize must be one of"):
        load_images(tmp_path, size=4, resize="squash", progress=False)
