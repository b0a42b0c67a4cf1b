import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from ddcs_core.__main__ import main
from ddcs_core.errors import DDCSInputError
from ddcs_core.models.checkpoints import load_model
from ddcs_core.models.irse import build_ir
from ddcs_core.models.preprocess import IMAGENET, build_preprocess
from ddcs_core.models.victims import (
    Classifier,
    ClassifierSpec,
    check_resolution,
    fit_state_dict,
    load_classifier,
    read_state_dict,
)

REPO = Path(__file__).resolve().parents[1]
MEAN = torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so a state that failed to load would show in the logits."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18():
    return randomised(torchvision.models.resnet18(weights=None, num_classes=4))


def spec(path, arch="resnet18", **kw) -> ClassifierSpec:
    return ClassifierSpec.from_dict({"arch": arch, "weights": str(path), "num_classes": 4,
                                     "preprocess": "imagenet", **kw})


def prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


@pytest.mark.parametrize("name, wrap, stripped, wrapper", [
    ("raw.pt", lambda sd: sd, [], None),
    ("ddp.pth", lambda sd: {"state_dict": prefixed(sd, "module."), "epoch": 3}, ["module."], "state_dict"),
    ("ppa.pt", lambda sd: {"model_state_dict": prefixed(sd, "model."), "optimizer": {"lr": 0.1}},
     ["model."], "model_state_dict"),
    ("nested.pt", lambda sd: {"model": {"state_dict": prefixed(sd, "module.model.")}},
     ["module.", "model."], "model/state_dict"),
])
def test_torchvision_state_dicts_load_through_wrappers_and_prefixes(
        tmp_path, resnet18, deterministic_cpu, name, wrap, stripped, wrapper):
    torch.save(wrap(resnet18.state_dict()), tmp_path / name)
    victim = load_classifier(spec(tmp_path / name))
    assert victim.info["stripped_prefixes"] == stripped and victim.info["wrapper"] == wrapper
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.equal(victim(x), resnet18(((x + 1) * 0.5 - MEAN) / STD))
    assert victim.num_classes == 4 and not victim.training


def test_safetensors_weights_and_penultimate_features(tmp_path, resnet18, deterministic_cpu):
    save_file({k: v.contiguous() for k, v in resnet18.state_dict().items()}, tmp_path / "w.safetensors")
    victim = load_classifier(spec(tmp_path / "w.safetensors"))
    assert victim.info["format"] == "safetensors"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = victim.features(x)
    assert feats.shape == (2, 512)
    assert torch.equal(victim.head(feats), victim(x))


def test_gradient_flows_through_the_preprocessing_to_the_input(tmp_path, resnet18):
    torch.save(resnet18.state_dict(), tmp_path / "w.pt")
    victim = load_classifier(spec(tmp_path / "w.pt", preprocess=[{"center_crop": 32}, {"resize": 24},
                                                                  {"to_unit_range": True}]))
    x = (torch.rand(2, 3, 40, 40) * 2 - 1).requires_grad_(True)
    torch.logsumexp(victim(x), dim=1).sum().backward()
    assert x.grad[..., 4:36, 4:36].abs().sum() > 0 and x.grad[..., :4, :].abs().sum() == 0


def test_missing_and_unexpected_keys_are_listed_with_the_file(tmp_path, resnet18):
    sd = dict(resnet18.state_dict())
    for k in ("layer1.0.conv1.weight", "layer4.1.bn2.bias"):
        del sd[k]
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "bad.pt")
    with pytest.raises(DDCSInputError) as e:
        load_classifier(spec(tmp_path / "bad.pt"))
    msg = str(e.value)
    assert str(tmp_path / "bad.pt") in msg and "2 missing keys [layer1.0.conv1.weight, layer4.1.bn2.bias]" in msg
    assert "1 unexpected keys [extra.weight]" in msg


def test_many_missing_keys_show_the_first_few_and_the_count(tmp_path, resnet18):
    torch.save({k: v for k, v in resnet18.state_dict().items() if not k.startswith("layer2.")}, tmp_path / "w.pt")
    with pytest.raises(DDCSInputError, match=r"missing keys \[layer2\.0\.bn1\.bias, .*\.\.\. \(\d+ in all\)\]"):
        load_classifier(spec(tmp_path / "w.pt"))


