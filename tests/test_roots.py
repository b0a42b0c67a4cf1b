"""Data roots: typed server paths are read only under them, and refusals say nothing about the outside."""

import numpy as np
import pytest
from PIL import Image

from ddcs_core.errors import DDCSInputError
from ddcs_core.roots import DataRoots


@pytest.fixture()
def world(tmp_path):
    """A data root with an image tree, and a folder beside it with a secret tree."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    for base in (root / "faces", outside / "secret"):
        (base / "ann").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(base / "ann" / "0.png")
    return DataRoots([root]), root, outside


def _refusal(roots: DataRoots, text: str) -> str:
    with pytest.raises(DDCSInputError) as info:
        roots.image_source(text, "targets folder")
    return str(info.value).replace(text, "<path>")


def test_paths_under_a_root_resolve_and_relative_paths_are_tried_under_each_root(world):
    roots, root, _ = world
    assert roots.image_source(str(root / "faces"), "targets folder") == (root / "faces").resolve()
    assert roots.image_source("faces", "targets folder") == (root / "faces").resolve()
    assert roots.image_source(str(root / "faces" / ".." / "faces"), "t") == (root / "faces").resolve()
    with pytest.raises(DDCSInputError, match="not found under the data roots"):
        roots.image_source("nobody", "targets folder")


def test_outside_the_roots_every_refusal_reads_the_same(world, tmp_path):
    roots, root, outside = world
    (root / "link-out").symlink_to(outside / "secret")
    (root / "dangling-out").symlink_to(outside / "missing")
    (tmp_path / "unreadable").mkdir(mode=0o000)
    texts = [str(outside / "secret"), str(outside / "missing"), "/etc", "/etc/no-such-thing", "/root/.ssh",
             "/proc/self/root", "../outside/secret", "../outside/missing", str(root / ".." / "outside" / "secret"),
             str(root / "link-out"), str(root / "dangling-out"), "link-out", str(tmp_path / "unreadable" / "x"),
             "/nul\0byte"]
    messages = {_refusal(roots, t) for t in texts}
    assert len(messages) == 1, messages
    (message,) = messages
    assert "not under the data roots" in message and str(outside) not in message and "Errno" not in message


def test_symlinks_inside_a_tree_may_not_lead_out(world):
    roots, root, outside = world
    (root / "faces" / "bob").symlink_to(outside / "secret" / "ann")
    with pytest.raises(DDCSInputError, match="bob leads outside the data roots"):
        roots.image_source(str(root / "faces"), "targets folder")
    (root / "faces" / "bob").unlink()
    (root / "faces" / "ann" / "1.png").symlink_to(outside / "secret" / "ann" / "0.png")
    with pytest.raises(DDCSInputError, match="ann/1.png leads outside the data roots"):
        roots.image_source(str(root / "faces"), "targets folder")
    (root / "faces" / "ann" / "1.png").unlink()
    (root / "faces" / "carl").symlink_to(root / "faces" / "ann")  # inside the roots: fine
    assert roots.image_source(str(root / "faces"), "targets folder") == (root / "faces").resolve()


def test_only_folders_and_npz_files(world):
    roots, root, _ = world
    (root / "notes.txt").write_text("x")
    with pytest.raises(DDCSInputError, match="must be a folder with one subfolder per class"):
        roots.image_source(str(root / "notes.txt"), "targets folder")
    with pytest.raises(DDCSInputError, match="enter a path under the data roots"):
        roots.image_source("  ", "targets folder")


def test_default_roots_are_the_store_and_ddcs_data(tmp_path):
    store, data, other = tmp_path / "runs", tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    assert DataRoots.for_store(store, environ={}).roots == (store.resolve(),)
    assert DataRoots.for_store(store, environ={"DDCS_DATA": str(data)}).roots == (store.resolve(), data.resolve())
    assert DataRoots.for_store(store, environ={"DDCS_DATA": str(tmp_path / "gone")}).roots == (store.resolve(),)
    given = DataRoots.for_store(store, [other], environ={"DDCS_DATA": str(data)})
    assert given.roots == (store.resolve(), other.resolve())
    with pytest.raises(DDCSInputError, match="not a folder"):
        DataRoots.for_store(store, [tmp_path / "missing"], environ={})
    assert given.contains(store / "run" / "x.png") and not given.contains(data / "x.png")
