"""`--profile official` against an independent re-implementation of the official DDCS evaluate.py logic.

The reference below is written the way the official script works: torchvision transforms on PIL images
(Resize(resolution) -> ToTensor -> Normalize(0.5, 0.5)) for the targets, ToTensor -> Normalize for the
reconstructions, then the `lpips` package's LPIPS (built offline: its linear layers, our backbone weights)
on F.interpolate(256, bilinear, align_corners=True) of the float tensors, one reconstruction at a time,
per class; FID-Inception features through pytorch-fid's own InceptionV3 after transforms.Resize(256), and
the PPA-style per-class PRDC. Real faces: LFW people, reconstructions stand-ins = other photos of the
same people at 64 px.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddcs_core.__main__ import main
from ddcs_core.data.official_prep import load_official_pair, resize_short_edge, short_edge_size
from ddcs_core.errors import DDCSInputError
from ddcs_core.features import (FID_INCEPTION_NAME, FIDInceptionFeatures, fid_inception_v3, find_inception_weights,
                                inception_features, is_fid_inception)
from ddcs_core.metrics import prdc_per_class
from ddcs_core.perceptual.weights import load_backbone_state

RES = 64
PEOPLE = ["Abdullah_Gul", "Adrien_Brody", "Amelie_Mauresmo"]


# ---------------------------------------------------------------- the reference (official logic)

def _lpips_reference(net: str):
    import lpips

    model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # linear layers from the package, no download
    state = load_backbone_state(net)
    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for i, conv in enumerate(convs):
            conv.weight.copy_(state[f"Conv_{i}.weight"])
            conv.bias.copy_(state[f"Conv_{i}.bias"])
    return model.eval()


def _activations(model, x: torch.Tensor) -> list[torch.Tensor]:
    import lpips

    x = F.interpolate(x, (256, 256), mode="bilinear", align_corners=True)
    return [lpips.normalize_tensor(o) for o in model.net(model.scaling_layer(x))]


def _lpips_distance(model, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    import lpips

    return sum(lpips.spatial_average(model.lins[k]((a[k] - b[k]) ** 2), keepdim=True) for k in range(model.L)).flatten()


def _read_sets(targets_root, recon_root):
    from torchvision import datasets, transforms

    norm = transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    tgt = datasets.ImageFolder(str(targets_root), transforms.Compose([transforms.Resize(RES), transforms.ToTensor(), norm]))
    rec = datasets.ImageFolder(str(recon_root), transforms.Compose([transforms.ToTensor(), norm]))
    return tgt, rec


@torch.no_grad()
def official_ddcs(targets_root, recon_root, net: str) -> tuple[float, float, set[str]]:
    """DDCS (best), DDCS (average) and the matched targets' paths, as the official get_ddcs computes them."""
    model = _lpips_reference(net)
    tgt, rec = _read_sets(targets_root, recon_root)
    t_labels = np.array(tgt.targets)
    best, avg, matched = 0.0, 0.0, set()
    for c in np.unique(rec.targets):
        t_idx = np.flatnonzero(t_labels == c)
        acts = [_activations(model, tgt[i][0][None]) for i in t_idx]
        keys = [torch.cat([a[k] for a in acts]) for k in range(model.L)]
        recovered = torch.full((len(t_idx),), float("inf"))
        acc_dist, acc_count = torch.zeros(len(t_idx)), torch.zeros(len(t_idx))
        for r in [i for i, y in enumerate(rec.targets) if y == c]:
            d = _lpips_distance(model, _activations(model, rec[r][0][None]), keys)
            j = int(torch.argmin(d))
            recovered[j] = torch.minimum(recovered[j], d[j])
            acc_dist[j] += d[j]
            acc_count[j] += 1
        best += torch.reciprocal(recovered).sum().item()
        avg += sum(1 / (acc_dist[j] / acc_count[j]).item() for j in range(len(t_idx)) if acc_count[j] > 0)
        matched |= {tgt.samples[t_idx[j]][0] for j in range(len(t_idx)) if acc_count[j] > 0}
    return best / len(tgt), avg / len(tgt), matched


def _pytorch_fid_inception(weights):
    """pytorch-fid's own InceptionV3([3], normalize_input=False), its download replaced by the file."""
    import pytorch_fid.inception as pf

    state = torch.load(weights, weights_only=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pf, "load_state_dict_from_url", lambda *a, **kw: state)
        return pf.InceptionV3([3], normalize_input=False).eval()


@torch.no_grad()
def official_features(targets_root, recon_root, weights) -> tuple[dict, dict]:
    """Per-class pool3 features of both sets as the official compute_embedding makes them."""
    from torchvision import transforms

    inception, resize = _pytorch_fid_inception(weights), transforms.Resize(256)

    def embed(ds):
        feats = inception(resize(torch.stack([x for x, _ in ds])))[0].flatten(1)
        labels = torch.tensor(ds.targets)
        return {c: feats[labels == c] for c in labels.unique().tolist()}

    return tuple(embed(ds) for ds in _read_sets(targets_root, recon_root))


