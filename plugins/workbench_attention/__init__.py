"""Built-in plugin: attention maps (every head at a glance, one head in full, weights over the text).

Registered through the `workbench.plugins` entry point like any third-party plugin.
Heavy parts are named as strings and imported on first use.
"""

from workbench.plugin_api import Analysis, Bool, Choice, Int, Plugin, Query, Text

plugin = Plugin(
    id="attention",
    name="Attention maps",
    version="1.0.0",
    api_version="1.2",
    description="Attention patterns of every head: an overview grid, one head's destination x source map, and a token-centred view.",
    analysis=Analysis(
        run="workbench_attention.analysis:run",
        cost="workbench_attention.analysis:cost",
        engines=("bridge", "nnsight"),
        params=[
            Int("layer", default=0, minimum=0, help="layer of the head shown in full"),
            Int("head", default=0, minimum=0, help="query head shown in full (grouped-query models: query heads, not KV heads)"),
            Int("destination", default=-1, help="token whose attention the text view shows (-1 = the last token)"),
            Bool(
                "mask_first_token",
                default=False,
                help="hide the first (BOS / attention-sink) column; the other weights keep their values (not renormalised) and set the colour range",
            ),
            Choice("scale", default="linear", choices=("linear", "log"), help="colour scale of the maps"),
            Choice(
                "average",
                default="none",
                choices=("none", "layer", "prompts"),
                help="show one head, the mean over the layer's heads, or the mean over every prompt (position by position)",
            ),
            Text("compare_prompt", default="", help="a second prompt shown side by side with the first"),
        ],
        multi_prompt=True,  # average=prompts reads every prompt
    ),
    queries=[
        Query(
            "pattern",
            run="workbench_attention.queries:pattern",
            description="another head, a layer's mean or the mean over the prompts, and the same on a second prompt, of a result",
            params=[
                Int("layer", default=0, minimum=0, help="layer of the head"),
                Int("head", default=0, minimum=0, help="query head"),
                Choice("average", default="none", choices=("none", "layer", "prompts"), help="one head, the layer's mean, or the mean over the prompts"),
                Text("compare_prompt", default="", help="a second prompt shown side by side"),
            ],
        )
    ],
    result_types=["workbench_attention.result:AttentionResult"],
    panel="workbench_attention.panel:AttentionPanel",
    report_help="Each row is a token attending, each column a token read; a row's weights sum to 1.",
)
