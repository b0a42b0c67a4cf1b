import json

import numpy as np
import pytest
from PIL import Image

from ddcs_core import pipeline
from ddcs_core.errors import DDCSInputError

TINY = {
    "data": {"size": 32, "crop": 64, "min_images": 5, "holdout_per_person": 1, "seed": 0},
    "victim": {"arch": "resnet-s", "epochs": 1, "batch_size": 8, "lr": 1e-3, "seed": 0},
    "evaluator": {"arch": "vggbn-s", "epochs": 1, "batch_size": 8, "lr": 1e-3, "seed": 1},
    "gan": {"steps": 2, "batch_size": 4, "seed": 0,
            "config": {"G": {"z_dim": 16, "w_dim": 16, "channel_base": 64, "channel_max": 16, "mapping_layers": 2},
                       "D": {"channel_base": 64, "channel_max": 16}}},
    "check": {"fid_samples": 12, "seed": 1},
}


@pytest.fixture()
def tiny_lfw(tmp_path):
    """An LFW-like tree: 3 people with 6 photos (private), 5 with 2 (public)."""
    root = tmp_path / "data" / "lfw-deepfunneled"
    rng = np.random.default_rng(0)
    people = {f"Private_{i}": 6 for i in range(3)} | {f"Public_{i}": 2 for i in range(5)}
    for p, (name, n) in enumerate(people.items()):
        (root / name).mkdir(parents=True)
        for k in range(n):
            img = np.clip(rng.normal(40 * p, 25, (80, 80, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{name}_{k + 1:04d}.jpg")
    return tmp_path / "data"


def test_build_export_check_and_resume(tiny_lfw, tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "world"
    import ddcs_core.models.train_classifier as tc

    real_train = tc.train_classifier
    calls = []

    def failing_on_evaluator(arch, *a, **k):
        calls.append(arch)
        if arch == "vggbn-s":
            raise KeyboardInterrupt  # the build is killed while training the evaluator
        return real_train(arch, *a, **k)

    monkeypatch.setattr(tc, "train_classifier", failing_on_evaluator)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(TINY, work=work, data_root=tiny_lfw, progress=False, log=lambda *_: None)
    done = json.loads((work / "steps.json").read_text())
    assert done["victim"]["done"] and "evaluator" not in done

    monkeypatch.setattr(tc, "train_classifier", lambda arch, *a, **k: calls.append(arch) or real_train(arch, *a, **k))
    result = pipeline.build(TINY, work=work, data_root=tiny_lfw, progress=False, log=lambda *_: None)
    assert calls == ["resnet-s", "vggbn-s", "vggbn-s"]  # the victim was not retrained on resume
    assert result["class_names"] == ["Private_0", "Private_1", "Private_2"]

    figures = pipeline.export(result, out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == set(pipeline.FILES.values())
    assert manifest["data_fingerprint"] == result["data_fingerprint"]
    assert 0 <= figures["victim_test"]["top1"] <= 1 and figures["generator_fid"]["value"] > 0
    assert "not Inception" in figures["generator_fid"]["note"]
    assert (out / "samples.png").is_file()

    world = pipeline.load_world(out)
    assert world.class_names == result["class_names"] and world.generator.img_resolution == 32
    monkeypatch.setenv("DDCS_WORK", str(work))
    checked = pipeline.check(out, data_root=tiny_lfw, progress=False)
    assert checked["ok"], checked

    blob = bytearray((out / "victim.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (out / "victim.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DDCSInputError, match="victim.safetensors"):
        pipeline.load_world(out)


def test_generator_samples_are_fixed_by_seed():
    from ddcs_core.models.stylegan2 import Generator

    g = Generator(z_dim=8, w_dim=8, img_resolution=16, mapping_layers=1, channel_base=32, channel_max=8)
    a, b = pipeline.generator_samples(g, 5, seed=3, batch=2), pipeline.generator_samples(g, 5, seed=3)
    assert a.dtype == np.uint8 and a.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(a, b)