def official_prcd(real: dict, fake: dict, k: int = 3) -> dict[str, float]:
    """Per-class precision/recall/density/coverage as the official prcd() computes them, then averaged."""
    out = {m: [] for m in ("precision", "recall", "density", "coverage")}
    for c in real:
        r_real = torch.sort(torch.cdist(real[c], real[c]), dim=1)[0][:, k]
        r_fake = torch.sort(torch.cdist(fake[c], fake[c]), dim=1)[0][:, k]
        d_fr = torch.cdist(fake[c], real[c])
        min_fr, nn_real = d_fr.min(dim=1)
        min_rf, nn_fake = d_fr.T.min(dim=1)
        inside = (d_fr <= r_real[None, :]).float()
        out["precision"].append((min_fr <= r_real[nn_real]).float().mean().item())
        out["recall"].append((min_rf <= r_fake[nn_fake]).float().mean().item())
        out["density"].append((inside.sum(dim=0).mean() / k).item())
        out["coverage"].append((inside.sum(dim=0) > 0).float().mean().item())
    return {m: float(np.mean(v)) for m, v in out.items()}


# ---------------------------------------------------------------- data

def _world(data_root, tmp_path, n_targets: int, n_recon: int, people: list[str] = PEOPLE):
    """Targets: LFW originals (250x250 JPEG); reconstructions: the next photos of each person at 64 px."""
    lfw = data_root / "lfw-deepfunneled"
    for person in people:
        photos = sorted((lfw / person).iterdir())
        (tmp_path / "targets" / person).mkdir(parents=True)
        (tmp_path / "recon" / person).mkdir(parents=True)
        for f in photos[:n_targets]:
            shutil.copy(f, tmp_path / "targets" / person / f.name)
        for f in photos[n_targets:n_targets + n_recon]:
            with Image.open(f) as im:
                im.convert("RGB").resize((RES, RES), Image.BILINEAR).save(tmp_path / "recon" / person / f"{f.stem}.png")
    return tmp_path / "targets", tmp_path / "recon"


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    """An FID-Inception weights file with random weights, written by our own code (no download)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-00000000.pth"
    torch.save(fid_inception_v3().state_dict(), path)
    return path


def _evaluate(targets, recon, out, *extra) -> dict:
    assert main(["evaluate", "--targets", str(targets), "--recon", str(recon), "--out", str(out), "--quiet",
                 "--profile", "official", "--device", "cpu", *extra]) == 0
    return json.loads((out / "report.json").read_text())


def _matched_paths(out) -> set[str]:
    import csv

    return {r["path"] for r in csv.DictReader((out / "targets.csv").open()) if r["matched"] == "True"}


# ---------------------------------------------------------------- tests

def test_short_edge_follows_torchvision_resize():
    from torchvision import transforms

    for w, h in [(250, 250), (92, 112), (112, 92), (300, 201)]:
        img = Image.fromarray(np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8))
        expected = transforms.Resize(64)(img)
        got = resize_short_edge(img, 64)
        assert short_edge_size(h, w, 64) == (expected.height, expected.width)
        assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_official_profile_matches_the_official_ddcs_logic(data_root, tmp_path):
    """LPIPS-alex (cheap on a CPU) with the official preparation: same DDCS, DDCS_avg, matched targets."""
    targets, recon = _world(data_root, tmp_path, n_targets=3, n_recon=3, people=PEOPLE[:2])
    report = _evaluate(targets, recon, tmp_path / "out", "--net", "alex", "--features", "lpips")
    ddcs, ddcs_avg, matched = official_ddcs(targets, recon, "alex")
    assert report["ddcs"] == pytest.approx(ddcs, rel=1e-4)
    assert report["ddcs_avg"] == pytest.approx(ddcs_avg, rel=1e-4)
    assert _matched_paths(tmp_path / "out") == matched and report["matched"] == len(matched)
    assert report["profile"]["prep"] == "official" and report["inputs"]["image_size"] == [RES, RES]
    assert report["prdc"]["mode"] == "ppa" and report["prdc"]["k"] == 3


def test_ppa_prdc_equals_the_official_prcd():
    rng = np.random.default_rng(3)
    real_labels, fake_labels = np.repeat(np.arange(3), 6), np.repeat(np.arange(3), 5)
    real = rng.normal(size=(18, 8)) + real_labels[:, None]
    fake = rng.normal(size=(15, 8)) * 1.3 + fake_labels[:, None]
    want = official_prcd({c: torch.from_numpy(real[real_labels == c]) for c in range(3)},
                         {c: torch.from_numpy(fake[fake_labels == c]) for c in range(3)})
    got = prdc_per_class(real, real_labels, fake, fake_labels, nearest_k=3, mode="ppa")
    for m in want:
        assert got[m] == pytest.approx(want[m], abs=1e-6), m  # the official code averages in float32


@pytest.mark.slow
def test_official_profile_coverage_on_fid_inception_features(data_root, tmp_path, fid_weights):
    """FID and PRDC on pytorch-fid's Inception after Resize(256), as the official code (minutes on this CPU)."""
    targets, recon = _world(data_root, tmp_path, n_targets=4, n_recon=4, people=PEOPLE[:2])
    report = _evaluate(targets, recon, tmp_path / "out", "--net", "alex", "--inception-weights", str(fid_weights))
    assert report["prdc"]["features"] == FID_INCEPTION_NAME == report["fid"]["features"]
    ref = official_prcd(*official_features(targets, recon, fid_weights))
    for m in ("precision", "recall", "density", "coverage"):
        assert report["prdc"][m] == pytest.approx(ref[m], abs=1e-6), m


