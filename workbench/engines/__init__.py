"""Engines: what an analysis needs from a model run, behind one small interface.

`Engine.run(tokens, reads={hook: positions}, writes={hook: Write(value, positions)})`
gives back the logits and the activations read (base.py). Two implementations:
`BridgeEngine` (TransformerLens 4's TransformerBridge, the default) and `NnsightEngine`
(an nnsight trace over the same Hugging Face model: `nnsight:<spec>` models, and NDIF).
"""

from .base import (
    GLOBAL_POINTS,
    SEAM_POINTS,
    Decode,
    Decoded,
    DeltaFit,
    Engine,
    EngineRun,
    FitObjective,
    FittedDelta,
    HookPoint,
    ModelShape,
    Positions,
    RankOneEdit,
    RunRequest,
    TokenChoice,
    TokenScores,
    Write,
    parse_hook,
    read_chunks,
    seam_hook_names,
    seam_shape,
)
from .bridge import BridgeEngine
from .families import MODULE_MAPS, ModuleMap, module_map_for
from .nnsight_engine import NnsightEngine
from .remote import RemoteMode

__all__ = [
    "GLOBAL_POINTS",
    "MODULE_MAPS",
    "SEAM_POINTS",
    "BridgeEngine",
    "Decode",
    "Decoded",
    "DeltaFit",
    "Engine",
    "EngineRun",
    "FitObjective",
    "FittedDelta",
    "HookPoint",
    "ModelShape",
    "ModuleMap",
    "NnsightEngine",
    "RemoteMode",
    "Positions",
    "RankOneEdit",
    "RunRequest",
    "TokenChoice",
    "TokenScores",
    "Write",
    "module_map_for",
    "parse_hook",
    "read_chunks",
    "seam_hook_names",
    "seam_shape",
]
