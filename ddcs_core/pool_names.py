"""How an attack run names its generators and pools (torch-free, so run readers share it).

The pre-trained generator's inversion fills `vanilla` (the paper's name), a generator transferred in
mode m fills `transfer-m`, and the union of the two is `dual-m`.
"""

from __future__ import annotations

PRETRAINED = "pretrained"  # the world's generator, before any transfer learning
VANILLA_POOL = "vanilla"


def pool_name(generator: str) -> str:
    """The pool a generator's inversion fills: `vanilla` for the pre-trained one, `transfer-<mode>`."""
    return VANILLA_POOL if generator == PRETRAINED else f"transfer-{generator}"


def generator_of(pool: str) -> str:
    """Which generator(s) made a pool, as the reproduction table prints it ('?' for foreign pools)."""
    if pool == VANILLA_POOL:
        return PRETRAINED
    if pool.startswith("transfer-"):
        return pool.removeprefix("transfer-")
    if pool.startswith("dual-"):
        return f"{PRETRAINED} + {pool.removeprefix('dual-')}"
    return "?"