def test_a_foreign_prefix_gets_a_hint(tmp_path, resnet18):
    torch.save(prefixed(resnet18.state_dict(), "backbone."), tmp_path / "w.pt")
    with pytest.raises(DDCSInputError, match="set key_prefix: 'backbone.'"):
        load_classifier(spec(tmp_path / "w.pt"))
    torch.save(prefixed(resnet18.state_dict(), "backbone.") | {"head.w": torch.ones(1)}, tmp_path / "w.pt")
    victim = load_classifier(spec(tmp_path / "w.pt", key_prefix="backbone."))
    assert victim.info["selected_prefix"] == "backbone." and victim.info["dropped_keys"] == 1


def test_wrong_num_classes_names_the_head(tmp_path, resnet18):
    torch.save(resnet18.state_dict(), tmp_path / "w.pt")
    bad = ClassifierSpec.from_dict({"arch": "resnet18", "weights": str(tmp_path / "w.pt"), "num_classes": 7,
                                    "preprocess": "imagenet"})
    with pytest.raises(DDCSInputError, match=r"2 tensors have the wrong shape.*fc\.weight \(4, 512\) vs \(7, 512\)"
                                             r".*head 'fc' has 4 classes, num_classes says 7"):
        load_classifier(bad)


def test_non_finite_weights_are_refused_by_name(tmp_path, resnet18):
    sd = {k: v.clone() for k, v in resnet18.state_dict().items()}
    sd["layer3.0.bn1.running_var"][5] = float("inf")
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(DDCSInputError, match="'layer3.0.bn1.running_var' contains NaN or inf"):
        load_classifier(spec(tmp_path / "w.pt"))


class _Payload:
    def __reduce__(self):
        import os

        return os.system, (f"touch {_Payload.marker}",)


def test_a_pickle_that_needs_globals_is_refused_and_never_runs(tmp_path):
    _Payload.marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": _Payload()}, protocol=2))  # torch.save's protocol
    with pytest.raises(DDCSInputError, match=r"needs Python objects beyond tensors \(posix\.system\).*"
                                             r"weights_only=True.*state_dict\(\)"):
        read_state_dict(path)
    path.write_bytes(pickle.dumps({"state_dict": _Payload()}, protocol=4))
    with pytest.raises(DDCSInputError, match=r"refused by torch.load\(weights_only=True\) \(Unsupported operand"):
        read_state_dict(path)
    assert not (tmp_path / "ran").exists()
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DDCSInputError, match="not a safetensors file or a torch checkpoint"):
        read_state_dict(tmp_path / "text.pt")


def test_files_without_a_state_dict_are_refused(tmp_path):
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "w.pt")
    with pytest.raises(DDCSInputError, match="no state dict found.*none of"):
        read_state_dict(tmp_path / "w.pt")
    torch.save([torch.zeros(1)], tmp_path / "l.pt")
    with pytest.raises(DDCSInputError, match="expected a state dict"):
        read_state_dict(tmp_path / "l.pt")
    with pytest.raises(DDCSInputError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")


def test_declared_sha256_is_checked(tmp_path, resnet18):
    torch.save(resnet18.state_dict(), tmp_path / "w.pt")
    with pytest.raises(DDCSInputError, match="does not match the declared"):
        load_classifier(spec(tmp_path / "w.pt", sha256="0" * 64))


def test_inception_v3_drops_the_auxiliary_head(tmp_path, deterministic_cpu):
    ref = randomised(torchvision.models.inception_v3(weights=None, num_classes=4, aux_logits=True, init_weights=False))
    torch.save(ref.state_dict(), tmp_path / "inc.pt")
    victim = load_classifier(spec(tmp_path / "inc.pt", arch="inception_v3", preprocess="unit"), resolution=75)
    assert victim.info["dropped_keys"] == sum(k.startswith("AuxLogits.") for k in ref.state_dict())
    x = torch.rand(2, 3, 75, 75) * 2 - 1
    assert torch.equal(victim(x), ref((x + 1) * 0.5))


def test_densenet_old_key_names_are_renamed(tmp_path):
    ref = randomised(torchvision.models.densenet121(weights=None, num_classes=4))
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.") if "denselayer" in k else k: v
           for k, v in ref.state_dict().items()}
    torch.save(old, tmp_path / "d.pt")
    victim = load_classifier(spec(tmp_path / "d.pt", arch="densenet121"))
    assert victim.info["renamed_keys"] > 0
    body = victim.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in ref.state_dict().items() if not k.startswith("classifier"))
    assert torch.equal(victim.head.weight, ref.classifier.weight)


