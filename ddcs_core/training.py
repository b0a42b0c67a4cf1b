"""One resumable training loop for every trainer in the engine (GAN pre-training, transfer learning,
classifiers): each gives only its step; the loop here owns the rest.

The `Trainer` owns the step counter and the training time, the signature check (a saved state is
resumed only when the config, data and starting models that produced it are the same), the atomic
checkpoints, the RNG state (the loop's CPU generator and torch's global RNGs), progress (tqdm and the
`report` callback), cancellation (`should_stop` -> state saved -> `control.Cancelled`) and the common
part of the summary. Because every trainer runs through `Trainer.fit`, a rerun after a kill continues
exactly where the last checkpoint left off. Under torchrun (a loop that shares each batch over the
ranks, e.g. transfer.TransferLoop) every rank runs `fit` in lockstep and rank 0 alone writes the
checkpoints; a state holds plain weights and the shared RNG, so it resumes with any number of ranks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from ddcs_core import distributed
from ddcs_core.control import Cancelled, Report, ShouldStop, silent
from ddcs_core.errors import DDCSInputError
from ddcs_core.models.checkpoints import capture_rng, load_training_state, restore_rng, save_training_state


def parse_device(device: str | torch.device) -> torch.device:
    """A torch device from user input ("cpu", "cuda:1", ...); a bad name is an input error."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DDCSInputError(f"bad device {device!r}: {e}") from e


class Loop(Protocol):
    """What a trainer gives: its state, one unit of work, and what to do between units."""

    gen: torch.Generator  # the loop's CPU random generator (its state is checkpointed)
    device: torch.device

    def state(self) -> dict:
        """Weights, optimiser moments and the loop's own log, as tensors and plain containers."""

    def load(self, state: dict) -> None:
        """Restore `state()`'s content in place (KeyError/RuntimeError/ValueError when incomplete)."""

    def begin(self, step: int, resumed: bool) -> None:
        """Called once before the first unit (fresh start: step 0, resumed False)."""

    def step(self, step: int) -> dict[str, float]:
        """One unit of training (a step or an epoch), timed; returns the values shown on the bar."""

    def after(self, step: int) -> None:
        """Untimed work after unit number `step` (1-based): evaluation, sample grids, logs."""


@dataclass(frozen=True)
class TrainResult:
    """Where a `fit` ended: units done (all of them), training seconds summed over resumes."""

    steps: int
    seconds: float
    resumed_from: int

    def summary(self) -> dict:
        return {"train_seconds": self.seconds, "sec_per_step": self.seconds / self.steps if self.steps else None}


@dataclass
class Trainer:
    """Runs a Loop for `total` units with resumable, atomic checkpoints at `state_path`.

    `ckpt_every`: units between checkpoints (and always after the last one); `resume=False` ignores a
    saved state; `what`/`restart_hint` word the errors about a state that cannot be resumed.
    """

    total: int
    signature: dict
    state_path: Path | None
    ckpt_every: int = 1
    desc: str = "train"
    unit: str = "step"
    progress: bool = True
    report: Report = silent
    should_stop: ShouldStop | None = None
    resume: bool = True
    what: str = "training state"
    restart_hint: str = "delete it to start this training over"
    bar_leave: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.total, int) or self.total < 1 or self.ckpt_every < 1:
            raise DDCSInputError(f"{self.unit}s and the checkpoint interval must be >= 1, got {self.total}, {self.ckpt_every}")

    def _load(self, loop: Loop) -> tuple[int, float]:
        path = self.state_path
        state = load_training_state(path)
        saved = state.get("signature")
        if saved != self.signature:
            diff = sorted(k for k in self.signature if (saved or {}).get(k) != self.signature[k])
            raise DDCSInputError(f"{self.what} {path} belongs to a different run (differs in {diff}); {self.restart_hint}")
        try:
            step = int(state["step"] if "step" in state else state["epoch"])  # "epoch": classifier states
            seconds = float(state["seconds"] if "seconds" in state else state["train_seconds"])  # written before the Trainer
            if step > self.total:
                raise DDCSInputError(f"{self.what} {path} is at {self.unit} {step} > {self.unit}s={self.total}")
            loop.load(state)
            restore_rng(state["rng"], loop.gen, loop.device)
            return step, seconds
        except (KeyError, RuntimeError, ValueError) as e:
            if isinstance(e, DDCSInputError):
                raise
            raise DDCSInputError(f"{self.what} {path} is incomplete ({e}); {self.restart_hint}") from e

    def _save(self, loop: Loop, step: int, seconds: float) -> None:
        """The state, atomically; under torchrun by rank 0 alone (every rank holds the same state)."""
        if self.state_path is not None and distributed.is_main():
            save_training_state(self.state_path, {"signature": self.signature, "step": step, "seconds": seconds,
                                                  "rng": capture_rng(loop.gen, loop.device), **loop.state()})

    def fit(self, loop: Loop) -> TrainResult:
        """Train from the saved state (or from scratch) to `total` units; raises Cancelled (state saved)
        when `should_stop()` turns true between units."""
        step, seconds = 0, 0.0
        resumed = self.resume and self.state_path is not None and self.state_path.is_file()
        if resumed:
            step, seconds = self._load(loop)
        start = step
        loop.begin(step, resumed)
        bar = tqdm(total=self.total, initial=step, desc=self.desc, disable=not self.progress, leave=self.bar_leave)
        every = max(1, self.total // 20)  # the report's message (a job's log line) every 5 %; its fraction every unit
        try:
            while step < self.total:
                if self.should_stop is not None and self.should_stop():
                    self._save(loop, step, seconds)
                    raise Cancelled(f"{self.desc} cancelled at {self.unit} {step}/{self.total}; rerun to resume")
                t0 = time.perf_counter()
                shown = loop.step(step)
                step += 1
                seconds += time.perf_counter() - t0
                bar.update(1)
                if shown:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
                self.report(step / self.total, f"{self.desc}: {self.unit} {step - step % every}/{self.total}")
                loop.after(step)
                if step % self.ckpt_every == 0 or step == self.total:
                    self._save(loop, step, seconds)
        finally:
            bar.close()
        return TrainResult(step, seconds, start)
