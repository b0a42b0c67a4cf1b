"""StyleGAN2-ADA: our ops, the restricted network-pickle loader (nothing in a pickle runs), the importer,
the CLI and the demo-generator interface. Fixture pickles come from our own writer, never NVIDIA's code."""

from __future__ import annotations

import io
import os
import pickle
import pickletools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddcs_core.__main__ import main
from ddcs_core.errors import DDCSInputError
from ddcs_core.models import sg2ada_ops as ops
from ddcs_core.models.network_pickle import PersistentRecord, load_network_pickle, read_network_pickle
from ddcs_core.models.network_pickle_writer import network_pickle_bytes, write_network_pickle
from ddcs_core.models.sg2ada_import import import_network_pickle, load_network, sample
from ddcs_core.models.stylegan2_ada import Discriminator, Generator


def tiny_g(c_dim: int = 0, res: int = 16, seed: int = 0, **synthesis) -> Generator:
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=res, img_channels=3,
                  mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=8 * res, channel_max=16, **synthesis))
    with torch.no_grad():  # non-trivial noise strengths, biases and w_avg, so every path matters
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
        G.mapping.w_avg.normal_()
    return G.eval()


def tiny_d(c_dim: int = 0, res: int = 16, seed: int = 1, **kwargs) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, channel_base=8 * res, channel_max=16,
                         **kwargs).eval()


# ---------------------------------------------------------------- ops


def test_upsampling_conv_equals_zero_insertion_filter_then_convolution():
    """The transposed-conv form of an upsampling layer is the plain definition: insert zeros, FIR-filter
    (gain 4), convolve with the (flipped-for-correlation) weight."""
    torch.manual_seed(0)
    x, w, f = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), ops.setup_filter([1, 3, 3, 1])
    ours = ops.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False)
    plain = F.conv2d(ops.upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4), w.flip([2, 3]))
    assert ours.shape == (2, 4, 10, 10)
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-5)


def test_fir_resampling_keeps_constants_and_sizes():
    f = ops.setup_filter([1, 3, 3, 1])
    assert torch.allclose(f.sum(), torch.tensor(1.0)) and f.shape == (4, 4)
    x = torch.full((1, 2, 8, 8), 0.5)
    up, down = ops.upsample2d(x, f), ops.downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.5))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 0.5))


def test_bias_act_gain_then_clamp():
    x = torch.tensor([[-2.0, 1.0, 10.0]]).reshape(1, 3, 1, 1)
    y = ops.bias_act(x, torch.tensor([0.0, 0.0, 1.0]), act="lrelu", clamp=5.0).flatten()
    torch.testing.assert_close(y, torch.tensor([-0.4 * 2**0.5, 2**0.5, 5.0]))


