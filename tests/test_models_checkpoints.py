import json
import os
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import sha256_file
from ddcs_core.models.checkpoints import (
    ARCHS,
    load_model,
    save_model,
    verify_manifest,
    write_manifest,
)
from ddcs_core.models.classifiers import ResNetS

TINY = dict(num_classes=5, input_size=16, widths=[8, 16], blocks=[1, 1], stem_width=8)


def tiny_model() -> ResNetS:
    torch.manual_seed(0)
    model = ResNetS(**TINY)
    with torch.no_grad():  # non-trivial BN statistics and residual branches
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def raw_file(path, tensors, arch="resnet-s", config=TINY):
    meta = {"arch": json.dumps(arch), "config": json.dumps(config), "meta": "{}"}
    path.write_bytes(st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))
    return path


def flip_byte(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


x = torch.rand(3, 3, 16, 16) * 2 - 1


def test_round_trip_fp32_identical(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.safetensors"
    digest = save_model(path, model, "resnet-s", model.config, meta={"note": "x"})
    assert digest == sha256_file(path)
    loaded, info = load_model(path, expected_sha256=digest)
    assert info["arch"] == "resnet-s" and info["meta"] == {"note": "x"} and info["format"] == "safetensors"
    assert not loaded.training
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(loaded.features(x), model.features(x))


def test_round_trip_fp16_matches_rounded_weights(tmp_path):
    model = tiny_model()
    path = tmp_path / "m16.safetensors"
    save_model(path, model, "resnet-s", model.config, half=True)
    assert path.stat().st_size < 0.6 * len(st_save({k: v.contiguous() for k, v in model.state_dict().items()}))
    loaded, _ = load_model(path)
    assert all(t.dtype != torch.float16 for t in loaded.state_dict().values())
    rounded = tiny_model()
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in model.state_dict().items()})
    assert torch.equal(loaded(x), rounded.eval()(x))
    assert torch.allclose(loaded(x), model(x), atol=1e-2)


def test_tampered_file_refused_by_sha_and_manifest(tmp_path):
    model = tiny_model()
    path = tmp_path / "victim.safetensors"
    digest = save_model(path, model, "resnet-s", model.config)
    (tmp_path / "notes.txt").write_text("hello")
    files = {"victim.safetensors": {"role": "victim"}, "notes.txt": {}}
    write_manifest(tmp_path, files, {"seed": 1}, "abc", {"top1": 0.5})
    manifest = verify_manifest(tmp_path)
    assert manifest["files"]["victim.safetensors"]["sha256"] == digest
    assert manifest["files"]["victim.safetensors"]["role"] == "victim"
    flip_byte(path)
    with pytest.raises(DDCSInputError, match="victim.safetensors.*sha256"):
        load_model(path, expected_sha256=digest)
    with pytest.raises(DDCSInputError, match="victim.safetensors"):
        verify_manifest(tmp_path)
    path.unlink()
    with pytest.raises(DDCSInputError, match="victim.safetensors.*missing"):
        verify_manifest(tmp_path)


def test_manifest_refuses_paths_outside_dir(tmp_path):
    with pytest.raises(DDCSInputError, match="relative path"):
        write_manifest(tmp_path, {"../x": {}}, {}, "", {})
    with pytest.raises(DDCSInputError, match="manifest"):
        verify_manifest(tmp_path)


