"""The one Trainer: exact resume after a cancel, the signature check, progress, the summary."""

import pytest
import torch

from ddcs_core.control import Cancelled
from ddcs_core.errors import DDCSInputError
from ddcs_core.training import Trainer, parse_device


class ToyLoop:
    """A noisy linear fit: every step draws from the loop's generator and torch's global RNG."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.gen, self.device = torch.Generator().manual_seed(seed), torch.device("cpu")
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.opt = torch.optim.Adam([self.w], lr=0.1)
        self.log, self.after_calls, self.began = [], [], None

    def state(self):
        return {"w": self.w.detach().clone(), "opt": self.opt.state_dict(), "log": torch.tensor(self.log)}

    def load(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.opt.load_state_dict(state["opt"])
        self.log = state["log"].tolist()

    def begin(self, step, resumed):
        self.began = (step, resumed)

    def step(self, step):
        x = torch.randn(8, 3, generator=self.gen) + 0.01 * torch.randn(8, 3)
        loss = ((x @ self.w - x.sum(1)) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.log.append(loss.item())
        return {"loss": loss.item()}

    def after(self, step):
        self.after_calls.append(step)


def fit(path, total=6, **kw):
    loop = ToyLoop()
    result = Trainer(total, {"config": {"lr": 0.1}}, path, ckpt_every=2, progress=False, **kw).fit(loop)
    return loop, result


def test_cancel_then_resume_equals_uninterrupted(tmp_path):
    full, result = fit(tmp_path / "full.pt")
    assert result.steps == 6 and result.resumed_from == 0 and full.after_calls == [1, 2, 3, 4, 5, 6]
    assert full.began == (0, False) and result.summary()["train_seconds"] == result.seconds
    checks = []
    with pytest.raises(Cancelled, match="step 3/6"):
        fit(tmp_path / "split.pt", should_stop=lambda: checks.append(1) or len(checks) == 4)
    messages = []
    resumed, result = fit(tmp_path / "split.pt", report=lambda f, m: messages.append((f, m)))
    assert resumed.began == (3, True) and result.resumed_from == 3 and resumed.after_calls == [4, 5, 6]
    assert torch.equal(full.w, resumed.w) and full.log == resumed.log
    assert messages[-1] == (1.0, "train: step 6/6")


def test_signature_and_bounds_are_checked(tmp_path):
    fit(tmp_path / "s.pt")
    with pytest.raises(DDCSInputError, match=r"different run \(differs in \['config'\]\)"):
        Trainer(6, {"config": {"lr": 0.2}}, tmp_path / "s.pt", progress=False).fit(ToyLoop())
    with pytest.raises(DDCSInputError, match="step 6 > steps=4"):
        fit(tmp_path / "s.pt", total=4)
    fresh, result = fit(tmp_path / "s.pt", total=4, resume=False)
    assert result.resumed_from == 0 and fresh.began == (0, False)
    with pytest.raises(DDCSInputError, match="bad device"):
        parse_device("gpu:x")



def test_states_written_before_the_trainer_resume(tmp_path):
    from ddcs_core.models.checkpoints import load_training_state, save_training_state

    full, _ = fit(tmp_path / "full.pt")
    checks = []
    with pytest.raises(Cancelled):
        fit(tmp_path / "old.pt", should_stop=lambda: checks.append(1) or len(checks) == 4)
    state = load_training_state(tmp_path / "old.pt")
    state["epoch"], state["train_seconds"] = state.pop("step"), state.pop("seconds")  # the classifiers' old names
    save_training_state(tmp_path / "old.pt", state)
    resumed, result = fit(tmp_path / "old.pt")
    assert result.resumed_from == 3 and torch.equal(full.w, resumed.w)