def test_modulated_conv_equals_per_sample_weights():
    torch.manual_seed(0)
    x, w, s = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    ours = ops.modulated_conv2d(x, w, s, padding=1)
    for n in range(3):
        wn = w * s[n][None, :, None, None]
        wn = wn * torch.rsqrt(wn.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        torch.testing.assert_close(ours[n:n + 1], F.conv2d(x[n:n + 1], wn, padding=1), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- pickle layout and round trips


@pytest.mark.parametrize("arch,d_arch,c_dim,res", [("skip", "resnet", 0, 16), ("resnet", "orig", 3, 16),
                                                    ("orig", "skip", 2, 32)])
def test_round_trip_through_a_network_pickle(tmp_path, arch, d_arch, c_dim, res):
    G = tiny_g(c_dim, res, architecture=arch, conv_clamp=1.5, num_fp16_res=2)
    G_ema, D = tiny_g(c_dim, res, seed=5, architecture=arch, conv_clamp=1.5, num_fp16_res=2), tiny_d(c_dim, res,
                                                                                                    architecture=d_arch)
    path = write_network_pickle(tmp_path / "network-snapshot-000000.pkl", G=G, D=D, G_ema=G_ema)
    nets = load_network_pickle(path)
    z = torch.randn(4, 8)
    c = F.one_hot(torch.arange(4) % c_dim, c_dim).float() if c_dim else None
    with torch.no_grad():
        for ours, ref in ((nets.G, G), (nets.G_ema, G_ema)):
            for kw in (dict(noise_mode="const"), dict(truncation_psi=0.6, truncation_cutoff=2, noise_mode="none")):
                torch.testing.assert_close(ours(z, c=c, **kw), ref(z, c=c, **kw), atol=1e-6, rtol=0)
        x = G(z, c=c, noise_mode="const")
        torch.testing.assert_close(nets.D(x, c=c), D(x, c=c), atol=1e-6, rtol=0)
    assert not torch.equal(nets.G.synthesis.b4.const, nets.G_ema.synthesis.b4.const)
    assert nets.extras == ["augment_pipe"]


def test_pickle_has_the_persistence_structure(tmp_path):
    data = network_pickle_bytes(G=tiny_g(), D=tiny_d(), G_ema=tiny_g(), training_set_kwargs={"resolution": 16})
    names = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    names |= {f"{a} {b}" for a, b in zip(*[iter([arg for op, arg, _ in pickletools.genops(data)
                                                  if op.name in ("SHORT_BINUNICODE", "BINUNICODE")])] * 2)}
    assert "torch_utils.persistence _reconstruct_persistent_obj" in names and "dnnlib.util EasyDict" in names
    (tmp_path / "n.pkl").write_bytes(data)
    top = read_network_pickle(tmp_path / "n.pkl")
    assert set(top) == {"training_set_kwargs", "G", "D", "G_ema", "augment_pipe"}
    g = top["G"]
    assert isinstance(g, PersistentRecord) and g.class_name == "Generator"
    assert g.init_kwargs["mapping_kwargs"] == {"num_layers": 2} and g.init_args == ()
    fc0 = g.state["_modules"]["mapping"].state["_modules"]["fc0"]
    assert fc0.class_name == "FullyConnectedLayer" and isinstance(fc0.state["weight_gain"], float)
    assert set(fc0.state["_parameters"]) == {"weight", "bias"}


def test_truncation_psi_zero_gives_the_w_avg_image():
    G = tiny_g()
    with torch.no_grad():
        a = G(torch.randn(2, 8), truncation_psi=0.0, noise_mode="const")
        b = G.synthesis(G.w_avg[None].expand(2, -1), noise_mode="const")
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(a[0], a[1], atol=1e-6, rtol=0)


def test_noise_modes_and_determinism():
    G, z = tiny_g(), torch.randn(2, 8)
    with torch.no_grad():
        const1, const2 = G(z, noise_mode="const"), G(z, noise_mode="const")
        none = G(z, noise_mode="none")
        rand1, rand2 = G(z, noise_mode="random"), G(z, noise_mode="random")
    assert torch.equal(const1, const2)
    assert (const1 - none).abs().max() > 1e-3 and (rand1 - rand2).abs().max() > 1e-3
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="loud")


def test_fp16_layers_run_in_half_only_when_enabled():
    G, D, z = tiny_g(res=32, num_fp16_res=2, conv_clamp=256), tiny_d(res=32, num_fp16_res=2), torch.randn(2, 8)
    with torch.no_grad():
        full = G(z, noise_mode="const")
        G.set_fp16(True)
        half = G(z, noise_mode="const")
        single = G(z[:1], noise_mode="const")  # one sample: the grouped (fused) half-precision form
        logits = D(half)
        D.set_fp16(True)
        half_logits = D(half)
    assert full.dtype == half.dtype == torch.float32 and half_logits.dtype == torch.float32
    assert 0 < (full - half).abs().max() < 0.05 and 0 < (logits - half_logits).abs().max() < 0.05
    torch.testing.assert_close(single, half[:1], atol=0.05, rtol=0)


def test_conditional_generator_needs_a_class():
    G = tiny_g(c_dim=3)
    with pytest.raises(DDCSInputError, match="class-conditional"):
        G(torch.randn(1, 8))
    G.set_class(2)
    with torch.no_grad():
        fixed = G(torch.zeros(1, 8), noise_mode="const")
        given = G(torch.zeros(1, 8), c=torch.tensor([[0.0, 0.0, 1.0]]), noise_mode="const")
    torch.testing.assert_close(fixed, given)
    with pytest.raises(DDCSInputError, match="out of range"):
        G.set_class(3)


# ---------------------------------------------------------------- nothing in a pickle runs


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


class _EvalPayload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return eval, (f"open({str(self.target)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
def test_payload_never_runs(tmp_path, payload):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": payload(target)}))
    with pytest.raises(DDCSInputError, match=r"refused: the pickle asks for the global (posix\.system|builtins\.eval)"):
        load_network_pickle(path)
    assert not target.exists()


def test_payload_inside_a_tensor_storage_never_runs(tmp_path):
    target = tmp_path / "pwned"

    class NestedStorage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (pickle.dumps(_Payload(target), protocol=2),)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": NestedStorage()}))
    with pytest.raises(DDCSInputError, match="weights-only"):
        read_network_pickle(path)
    assert not target.exists()


def test_embedded_module_source_is_never_executed(tmp_path, monkeypatch):
    from ddcs_core.models import network_pickle_writer as writer

    target = tmp_path / "pwned"
    monkeypatch.setattr(writer, "MODULE_SRC", f"open({str(target)!r}, 'w').close()\n")
    path = write_network_pickle(tmp_path / "n.pkl", G_ema=tiny_g())
    assert load_network_pickle(path).G_ema is not None
    assert not target.exists()


def test_unsupported_features_are_named(tmp_path):
    G = tiny_g()
    G.config["synthesis_kwargs"]["magnitude_ema_beta"] = 0.99  # a StyleGAN3 argument
    path = write_network_pickle(tmp_path / "sg3.pkl", G_ema=G)
    with pytest.raises(DDCSInputError, match=r"unsupported feature: Generator\.synthesis_kwargs.*magnitude_ema_beta"):
        load_network_pickle(path)
    G = tiny_g()
    G.config["synthesis_kwargs"]["architecture"] = "pyramid"
    path = write_network_pickle(tmp_path / "arch.pkl", G_ema=G)
    with pytest.raises(DDCSInputError, match="architecture 'pyramid' is not supported"):
        load_network_pickle(path)
    G = tiny_g()
    G.config["w_dim"] = 9  # the tensors no longer fit the arguments
    path = write_network_pickle(tmp_path / "shape.pkl", G_ema=G)
    with pytest.raises(DDCSInputError, match="shape"):
        load_network_pickle(path)
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DDCSInputError, match="not a readable network pickle"):
        load_network_pickle(tmp_path / "junk.pkl")


# ---------------------------------------------------------------- import folder and CLI


def test_import_folder_matches_the_pickle_and_detects_tampering(tmp_path):
    G = tiny_g(c_dim=2)
    pkl = write_network_pickle(tmp_path / "n.pkl", G=G, D=tiny_d(c_dim=2), G_ema=G)
    config = import_network_pickle(pkl, tmp_path / "imp")
    assert sorted(config["networks"]) == ["D", "G", "G_ema"] and config["networks"]["G_ema"]["config"]["c_dim"] == 2
    z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    a = sample(load_network(pkl), z, 0.7, "const", class_index=1)
    b = sample(load_network(tmp_path / "imp"), z, 0.7, "const", class_index=1)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert isinstance(load_network(tmp_path / "imp", "D"), Discriminator)
    with pytest.raises(DDCSInputError, match="already exists"):
        import_network_pickle(pkl, tmp_path / "imp")
    blob = (tmp_path / "imp" / "G_ema.safetensors").read_bytes()
    (tmp_path / "imp" / "G_ema.safetensors").write_bytes(blob[:-4] + b"\0\0\0\0")
    with pytest.raises(DDCSInputError, match="does not match its sha256"):
        load_network(tmp_path / "imp")


def test_cli_import_and_sample(tmp_path, capsys):
    pkl = write_network_pickle(tmp_path / "n.pkl", G=tiny_g(), D=tiny_d(), G_ema=tiny_g(seed=3))
    z = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    assert main(["generator", "import", str(pkl), "--out", str(tmp_path / "imp")]) == 0
    for gen in (pkl, tmp_path / "imp"):
        out = tmp_path / f"{gen.name}.npy"
        assert main(["generator", "sample", "--generator", str(gen), "--latents", str(tmp_path / "z.npy"),
                     "--out", str(out), "--truncation-psi", "0.8", "--device", "cpu"]) == 0
        images = np.load(out)
        assert images.dtype == np.float32 and images.shape == (5, 3, 16, 16)
    np.testing.assert_allclose(np.load(tmp_path / "n.pkl.npy"), np.load(tmp_path / "imp.npy"), atol=1e-6, rtol=0)
    with torch.no_grad():
        ref = tiny_g(seed=3)(torch.from_numpy(z), truncation_psi=0.8, noise_mode="const").numpy()
    np.testing.assert_allclose(images, ref, atol=1e-6, rtol=0)  # G_ema by default, raw (unclamped) values
    assert main(["generator", "sample", "--generator", str(pkl), "--latents", str(tmp_path / "z.npy"),
                 "--out", str(tmp_path / "grid.png"), "--device", "cpu"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size == (3 * 16, 2 * 16)
    capsys.readouterr()
    assert main(["generator", "sample", "--generator", str(pkl), "--latents", str(tmp_path / "z.npy"),
                 "--out", str(tmp_path / "x.npy"), "--class", "1", "--device", "cpu"]) == 2
    assert "unconditional" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", z[:, :4])
    assert main(["generator", "sample", "--generator", str(pkl), "--latents", str(tmp_path / "bad.npy"),
                 "--out", str(tmp_path / "x.npy"), "--device", "cpu"]) == 2
    assert "(N, 8)" in capsys.readouterr().err
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Payload(tmp_path / "pwned")}))
    assert main(["generator", "import", str(tmp_path / "evil.pkl"), "--out", str(tmp_path / "e")]) == 2
    assert "posix.system" in capsys.readouterr().err and not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- the demo generator's interface


