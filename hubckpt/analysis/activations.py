"""Hidden states of models over one probe, collected with forward hooks and written to disk per model.

- `Probe`: the inputs every model sees: token ids (+ attention mask) for language models, built from
  texts with a tokenizer or read from a safetensors file, or any tensor for an arbitrary `nn.Module`.
- `default_layers(model)`: every transformer block (the longest list of identical sub-modules).
- `collect_activations(model, probe, layers)`: one model's hidden states, pooled to `(n, features)`.
- `ActivationStore`: a folder with one safetensors file per revision, written atomically as each model
  finishes, so hundreds of revisions fit on disk, a killed run resumes, and later reads load one layer
  of one revision at a time.
- `collect_for_models(models, probe, store)`: many models, one in memory at a time.
- `collect_across_revisions(repo_id, revisions, probe, store)`: the same over a repo's revisions, loading
  each through `hubckpt.load.load_model` (pinned to its commit) and dropping it before the next.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AnalysisError

logger = logging.getLogger(__name__)

POOLS = ("mean", "last", "tokens", "flatten")


# -- probes ---------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """The inputs shown to every model. Exactly one of `input_ids` (LMs) or `inputs` (any module) is set.

    Build one from text lines with `Probe.from_texts(lines, tokenizer)`, or from saved token ids with
    `Probe.from_safetensors(path)`.

    `attention_mask` marks real tokens (1) versus padding (0); pooled activations ignore padding.
    """

    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    inputs: torch.Tensor | None = None
    texts: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.input_ids is None) == (self.inputs is None):
            raise AnalysisError("A probe needs exactly one of input_ids (token ids) or inputs (a tensor).")
        if self.input_ids is not None:
            ids = torch.as_tensor(self.input_ids)
            if ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise AnalysisError(
                    f"input_ids must be an integer tensor [n, seq]; got {ids.dtype} {tuple(ids.shape)}."
                )
            self.input_ids = ids.long()
            mask = (
                torch.ones_like(self.input_ids)
                if self.attention_mask is None
                else torch.as_tensor(self.attention_mask).long()
            )
            if mask.shape != self.input_ids.shape:
                raise AnalysisError(
                    f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(self.input_ids.shape)}."
                )
            if bool((mask.sum(dim=1) == 0).any()):
                raise AnalysisError("every probe example needs at least one token (an all-padding row found).")
            self.attention_mask = mask
        if len(self) == 0:
            raise AnalysisError("The probe is empty.")

    def __len__(self) -> int:
        data = self.input_ids if self.input_ids is not None else self.inputs
        assert data is not None, "__post_init__ requires one of them"
        return int(data.shape[0])

    @property
    def is_tokens(self) -> bool:
        return self.input_ids is not None

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: Any, *, max_length: int = 128) -> Probe:
        """Tokenise `texts` (one example each) with a transformers tokenizer, padded to the longest."""
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise AnalysisError("The text probe has no non-empty lines.")
        pad_id = tokenizer.pad_token_id
        if pad_id is None:  # GPT-2-style tokenizers have none; padded positions are masked out anyway
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        rows = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        if any(len(r) == 0 for r in rows):
            raise AnalysisError("A probe line tokenised to zero tokens.")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: "last" pooling then reads position sum(mask) - 1
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return cls(input_ids=ids, attention_mask=mask, texts=list(texts))

    @classmethod
    def from_safetensors(cls, path: str | Path) -> Probe:
        """A probe saved as a safetensors file: the same token ids for every revision, whatever its tokenizer.

        Save one with `safetensors.torch.save_file({"input_ids": ids, "attention_mask": mask}, path)`
        (integer tensors `[n, seq]`; the mask is optional, 1 for real tokens and 0 for padding), or
        `{"inputs": x}` for a module that takes a float tensor. `hubckpt analyze --probe FILE.safetensors`
        reads the same file.

        Args:
            path: the safetensors file.

        Returns:
            The probe.

        Raises:
            AnalysisError: the file cannot be read, or holds neither `input_ids` nor `inputs`.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise AnalysisError(f"Cannot read probe {path}: {e}") from e
        if "input_ids" in tensors:
            return cls(input_ids=tensors["input_ids"], attention_mask=tensors.get("attention_mask"))
        if "inputs" in tensors:
            return cls(inputs=tensors["inputs"])
        raise AnalysisError(f"Probe {path} has no `input_ids` (or `inputs`) tensor; it has {sorted(tensors)}.")

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, torch.Tensor] | torch.Tensor, torch.Tensor | None]]:
        """(model inputs, attention mask or None) per batch, in order."""
        for s in range(0, len(self), batch_size):
            if self.input_ids is not None:
                assert self.attention_mask is not None, "__post_init__ sets it with input_ids"
                mask = self.attention_mask[s : s + batch_size]
                yield {"input_ids": self.input_ids[s : s + batch_size], "attention_mask": mask}, mask
            else:
                assert self.inputs is not None, "__post_init__ requires input_ids or inputs"
                yield self.inputs[s : s + batch_size], None


