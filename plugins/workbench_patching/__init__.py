"""Built-in plugin: activation patching between a clean and a corrupted prompt.

Clean activations are patched into the corrupted run (denoising), one cell at a time:
the residual stream, attention and MLP outputs per layer and position, and every head's
output and attention pattern. The numbers are those of `transformer_lens.patching`,
computed with cells batched into few forward passes, on either engine. Registered through
the `workbench.plugins` entry point like any third-party plugin; heavy parts are named
as strings and imported on first use.
"""

from workbench.plugin_api import Analysis, Bool, Choice, Int, Plugin, Text

from .targets import GROUPS, TARGETS, TargetList

plugin = Plugin(
    id="patching",
    name="Activation patching",
    version="1.0.0",
    api_version="1.2",
    description=(
        "Runs the corrupted prompt with one activation at a time copied in from the clean prompt, and shows how much "
        "of the clean answer each layer, position and head brings back."
    ),
    analysis=Analysis(
        run="workbench_patching.analysis:run",
        cost="workbench_patching.analysis:cost",
        engines=("bridge", "nnsight"),
        params=[
            Text(
                "corrupted",
                default="",
                help="the corrupted prompt, as many tokens as the clean one; empty: the second prompt line",
            ),
            Choice(
                "metric",
                default="logit-diff",
                choices=("logit-diff", "prob"),
                help="logit of the answer minus the wrong answer's, or the answer's probability, at the last position",
            ),
            Text("answer", default="", help="the clean answer, one token (e.g. ' Paris'); empty: the clean run's top token"),
            Text("wrong_answer", default="", label="wrong answer", help="the corrupted answer, one token; empty: the corrupted run's top token"),
            Bool("normalise", default=True, help="show (patched − corrupted) / (clean − corrupted): 1 restores the clean run, 0 does nothing"),
            TargetList(
                "targets",
                default="all",
                allow_empty=False,
                help=(
                    "what to patch, comma-separated: " + ", ".join(TARGETS) + "; or " + ", ".join(GROUPS)
                    + " ('all' is every target but head_out_by_pos)"
                ),
            ),
            Int("max_batch", default=64, minimum=1, maximum=512, label="max batch", help="patched runs per forward pass (lower saves memory; 1 runs one cell at a time)"),
        ],
    ),
    result_types=["workbench_patching.result:ActivationPatchingResult"],
    panel="workbench_patching.panel:PatchingPanel",
    report_help="Each cell is how much of the clean answer comes back when that one activation is patched from the clean run into the corrupted one (1 = all of it).",
)