def test_efficientnet_head_split_keeps_the_logits(tmp_path, deterministic_cpu):
    ref = randomised(torchvision.models.efficientnet_b0(weights=None, num_classes=4))
    torch.save(ref.state_dict(), tmp_path / "e.pt")
    victim = load_classifier(spec(tmp_path / "e.pt", arch="efficientnet_b0"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(victim(x), ref(((x + 1) * 0.5 - MEAN) / STD))
    assert victim.features(x).shape == (2, 1280)


def test_irse50_layout_and_size():
    model = build_ir("irse50", num_classes=10)
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 43_802_826  # 43.80 M incl. the 512x10 head
    assert tuple(sd["feature.output_layer.3.weight"].shape) == (512, 512 * 7 * 7)
    assert tuple(sd["feature.body.0.res_layer.5.fc1.weight"].shape) == (4, 64, 1, 1)
    assert tuple(sd["feature.body.3.shortcut_layer.0.weight"].shape) == (128, 64, 1, 1)
    assert tuple(sd["fc_layer.weight"].shape) == (10, 512)
    assert len([k for k in sd if k.startswith("feature.body.") and k.endswith(".res_layer.1.weight")]) == 24
    assert sum(p.numel() for p in build_ir("ir50", 10).parameters()) == 43_580_106


def test_ir64_layout_loads_a_data_parallel_state(deterministic_cpu):
    ref = build_ir("ir50-64", num_classes=3).eval()
    assert tuple(ref.state_dict()["output_layer.3.weight"].shape) == (512, 512 * 4 * 4)
    model = build_ir("ir50-64", num_classes=3)
    notes = fit_state_dict(model, prefixed(ref.state_dict(), "module."), Path("facenet64.tar"), "ir50-64", "fc_layer")
    assert notes["stripped_prefixes"] == ["module."]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_resolution_check_refuses_an_input_the_architecture_cannot_take():
    ir = build_ir("ir50-64", num_classes=3)
    info = {"arch": "ir50-64", "path": "f.pt"}
    body_head = torch.nn.Identity(), ir.fc_layer
    ir.fc_layer = torch.nn.Identity()
    victim = Classifier(build_preprocess("unit"), ir, body_head[1], 3, info).eval()
    with pytest.raises(DDCSInputError, match="cannot classify 32 px generator images.*expects 64x64"):
        check_resolution(victim, 32)
    crop = Classifier(build_preprocess("paper-faces-112"), ir, body_head[1], 3, info)
    with pytest.raises(DDCSInputError, match="64 px generator images: .*200x200 does not fit a 64x64"):
        check_resolution(crop, 64)


def test_demo_classifiers_load_through_the_same_spec(tmp_path, deterministic_cpu):
    shipped = REPO / "checkpoints" / "demo" / "victim.safetensors"
    victim = load_classifier(ClassifierSpec.from_dict({"arch": "demo:resnet-s", "weights": str(shipped),
                                                       "num_classes": 62}), resolution=64)
    assert victim.info["manifest_checked"] and victim.info["preprocess"] == []
    ref, info = load_model(shipped)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(victim(x), ref(x)) and torch.equal(victim.features(x), ref.features(x))
    assert victim.info["meta"] == info["meta"]
    copy = tmp_path / "victim.safetensors"
    shutil.copy(shipped, copy)
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"victim.safetensors": {"sha256": "0" * 64}}}))
    with pytest.raises(DDCSInputError, match="does not match the expected"):
        load_classifier(ClassifierSpec.from_dict({"arch": "demo:resnet-s", "weights": str(copy), "num_classes": 62}))
    with pytest.raises(DDCSInputError, match="holds a 'resnet-s' classifier, the spec says 'vggbn-s'"):
        load_classifier(ClassifierSpec.from_dict({"arch": "demo:vggbn-s", "weights": str(shipped), "num_classes": 62}))


