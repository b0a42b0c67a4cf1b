import math

import numpy as np
import pytest
import torch
from PIL import Image

from ddcs_core.errors import DDCSInputError
from ddcs_core.models.checkpoints import load_model, load_training_state, save_model
from ddcs_core.models.gan_losses import (
    d_logistic_loss,
    diff_augment,
    g_nonsaturating_loss,
    lazy_r1_loss,
    r1_penalty,
)
from ddcs_core.models.stylegan2 import Discriminator, Generator, minibatch_stddev
from ddcs_core.models.train_gan import train_gan

G_TINY = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=32)
D_TINY = dict(channel_base=128, channel_max=32)


def tiny_pair(res=16, seed=0):
    torch.manual_seed(seed)
    G = Generator(img_resolution=res, **G_TINY)
    with torch.no_grad():  # noise strengths start at 0; make noise visible
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G, Discriminator(img_resolution=res, **D_TINY)


@pytest.mark.parametrize("res", [16, 32])
def test_shapes_at_two_resolutions(res):
    G, D = tiny_pair(res)
    assert (G.z_dim, G.w_dim, G.img_resolution) == (16, 16, res)
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    z = torch.randn(3, 16)
    w = G.mapping(z)
    assert w.shape == (3, 16)
    img = G.synthesis(w, noise_mode="const")
    assert img.shape == (3, 3, res, res)
    assert torch.equal(img, G.synthesis(w[:, None].expand(-1, G.num_ws, -1), noise_mode="const"))
    assert torch.equal(G(z, noise_mode="const"), img)
    assert D(img).shape == (3,)
    with pytest.raises(ValueError, match="w must be"):
        G.synthesis(torch.zeros(3, G.num_ws + 1, 16))


def test_truncation_and_mean_w():
    G, _ = tiny_pair()
    z = torch.randn(4, 16)
    w = G.mapping(z)
    G.mapping(z, update_w_avg=True)
    assert G.w_avg.abs().sum() > 0
    assert torch.allclose(G.mapping(z, truncation_psi=0.0), G.w_avg.expand(4, -1))
    assert torch.allclose(G.mapping(z, truncation_psi=0.5), G.w_avg + 0.5 * (w - G.w_avg), atol=1e-6)
    m = G.mean_w(n=2000, batch_size=500)
    assert m.shape == (16,)
    assert torch.allclose(m, G.mapping(torch.randn(20000, 16)).mean(0), atol=0.15)


def test_noise_modes():
    G, _ = tiny_pair()
    w = G.mapping(torch.randn(2, 16))
    assert torch.equal(G.synthesis(w, noise_mode="const"), G.synthesis(w, noise_mode="const"))
    assert torch.equal(G.synthesis(w, noise_mode="none"), G.synthesis(w, noise_mode="none"))
    assert not torch.equal(G.synthesis(w, noise_mode="random"), G.synthesis(w, noise_mode="random"))
    assert not torch.equal(G.synthesis(w, noise_mode="const"), G.synthesis(w, noise_mode="none"))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(w, noise_mode="fancy")


