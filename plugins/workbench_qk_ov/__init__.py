"""Built-in plugin: QK and OV circuits (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").

For a chosen head, the full QK circuit W_E W_Q W_Kᵀ W_Eᵀ and OV circuit W_E W_V W_O W_U on
a token set; for every head, the OV (and QK) eigenvalue spectrum, copying score and
self-top fraction; and Q-, K-, V-composition scores between heads against a random
baseline. Weights only: no prompt is needed (one only supplies the "prompt" token set).

Registered through the `workbench.plugins` entry point like any third-party plugin;
heavy parts are named as strings and imported on first use.
"""

from workbench.plugin_api import Analysis, Bool, Choice, Int, Plugin, Query, Text

from .heads import HeadParam

plugin = Plugin(
    id="qk-ov",
    name="QK/OV circuits",
    version="1.0.0",
    api_version="1.2",
    description=(
        "A head's QK circuit (which tokens it attends to) and OV circuit (what attending does to the logits) "
        "on a token set, copying scores and self-top fractions for every head, and Q/K/V composition between heads."
    ),
    analysis=Analysis(
        run="workbench_qk_ov.analysis:run",
        cost="workbench_qk_ov.analysis:cost",
        weights_in_place=True,  # reads W_Q, W_K, W_V, W_O themselves
        needs_prompt=False,
        params=[
            HeadParam("head", default="", help="the head to draw, LAYER.HEAD such as 1.1; empty: the head with the highest copying score"),
            Choice(
                "token_set",
                default="auto",
                choices=("auto", "typed", "prompt", "top-norm"),
                help="rows and columns of the circuit maps: typed tokens, the prompt's tokens, or the top-k tokens by embedding norm; auto: typed if any, else the prompt's, else top-norm",
            ),
            Text("tokens", default="", help="comma-separated tokens, each exactly one token and written as-is (' Paris' keeps its space; \\, is a comma)"),
            Int("top_k", default=24, minimum=2, maximum=128, help="tokens in the top-norm token set (largest ‖W_E[t]‖, special tokens left out)"),
            Bool("fold_ln", default=True, help="fold the layer norms' scales (and LayerNorm's centering) into the weights, as TransformerLens' compatibility mode does"),
            Int(
                "positional",
                default=0,
                minimum=0,
                maximum=4096,
                help="also the position × position QK term W_pos W_QK W_posᵀ over this many positions (learned absolute positions only, not RoPE); 0: not shown",
            ),
            Int(
                "self_top_tokens",
                default=4096,
                minimum=0,
                help="tokens (a fixed random sample) on which the self-top fraction is measured, each against the whole vocabulary; 0: every token (exact, slower on large vocabularies)",
            ),
        ],
    ),
    queries=[
        Query(
            "head",
            run="workbench_qk_ov.queries:head",
            description="another head's QK and OV circuits on the result's token set (or another one); the tables of every head stay",
            params=[
                HeadParam("head", default="", help="the head, LAYER.HEAD such as 1.1; empty: the result's head"),
                Choice("token_set", default="shown", choices=("shown", "auto", "typed", "prompt", "top-norm"), help="shown: the result's token set; else as the analysis' token_set"),
                Text("tokens", default="", help="comma-separated tokens for token_set=typed"),
                Int("top_k", default=24, minimum=2, maximum=128, help="tokens in the top-norm token set"),
                Int("positional", default=-1, minimum=-1, maximum=4096, help="positions of the position x position QK term; -1: as the result"),
            ],
        )
    ],
    result_types=["workbench_qk_ov.result:QKOVResult"],
    panel="workbench_qk_ov.panel:QKOVPanel",
    report_help=(
        "QK maps show which key tokens a query token prefers; OV maps how attending to a token moves each logit "
        "(a red diagonal is copying); composition scores show which later heads read an earlier head's output, "
        "against a random-matrix baseline."
    ),
)