@pytest.mark.slow
def test_official_profile_matches_the_official_logic_with_lpips_vgg(data_root, tmp_path):
    """The profile as shipped (LPIPS-VGG at 256 px, ~1 s per image on this CPU): kept to 12 images."""
    targets, recon = _world(data_root, tmp_path, n_targets=2, n_recon=2)
    report = _evaluate(targets, recon, tmp_path / "out", "--features", "lpips")
    ddcs, ddcs_avg, matched = official_ddcs(targets, recon, "vgg")
    assert report["profile"]["net"] == "vgg"
    assert report["ddcs"] == pytest.approx(ddcs, rel=1e-4)
    assert report["ddcs_avg"] == pytest.approx(ddcs_avg, rel=1e-4)
    assert _matched_paths(tmp_path / "out") == matched


def _tree(root, size_hw: tuple[int, int], n: int = 2):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            img = np.random.default_rng(i).integers(0, 256, (*size_hw, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root


def test_official_targets_keep_their_aspect_and_a_mismatch_is_a_clear_error(tmp_path):
    """92x112 faces (W x H) against a 46x56 generator: shorter edge 92 -> 46, so 112 -> 56, as Resize(46)."""
    targets = _tree(tmp_path / "t", (112, 92))
    recon = _tree(tmp_path / "r", (56, 46))
    t, r, notes = load_official_pair(targets, recon, None, progress=False)
    assert t.size == r.size == (56, 46) and "shorter edge" in notes[0]
    square = _tree(tmp_path / "s", (64, 64))
    with pytest.raises(DDCSInputError, match="targets are 77x64 after resizing their shorter edge to 64"):
        load_official_pair(targets, square, None, progress=False)


def test_official_profile_says_what_features_it_fell_back_to(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    targets, recon = _world(data_root, tmp_path, n_targets=4, n_recon=4)
    report = _evaluate(targets, recon, tmp_path / "out", "--net", "alex")
    assert report["prdc"]["features"].startswith("lpips-alex") and report["prdc"]["mode"] == "ppa"
    assert any("no Inception weights found" in n and "pt_inception-2015-12-05" in n for n in report["notes"])


def test_fid_inception_is_pytorch_fids_network_and_deterministic(fid_weights):
    """Same keys and shapes (strict load), same outputs as pytorch-fid's InceptionV3 given the same file,
    checked at 80 px input to stay cheap on a CPU (the full 299 px pipeline is the slow test below)."""
    assert is_fid_inception(torch.load(fid_weights, weights_only=True))
    theirs = _pytorch_fid_inception(fid_weights)
    theirs.resize_input = False
    ours = FIDInceptionFeatures(fid_weights, torch.device("cpu"))
    x = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want = theirs(x)[0].flatten(1)
        got, again = ours.model(x), ours.model(x)
    assert got.shape == (1, 2048)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(again, got, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_fid_inception_pipeline_matches_pytorch_fid_after_resize_256(fid_weights):
    from torchvision import transforms

    theirs = _pytorch_fid_inception(fid_weights)
    images = np.random.default_rng(0).integers(0, 256, (1, RES, RES, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    official = inception_features(fid_weights, torch.device("cpu"), official=True)
    plain = inception_features(fid_weights, torch.device("cpu"))
    assert official.name == plain.name == FID_INCEPTION_NAME and official.pre_resize and not plain.pre_resize
    with torch.no_grad():
        np.testing.assert_allclose(official(images), theirs(transforms.Resize(256)(x))[0].flatten(1).numpy(),
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(plain(images), theirs(x)[0].flatten(1).numpy(), rtol=1e-4, atol=1e-6)


def test_inception_weights_wrong_file_is_a_clear_error(tmp_path):
    cpu = torch.device("cpu")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(DDCSInputError, match="notes.pth.*cannot read"):
        inception_features(text, cpu)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(DDCSInputError, match="resnet.pth.*neither pytorch-fid"):
        inception_features(other, cpu)
    with pytest.raises(DDCSInputError, match="missing.pth: file not found"):
        find_inception_weights(tmp_path / "missing.pth")


def test_fid_weights_file_is_found_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert find_inception_weights() is None
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "inception_v3_google-0cc3c7bd.pth").write_bytes(b"")
    fid = folder / "pt_inception-2015-12-05-6726825d.pth"
    fid.write_bytes(b"")
    assert find_inception_weights() == fid