def test_nan_tensor_refused_naming_it(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_model(path, model, "resnet-s", model.config)
    with pytest.raises(DDCSInputError, match=r"nan\.safetensors.*'head\.weight'.*NaN"):
        load_model(path)


def test_unknown_arch_shape_mismatch_and_keys(tmp_path):
    sd = tiny_model().state_dict()
    with pytest.raises(DDCSInputError, match="unknown arch 'no-such-net'"):
        load_model(raw_file(tmp_path / "a.safetensors", sd, arch="no-such-net"))
    with pytest.raises(DDCSInputError, match=r"b\.safetensors.*'head\.weight'.*\(5, 16\).*\(7, 16\)"):
        load_model(raw_file(tmp_path / "b.safetensors", sd, config={**TINY, "num_classes": 7}))
    partial = {k: v for k, v in sd.items() if k != "head.bias"}
    with pytest.raises(DDCSInputError, match="missing keys: head.bias"):
        load_model(raw_file(tmp_path / "c.safetensors", partial))
    with pytest.raises(DDCSInputError, match="unexpected keys: extra"):
        load_model(raw_file(tmp_path / "d.safetensors", {**sd, "extra": torch.zeros(1)}))
    with pytest.raises(DDCSInputError, match="cannot save"):
        save_model(tmp_path / "e.safetensors", tiny_model(), "no-such-net", {})
    assert {"resnet-s", "vggbn-s", "stylegan2-g", "stylegan2-d"} <= set(ARCHS)


def test_missing_and_non_safetensors_files(tmp_path):
    with pytest.raises(DDCSInputError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    junk = tmp_path / "model.bin"
    junk.write_bytes(struct.pack("<Q", 5) + b"garbage-not-json")
    with pytest.raises(DDCSInputError, match=r"model\.bin is not a safetensors file.*weights_only=True"):
        load_model(junk)
    truncated = tmp_path / "t.safetensors"
    save_model(truncated, tiny_model(), "resnet-s", TINY)
    truncated.write_bytes(truncated.read_bytes()[:-50])
    with pytest.raises(DDCSInputError, match=r"t\.safetensors"):
        load_model(truncated)


class Malicious:
    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_pt_malicious_refused_legit_loaded(tmp_path):
    evil = Malicious()
    evil.marker = str(tmp_path / "pwned")
    bad = tmp_path / "evil.pt"
    torch.save({"arch": "resnet-s", "config": TINY, "state_dict": {}, "meta": evil}, bad)
    with pytest.raises(DDCSInputError, match=r"evil\.pt.*weights_only=True"):
        load_model(bad)
    assert not (tmp_path / "pwned").exists()

    model = tiny_model()
    good = tmp_path / "good.pth"
    torch.save({"arch": "resnet-s", "config": model.config, "state_dict": model.state_dict(), "meta": {"a": 1}}, good)
    loaded, info = load_model(good)
    assert info["format"] == "torch" and info["meta"] == {"a": 1}
    assert torch.equal(loaded(x), model(x))

    odd = tmp_path / "odd.pt"
    torch.save([1, 2, 3], odd)
    with pytest.raises(DDCSInputError, match="must be a dict"):
        load_model(odd)


def test_checkpoint_beside_a_manifest_must_be_listed_and_match(tmp_path):
    model = tiny_model()
    listed, stray = tmp_path / "listed.safetensors", tmp_path / "stray.safetensors"
    save_model(listed, model, "resnet-s", model.config)
    assert load_model(listed)[1]["verified"] is False  # no manifest: nothing vouches for the folder
    save_model(stray, model, "resnet-s", model.config)
    write_manifest(tmp_path, {"listed.safetensors": {}}, {}, "", {})
    assert load_model(listed)[1]["verified"] is True
    with pytest.raises(DDCSInputError, match=r"stray\.safetensors is not listed in .*manifest\.json, so it cannot be "
                                             r"verified"):
        load_model(stray)
    flip_byte(listed)
    with pytest.raises(DDCSInputError, match=r"listed\.safetensors: sha256 .* does not match"):
        load_model(listed)


def test_world_file_left_out_of_its_manifest_is_refused(tmp_path, capsys):
    import shutil
    from pathlib import Path

    from ddcs_core import pipeline
    from ddcs_core.__main__ import main

    world = tmp_path / "world"
    shutil.copytree(Path(__file__).resolve().parents[1] / "checkpoints" / "demo", world)
    manifest = json.loads((world / "manifest.json").read_text())
    del manifest["files"]["discriminator.safetensors"]
    (world / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DDCSInputError, match=r"discriminator\.safetensors: not listed in .*manifest\.json"):
        pipeline.load_world(world)
    assert main(["demo", "build", "--out", str(world)]) == 2
    out, err = capsys.readouterr()
    assert "verified" not in out and "not listed" in err and err.count("\n") == 1


def test_unreadable_training_state_names_the_file_to_delete(tmp_path):
    from ddcs_core.models.checkpoints import load_training_state

    path = tmp_path / "state.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(DDCSInputError) as err:
        load_training_state(path)
    assert f"delete {path} to start this training over" in str(err.value) and "resume=False" not in str(err.value)
