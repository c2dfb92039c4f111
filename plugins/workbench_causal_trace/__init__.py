"""Built-in plugin: causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

Corrupts the subject's token embeddings with noise, then restores one clean state at
a time (residual stream, MLP output or attention output at a token and layer) to see
which states carry the fact. The fast path computes the reference algorithm's numbers
with far fewer FLOPs (see tracing.py); the reference algorithm stays available as
`method=reference`. Registered through the `workbench.plugins` entry point like any
third-party plugin; heavy parts are named as strings and imported on first use.
"""

from workbench.plugin_api import Analysis, Choice, Float, Int, Plugin, Text

plugin = Plugin(
    id="causal-trace",
    provides={"causal_trace": "workbench_causal_trace.tracing:causal_trace"},  # used by rome to choose the edited layer
    name="Causal tracing",
    version="1.0.0",
    api_version="1.2",
    description=(
        "Noises the subject's token embeddings and restores one clean state at a time (residual stream, "
        "MLP or attention output at each token and layer) to find the states that carry a fact."
    ),
    analysis=Analysis(
        run="workbench_causal_trace.analysis:run",
        engines=("bridge", "nnsight"),
        cost="workbench_causal_trace.analysis:cost",
        params=[
            Text("subject", default="", allow_empty=False, help="the subject as written in the prompt, e.g. The Eiffel Tower"),
            Text("target", default="", help="the answer to trace; empty: the model's top next token. Several tokens are scored as the product of their teacher-forced probabilities"),
            Choice("kinds", default="all", choices=("all", "resid", "mlp", "attn"), help="which states to restore: residual stream, MLP output, attention output, or all three"),
            Int("samples", default=10, minimum=1, maximum=200, help="noise samples averaged per cell"),
            Float("noise", default=0.0, minimum=0.0, help="noise standard deviation; 0: noise_scale × the std of the subject's token embeddings"),
            Float("noise_scale", default=3.0, minimum=0.0, help="multiple of the subject embeddings' std used when noise is 0"),
            Int("window", default=10, minimum=1, maximum=256, help="layers restored together for MLP and attention (l - window/2 .. l + window/2 - 1)"),
            Int("seed", default=1, minimum=0, help="seed of the noise; the same noise is used for every cell"),
            Choice(
                "method",
                default="fast",
                choices=("fast", "reference"),
                help="fast: batched, restarted at the restored layer, later positions only; reference: one pass per cell as in the paper's code. "
                "On the nnsight engine (and NDIF) both run the reference's numbers as whole batched passes",
            ),
        ],
    ),
    result_types=["workbench_causal_trace.result:CausalTraceResult"],
    panel="workbench_causal_trace.panel:CausalTracePanel",
    report_help=(
        "Each cell is the probability of the answer when the subject is noised and only that state (token × layer) "
        "is restored from the clean run; dark cells carry little of the fact, bright cells restore it."
    ),
)
