"""Built-in plugins rome and rome-eval: Rank-One Model Editing (Meng et al. 2022, with the
r-ROME fix) on the loaded model, with undo, and its evaluation on CounterFact-format data.

The core (k*, v*, the rank-one update, key statistics, the edit stack) is Qt-free in
workbench.editing; these plugins run it on the session's model and present the results.
"""

from workbench.plugin_api import Analysis, Float, Int, Plugin, Text

HPARAMS = [
    Float("v_lr", default=0.5, minimum=1e-4, maximum=10.0, help="Adam learning rate of the v* search"),
    Int("v_steps", default=20, minimum=1, maximum=200, help="at most this many v* steps (stops early when the loss is below 0.05)"),
    Float("v_weight_decay", default=0.5, minimum=0.0, help="weight of the norm penalty ‖δ‖/‖v0‖²"),
    Float("kl_factor", default=0.0625, minimum=0.0, help="weight of the KL term that keeps '{subject} is a' as it was"),
    Float("clamp_norm_factor", default=4.0, minimum=0.0, help="‖δ‖ is clamped to this times ‖v0‖"),
    Int("short_prefixes", default=5, minimum=0, maximum=50, help="sampled 5-token prefixes the subject is averaged over (k*) and trained on (v*); ROME used 10"),
    Int("long_prefixes", default=5, minimum=0, maximum=50, help="sampled 10-token prefixes, likewise; ROME used 10 (5 + 5 halves the time of a CPU edit)"),
    Int("seed", default=0, minimum=0, help="seed of the sampled prefixes"),
    Text("corpus", default="", help="text file for the key statistics C; empty: the shipped corpus; 'sample': text sampled from the model"),
]

LAYER = Int("layer", default=-1, minimum=-1, help="layer whose MLP output weight is edited; -1: the MLP peak of a causal trace at the last subject token")

plugin = Plugin(
    id="rome",
    requires=["causal-trace"],  # its public causal_trace picks the layer (layer=-1)
    name="ROME edit",
    version="1.0.0",
    api_version="1.2",
    description=(
        "Edits one fact in the loaded model with Rank-One Model Editing (r-ROME) and shows P(new) and P(true) "
        "before and after, on paraphrases and neighbours. The model stays edited (other panels see it) until you undo."
    ),
    analysis=Analysis(
        run="workbench_rome.analysis:run",
        cost="workbench_rome.cost:cost",
        engines=("bridge", "nnsight"),
        weights_in_place=("bridge",),  # edits an MLP output matrix in place there; an intervention on nnsight and NDIF
        needs_prompt=False,
        params=[
            Text("subject", default="", allow_empty=False, help="the subject as it appears in the prompt, e.g. Eiffel Tower"),
            Text("template", default="", help="the prompt with {} for the subject; empty: the prompt with the subject replaced"),
            Text("target_new", default="", allow_empty=False, help="the new object, e.g. Rome (a leading space is added after a prompt)"),
            Text("target_true", default="", help="the current object; empty: the model's current answer"),
            LAYER,
            Text("paraphrases", default="", help="other prompts for the same fact, one per line or separated by |"),
            Text("neighbours", default="", help="prompts about other subjects with the same true object (should not change), one per line or |"),
            Int("gen_tokens", default=20, minimum=0, maximum=200, help="tokens of greedy generation shown before and after"),
            *HPARAMS,
        ],
    ),
    result_types=["workbench_rome.result:RomeEditResult"],
    panel="workbench_rome.panel:RomePanel",
    report_help="Bars are P(new) − P(true): prompt and paraphrases should cross zero after the edit, neighbours should not.",
)

eval_plugin = Plugin(
    id="rome-eval",
    requires=["causal-trace"],
    name="ROME evaluation",
    version="1.0.0",
    api_version="1.2",
    description=(
        "Evaluates ROME on CounterFact-format data: per case it applies the edit, measures efficacy (ES/EM), "
        "paraphrase (PS/PM) and neighbourhood (NS/NM) scores and generation fluency, then restores the weights exactly."
    ),
    analysis=Analysis(
        run="workbench_rome.evaluation:run",
        cost="workbench_rome.cost:eval_cost",
        engines=("bridge", "nnsight"),
        weights_in_place=("bridge",),
        needs_prompt=False,
        params=[
            Text("dataset", default="", allow_empty=False, help="CounterFact-format JSON file"),
            LAYER,
            Int("max_cases", default=0, minimum=0, help="evaluate only the first N cases (0: all)"),
            Int("gen_tokens", default=0, minimum=0, maximum=200, help="greedy tokens per generation prompt for the fluency score (0: skip fluency)"),
            *HPARAMS,
        ],
    ),
    result_types=["workbench_rome.eval_result:RomeEvalResult"],
    report_help="ES/PS: share of rewrite/paraphrase prompts where P(new) > P(true) after the edit; NS: share of neighbour prompts where P(true) > P(new).",
)
