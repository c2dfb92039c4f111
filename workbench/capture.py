"""The hook layer: run a model over prompts and stream chosen activations into a store.

On TransformerBridge each hook's activation goes to the store as the forward pass computes
it (one in memory at a time). On other engines (nnsight) the hooks are read through the
engine seam, `engine.run(reads=...)`, in chunks of consecutive hooks whose activations fit
CAPTURE_BUDGET_BYTES: one run per chunk and batch, each handed to the same writer. The
stored arrays are the same on both engines.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

from .engines import BridgeEngine, read_chunks, seam_shape
from .errors import HookError, InputError
from .hooks import HookSpec, catalog_for
from .models import LoadedModel
from .progress import Job, Progress
from .store import RunWriter
from .store.layout import LAYOUT_DENSE, LAYOUT_LOWER_TRIANGLE

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# Engines other than TransformerBridge hand a run's reads back at once: at most this many
# bytes of activations (float32) per run; more hooks take more runs.
CAPTURE_BUDGET_BYTES = 256 << 20


def package_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class CaptureResult:
    path: Path
    run_id: str
    n_prompts: int
    n_tokens: int
    hooks: list[str]
    seconds: float
    extra: dict = field(default_factory=dict)


def _interruption(exc: BaseException) -> str:
    """Why a run stopped, in words, for the run's attributes and `inspect`."""
    if isinstance(exc, GeneratorExit):
        return "cancelled"
    if isinstance(exc, KeyboardInterrupt):
        return "stopped with Ctrl-C"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def tokenize_prompts(model: LoadedModel, prompts, prepend_bos: bool | None) -> list[list[int]]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise InputError("No prompts given.", "pass --prompt TEXT or --prompts-file FILE")
    token_lists = []
    for number, text in enumerate(prompts, start=1):
        try:
            if isinstance(text, str):
                token_lists.append(model.tokenize(text, prepend_bos=prepend_bos))
            else:
                token_lists.append(model.check_tokens(text))
        except InputError as exc:
            where = f"Prompt {number} of {len(prompts)}: " if len(prompts) > 1 else ""
            raise InputError(where + exc.message, exc.hint) from None
    return token_lists


def run_metadata(model: LoadedModel, specs: list[HookSpec], prepend_bos: bool | None) -> dict:
    return {
        "model_spec": model.spec,
        "model_name": model.name,
        "model_fingerprint": model.fingerprint,
        "model_config": model.describe(),
        "model_dtype": model.dtype,
        "device": model.device,
        "prepend_bos": model.tokenizer_prepends_bos if prepend_bos is None else bool(prepend_bos),
        "hooks": [s.name for s in specs],
        "engine": model.engine.name,
        "transformer_lens_version": package_version("transformer-lens"),
        "torch_version": torch.__version__,
        "workbench_version": package_version("interpretability-workbench"),
        "python_version": platform.python_version(),
    }


