"""LFW: identity split on the real listing, prepare + cache on a synthetic tree, offline download."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddcs_core.data import lfw
from ddcs_core.data.lfw import PARTS, download_lfw, extract_lfw, lfw_dir, make_split, prepare_lfw
from ddcs_core.errors import DDCSInputError

# person -> number of images in the synthetic tree; min_images=4 makes ann and bob private
PEOPLE = {"ann": 5, "bob": 4, "cid": 2, "dee": 1, "eve": 3}


def test_real_split_counts(data_root: Path) -> None:
    root = data_root / "lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    split = make_split(root)
    assert len(split.private_people) == 62
    assert len(split.private_people) + len(split.public_people) == 5749
    assert not set(split.private_people) & set(split.public_people)
    n = {p: len(split.files[p]) for p in PARTS}
    assert n["private_train"] + n["private_test"] == 3023
    assert n["private_test"] == 62 * 3
    assert n["public"] == 10210
    assert not set(split.files["private_train"]) & set(split.files["private_test"])
    public_people = {rel.split("/")[0] for rel in split.files["public"]}
    assert public_people == set(split.public_people)
    assert {rel.split("/")[0] for rel in split.files["private_test"]} == set(split.private_people)
    again = make_split(root)
    assert again.files == split.files
    assert all(np.array_equal(again.labels[p], split.labels[p]) for p in PARTS)
    assert make_split(root, seed=1).files["private_test"] != split.files["private_test"]


def _person_colour(i: int) -> tuple[int, int, int]:
    return (40 * i + 20, 200 - 30 * i, 90)


def _fake_lfw(root: Path) -> Path:
    """A tiny LFW-like tree: 40×40 PNGs (lossless: exact colours), the central 20 px in the person's colour."""
    for i, (name, n) in enumerate(PEOPLE.items()):
        (root / name).mkdir(parents=True)
        for k in range(n):
            a = np.zeros((40, 40, 3), np.uint8)
            a[10:30, 10:30] = _person_colour(i)
            Image.fromarray(a).save(root / name / f"{name}_{k + 1:04d}.png")
    return root


def test_make_split_on_synthetic_tree(tmp_path: Path) -> None:
    split = make_split(_fake_lfw(tmp_path / "lfw"), min_images=4, holdout_per_person=1, seed=3)
    assert split.private_people == ["ann", "bob"]
    assert split.public_people == ["cid", "dee", "eve"]
    assert len(split.files["private_test"]) == 2 and len(split.files["private_train"]) == 7
    assert split.labels["private_test"].tolist() == [0, 1]
    assert split.labels["public"].tolist() == [0, 0, 1, 2, 2, 2]
    assert split.people("public") == ["cid", "dee", "eve"]
    with pytest.raises(DDCSInputError, match="holdout_per_person"):
        make_split(split.root, min_images=3, holdout_per_person=3)
    with pytest.raises(DDCSInputError, match="0 people with >= 99"):
        make_split(split.root, min_images=99)


def test_prepare_lfw_end_to_end_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_lfw(tmp_path / "lfw")
    cache = tmp_path / "cache"
    kw = dict(size=8, crop=20, min_images=4, holdout_per_person=1, seed=0, progress=False)
    data = prepare_lfw(root, cache, **kw)

    assert set(data) == set(PARTS)
    assert [len(data[p]) for p in PARTS] == [7, 2, 6]
    pub = data["public"]
    assert pub.class_names == ["cid", "dee", "eve"] and pub.images.shape == (6, 8, 8, 3)
    assert data["private_train"].class_names == ["ann", "bob"]
    for part in PARTS:  # the centre crop keeps exactly the person's coloured square
        s = data[part]
        for img, label, path in zip(s.images, s.labels, s.paths):
            person = s.class_names[label]
            assert Path(path).parent.name == person
            colour = _person_colour(list(PEOPLE).index(person))
            assert (img == colour).all()

    assert data.cache_path.is_file() and data.cache_path.parent == cache
    with np.load(data.cache_path) as z:
        assert str(z["fingerprint"]) == data.fingerprint

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not decode images")

    monkeypatch.setattr(lfw, "read_images", no_decoding)
    again = prepare_lfw(root, cache, **kw)
    assert again.fingerprint == data.fingerprint
    for part in PARTS:
        np.testing.assert_array_equal(again[part].images, data[part].images)
        np.testing.assert_array_equal(again[part].labels, data[part].labels)
        assert again[part].paths == data[part].paths
    monkeypatch.undo()

    assert prepare_lfw(root, cache, **{**kw, "size": 4}).fingerprint != data.fingerprint
    with open(root / "eve" / "eve_0001.png", "ab") as f:
        f.write(b"\0")  # a changed file changes the fingerprint
    assert prepare_lfw(root, cache, **kw).fingerprint != data.fingerprint