def is_text_probe(path: str | Path) -> bool:
    """A probe file is safetensors if it starts like one (8-byte header length, then `{`), else text."""
    with open(path, "rb") as f:
        head = f.read(9)
    return not (len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000)


def read_text_probe(path: str | Path) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AnalysisError(f"Cannot read text probe {path}: {e}") from e
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise AnalysisError(f"Text probe {path} has no non-empty lines.")
    return lines


# -- layers ---------------------------------------------------------------------------------------------


def default_layers(model: nn.Module) -> list[str]:
    """Module names of the transformer blocks: the longest `ModuleList` of same-class modules (ties go to
    the one holding more parameters). Models without one: their direct children that have parameters."""
    best: tuple[int, int, str] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1:
            score = (len(module), sum(p.numel() for p in module.parameters()), name)
            if best is None or score[:2] > best[:2]:
                best = score
    if best is not None:
        return [f"{best[2]}.{i}" if best[2] else str(i) for i in range(best[0])]
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]


def resolve_layers(model: nn.Module, layers: Sequence[str | int] | None) -> list[str]:
    """Layer names from names or indices into `default_layers` (negative counts from the end)."""
    blocks = default_layers(model)
    if not layers:
        if not blocks:
            raise AnalysisError("The model has no sub-modules to hook; pass layers=[...] by module name.")
        return blocks
    modules = dict(model.named_modules())
    out = []
    for item in layers:
        text = str(item).strip()
        if text.lstrip("-").isdigit():
            i = int(text)
            if not -len(blocks) <= i < len(blocks):
                raise AnalysisError(
                    f"Layer index {i} is out of range: the model has {len(blocks)} blocks "
                    f"({blocks[0] if blocks else '-'} ... {blocks[-1] if blocks else '-'})."
                )
            out.append(blocks[i])
        elif text in modules:
            out.append(text)
        else:
            near = [n for n in modules if n and (n.endswith("." + text) or text.endswith("." + n))]
            hint = f" Did you mean {near[0]!r}?" if near else f" Blocks: {', '.join(blocks[:4])}..."
            raise AnalysisError(f"No module named {text!r} in {type(model).__name__}.{hint}")
    return list(dict.fromkeys(out))


# -- collection -----------------------------------------------------------------------------------------