@lru_cache(maxsize=8)
def _tril_indices(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = torch.tril_indices(n, n, device=device)
    return rows, cols


def _per_prompt_axes(spec: HookSpec, ndim: int) -> tuple[int, ...]:
    return tuple((axis if axis >= 0 else ndim + axis) - 1 for axis in spec.pos_dims)


def capture_activations(
    model: LoadedModel,
    prompts,
    hooks,
    out: str | Path,
    *,
    storage_dtype: str = "float32",
    batch_size: int = 8,
    prepend_bos: bool | None = None,
    compression: str = "none",
) -> Job[CaptureResult]:
    """Generator: yields Progress per batch and returns a CaptureResult.

    prompts are texts, or lists of token ids used as they are.

    Closing the generator early (cancel) leaves the run marked interrupted.
    """
    if batch_size < 1:
        raise InputError(f"Batch size must be at least 1, not {batch_size}.", "pass --batch-size 1 or more")
    if storage_dtype not in STORAGE_DTYPES:
        raise InputError(f"Unknown storage dtype {storage_dtype!r}.", "choose float32 or float16")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    token_lists = tokenize_prompts(model, prompts, prepend_bos)
    # Prompts given as token ids are stored as their decoded text.
    prompts = [p if isinstance(p, str) else model.tokenizer.decode(list(t)) for p, t in zip(prompts, token_lists)]
    specs = catalog_for(model.engine).resolve(hooks)
    started = time.perf_counter()
    # Longest prompts first, so each batch pads little; the store keeps them in this order.
    order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
    writer = RunWriter(
        Path(out),
        metadata=run_metadata(model, specs, prepend_bos),
        prompts=prompts,
        token_lists=token_lists,
        str_token_lists=[model.str_tokens(t) for t in token_lists],
        storage_dtype=storage_dtype,
        compression=compression,
        write_order=order,
    )
    target_dtype = STORAGE_DTYPES[storage_dtype]
    causal = getattr(model.cfg, "attention_dir", "causal") == "causal"
    pad_id = getattr(model.tokenizer, "pad_token_id", None) or 0
    device = model.engine.device
    done = 0

    def batch_ids(indices: list[int], lengths: list[int]) -> torch.Tensor:
        width = max(lengths)
        batch = torch.full((len(indices), width), pad_id, dtype=torch.long)
        for row, i in enumerate(indices):
            batch[row, : lengths[row]] = torch.tensor(token_lists[i][: lengths[row]])
        return batch

    def emit(spec: HookSpec, tensor: torch.Tensor, indices: list[int], lengths: list[int], sink) -> None:
        """One hook's batched activation, packed and converted, handed to sink(name, canonical,
        axes, indices, lengths, array, layout)."""
        if tensor.shape[0] != len(indices):
            raise HookError(
                f"Hook {spec.name} gives one tensor for the whole batch (shape {tuple(tensor.shape)}), not one per prompt.",
                "leave it out of --hooks",
            )
        tensor = tensor.detach()
        layout = LAYOUT_DENSE
        if causal and spec.name.endswith("hook_pattern"):
            rows, cols = _tril_indices(tensor.shape[-1], tensor.device)
            tensor, layout = tensor[..., rows, cols], LAYOUT_LOWER_TRIANGLE
        array = tensor.to("cpu", dtype=target_dtype, copy=True).numpy()
        sink(spec.name, spec.canonical, _per_prompt_axes(spec, len(tensor.shape) + (layout != LAYOUT_DENSE)), indices, lengths, array, layout)

    def run_batch(indices: list[int], lengths: list[int], sink) -> None:
        """One forward pass over the prompts at indices (cut to lengths), each hook's
        activations handed to sink(name, canonical, axes, indices, lengths, array, layout)."""
        batch = batch_ids(indices, lengths)
        fired: set[str] = set()

        def make_hook(spec: HookSpec):
            def store_hook(tensor, hook):
                emit(spec, tensor, indices, lengths, sink)
                fired.add(spec.name)

            return store_hook

        # Right padding needs no attention mask: under causal attention a real
        # token never sees the padding that follows it.
        with torch.inference_mode():
            model.bridge.run_with_hooks(batch.to(device), fwd_hooks=[(spec.canonical, make_hook(spec)) for spec in specs], return_type=None)
        silent = [s.name for s in specs if s.name not in fired]
        if silent:
            raise HookError(
                f"Hook point(s) {', '.join(silent)} never fired on {model.name}.",
                "this architecture does not compute them; choose other hooks",
            )

    def run_batch_on_engine(indices: list[int], lengths: list[int], sink) -> None:
        """The prompts at indices through the engine seam: one run per chunk of hooks."""
        batch = batch_ids(indices, lengths).to(device)
        by_name = {spec.name: spec for spec in specs}
        for chunk in read_chunks([spec.name for spec in specs], model.cfg, len(indices), batch.shape[1], CAPTURE_BUDGET_BYTES):
            with torch.inference_mode():
                run = model.engine.run(batch, reads=dict.fromkeys(chunk), logits=False)
            for name in chunk:
                emit(by_name[name], run.activations.pop(name), indices, lengths, sink)
            del run

    def declare_from_shapes(indices: list[int], lengths: list[int], sink) -> None:
        """The datasets' samples from the seam's shapes, as a probe pass would give them
        (no run: on NDIF a probe is one more queued job)."""
        for spec in specs:
            emit(spec, torch.zeros(seam_shape(model.cfg, spec.name, len(indices), max(lengths))), indices, lengths, sink)

    on_bridge = isinstance(model.engine, BridgeEngine)
    try:
        # A two-token probe pass gives every hook's shape, so the run's datasets exist before
        # the first batch and its activations stream to disk as they come, instead of the
        # whole first batch (every layer's attention of a long prompt) waiting in memory.
        samples: list = []
        probe = run_batch if on_bridge else declare_from_shapes
        probe([order[0]], [min(2, len(token_lists[order[0]]))], lambda name, canonical, axes, _i, _l, array, layout: samples.append((name, canonical, axes, layout, array)))
        writer.declare(samples)
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            (run_batch if on_bridge else run_batch_on_engine)(indices, [len(token_lists[i]) for i in indices], writer.put)
            writer.end_batch()
            done += len(indices)
            yield Progress(done, len(order), f"{done}/{len(order)} prompts")
        run_id = writer.finish({"seconds": round(time.perf_counter() - started, 3)})
    except BaseException as exc:
        writer.abort(_interruption(exc))
        raise
    return CaptureResult(
        path=Path(out),
        run_id=run_id,
        n_prompts=len(token_lists),
        n_tokens=sum(len(t) for t in token_lists),
        hooks=[s.name for s in specs],
        seconds=time.perf_counter() - started,
    )