def test_inversion_and_transfer_steps_run_on_an_imported_generator(tmp_path):
    from ddcs_core.attacks.augment import AugmentConfig
    from ddcs_core.attacks.optimize import optimize_latents
    from ddcs_core.models.gan_losses import g_nonsaturating_loss

    pkl = write_network_pickle(tmp_path / "n.pkl", G=tiny_g(c_dim=2), D=tiny_d(c_dim=2), G_ema=tiny_g(c_dim=2))
    nets = load_network_pickle(pkl)
    G, D = nets.G_ema, nets.D
    G.set_class(1)
    D.set_class(1)
    victim = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    w0 = G.mapping(torch.randn(2, 8), truncation_psi=0.7)
    assert w0.shape == (2, G.w_dim) and G.const.device.type == "cpu"
    w = optimize_latents(G, victim, w0, torch.tensor([0, 3]), steps=2, lr=0.05, betas=(0.1, 0.1), loss="ce",
                         augment=AugmentConfig(), seed=0)
    assert w.shape == w0.shape and torch.isfinite(w).all() and not torch.allclose(w, w0)
    assert all(p.requires_grad for p in G.parameters())  # left trainable, as the demo generator
    nets.G.set_class(1)
    loss = g_nonsaturating_loss(D(nets.G.synthesis(nets.G.mapping(torch.randn(2, 8))[:, None].repeat(1, G.num_ws, 1))))
    loss.backward()
    grads = [p.grad for p in nets.G.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
