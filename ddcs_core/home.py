"""Where the repository's own data live: the shipped demo world (checkpoints/) and configs (assets/).

They ship with the source checkout, not inside the wheel: they are tens of MB that `make run` and
`ddcs demo` use, and a new release of them goes with the repository. A checkout (or `pip install -e .`)
finds them next to the package; an installed wheel finds them through `DDCS_HOME` (a clone of the
repository), else in the current directory, and the loaders name the path they tried and this variable.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "DDCS_HOME"
HINT = (f"the demo world and configs ship with the repository, not with the installed package: run from a "
        f"clone, or set {ENV}=/path/to/clone")


def repo_root() -> Path:
    """The folder holding checkpoints/ and assets/ (see the module docstring for the order searched)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "assets" / "configs").is_dir():
        return checkout
    return Path.cwd()