def _first_tensor(output: Any) -> torch.Tensor:
    """A block's hidden states from whatever it returns (a tensor, a tuple, a ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise AnalysisError(f"A hooked module returned {type(output).__name__}, not a tensor; pick another layer.")


def _pool(h: torch.Tensor, mask: torch.Tensor | None, pool: str) -> torch.Tensor:
    if mask is None or h.ndim != 3 or h.shape[:2] != mask.shape:
        return h.reshape(h.shape[0], -1) if h.ndim != 2 else h
    m = mask.to(h.dtype).unsqueeze(-1)
    if pool == "mean":
        return (h * m).sum(dim=1) / m.sum(dim=1)
    if pool == "last":
        return h[torch.arange(h.shape[0]), mask.sum(dim=1) - 1]
    if pool == "tokens":
        return h[mask.bool()]
    return h.reshape(h.shape[0], -1)


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    probe: Probe | torch.Tensor,
    layers: Sequence[str | int] | None = None,
    *,
    batch_size: int = 32,
    pool: str = "mean",
) -> dict[str, torch.Tensor]:
    """Run `model` over `probe` in eval mode and return `{layer: float32 tensor (n, features)}`.

    `pool` turns token-level states `[batch, seq, hidden]` into one row per example: `mean` over real
    tokens (default), `last` real token, `flatten`, or `tokens` (every real token becomes a row; the same
    rows for every model since the probe is the same). Other outputs are flattened per example.
    """
    if pool not in POOLS:
        raise AnalysisError(f"pool must be one of {', '.join(POOLS)}; got {pool!r}.")
    probe = probe if isinstance(probe, Probe) else Probe(inputs=probe)
    names = resolve_layers(model, layers)
    modules = dict(model.named_modules())
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    current_mask: list[torch.Tensor | None] = [None]

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            h = _first_tensor(output).detach()
            chunks[name].append(_pool(h.float(), current_mask[0], pool).to("cpu", torch.float32))

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        for batch, mask in probe.batches(batch_size):
            current_mask[0] = mask
            if isinstance(batch, dict):
                model(**{k: v.to(device) for k, v in batch.items()})
            else:
                model(batch.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n, c in chunks.items() if not c]
    if missing:
        raise AnalysisError(f"Layers never ran in the forward pass: {', '.join(missing)}.")
    return {n: torch.cat(c).contiguous() for n, c in chunks.items()}


# -- storage --------------------------------------------------------------------------------------------


class ActivationStore:
    """A folder of `<name>.safetensors` files, one per revision (or model), keys = layer names.

    Each file is written to a temporary name, fsync'd and renamed, so a file that exists is complete;
    `metadata(name)` returns what was stored with it (revision, commit, step, pool...).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / (name.replace("/", "--") + ".safetensors")

    def __contains__(self, name: str) -> bool:
        return self.path(name).is_file()

    def names(self) -> list[str]:
        """Stored names, in step order where a step was recorded, else by name."""
        found = [p.name[: -len(".safetensors")].replace("--", "/") for p in sorted(self.root.glob("*.safetensors"))]

        def key(n: str) -> tuple[int, str]:
            step = self.metadata(n).get("step")
            return (int(step) if isinstance(step, int) else 1 << 62, n)

        return sorted(found, key=key)

    def save(self, name: str, activations: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> Path:
        from safetensors.torch import save_file

        dest = self.path(name)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        meta = {
            "hubckpt.analysis": json.dumps(
                {"name": name, "layers": list(activations), **(metadata or {})}, sort_keys=True
            )
        }
        save_file({k: v.contiguous() for k, v in activations.items()}, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        return dest

    def metadata(self, name: str) -> dict[str, Any]:
        from safetensors import safe_open

        with safe_open(str(self.path(name)), "pt") as f:
            return json.loads((f.metadata() or {}).get("hubckpt.analysis", "{}"))

    def layers(self, name: str) -> list[str]:
        return list(self.metadata(name).get("layers", []))

    def load(self, name: str, layer: str) -> torch.Tensor:
        """One layer of one stored revision (only that tensor is read)."""
        from safetensors import safe_open

        if name not in self:
            raise AnalysisError(f"No activations stored for {name!r} in {self.root}.")
        with safe_open(str(self.path(name)), "pt") as f:
            if layer not in f.keys():
                raise AnalysisError(f"Layer {layer!r} was not collected for {name!r}; stored: {list(f.keys())}.")
            return f.get_tensor(layer)

    def layer(self, layer: str, names: Sequence[str] | None = None) -> list[torch.Tensor]:
        return [self.load(n, layer) for n in (names if names is not None else self.names())]


def collect_for_models(
    models: Iterable[tuple[str, nn.Module | Any]],
    probe: Probe | torch.Tensor,
    store: ActivationStore | str | Path,
    *,
    layers: Sequence[str | int] | None = None,
    batch_size: int = 32,
    pool: str = "mean",
    overwrite: bool = False,
    metadata: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Collect and store each `(name, model)` in turn; returns the names in order.

    `models` may be a generator that builds (loads) each model lazily: each model is released before
    the next one is asked for, so one model is in memory at a time. Names already stored are skipped
    (their model is not even loaded when the item is a zero-argument callable) unless `overwrite`.
    """
    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    done = []
    for name, model in models:
        if name in store and not overwrite:
            logger.info("activations for %s already stored; skipping", name)
            done.append(name)
            continue
        if callable(model) and not isinstance(model, nn.Module):
            model = model()
        acts = collect_activations(model, probe, layers, batch_size=batch_size, pool=pool)
        store.save(name, acts, {"pool": pool, **((metadata or {}).get(name, {}))})
        logger.info(
            "stored activations of %s (%d layers, %d rows)", name, len(acts), next(iter(acts.values())).shape[0]
        )
        done.append(name)
        del model, acts
        gc.collect()
    return done


def collect_across_revisions(
    repo_id: str,
    revisions: Sequence[Any],
    probe: Probe | torch.Tensor,
    store: ActivationStore | str | Path,
    *,
    layers: Sequence[str | int] | None = None,
    batch_size: int = 32,
    pool: str = "mean",
    model_class: Any = None,
    hub: Any = None,
    token: str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Collect activations of `revisions` of `repo_id` (names, or `RevisionInfo` records from
    `hubckpt.list_revisions` / `resolve_revision`) into `store`, one model in memory at a time.

    Each revision is resolved first and loaded at its commit; the store records name, step and commit.
    """
    from ..load import load_model, resolve_revision

    infos = [r if hasattr(r, "commit") else resolve_revision(repo_id, r, hub=hub, token=token) for r in revisions]

    def loaders() -> Iterator[tuple[str, Any]]:
        for info in infos:

            def load(info=info):
                kwargs = {"model_class": model_class} if model_class is not None else {}
                return load_model(repo_id, info.commit, hub=hub, token=token, **kwargs)

            yield info.name, load

    meta = {i.name: {"revision": i.name, "step": i.step, "commit": i.commit} for i in infos}
    return collect_for_models(
        loaders(), probe, store, layers=layers, batch_size=batch_size, pool=pool, overwrite=overwrite, metadata=meta
    )
