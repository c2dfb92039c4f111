"""Built-in plugin: the logit lens (nostalgebraist 2020).

Registered through the `workbench.plugins` entry point like any third-party plugin.
Heavy parts are named as strings and imported on first use.
"""

from workbench.plugin_api import Analysis, Bool, Int, Plugin

plugin = Plugin(
    id="logit-lens",
    name="Logit lens",
    version="1.0.0",
    api_version="1.2",
    description="What the residual stream predicts after each layer: the final norm and unembedding applied early.",
    analysis=Analysis(
        run="workbench_logit_lens.analysis:run",
        cost="workbench_logit_lens.analysis:cost",
        params=[
            Int("top_k", default=5, minimum=1, maximum=50, help="predictions kept per layer and position"),
            Bool("include_embeddings", default=True, help="also decode the residual stream before block 0"),
        ],
        engines=("bridge", "nnsight"),
    ),
    result_types=["workbench_logit_lens.result:LogitLensResult"],
    panel="workbench_logit_lens.panel:LogitLensPanel",
    report_help="Each cell is the probability that decoding the residual stream after that layer gives the model's final prediction at that position.",
)
