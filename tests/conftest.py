import os
from pathlib import Path

# MKL's conditional numerical reproducibility, set before torch loads MKL: without it MKL may pick
# kernels by memory alignment, so a test's float32 results could depend on the tests run before it in
# the same process (seen: inversion latents differing in the last bit after test_evaluate).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared datasets (LFW, LPIPS examples); DDCS_DATA overrides, default ../shared/datasets."""
    root = Path(os.environ.get("DDCS_DATA", REPO.parent / "shared" / "datasets"))
    if not root.is_dir():
        pytest.skip(f"data root {root} not found (set DDCS_DATA)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep converted weights and embedding caches out of the user's ~/.cache during tests."""
    old = os.environ.get("DDCS_CACHE")
    os.environ["DDCS_CACHE"] = str(tmp_path_factory.mktemp("ddcs-cache"))
    yield
    if old is None:
        os.environ.pop("DDCS_CACHE", None)
    else:
        os.environ["DDCS_CACHE"] = old


@pytest.fixture(scope="module")
def deterministic_cpu():
    """One thread and no oneDNN, for tests that compare runs bit for bit: oneDNN's convolutions round
    differently with the process's memory history, which would hide whether resuming itself is exact."""
    before = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    yield
    torch.set_num_threads(before[0])
    torch.backends.mkldnn.enabled = before[1]
