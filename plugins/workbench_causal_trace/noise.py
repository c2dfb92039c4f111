"""The corruption of causal tracing: Gaussian noise on the subject's token embeddings.

Both the fast path and the reference implementation take their noise from here, so
given the same seed they corrupt with exactly the same numbers and their scores
can be compared to float precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.models import LoadedModel

from .request import TraceRequest


@dataclass(frozen=True)
class SubjectNoise:
    level: float  # the standard deviation of the noise
    samples: torch.Tensor  # [S, n_subject_tokens, d_model]
    subject_range: tuple[int, int]

    def hook(self, rows: slice | None = None):
        """A `hook_embed` hook adding the noise to the subject positions of the noised rows.

        `rows` selects the noised rows of the batch (all when None); they are a whole
        number of copies of the S samples, in sample order.
        """
        start, end = self.subject_range

        def add_noise(embedding: torch.Tensor, hook=None) -> torch.Tensor:
            target = embedding[rows] if rows is not None else embedding
            copies = target.shape[0] // self.samples.shape[0]
            noise = self.samples.to(embedding.device, embedding.dtype).repeat(copies, 1, 1)
            target[:, start:end] += noise
            return embedding

        return add_noise


def subject_noise(model: LoadedModel, request: TraceRequest, samples: int, noise: float, noise_scale: float, seed: int, embeddings: torch.Tensor | None = None) -> SubjectNoise:
    """Noise for S samples: `noise` when positive, else noise_scale × the std of the subject's embeddings.

    ROME estimates σ over the embeddings of many subjects; one prompt's subject tokens
    give the same quantity for this subject (the spread of its embedding entries).
    `embeddings` [n_subject_tokens, d_model]: the subject's embeddings when the caller has
    them (a remote trace's clean run), else they are looked up here.
    """
    start, end = request.subject_range
    found = embeddings if embeddings is not None else _subject_embeddings(model, request.token_ids[start:end])
    subject_embeddings = found.detach().float()
    level = float(noise) if noise > 0 else float(noise_scale * subject_embeddings.std())
    generator = torch.Generator().manual_seed(int(seed))
    draws = torch.randn(samples, end - start, subject_embeddings.shape[-1], generator=generator) * level
    return SubjectNoise(level, draws, request.subject_range)


def _subject_embeddings(model: LoadedModel, token_ids: list[int]) -> torch.Tensor:
    """The embedding matrix's rows of the subject's tokens: TransformerBridge's W_E, the Hugging
    Face input embeddings on other engines, or (weights elsewhere: NDIF) hook_embed as the
    model computes it for those tokens."""
    engine = model.engine
    if engine.remote:
        return engine.run(torch.tensor([token_ids]), reads={"hook_embed": None}, logits=False).activations["hook_embed"][0]
    if engine.name == "bridge":
        bridge = model.bridge
        weight = bridge.embed.W_E if hasattr(bridge.embed, "W_E") else bridge.W_E
    else:
        weight = engine.hf_model.get_input_embeddings().weight
    return weight[torch.tensor(token_ids, device=weight.device)]
