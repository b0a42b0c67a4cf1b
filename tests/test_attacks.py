"""Inversion: augmentations, losses, selections, optimisation, dual pool, resumable inversion."""

import numpy as np
import pytest
import torch

from ddcs_core.attacks import (
    AugmentConfig,
    InversionConfig,
    class_confidence,
    dual_pool,
    final_selection,
    initial_selection,
    invert,
    optimize_latents,
    poincare_loss,
    random_transform,
    transform_scores,
)
from ddcs_core.control import Cancelled
from ddcs_core.errors import DDCSInputError
from tests.tiny_world import RES, tiny_classifier, tiny_gan


pytestmark = pytest.mark.usefixtures("deterministic_cpu")


def test_random_transform_identity_flip_and_gradients():
    x = torch.rand(6, 3, RES, RES, generator=torch.Generator().manual_seed(0)) * 2 - 1
    same = random_transform(x, AugmentConfig(flip=False, scale=(1, 1), shift=0), torch.Generator().manual_seed(1))
    assert torch.allclose(same, x, atol=1e-5)
    flipped = random_transform(x, AugmentConfig(flip=True, scale=(1, 1), shift=0), torch.Generator().manual_seed(1))
    is_flip = [torch.allclose(f, xi.flip(2), atol=1e-5) for f, xi in zip(flipped, x)]
    is_same = [torch.allclose(f, xi, atol=1e-5) for f, xi in zip(flipped, x)]
    assert all(a or b for a, b in zip(is_flip, is_same)) and any(is_flip) and any(is_same)
    xr = x.clone().requires_grad_(True)
    out = random_transform(xr, AugmentConfig(), torch.Generator().manual_seed(2))
    assert out.shape == x.shape
    out.sum().backward()
    assert xr.grad.abs().sum() > 0


def test_poincare_loss_prefers_the_target_and_ignores_scale():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    target = torch.tensor([0, 0])
    loss = poincare_loss(logits, target)
    assert loss[0] < loss[1] and torch.isfinite(loss).all()
    assert torch.allclose(poincare_loss(logits * 10, target), loss)


def test_optimisation_raises_the_victims_confidence():
    G, victim = tiny_gan()[0], tiny_classifier()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        w0 = G.mapping(torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(3)), truncation_psi=0.7)
    aug = AugmentConfig()
    for loss in ("poincare", "ce"):
        w = optimize_latents(G, victim, w0, labels, steps=15, lr=0.1, betas=(0.1, 0.1), loss=loss, augment=aug, seed=0)
        before = transform_scores(G, victim, w0, labels, augment=aug, views=4, batch_size=6, seed=9)
        after = transform_scores(G, victim, w, labels, augment=aug, views=4, batch_size=6, seed=9)
        assert after.mean() > before.mean() + 0.05, loss
    assert all(p.requires_grad for p in G.parameters())  # frozen only while optimising


def test_initial_selection_keeps_the_most_confident_latents_per_class():
    G, victim = tiny_gan()[0], tiny_classifier()
    aug = AugmentConfig()
    w, labels, conf = initial_selection(G, victim, [2, 0], 3, 20, truncation_psi=0.7, augment=aug, views=1,
                                        batch_size=8, seed=4, progress=False)
    assert w.shape == (6, G.w_dim) and labels.tolist() == [2, 2, 2, 0, 0, 0]
    with torch.no_grad():  # views=1: plain confidence, so brute force must agree
        z = torch.randn(20, G.z_dim, generator=torch.Generator().manual_seed(4))
        all_conf = class_confidence(victim, G.synthesis(G.mapping(z, truncation_psi=0.7), noise_mode="const").clamp(-1, 1),
                                    aug, torch.Generator(), 1)
    for c, got in ((2, conf[:3]), (0, conf[3:])):
        assert torch.allclose(got, all_conf[:, c].topk(3).values, atol=1e-6)


def test_final_selection_picks_the_most_confident():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    keep = final_selection(scores, labels, 2)
    assert keep.tolist() == [1, 2, 4, 3, 6]
    with pytest.raises(DDCSInputError, match="final_per_class"):
        final_selection(scores, labels, 0)


def small_config(**kw) -> InversionConfig:
    base = dict(search_size=24, candidates_per_class=3, steps=3, lr=0.05, final_per_class=2, final_views=3,
                batch_size=4, init_views=2, seed=1)
    return InversionConfig(**{**base, **kw})


def test_invert_returns_latents_with_images_and_resumes(tmp_path):
    G, victim = tiny_gan()[0], tiny_classifier()
    full = invert(G, victim, [0, 1, 2], small_config(), name="p", class_names=["a", "b", "c"], progress=False)
    assert full.images.shape == (6, RES, RES, 3) and full.images.dtype == np.uint8
    assert full.latents.shape == (6, G.w_dim) and full.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert full.paths[:2] == ["p/a/0", "p/a/1"]
    with torch.no_grad():  # the latents regenerate the images
        again = G.synthesis(torch.from_numpy(full.latents), noise_mode="const")
    assert np.abs(((again.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy() - full.images).max() <= 1
    checks = {"n": 0}

    def stop_after_first_chunk():
        checks["n"] += 1
        return checks["n"] == 2

    with pytest.raises(Cancelled):
        invert(G, victim, [0, 1, 2], small_config(), name="p", class_names=["a", "b", "c"], work_dir=tmp_path,
               progress=False, should_stop=stop_after_first_chunk)
    saved = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pt"))
    assert saved == ["class-00000/final.pt", "class-00000/opt-0000.pt"]  # the first class, finished
    resumed = invert(G, victim, [0, 1, 2], small_config(), name="p", class_names=["a", "b", "c"], work_dir=tmp_path,
                     progress=False)
    assert np.array_equal(resumed.images, full.images) and np.array_equal(resumed.latents, full.latents)
    with pytest.raises(DDCSInputError, match="different inversion"):
        invert(G, victim, [0, 1, 2], small_config(seed=2), work_dir=tmp_path, progress=False)


def test_dual_pool_is_the_union():
    G, victim = tiny_gan()[0], tiny_classifier()
    a = invert(G, victim, [0, 1], small_config(steps=0), name="a", progress=False)
    b = invert(G, victim, [1, 2], small_config(steps=1, seed=3), name="b", progress=False)
    d = dual_pool(a, b)
    assert len(d.images) == len(a.images) + len(b.images)
    assert np.array_equal(d.images, np.concatenate([a.images, b.images]))
    assert np.array_equal(d.latents, np.concatenate([a.latents, b.latents]))
    assert d.paths == a.paths + b.paths and sorted(d.labels.tolist()) == sorted(a.labels.tolist() + b.labels.tolist())
    names = d.image_set(["x", "y", "z"], "dual").class_names
    assert names == ["x", "y", "z"]


def test_inversion_config_rejects_bad_values():
    with pytest.raises(DDCSInputError, match="inversion.loss"):
        InversionConfig(loss="l2")
    with pytest.raises(DDCSInputError, match="unknown inversion keys"):
        InversionConfig.from_dict({"iterations": 3})
    with pytest.raises(DDCSInputError, match="candidates_per_class"):
        InversionConfig(search_size=4, candidates_per_class=8)