@pytest.mark.parametrize("d, message", [
    ({"arch": "resnet18", "weights": "w.pt", "num_classes": 4, "preprocess": "imagenet", "weigths": 1},
     r"unknown victim keys \['weigths'\]"),
    ({"arch": "resnet17", "weights": "w.pt", "num_classes": 4, "preprocess": "imagenet"}, "unknown architecture 'resnet17'"),
    ({"arch": "resnet18", "weights": "w.pt", "num_classes": 4}, "victim.preprocess: declare how"),
    ({"arch": "resnet18", "weights": "w.pt", "num_classes": 1, "preprocess": "imagenet"}, "num_classes: expected an int >= 2"),
    ({"arch": "resnet18", "num_classes": 4, "preprocess": "imagenet"}, "missing key 'weights'"),
    ({"arch": "resnet18", "weights": "w.pt", "num_classes": 4, "preprocess": [{"resize": -1}]}, r"preprocess\[0\]\.resize"),
    ({"arch": "resnet18", "weights": "w.pt", "num_classes": 4, "preprocess": "imagenet", "sha256": "abc"}, "64 hex digits"),
])
def test_spec_from_dict_refuses_bad_sections(d, message):
    with pytest.raises(DDCSInputError, match=message):
        ClassifierSpec.from_dict(d, "victim")


def test_spec_paths_resolve_against_the_config_folder_and_round_trip(tmp_path):
    s = ClassifierSpec.from_dict({"arch": "irse50", "weights": "models/target.pth", "num_classes": 1000,
                                  "preprocess": [{"center_crop": 200}, {"resize": 112}]}, "world.victim", tmp_path)
    assert s.weights == tmp_path / "models" / "target.pth" and s.class_names is None
    assert ClassifierSpec.from_dict(s.to_dict(), "world.victim") == s


def test_unknown_builder_options_are_refused(tmp_path, resnet18):
    torch.save(resnet18.state_dict(), tmp_path / "w.pt")
    with pytest.raises(DDCSInputError, match="options \\['depth'\\] not accepted"):
        load_classifier(spec(tmp_path / "w.pt", options={"depth": 3}))


def test_cli_victim_check(tmp_path, resnet18, capsys):
    torch.save({"state_dict": prefixed(resnet18.state_dict(), "module.")}, tmp_path / "w.pt")
    assert main(["victim", "check", "--arch", "resnet18", "--weights", str(tmp_path / "w.pt"),
                 "--num-classes", "4", "--preprocess", "imagenet", "--resolution", "32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameters"] == sum(p.numel() for p in resnet18.parameters())
    assert out["stripped_prefixes"] == ["module."] and out["input_size"] == [32, 32]
    assert out["logits_shape"] == [2, 4]
    assert main(["victim", "check", "--arch", "resnet18", "--weights", str(tmp_path / "w.pt"),
                 "--num-classes", "5", "--preprocess", "imagenet"]) == 2
    assert "error:" in capsys.readouterr().err


def test_class_names_from_a_list_or_a_file(tmp_path, resnet18):
    torch.save(resnet18.state_dict(), tmp_path / "w.pt")
    (tmp_path / "names.txt").write_text("0\n1\n10\n2\n")
    s = ClassifierSpec.from_dict({"arch": "resnet18", "weights": "w.pt", "num_classes": 4, "preprocess": "imagenet",
                                  "class_names": "names.txt"}, "victim", tmp_path)
    assert s.class_names == ("0", "1", "10", "2")
    assert load_classifier(s).info["meta"] == {"class_names": ["0", "1", "10", "2"]}
    with pytest.raises(DDCSInputError, match="expected 4 distinct names"):
        spec("w.pt", class_names=["a", "b", "a", "c"])
    with pytest.raises(DDCSInputError, match="not found"):
        spec("w.pt", class_names="absent.txt")
