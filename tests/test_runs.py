import numpy as np
import pytest

from ddcs_core.data.images import ImageSet
from ddcs_core.errors import DDCSInputError
from ddcs_core.evaluate import EvalConfig, evaluate_sets
from ddcs_core.runs import RunStore, check_name


def _set(n, seed, source):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return ImageSet(imgs, np.arange(n, dtype=np.int64) % 2, ["a", "b"], [f"{source}/{i}.png" for i in range(n)], source)


def test_run_round_trip(tmp_path):
    store = RunStore(tmp_path)
    targets, recon = _set(6, 0, "t"), _set(5, 1, "r")
    run = store.create("demo", {"seed": 1}, targets)
    run.write_recon("vanilla", recon, np.ones((5, 4)))
    run.write_evaluation("vanilla", evaluate_sets(targets, recon, EvalConfig()))
    again = RunStore(tmp_path).runs()[0]
    assert again.name == "demo" and again.pools() == ["vanilla"] and again.config == {"seed": 1}
    np.testing.assert_array_equal(again.targets().images, targets.images)
    images, latents = again.recon("vanilla")
    assert images.paths == recon.paths and latents.shape == (5, 4)
    ev = again.evaluation("vanilla")
    assert ev.arrays["d_tar"].shape == (6,) and ev.report["counts"]["targets"] == 6
    assert again.map() is None


def test_names_and_paths_are_confined(tmp_path):
    run = RunStore(tmp_path).create("r1", {}, _set(2, 0, "t"))
    for bad in ("../x", "a/b", "", ".hidden", "x" * 101):
        with pytest.raises(DDCSInputError):
            check_name(bad)
    with pytest.raises(DDCSInputError, match="outside"):
        run.safe_path("../../etc/passwd")
    assert run.safe_path("grids/a.png").is_relative_to(run.path.resolve())
    with pytest.raises(DDCSInputError, match="different config"):
        RunStore(tmp_path).create("r1", {"other": 1}, _set(2, 0, "t"))
    with pytest.raises(DDCSInputError, match="not been evaluated"):
        run.evaluation("nothing")
