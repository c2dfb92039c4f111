"""Turn a model spec into a loaded TransformerBridge, its tokenizer and metadata."""

from __future__ import annotations

import functools
import os
import pickle
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlparse

import torch

from ..engines import BridgeEngine, Engine
from ..errors import EngineError, InputError, ModelLoadError
from .fingerprint import fingerprint_model, model_weights
from .gguf_cache import convert_gguf, embedded_gguf_path
from .placement import Placement, device_summary, offload_folder, offloaded_weights
from .specs import ModelSource, parse_spec
from .zoo import build_zoo_model

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICES = ("cpu", "cuda", "mps")


@dataclass
class LoadedModel:
    """A model ready for analysis: the engine that runs it (workbench.engines) plus
    everything we know about it."""

    source: ModelSource
    engine: Engine
    tokenizer: PreTrainedTokenizerBase
    fingerprint: str
    device: str
    dtype: str
    tokenizer_prepends_bos: bool
    load_seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    weight_names: tuple[str, ...] = ()
    placement: Placement = field(default_factory=Placement)

    @property
    def offloaded_weights(self) -> list[str]:
        """Weights a device map keeps on CPU or disk (see workbench.models.placement)."""
        return offloaded_weights(self.engine.hf_model) if self.placement.mapped else []

    @property
    def device_map_summary(self) -> str:
        return device_summary(getattr(self.engine.hf_model, "hf_device_map", None))

    def current_fingerprint(self) -> str:
        """Fingerprint of the weights as they are now (e.g. after a weight edit)."""
        if self.engine.remote:  # hosted weights cannot be edited from here
            return self.fingerprint
        return fingerprint_model(self.engine.hf_model, self.weight_names or None)

    @property
    def bridge(self) -> TransformerBridge:
        """The TransformerBridge, for the code that has not moved onto the engine seam yet;
        EngineError on a model that another engine runs."""
        if isinstance(self.engine, BridgeEngine):
            return self.engine.bridge
        raise EngineError(
            f"This does not run on the {self.engine.name} engine yet: it needs TransformerBridge, and {self.spec} runs on {self.engine.name}.",
            f"load it without the '{self.source.engine}:' prefix ({self.source.base_spec}) to run this on TransformerBridge",
        )

    @property
    def spec(self) -> str:
        return self.source.spec

    @property
    def name(self) -> str:
        return self.source.display_name

    @property
    def cfg(self):
        return self.engine.cfg

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.cfg.n_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.cfg, "n_key_value_heads", None) or self.n_heads)

    @property
    def n_ctx(self) -> int:
        return int(self.cfg.n_ctx)

    @property
    def bos_token_id(self) -> int | None:
        return getattr(self.tokenizer, "bos_token_id", None)

    def tokenize(self, text: str, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of text. prepend_bos=None follows the tokenizer's own convention."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("The prompt is empty.", "type some text to analyse")
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        want_bos = self.tokenizer_prepends_bos if prepend_bos is None else prepend_bos
        bos = self.bos_token_id
        has_bos = bool(ids) and bos is not None and ids[0] == bos
        if want_bos and not has_bos:
            if bos is None:
                raise InputError(f"{self.name}'s tokenizer has no BOS token.", "turn 'prepend BOS' off")
            ids = [bos] + ids
        elif not want_bos and has_bos and self.tokenizer_prepends_bos:
            ids = ids[1:]
        if not ids:
            raise InputError("The prompt has no tokens.", "type some text to analyse")
        if len(ids) > self.n_ctx:
            raise InputError(
                f"The prompt is {len(ids)} tokens long; {self.name} reads at most {self.n_ctx}.",
                "shorten the prompt",
            )
        return ids

    def check_tokens(self, ids) -> list[int]:
        """Token ids given directly (not text), checked against the vocabulary and context."""
        ids = [int(i) for i in ids]
        if not ids:
            raise InputError("The prompt has no tokens.", "give at least one token id")
        vocab = int(self.cfg.d_vocab)
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise InputError(f"Token id {bad[0]} is outside {self.name}'s vocabulary (0..{vocab - 1}).", "use ids from this model's tokenizer")
        if len(ids) > self.n_ctx:
            raise InputError(f"The prompt is {len(ids)} tokens long; {self.name} reads at most {self.n_ctx}.", "shorten the prompt")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of token ids."""
        # One sequence gives one string; decode's `str | list[str]` covers a batch of them.
        return cast(str, self.tokenizer.decode([int(i) for i in ids]))

    def str_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.decode([i]) for i in ids]

    def token_text(self, token_id: int) -> str:
        """One token as a label: its text, or its bytes written <0xE2><0x80> when it is a piece
        of a UTF-8 character (decoded alone it would be "\ufffd", and two such tokens would
        look alike)."""
        text = self.decode([token_id])
        if "\ufffd" not in text:
            return text
        raw = str(self.tokenizer.convert_ids_to_tokens(int(token_id)))
        if raw.startswith("<0x"):  # SentencePiece byte fallback names them so already
            return raw
        table = _byte_level_alphabet()
        if all(c in table for c in raw):  # byte-level BPE (GPT-2, Llama 3, SmolLM2, Qwen)
            return "".join(chr(b) if 0x20 <= b < 0x7F else f"<0x{b:02X}>" for b in (table[c] for c in raw))
        return text

    def describe(self) -> dict:
        import transformer_lens

        return {
            "spec": self.spec,
            "name": self.name,
            "kind": self.source.kind,
            "engine": self.engine.name,
            "location": self.source.location,
            "fingerprint": self.fingerprint,
            "architecture": getattr(self.cfg, "architecture", None),
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "d_model": int(self.cfg.d_model),
            "d_vocab": int(self.cfg.d_vocab),
            "n_ctx": self.n_ctx,
            "device": self.device,
            "placement": self.placement.describe(),
            "device_map": self.device_map_summary or None,
            "dtype": self.dtype,
            "tokenizer_prepends_bos": self.tokenizer_prepends_bos,
            "transformer_lens_version": getattr(transformer_lens, "__version__", "unknown"),
        }


def _check_device(device: str) -> str:
    device = (device or "cpu").lower()
    base = device.split(":")[0]
    if base not in DEVICES:
        raise ModelLoadError(f"Unknown device {device!r}.", f"choose one of {', '.join(DEVICES)}")
    if base == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("CUDA was asked for but torch sees no CUDA GPU.", "use --device cpu, or install a CUDA build of torch")
    if base == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ModelLoadError("MPS was asked for but is not available here.", "use --device cpu")
        # TransformerLens disables MPS by default after wrong outputs (#1178); asking for it is opting in.
        os.environ.setdefault("TRANSFORMERLENS_ALLOW_MPS", "1")
    return device


def _check_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ModelLoadError(f"Unknown dtype {dtype!r}.", f"choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _hub_reachable(timeout: float = 3.0) -> bool:
    return reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host and port opens within `timeout` seconds."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "localhost", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ).lower() in ("1", "true", "yes")


def _load_hf(location: str, torch_dtype: torch.dtype, local_only: bool, placement: Placement):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
    mapped = {}
    if placement.mapped:
        # TransformerBridge takes a model placed by from_pretrained as it is, and wraps its
        # modules with accelerate's hooks intact (TransformerLens 4: device_map with hf_model=).
        mapped = {"device_map": placement.device_map, "max_memory": placement.budgets(), "offload_folder": str(offload_folder(location))}
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, local_files_only=local_only, **mapped)
    return model, tokenizer


def _load_hub(model_id: str, torch_dtype: torch.dtype, placement: Placement):
    # The user's cache first: it works offline and never waits on the network.
    try:
        return _load_hf(model_id, torch_dtype, local_only=True, placement=placement)
    except OSError:
        pass
    if _offline_mode():
        raise ModelLoadError(
            f"{model_id!r} is not in the Hugging Face cache and offline mode is on (HF_HUB_OFFLINE).",
            "download it once while online, or load a local folder or .gguf file",
        )
    if not _hub_reachable():
        raise ModelLoadError(
            f"{model_id!r} is not in the Hugging Face cache and the Hub cannot be reached.",
            "connect to the internet once to download it, or load a local folder or .gguf file",
        )
    try:
        return _load_hf(model_id, torch_dtype, local_only=False, placement=placement)
    except OSError as exc:
        raise ModelLoadError(f"Could not load {model_id!r} from the Hub: {exc}", "check the model id on huggingface.co") from exc


def _tokenizer_prepends_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _check_memory(name: str, location: str, torch_dtype: torch.dtype, placement: Placement) -> None:
    """Refuse before reading any weight when the model cannot fit (workbench.models.memory).
    The weights pass through main memory on their way to a GPU, so both are checked.
    A device map needs no check: accelerate fills each device up to its budget, then disk."""
    from transformers import AutoConfig

    from .memory import check_fits

    if placement.mapped:
        return
    device = placement.device
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=True)
    except (OSError, ValueError):
        return  # no config to read yet (a Hub model not downloaded): loading says what is wrong
    check_fits(name, config, torch_dtype, "cpu")
    if device.startswith("cuda"):
        check_fits(name, config, torch_dtype, device)


def load_hf_model(spec: str, dtype: str = "float32", device: str = "cpu", placement: Placement | None = None):
    """The Hugging Face model and tokenizer behind a spec, before bridging; a placement
    with a device map places its weights as it loads them."""
    source = parse_spec(spec)
    torch_dtype = _check_dtype(dtype)
    placement = placement or Placement(device)
    try:
        if source.kind == "hub":
            _check_memory(source.display_name, source.location, torch_dtype, placement)
            model, tokenizer = _load_hub(source.location, torch_dtype, placement)
        else:
            if source.kind == "embedded":
                folder = str(convert_gguf(embedded_gguf_path()))
            elif source.kind == "gguf":
                folder = str(convert_gguf(Path(source.location)))
            elif source.kind == "zoo":
                folder = str(build_zoo_model(source.location))
            else:  # lab, folder
                folder = source.location
            _check_memory(source.display_name, folder, torch_dtype, placement)
            model, tokenizer = _load_hf(folder, torch_dtype, local_only=True, placement=placement)
    except ModelLoadError:
        raise
    except pickle.UnpicklingError as exc:
        # transformers loads .bin checkpoints with torch's weights_only, which refuses pickled code.
        raise ModelLoadError(
            f"Could not load {spec!r}: its weights are a pickle that holds more than tensors, which is refused as unsafe ({str(exc).splitlines()[0][:120]}).",
            "convert the checkpoint to safetensors where you trust it, or use a model saved as safetensors",
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Could not load {spec!r}: {exc}", "check that it is a causal language model in Hugging Face format") from exc
    return source, model.eval(), tokenizer


def load_model(spec: str, device: str = "cpu", dtype: str = "float32", device_map: str | None = None, max_memory: str = "") -> LoadedModel:
    """Load any model spec: as a TransformerBridge (TransformerLens 4.x), or on the nnsight
    engine for `nnsight:<spec>`; `ndif:<hf id>` checks what running on NDIF needs. On one
    device, or placed by a device map (workbench.models.placement)."""
    started = time.perf_counter()
    requested = parse_spec(spec)
    if requested.engine == "ndif":
        from .ndif import load_ndif_model

        if device_map or dtype != "float32" or device != "cpu":
            raise ModelLoadError(
                f"{spec!r} runs on NDIF, which chooses the model's devices and precision itself.",
                "load ndif: models with the defaults (cpu, float32, no device map): leave out --device, --dtype and --device-map",
            )
        return load_ndif_model(requested)
    placement = Placement(device, device_map, max_memory or "")
    if placement.mapped and requested.engine != "bridge":
        raise ModelLoadError(f"A device map places models for TransformerBridge; {spec!r} runs on the {requested.engine} engine.", "load it without --device-map, or without the engine prefix")
    device = "cpu" if placement.mapped else _check_device(device)
    source, hf_model, tokenizer = load_hf_model(spec, dtype, device, placement)
    fingerprint = fingerprint_model(hf_model)
    weight_names = tuple(sorted(model_weights(hf_model)))
    prepends_bos = _tokenizer_prepends_bos(tokenizer)
    engine = _nnsight_engine(spec, hf_model, tokenizer, device) if source.engine == "nnsight" else _bridge_engine(spec, source, hf_model, tokenizer, device, dtype, placement)
    if placement.mapped:  # where the inputs go: the device of the embeddings
        device = str(engine.cfg.device or "cpu")
    return LoadedModel(
        source=source,
        engine=engine,
        tokenizer=tokenizer,
        fingerprint=fingerprint,
        device=device,
        dtype=dtype,
        tokenizer_prepends_bos=prepends_bos,
        load_seconds=time.perf_counter() - started,
        weight_names=weight_names,
        placement=placement,
    )


def _bridge_engine(spec: str, source: ModelSource, hf_model, tokenizer, device: str, dtype: str, placement: Placement) -> BridgeEngine:
    from transformer_lens.model_bridge import TransformerBridge

    try:
        bridge = TransformerBridge.boot_transformers(
            source.display_name, hf_model=hf_model, tokenizer=tokenizer, device=None if placement.mapped else device, dtype=DTYPES[dtype]
        )
    except Exception as exc:  # unsupported architectures surface as assorted errors
        raise ModelLoadError(
            f"TransformerLens cannot wrap {spec!r} ({type(hf_model).__name__}): {exc}",
            "check TransformerBridge.list_supported_models() for supported architectures",
        ) from exc
    bridge.eval()
    return BridgeEngine(bridge)


def _nnsight_engine(spec: str, hf_model, tokenizer, device: str) -> Engine:
    from ..engines import NnsightEngine

    try:
        return NnsightEngine(hf_model.to(device), tokenizer)
    except EngineError as exc:
        raise ModelLoadError(f"Cannot run {spec!r} on the nnsight engine: {exc.message}", exc.hint) from None


@functools.lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's scheme): printable Latin-1
    bytes stand for themselves, the others are shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}
