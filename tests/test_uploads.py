"""Uploads: a .zip (one folder per class) or an .npz unpacked safely, then evaluated like a server folder."""

import io
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from ddcs_core.data.images import load_images
from ddcs_core.errors import DDCSInputError
from ddcs_core.runs import RunStore
from ddcs_core.ui.sample_run import smooth_images
from ddcs_core.ui.views import UPLOADS, Explorer
from ddcs_core.uploads import UploadLimits, unpack_upload


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, members: dict[str, bytes], prefix: str = ""):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(prefix + name, data)
    return path


def _faces(per_class: int, seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {f"person_{c}/{i}.png": _png(img) for c in range(2)
            for i, img in enumerate(smooth_images(rng, per_class, 32, c))}


def test_a_zip_unpacks_to_its_class_folders_also_when_wrapped_in_one_folder(tmp_path):
    plain = _zip(tmp_path / "plain.zip", {**_faces(2, 0), "__MACOSX/person_0/._0.png": b"junk", ".DS_Store": b"x"})
    root = unpack_upload(plain, tmp_path / "a")
    assert root == tmp_path / "a" and sorted(p.name for p in root.iterdir()) == ["person_0", "person_1"]
    assert load_images(root, progress=False).class_names == ["person_0", "person_1"]
    wrapped = _zip(tmp_path / "wrapped.zip", _faces(2, 0), prefix="my targets/")
    root = unpack_upload(wrapped, tmp_path / "b")
    assert root == tmp_path / "b" / "my targets" and len(load_images(root, progress=False)) == 4


@pytest.mark.parametrize("name, message", [
    ("../evil.png", "leaves the archive's folder"),
    ("person_0/../../evil.png", "leaves the archive's folder"),
    ("/tmp/evil.png", "absolute path"),
    ("C:/evil.png", "absolute path"),
    ("person_0\\..\\..\\evil.png", "absolute path"),
])
def test_names_that_leave_the_folder_are_refused_before_anything_is_written(tmp_path, name, message):
    bad = _zip(tmp_path / "bad.zip", {**_faces(1, 0), name: b"x"})
    with pytest.raises(DDCSInputError, match=message):
        unpack_upload(bad, tmp_path / "out" / "dest")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.png").exists()


def test_symlinks_in_a_zip_are_refused(tmp_path):
    link = zipfile.ZipInfo("person_0/passwd.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("person_0/0.png", _faces(1, 0)["person_0/0.png"])
        z.writestr(link, "/etc/passwd")
    with pytest.raises(DDCSInputError, match="is a symlink; symlinks are refused"):
        unpack_upload(path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_caps_on_members_size_and_ratio(tmp_path):
    faces = _zip(tmp_path / "faces.zip", _faces(3, 0))
    with pytest.raises(DDCSInputError, match="6 members, more than the cap of 5"):
        unpack_upload(faces, tmp_path / "a", UploadLimits(max_members=5))
    with pytest.raises(DDCSInputError, match="unpacks to more than .*--max-upload-gb"):
        unpack_upload(faces, tmp_path / "b", UploadLimits(max_total_bytes=1000))
    bomb = _zip(tmp_path / "bomb.zip", {"person_0/0.png": bytes(8 << 20)})
    with pytest.raises(DDCSInputError, match="times its packed size .*zip bomb"):
        unpack_upload(bomb, tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_npz_uploads_and_bad_files(tmp_path):
    good = tmp_path / "recon.npz"
    np.savez(good, images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, 1]))
    assert unpack_upload(good, tmp_path / "a") == tmp_path / "a" / "images.npz"
    bogus = _zip(tmp_path / "bogus.npz", {"dir/images.npy": b"x"})
    with pytest.raises(DDCSInputError, match="an .npz holds arrays only"):
        unpack_upload(bogus, tmp_path / "b")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DDCSInputError, match="upload text.npz: not a valid npz archive"):
        unpack_upload(tmp_path / "text.npz", tmp_path / "c")
    (tmp_path / "faces.tar").write_bytes(b"x")
    with pytest.raises(DDCSInputError, match="must be a .zip .* or an .npz"):
        unpack_upload(tmp_path / "faces.tar", tmp_path / "d")


def test_evaluate_view_takes_uploads_and_keeps_no_unpacked_copy(tmp_path):
    ex = Explorer(RunStore(tmp_path / "runs").root, device="cpu")
    targets = _zip(tmp_path / "targets.zip", _faces(4, 0), prefix="targets/")
    rng = np.random.default_rng(1)
    recon = tmp_path / "my attack.npz"
    np.savez(recon, images=np.concatenate([smooth_images(rng, 3, 32, c) for c in range(2)]),
             labels=np.repeat([0, 1], 3), class_names=np.array(["person_0", "person_1"]))
    with pytest.raises(DDCSInputError, match="reconstructions folder: give an upload or a path on the server, not both"):
        ex.import_folders("", "/etc", targets_upload=str(targets), recon_upload=str(recon))
    run = ex.import_folders("", "", targets_upload=str(targets), recon_upload=str(recon), update_map=False)
    assert run.name.startswith("eval-my-attack-") and run.pools() == ["my-attack"]
    assert run.config["targets"] == "upload:targets.zip" and run.config["reconstructions"] == "upload:my attack.npz"
    assert run.targets().paths[0] == "upload:targets.zip/person_0/0.png"
    assert list((ex.store.root / UPLOADS).iterdir()) == []
    status = ex.runner.wait(run, 120)
    assert status.state == "done", status.message
    broken = _zip(tmp_path / "broken.zip", {"person_0/0.png": b"not a png", "person_1/0.png": b"nor this"})
    with pytest.raises(DDCSInputError, match=r"^upload:broken.zip/person_\d/0.png: cannot read image"):
        ex.import_folders("", "", targets_upload=str(broken), recon_upload=str(recon), name="broken")
    assert list((ex.store.root / UPLOADS).iterdir()) == [] and ex.run_names() == [run.name]
