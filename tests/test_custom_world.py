"""`world.kind: custom` end to end: a test-written StyleGAN2-ADA pickle (G, G_ema, D), a torchvision
resnet18 victim and a mobilenet evaluator from state-dict files, private image folders and a public .npz,
through the whole experiment (3 transfer modes, inversion, dual pools, evaluation, map, table) and the
app's transfer/invert jobs; plus the paper config's placeholders and the world's refusals."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

from ddcs_core import experiment
from ddcs_core.__main__ import main
from ddcs_core.config import load_config
from ddcs_core.custom_world import load_custom_world
from ddcs_core.errors import DDCSInputError
from ddcs_core.models.checkpoints import load_model
from ddcs_core.models.network_pickle_writer import write_network_pickle
from ddcs_core.models.stylegan2_ada import Discriminator, Generator
from ddcs_core.perceptual import resolve_device
from ddcs_core.runs import RunStore

RES, CLASSES = 32, ("alice", "bob", "carol")
REPO = Path(__file__).resolve().parents[1]
POOLS = ["dual-entropy", "dual-ngd", "dual-vanilla", "transfer-entropy", "transfer-ngd", "transfer-vanilla", "vanilla"]
STEPS = {"transfer": {"steps": 2, "batch_size": 2, "k": 2, "reference_latents": 2, "ckpt_every": 1, "grid": 2,
                      "lanczos_tol": 1e-2},
         "inversion": {"search_size": 6, "candidates_per_class": 2, "steps": 1, "lr": 0.05, "final_per_class": 1,
                       "final_views": 1, "init_views": 1, "batch_size": 3},
         "evaluation": {"profile": "fast", "batch_size": 16},
         "fid": {"samples": 4, "seed": 3}}


def tiny_sg2ada(seed: int, c_dim: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=RES, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=4 * RES, channel_max=8))
    D = Discriminator(c_dim=c_dim, img_resolution=RES, img_channels=3, channel_base=4 * RES, channel_max=8)
    return G.eval(), D.eval()


def write_images(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):  # smooth colour blobs, one hue per class
            base = np.zeros((RES, RES, 3)) + 60 * k
            img = np.clip(base + rng.normal(0, 40, (4, 4, 3)).repeat(8, 0).repeat(8, 1), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    """The user's files and a config naming them by relative paths."""
    d = tmp_path_factory.mktemp("byo")
    G, D = tiny_sg2ada(0)
    G_ema, _ = tiny_sg2ada(1)
    write_network_pickle(d / "network-snapshot-000010.pkl", G=G, D=D, G_ema=G_ema)
    torch.manual_seed(2)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), d / "victim.pt")
    torch.manual_seed(3)
    torch.save({"state_dict": torchvision.models.mobilenet_v3_small(num_classes=3).state_dict()}, d / "evaluator.pth")
    write_images(d / "private", 2, seed=4)
    rng = np.random.default_rng(5)
    np.savez(d / "public.npz", images=rng.integers(0, 256, (8, RES, RES, 3), dtype=np.uint8),
             labels=np.zeros(8, dtype=np.int64))
    config = {"name": "byo", "seed": 0,
              "world": {"kind": "custom", "generator": "network-snapshot-000010.pkl", "resolution": RES,
                        "victim": {"arch": "resnet18", "weights": "victim.pt", "num_classes": 3, "preprocess": "imagenet",
                                   "class_names": list(CLASSES)},
                        "evaluator": {"arch": "mobilenet_v3_small", "weights": "evaluator.pth", "num_classes": 3,
                                      "preprocess": "imagenet", "class_names": list(CLASSES)},
                        "private": "private", "public": "public.npz"},
              **STEPS}
    (d / "byo.yaml").write_text(yaml.safe_dump(config))
    return d


@pytest.fixture
def fast_cpu():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_config_resolves_paths_against_its_folder(world_dir):
    cfg = load_config(world_dir / "byo.yaml")
    w = cfg.world
    assert w.generator == str(world_dir / "network-snapshot-000010.pkl") and w.private == str(world_dir / "private")
    assert w.victim["weights"] == str(world_dir / "victim.pt") and w.evaluator["arch"] == "mobilenet_v3_small"
    # the stored form parses back to the same tree (a resumed run names the same files)
    assert experiment.parse_experiment(cfg.to_dict()) == cfg