def test_image_too_small_for_the_crop_is_named(tmp_path: Path) -> None:
    root = _fake_lfw(tmp_path / "lfw")
    Image.new("RGB", (12, 12)).save(root / "cid" / "cid_0001.png")
    with pytest.raises(DDCSInputError, match=r"cid_0001\.png.*crop 20"):
        prepare_lfw(root, tmp_path / "cache", size=8, crop=20, min_images=4, holdout_per_person=1,
                    progress=False)


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    root = _fake_lfw(tmp_path / "lfw")
    kw = dict(size=8, crop=20, min_images=4, holdout_per_person=1, progress=False)
    first = prepare_lfw(root, tmp_path / "cache", **kw)
    first.cache_path.write_bytes(b"garbage")
    second = prepare_lfw(root, tmp_path / "cache", **kw)
    np.testing.assert_array_equal(second["public"].images, first["public"].images)


def test_lfw_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DDCSInputError, match=r"lfw-deepfunneled.*download-lfw.*DDCS_DATA"):
        lfw_dir(tmp_path)
    (tmp_path / "lfw-deepfunneled").mkdir()
    assert lfw_dir(tmp_path) == tmp_path / "lfw-deepfunneled"
    monkeypatch.setenv("DDCS_DATA", str(tmp_path))
    assert lfw_dir() == tmp_path / "lfw-deepfunneled"


def _tarball(path: Path, names: list[str]) -> Path:
    """A gzipped tar with one tiny JPEG per name (or a directory entry for names ending in '/')."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(jpeg)
                tar.addfile(info, io.BytesIO(jpeg))
    return path


GOOD = [
    "lfw-deepfunneled/",
    "lfw-deepfunneled/Ann_A/",
    "lfw-deepfunneled/Ann_A/Ann_A_0001.jpg",
    "lfw-deepfunneled/Ann_A/Ann_A_0002.jpg",
    "lfw-deepfunneled/Bo_B/Bo_B_0001.jpg",
]


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_extract_tiny_tarball(tmp_path: Path) -> None:
    archive = _tarball(tmp_path / "lfw.tgz", GOOD)
    root = tmp_path / "data"
    out = extract_lfw(archive, root, expected_images=3)
    assert out == root / "lfw-deepfunneled"
    assert sorted(p.name for p in out.iterdir()) == ["Ann_A", "Bo_B"]
    assert make_split(out, min_images=2, holdout_per_person=1).private_people == ["Ann_A"]
    assert _leftovers(root) == []
    with pytest.raises(DDCSInputError, match="already exists"):
        extract_lfw(archive, root, expected_images=3)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (GOOD, "holds 3 images, expected 13233"),
        (GOOD + ["lfw-deepfunneled/../evil.jpg"], "unexpected entry"),
        (["elsewhere/A/A_0001.jpg"], "unexpected entry"),
    ],
)
def test_extract_rejects_bad_archives(tmp_path: Path, names: list[str], message: str) -> None:
    archive = _tarball(tmp_path / "lfw.tgz", names)
    root = tmp_path / "data"
    with pytest.raises(DDCSInputError, match=message):
        extract_lfw(archive, root)
    assert not (root / "lfw-deepfunneled").exists()
    assert not root.exists() or _leftovers(root) == []


def test_extract_unreadable_archive(tmp_path: Path) -> None:
    archive = tmp_path / "lfw.tgz"
    archive.write_bytes(b"not a tarball")
    with pytest.raises(DDCSInputError, match=r"lfw\.tgz"):
        extract_lfw(archive, tmp_path / "data")


def test_download_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lfw, "LFW_URL", "http://127.0.0.1:9/lfw-deepfunneled.tgz")
    root = tmp_path / "data"
    with pytest.raises(DDCSInputError, match=r"could not download.*manually.*tar -xzf.*DDCS_DATA") as err:
        download_lfw(root)
    assert str(root.resolve()) in str(err.value)
    assert list(root.iterdir()) == []


def test_download_verifies_md5_and_extracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _tarball(tmp_path / "lfw.tgz", GOOD)
    monkeypatch.setattr(lfw, "LFW_URL", archive.as_uri())
    monkeypatch.setattr(lfw, "LFW_IMAGES", 3)
    root = tmp_path / "data"
    with pytest.raises(DDCSInputError, match="MD5"):
        download_lfw(root)
    assert list(root.iterdir()) == []
    monkeypatch.setattr(lfw, "LFW_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    out = download_lfw(root)
    assert sorted(p.name for p in root.iterdir()) == ["lfw-deepfunneled"]
    assert len(list(out.glob("*/*.jpg"))) == 3
    assert download_lfw(root) == out  # already there: no second download
