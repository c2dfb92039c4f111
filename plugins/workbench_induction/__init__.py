"""Built-in plugin: induction, previous-token and duplicate-token heads, with a causal check.

Runs the model on random token blocks repeated twice, scores every head from one
batched forward pass, then ablates the top heads to see which ones the in-context
copying actually depends on. Registered through the `workbench.plugins` entry point
like any third-party plugin; heavy parts are named as strings and imported on first use.
"""

from workbench.plugin_api import Analysis, Choice, Int, Plugin

plugin = Plugin(
    id="induction",
    name="Induction heads",
    version="1.0.0",
    api_version="1.2",
    description=(
        "Scores every attention head as an induction, previous-token and duplicate-token head on "
        "repeated random tokens, and ablates the top heads to measure how much the model's "
        "in-context copying depends on each."
    ),
    analysis=Analysis(
        run="workbench_induction.analysis:run",
        cost="workbench_induction.analysis:cost",
        engines=("bridge", "nnsight"),
        needs_prompt=False,
        params=[
            Int(
                "length",
                default=0,
                minimum=0,
                help="random tokens per block (the sequence holds the block twice); 0 fits the model: min(50, (context - 2) // 2)",
            ),
            Int("batch", default=8, minimum=1, maximum=512, help="random sequences scored in the one batched forward pass"),
            Int("seed", default=0, minimum=0, help="seed of the random token blocks"),
            Int("top_n", default=3, minimum=1, maximum=32, help="top induction heads and top previous-token heads to ablate"),
            Choice("ablation", default="both", choices=("both", "zero", "mean"), help="how an ablated head's output is replaced: zeros, its mean output, or both"),
        ],
    ),
    result_types=["workbench_induction.result:InductionResult"],
    panel="workbench_induction.panel:InductionPanel",
    report_help=(
        "Each cell is the share of a head's attention on the expected token (induction: the token after the "
        "earlier copy of the current token); the ablation table shows how much the loss on the repeat rises "
        "without each head."
    ),
)