def test_custom_world_end_to_end_with_jobs(world_dir, tmp_path, fast_cpu):
    """run (all but the ngd chain) → the app's transfer and invert jobs for ngd → the attack job finishes it."""
    cfg = load_config(world_dir / "byo.yaml")
    world = load_custom_world(cfg.world, resolve_device("cpu"), progress=False)
    assert world.generator.img_resolution == RES and world.evaluator.info["arch"] == "mobilenet_v3_small"
    exp = experiment.open_experiment(cfg, world, tmp_path, device="cpu", progress=False, log=lambda m: None)
    first = [s for s in exp.graph.steps if "ngd" not in s and s not in ("map", "table")]
    exp.run_all(only=first)
    run = RunStore(tmp_path).run("byo")
    experiment.transfer_job(run, {"mode": "ngd", "device": "cpu"}, lambda f, m="": None, lambda: False)
    experiment.invert_job(run, {"generator": "ngd", "device": "cpu"}, lambda f, m="": None, lambda: False)
    experiment.experiment_job(run, {"device": "cpu"}, lambda f, m="": None, lambda: False)

    assert experiment.run_finished(run) and run.pools() == POOLS
    for mode in ("vanilla", "entropy", "ngd"):  # saved under the imported arch, so it rebuilds
        G, info = load_model(run.path / "transfer" / mode / "G.safetensors")
        assert isinstance(G, Generator) and info["arch"] == "stylegan2-ada-g"
        assert json.loads((run.path / "transfer" / mode / "summary.json").read_text())["steps"] == 2
    ngd = json.loads((run.path / "transfer" / "ngd" / "summary.json").read_text())["ngd"]
    assert ngd["refreshes"] >= 1
    for pool in POOLS:
        report = run.evaluation(pool).report
        assert report["eval_model"]["arch"] == "mobilenet_v3_small"
        assert report["eval_model"]["path"] == str(world_dir / "evaluator.pth")
        assert 0 <= report["attack_accuracy"]["top1"] <= 1 and report["counts"]["target_classes"] == 3
    recon, _ = run.recon("dual-ngd")
    assert recon.images.shape[1:] == (RES, RES, 3)
    assert "ngd" in (run.path / "reproduction.md").read_text()
    stored = json.loads((run.path / "config.json").read_text())
    assert stored["world"]["kind"] == "custom" and stored["world"]["resolution"] == RES


def test_world_refusals(world_dir, tmp_path):
    base = load_config(world_dir / "byo.yaml").world
    dev = resolve_device("cpu")
    from dataclasses import replace

    with pytest.raises(DDCSInputError, match="world.resolution is 64 but world.generator makes 32"):
        load_custom_world(replace(base, resolution=64), dev, progress=False)
    with pytest.raises(DDCSInputError, match="file not found: world.victim.weights"):
        load_custom_world(replace(base, victim={**base.victim, "weights": str(tmp_path / "nope.pt")}), dev, False)
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), tmp_path / "v4.pt")
    four = {**base.victim, "weights": str(tmp_path / "v4.pt"), "num_classes": 4, "class_names": None}
    with pytest.raises(DDCSInputError, match="world.victim has 4 classes but world.private has 3"):
        load_custom_world(replace(base, victim=four), dev, False)
    with pytest.raises(DDCSInputError, match="world.data_root is for kind 'demo'"):
        load_custom_world(replace(base, data_root="/data"), dev, False)
    with pytest.raises(DDCSInputError, match="needs world.evaluator"):
        load_custom_world(replace(base, evaluator=None), dev, False)
    with pytest.raises(DDCSInputError, match="world.victim.preprocess"):
        replace(base, victim={"arch": "resnet18", "weights": "v.pt", "num_classes": 3})
    # a class-conditional generator needs its class; the class is applied to G and D
    G, D = tiny_sg2ada(0, c_dim=2)
    write_network_pickle(tmp_path / "cond.pkl", G=G, D=D, G_ema=G)
    cond = replace(base, generator=str(tmp_path / "cond.pkl"))
    with pytest.raises(DDCSInputError, match="set world.generator_class"):
        load_custom_world(cond, dev, False)
    world = load_custom_world(replace(cond, generator_class=1), dev, False)
    with torch.no_grad():
        x = world.generator(torch.zeros(1, 8), noise_mode="const")
        assert world.discriminator(x).shape == (1,)
        assert torch.equal(x, G(torch.zeros(1, 8), c=torch.tensor([[0.0, 1.0]]), noise_mode="const"))


def test_paper_config_parses_and_names_missing_placeholders(tmp_path, capsys):
    path = REPO / "assets" / "configs" / "paper-ffhq256.yaml"
    cfg = load_config(path)
    w = cfg.world
    assert w.kind == "custom" and w.resolution == 256
    assert w.victim["preprocess"] == "paper-faces-112" and w.victim["arch"] == "irse50"
    assert cfg.transfer.modes == ("vanilla", "entropy", "ngd") and cfg.transfer.common.k == 20
    with pytest.raises(DDCSInputError, match="file not found: world.generator .*ffhq-256"):
        load_custom_world(w, resolve_device("cpu"), progress=False)
    assert main(["run", "--config", str(path), "--runs", str(tmp_path), "--device", "cpu"]) == 2
    assert "file not found: world.generator" in capsys.readouterr().err


def test_grey_batches_make_rgb_grids():
    from ddcs_core.models.train_gan import image_grid

    grey = torch.linspace(-1, 1, 2 * 4 * 4).reshape(2, 1, 4, 4)
    grid = np.asarray(image_grid(grey, 2))
    assert grid.shape == (4, 8, 3) and (grid[..., 0] == grid[..., 2]).all()
    assert grid[0, 0, 0] == 0 and grid[3, 7, 0] == 255


def test_bench_transfer_refuses_unknown_world():
    from ddcs_core.bench import transfer_bench

    with pytest.raises(DDCSInputError, match="--world must be one of"):
        transfer_bench(world="stylegan3")
