"""The typed experiment config: parsed once, every bad key named, defaults in one place, old runs readable."""

from pathlib import Path

import pytest
import torch

from ddcs_core.config import ExperimentConfig, WorldConfig, load_config, parse_experiment
from ddcs_core.errors import DDCSInputError
from ddcs_core.experiment import AttackSettings
from ddcs_core.geometry.ngd import NGDConfig
from ddcs_core.transfer import TransferConfig
from ddcs_core.worlds import load_demo_world

DEMO = Path(__file__).resolve().parents[1] / "assets" / "configs" / "demo.yaml"


def test_demo_config_is_typed_and_round_trips():
    cfg = load_config(DEMO)
    assert isinstance(cfg, ExperimentConfig) and cfg.world == WorldConfig()
    ngd = cfg.transfer.for_mode("ngd")
    assert (ngd.mode, ngd.lam, ngd.projection, ngd.k, ngd.steps) == ("ngd", 0.03, "reference", 20, 300)
    assert cfg.inversion.steps == 20 and cfg.evaluation.profile == "fast" and cfg.fid.samples == 2000
    assert parse_experiment(cfg.to_dict()) == cfg
    with pytest.raises(AttributeError):
        cfg.seed = 1  # frozen: a step cannot change what the others see


@pytest.mark.parametrize("raw, key", [
    ({"transfer": {"lam": -1}}, "transfer.lam"),
    ({"transfer": {"mode": "ngd"}}, "transfer.mode is set per mode"),
    ({"transfer": {"gamma": 2}}, "unknown transfer keys"),
    ({"inversion": {"steps": -1}}, "inversion.steps"),
    ({"evaluation": {"batch_size": 0}}, "evaluation.batch_size"),
    ({"evaluation": {"device": "cpu"}}, "unknown evaluation keys"),
    ({"fid": {"samples": 1}}, "fid.samples"),
    ({"fid": {"n": 3}}, "unknown fid keys"),
    ({"world": {"kind": "stylegan2-ada"}}, "world.kind 'stylegan2-ada' has no loader"),
    ({"world": {"weights": "x"}}, "unknown world keys"),
    ({"world": {"resolution": 3}}, "world.resolution"),
    ({"seed": "zero"}, "seed must be an int"),
    ({"classes": 0}, "classes must be"),
    ({"name": "a/b"}, "run name"),
    ({"transfer": []}, "section must be a mapping"),
    ({"transfer": {"lam": float("nan")}}, "plain numbers"),
])
def test_bad_values_name_their_key(raw, key):
    with pytest.raises(DDCSInputError, match=key):
        parse_experiment(raw)


def test_world_kind_override_and_demo_loader_refuse_unknowns(tmp_path):
    with pytest.raises(DDCSInputError, match="world.kind 'torchvision' has no loader .*demo"):
        load_config(DEMO, ["world.kind=torchvision"])
    with pytest.raises(DDCSInputError, match="kind 'demo' takes every model .*'generator'"):
        load_demo_world(WorldConfig(generator="stylegan2-ada.pkl"), torch.device("cpu"))


def test_runs_written_before_the_typed_config_still_parse():
    old = {  # config.json's "experiment" as the merged-dict code wrote it: sparse sections, seeds filled in
        "name": "demo", "seed": 0, "world": {"folder": "checkpoints/demo", "data_root": None}, "classes": "all",
        "transfer": {"modes": ["vanilla", "entropy", "ngd"], "steps": 300, "batch_size": 8, "lam": 0.03,
                     "projection": "reference", "k": 20, "gan": {"lr_g": 0.001}, "seed": 0},
        "inversion": {"search_size": 2000, "steps": 20, "lr": 0.1, "betas": [0.1, 0.1], "seed": 0},
        "evaluation": {"profile": "fast", "batch_size": 64, "seed": 0}, "fid": {"samples": 2000, "seed": 123}}
    cfg = parse_experiment(old)
    assert cfg.world.kind == "demo" and cfg.transfer.for_mode("entropy").gan == {"lr_g": 0.001}
    assert cfg.inversion.betas == (0.1, 0.1) and parse_experiment(cfg.to_dict()) == cfg


def test_defaults_agree_and_the_app_form_starts_from_them():
    t, n, form = TransferConfig(), NGDConfig(), AttackSettings()
    assert t.lam == form.lam == 0.03 and t.projection == n.mode == form.projection == "reference"
    assert t.lanczos_tol == n.tol and (t.k, t.mu, t.steps) == (form.k, form.mu, form.steps)
    base = load_config(DEMO)
    mine = AttackSettings(modes=("ngd",), steps=5, lam=0.1, seed=3, classes=2).apply(base)
    assert mine.modes == ("ngd",) and mine.transfer.common.lam == 0.1 and mine.classes == 2
    assert mine.transfer.common.seed == mine.inversion.seed == mine.evaluation.seed == 3
    assert mine.inversion.lr == base.inversion.lr and mine.transfer.common.gan == base.transfer.common.gan
    with pytest.raises(DDCSInputError, match="transfer.projection"):
        AttackSettings(projection="exact").apply(base)
