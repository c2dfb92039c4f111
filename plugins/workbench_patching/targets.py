"""What can be patched: one `PatchTarget` per activation kind, and the `targets` parameter.

A target names the hook it patches, the axes of its grid (besides layer) and how one
cell of that grid indexes the activation without its batch axis. Patching a cell copies
exactly that slice of the clean activation into the corrupted run, as the matching
`transformer_lens.patching.get_act_patch_*` function does.

No torch here: the plugin declaration imports this module, and listing plugins must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from workbench.plugin_api import Text


@dataclass(frozen=True)
class PatchTarget:
    name: str
    hook: str  # legacy hook name with {layer}; the bridge resolves the alias
    axes: tuple[str, ...]  # grid axes after layer: "position" and/or "head"
    title: str
    tl_function: str  # the transformer_lens.patching function computing the same grid, one run per cell
    help: str

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)

    def shape(self, n_layers: int, n_positions: int, n_heads: int) -> tuple[int, ...]:
        sizes = {"position": n_positions, "head": n_heads}
        return (n_layers, *(sizes[axis] for axis in self.axes))

    def cells(self, n_positions: int, n_heads: int) -> list[tuple[int, ...]]:
        """Cells of one layer in row-major order of the grid."""
        sizes = {"position": n_positions, "head": n_heads}
        cells: list[tuple[int, ...]] = [()]
        for axis in self.axes:
            cells = [cell + (i,) for cell in cells for i in range(sizes[axis])]
        return cells

    def index(self, cell: tuple[int, ...]) -> tuple[Any, ...]:
        """The slice of an activation without batch axis that a cell patches.

        Vector hooks are [position, (head,) d]; patterns are [head, query, key], so an
        all-position head cell is (:, head) on hook_z and (head,) on the pattern.
        """
        if self.axes == ("position",):
            return (cell[0],)
        if self.axes == ("position", "head"):
            return (cell[0], cell[1])
        if self.name == "head_pattern":
            return (cell[0],)
        return (slice(None), cell[0])


_TARGET_LIST = [
    PatchTarget(
        "resid_pre",
        "blocks.{layer}.hook_resid_pre",
        ("position",),
        "Residual stream (resid_pre)",
        "get_act_patch_resid_pre",
        "the residual stream entering each layer, one position at a time",
    ),
    PatchTarget(
        "attn_out",
        "blocks.{layer}.hook_attn_out",
        ("position",),
        "Attention output (attn_out)",
        "get_act_patch_attn_out",
        "each attention layer's output, one position at a time",
    ),
    PatchTarget(
        "mlp_out",
        "blocks.{layer}.hook_mlp_out",
        ("position",),
        "MLP output (mlp_out)",
        "get_act_patch_mlp_out",
        "each MLP's output, one position at a time",
    ),
    PatchTarget(
        "head_out",
        "blocks.{layer}.attn.hook_z",
        ("head",),
        "Head output (hook_z, all positions)",
        "get_act_patch_attn_head_out_all_pos",
        "each head's output (hook_z, before W_O) at every position at once",
    ),
    PatchTarget(
        "head_pattern",
        "blocks.{layer}.attn.hook_pattern",
        ("head",),
        "Head attention pattern (all positions)",
        "get_act_patch_attn_head_pattern_all_pos",
        "each head's whole attention pattern",
    ),
    PatchTarget(
        "head_out_by_pos",
        "blocks.{layer}.attn.hook_z",
        ("position", "head"),
        "Head output by position (hook_z)",
        "get_act_patch_attn_head_out_by_pos",
        "each head's output at one position (layers x positions x heads runs: the slow one)",
    ),
]
TARGETS: dict[str, PatchTarget] = {t.name: t for t in _TARGET_LIST}

# "all" leaves out head_out_by_pos: it costs positions x heads runs per layer
# (about 3800 on SmolLM2 with a 14-token prompt), and must be asked for by name.
GROUPS: dict[str, tuple[str, ...]] = {
    "all": ("resid_pre", "attn_out", "mlp_out", "head_out", "head_pattern"),
    "layers": ("resid_pre", "attn_out", "mlp_out"),
    "heads": ("head_out", "head_pattern"),
    "everything": tuple(TARGETS),
}


def parse_targets(text: str) -> tuple[str, ...]:
    """Target names from "all" or "resid_pre, head_out" (groups expand), in the canonical order; raises ValueError."""
    words = [w.strip().lower().replace("-", "_") for w in str(text).replace(";", ",").split(",") if w.strip()]
    if not words:
        raise ValueError("no target named")
    chosen: set[str] = set()
    for word in words:
        if word in GROUPS:
            chosen.update(GROUPS[word])
        elif word in TARGETS:
            chosen.add(word)
        else:
            raise ValueError(f"unknown target {word!r}")
    return tuple(name for name in TARGETS if name in chosen)


@dataclass(frozen=True)
class TargetList(Text):
    """The `targets` parameter: comma-separated target names or groups, checked before any work."""

    kind: ClassVar[str] = "text"

    def accepts(self) -> str:
        return "comma-separated targets from " + ", ".join(TARGETS) + " or the groups " + ", ".join(GROUPS)

    def validate(self, value: Any) -> Any:
        value = super().validate(value)
        try:
            parse_targets(value)
        except ValueError:
            raise self.fail(value) from None
        return value
