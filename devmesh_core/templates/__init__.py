"""Log template mining: generic masking, Brain-style batch grouping and an online miner.

``SignatureMiner`` is what ingest uses (stable ids, persisted state); ``mine_lines`` mines a
whole file offline with the same algorithm.
"""

from devmesh_core.templates.masking import WILDCARD, Masker, MaskingConfig
from devmesh_core.templates.miner import (
    KnownTemplate,
    MinedTemplate,
    MinerConfig,
    SignatureMiner,
    TemplateMiner,
    mine_lines,
)

__all__ = [
    "WILDCARD",
    "KnownTemplate",
    "Masker",
    "MaskingConfig",
    "MinedTemplate",
    "MinerConfig",
    "SignatureMiner",
    "TemplateMiner",
    "mine_lines",
]
