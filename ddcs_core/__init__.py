"""DDCS Explorer engine: sample-level evaluation and generation of model inversion attacks."""

__version__ = "0.1.0"
