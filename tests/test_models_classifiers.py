import numpy as np
import pytest
import torch

from ddcs_core.errors import DDCSInputError
from ddcs_core import training
from ddcs_core.models.checkpoints import load_model, load_training_state, save_model
from ddcs_core.models.classifiers import ResNetS, VGGBNS, build_classifier
from ddcs_core.models.train_classifier import augment_faces, state_path_for, train_classifier

TINY = {
    "resnet-s": dict(widths=[8, 16], blocks=[1, 1], stem_width=8),
    "vggbn-s": dict(stages=[[8], [16]]),
}


@pytest.mark.parametrize("arch", ["resnet-s", "vggbn-s"])
def test_shapes_resize_and_grey(arch):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=7, input_size=16, **TINY[arch]).eval()
    assert model.input_size == 16 and model.num_classes == 7
    for size in (16, 32, 12):
        x = torch.rand(2, 3, size, size) * 2 - 1
        assert model(x).shape == (2, 7)
        assert model.features(x).shape == (2, model.feature_dim)
    grey = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(model(grey), model(grey.expand(-1, 3, -1, -1)))
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    model(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected images"):
        model(torch.zeros(2, 4, 16, 16))


def test_default_sizes_are_small_and_registered(tmp_path):
    sizes = 0
    for arch, cls in (("resnet-s", ResNetS), ("vggbn-s", VGGBNS)):
        model = build_classifier(arch)
        assert isinstance(model, cls) and model.input_size == 64 and model.num_classes == 62
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 62)
        path = tmp_path / f"{arch}.safetensors"
        save_model(path, model, arch, model.config, half=True)
        sizes += path.stat().st_size
        loaded, _ = load_model(path)
        assert type(loaded) is cls
    assert sizes < 12e6
    with pytest.raises(DDCSInputError, match="unknown classifier arch"):
        build_classifier("resnet-xxl")


def test_augment_faces_shape_range_determinism():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    a = augment_faces(x, torch.Generator().manual_seed(1))
    b = augment_faces(x, torch.Generator().manual_seed(1))
    c = augment_faces(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def toy_data(n_per_class=(12, 6, 6, 6), size=16, seed=0):
    """Classes told apart by their mean colour, imbalanced like LFW."""
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]])
    images, labels = [], []
    for c, n in enumerate(n_per_class):
        noise = rng.integers(-30, 30, size=(n, size, size, 3))
        images.append(np.clip(colours[c] + noise, 0, 255).astype(np.uint8))
        labels += [c] * n
    return np.concatenate(images), np.array(labels)


def run(tmp_path, name, epochs, **kw):
    return train_classifier(
        "resnet-s", toy_data(), toy_data(n_per_class=(3, 3, 3, 3), seed=1), epochs=epochs, batch_size=8,
        lr=3e-3, seed=0, device="cpu", progress=False, checkpoint_path=tmp_path / f"{name}.safetensors",
        config=TINY["resnet-s"], **kw,
    )


def weights(path):
    return load_model(path)[0].state_dict()


def test_training_learns_and_reports(tmp_path):
    m = run(tmp_path, "a", 3)
    losses = [h["loss"] for h in m["history"]]
    assert losses[-1] < losses[0]
    assert m["epochs"] == 3 and 0 <= m["test_top1"] <= m["test_top5"] <= 1
    assert m["test_top5"] == 1.0  # 4 classes: top-5 covers all
    assert m["num_params"] > 0 and m["train_images_per_s"] > 0
    assert load_model(m["checkpoint"], expected_sha256=m["sha256"])[1]["meta"]["test_top1"] == m["test_top1"]


def test_resume_after_kill_equals_uninterrupted(tmp_path, monkeypatch):
    full = run(tmp_path, "full", 2)
    real_save = training.save_training_state  # the Trainer writes every checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "killed", 2)
    assert load_training_state(state_path_for(tmp_path / "killed.safetensors"))["step"] == 1
    monkeypatch.setattr(training, "save_training_state", real_save)
    resumed = run(tmp_path, "killed", 2)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["test_top1"] == full["test_top1"]
    a, b = weights(full["checkpoint"]), weights(resumed["checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_extending_a_finished_run_continues_the_epoch_counter(tmp_path):
    run(tmp_path, "ext", 1)
    m = run(tmp_path, "ext", 2)
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert load_training_state(state_path_for(tmp_path / "ext.safetensors"))["step"] == 2
    with pytest.raises(DDCSInputError, match="different run.*lr"):
        train_classifier(
            "resnet-s", toy_data(), toy_data(seed=1), epochs=2, batch_size=8, lr=1e-3, seed=0, device="cpu",
            progress=False, checkpoint_path=tmp_path / "ext.safetensors", config=TINY["resnet-s"],
        )
    with pytest.raises(DDCSInputError, match="epoch 2 > epochs=1"):
        run(tmp_path, "ext", 1)


def test_bad_inputs_named():
    imgs, labels = toy_data()
    with pytest.raises(DDCSInputError, match="train images must be uint8"):
        train_classifier("resnet-s", (imgs.astype(np.float32), labels), (imgs, labels), epochs=1,
                         batch_size=8, lr=1e-3, seed=0, device="cpu")
    with pytest.raises(DDCSInputError, match="test labels"):
        train_classifier("resnet-s", (imgs, labels), (imgs, labels[:-1]), epochs=1,
                         batch_size=8, lr=1e-3, seed=0, device="cpu")
    with pytest.raises(DDCSInputError, match="unknown classifier arch"):
        train_classifier("nope", (imgs, labels), (imgs, labels), epochs=1, batch_size=8, lr=1e-3, seed=0,
                         device="cpu", progress=False)