def test_gradients_reach_mapping_synthesis_and_w():
    G, D = tiny_pair()
    w = G.mapping(torch.randn(4, 16)).detach().requires_grad_(True)
    D(G.synthesis(w)).sum().backward()
    assert w.grad.abs().sum() > 0
    G.zero_grad()
    D(G(torch.randn(4, 16))).sum().backward()
    for name in ("mapping_net.layers.0.weight", "const", "conv4.conv.weight", "conv4.conv.affine.weight",
                 "blocks.1.conv1.conv.weight", "blocks.1.torgb.conv.weight", "conv4.noise_strength"):
        grad = dict(G.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_minibatch_stddev_odd_batch():
    x = torch.randn(6, 8, 4, 4)
    assert minibatch_stddev(x, 4).shape == (6, 9, 4, 4)
    assert minibatch_stddev(x[:5], 4).shape == (5, 9, 4, 4)


def test_checkpoint_round_trip_g_and_d(tmp_path):
    G, D = tiny_pair()
    G.mapping(torch.randn(8, 16), update_w_avg=True)
    save_model(tmp_path / "g.safetensors", G, "stylegan2-g", G.config)
    save_model(tmp_path / "d.safetensors", D, "stylegan2-d", D.config, half=True)
    G2, _ = load_model(tmp_path / "g.safetensors")
    D2, _ = load_model(tmp_path / "d.safetensors")
    z = torch.randn(2, 16)
    img = G(z, truncation_psi=0.7, noise_mode="const")
    assert torch.equal(G2(z, truncation_psi=0.7, noise_mode="const"), img)
    assert torch.allclose(D2(img), D(img), atol=1e-2, rtol=1e-2)
    G3 = Generator(img_resolution=16, z_dim=8, w_dim=8, channels={4: 8, 8: 6, 16: 4})
    save_model(tmp_path / "g3.safetensors", G3, "stylegan2-g", G3.config)
    G4, info = load_model(tmp_path / "g3.safetensors")
    assert info["config"]["channels"] == {"4": 8, "8": 6, "16": 4}
    assert torch.equal(G4(z[:, :8], noise_mode="none"), G3(z[:, :8], noise_mode="none"))


def test_losses_and_r1():
    zero = torch.zeros(4)
    assert math.isclose(g_nonsaturating_loss(zero).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(d_logistic_loss(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    _, D = tiny_pair()
    real = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    penalty = r1_penalty(real, D(real))
    assert penalty.item() > 0
    loss = lazy_r1_loss(penalty, gamma=0.5, every=16)
    assert math.isclose(loss.item(), penalty.item() * 4, rel_tol=1e-6)
    loss.backward()
    assert D.fromrgb.weight.grad.abs().sum() > 0


def test_diff_augment_shape_grad_determinism():
    x = (torch.rand(5, 3, 16, 16) * 2 - 1).requires_grad_(True)
    a = diff_augment(x, generator=torch.Generator().manual_seed(3))
    b = diff_augment(x, generator=torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, diff_augment(x, generator=torch.Generator().manual_seed(4)))
    a.square().sum().backward()
    assert x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, ""), x)
    cut = diff_augment(torch.ones(8, 3, 16, 16), "cutout", torch.Generator().manual_seed(0))
    assert ((cut == 0).float().mean(dim=(1, 2, 3)) > 0).all()
    with pytest.raises(DDCSInputError, match="unknown ops"):
        diff_augment(x, "color,rotate")


def test_translation_is_an_exact_shift():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 3, 1, 1)
    y = diff_augment(x, "translation", torch.Generator().manual_seed(0))
    for img in y[:, 0]:
        nz = img.nonzero()
        r0, c0 = nz.min(0).values.tolist()
        r1, c1 = nz.max(0).values.tolist()
        block = img[r0 : r1 + 1, c0 : c1 + 1]
        # the surviving block is a contiguous window of the original with step 1 / 4
        assert torch.all(block[:, 1:] - block[:, :-1] == 1) or block.shape[1] == 1


CFG = {"G": G_TINY, "D": D_TINY, "r1_every": 2, "r1_gamma": 1.0, "grid": 4}


def gan(tmp_path, name, steps, **kw):
    images = np.random.default_rng(0).integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)
    return train_gan(images, steps=steps, batch_size=4, config=CFG, seed=0, device="cpu",
                     out_dir=tmp_path / name, progress=False, sample_every=2, ckpt_every=2, **kw)


def test_train_gan_writes_grid_state_and_resumes(tmp_path):
    out = gan(tmp_path, "a", 3)
    assert out["step"] == 3 and np.isfinite(out["loss_g"]) and np.isfinite(out["loss_d"]) and out["r1"] > 0
    assert Image.open(out["grid"]).size == (64, 64)
    assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == ["step-0000002.png", "step-0000003.png"]
    assert load_training_state(out["state"])["step"] == 3
    G_ema, _ = load_model(out["checkpoints"]["G_ema"], expected_sha256=out["sha256"]["G_ema"])
    assert G_ema.img_resolution == 16
    again = gan(tmp_path, "a", 5)
    state = load_training_state(again["state"])
    assert state["step"] == 5 and len(state["log"]["loss_g"]) == 5


def test_train_gan_interrupted_equals_uninterrupted(tmp_path):
    full = gan(tmp_path, "full", 4)
    gan(tmp_path, "split", 2)
    split = gan(tmp_path, "split", 4)
    for name in ("G_ema", "D"):
        a = load_model(full["checkpoints"][name])[0].state_dict()
        b = load_model(split["checkpoints"][name])[0].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    with pytest.raises(DDCSInputError, match="different run.*seed"):
        images = np.random.default_rng(0).integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)
        train_gan(images, steps=4, batch_size=4, config=CFG, seed=1, device="cpu", out_dir=tmp_path / "full",
                  progress=False, sample_every=2, ckpt_every=2)


def test_train_gan_bad_inputs(tmp_path):
    images = np.zeros((4, 12, 12, 3), dtype=np.uint8)
    with pytest.raises(DDCSInputError, match="power-of-two"):
        train_gan(images, steps=1, batch_size=2, config={}, seed=0, device="cpu", out_dir=tmp_path)
    with pytest.raises(DDCSInputError, match="unknown GAN config keys"):
        train_gan(np.zeros((4, 16, 16, 3), np.uint8), steps=1, batch_size=2, config={"lr": 1}, seed=0,
                  device="cpu", out_dir=tmp_path)
