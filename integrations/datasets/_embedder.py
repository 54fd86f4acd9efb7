"""``TransformerEmbedder``: one hidden layer of a ``transformers`` model, pooled per text.

Kept apart from the ``datasets`` hook so image users never import torch or transformers:
both are imported when an embedder is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xxhash

from neardup import NeardupInputError

from .._common import missing_framework

__all__ = ["POOLING_CHOICES", "TransformerEmbedder"]

POOLING_CHOICES = ("mean", "cls", "max")


class TransformerEmbedder:
    """Embed a batch of texts with the hidden states of one layer of a ``transformers`` model.

    ``embedder(batch)`` tokenizes ``batch[text_column]`` (padding, truncation to
    ``max_length``), runs the model once with ``output_hidden_states=True`` and pools the
    hidden states of ``layer`` to a ``(B, hidden_size)`` float32 array:

    - ``"mean"``: average over the real tokens (the attention mask excludes padding);
    - ``"cls"``: the first token;
    - ``"max"``: per-feature maximum over the real tokens.

    ``layer`` indexes ``outputs.hidden_states``: ``0`` is the embedding layer, ``1..L`` the
    transformer blocks, ``-1`` the last block and ``-2`` (default) the one before it, which
    keeps more of the surface form of a text than the last block (what near-duplicates share).
    The model runs in eval mode (dropout off) and without gradients; its train/eval mode is
    restored afterwards.

    Identity for ``datasets`` caching: :meth:`neardup_fingerprint` hashes the weights
    (xxhash over the raw tensor bytes, a few ms for a small model), the config, the tokenizer
    and these options, so a fine-tuned model gets a new cache entry.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        layer: int = -2,
        pooling: str = "mean",
        text_column: str = "text",
        max_length: int = 128,
        device: Any = None,
    ) -> None:
        try:
            import torch
        except ImportError as err:
            raise missing_framework("neardup's TransformerEmbedder", "datasets", err) from err
        if not hasattr(model, "forward") or not callable(model):
            raise NeardupInputError(
                f"model must be a transformers (torch) model, got {type(model).__name__}; "
                "load one with transformers.AutoModel.from_pretrained(path)."
            )
        if not callable(tokenizer):
            raise NeardupInputError(
                f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}; "
                "load one with transformers.AutoTokenizer.from_pretrained(path)."
            )
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise NeardupInputError(
                f"layer must be an int index into the hidden states (0 = embeddings, "
                f"-1 = last block), got {layer!r}."
            )
        if pooling not in POOLING_CHOICES:
            raise NeardupInputError(
                f"pooling={pooling!r} is not supported; use one of {list(POOLING_CHOICES)}."
            )
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise NeardupInputError(f"max_length must be a positive int, got {max_length!r}.")
        n_hidden = _num_hidden_states(model)
        if n_hidden is not None and not -n_hidden <= layer < n_hidden:
            raise NeardupInputError(
                f"layer={layer} is out of range: this model has {n_hidden} hidden states "
                f"(embeddings + {n_hidden - 1} blocks); use -{n_hidden}..{n_hidden - 1}."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.layer = int(layer)
        self.pooling = pooling
        self.text_column = text_column
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else _model_device(model)
        self._tokenizer_hash: str | None = None

    def __repr__(self) -> str:
        return (
            f"TransformerEmbedder({type(self.model).__name__}, layer={self.layer}, "
            f"pooling={self.pooling!r}, text_column={self.text_column!r})"
        )

    def __call__(self, batch: Mapping[str, Any]) -> np.ndarray:
        """``(B, hidden_size)`` float32 activations of ``batch[text_column]``."""
        import torch

        texts = _texts(batch, self.text_column)
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                outputs = self.model(**encoded, output_hidden_states=True, return_dict=True)
        finally:
            self.model.train(was_training)
        hidden = outputs.hidden_states[self.layer]
        mask = encoded.get("attention_mask")
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return _pool(hidden, mask, self.pooling).float().cpu().numpy()

    def neardup_fingerprint(self) -> str:
        """A stable hash of the weights, config, tokenizer and options (cheap: raw bytes)."""
        import torch

        h = xxhash.xxh64()
        model_type = f"{type(self.model).__module__}.{type(self.model).__name__}"
        h.update(
            f"TransformerEmbedder/1|{self.layer}|{self.pooling}|{self.text_column}|"
            f"{self.max_length}|{model_type}".encode()
        )
        config = getattr(self.model, "config", None)
        if config is not None and hasattr(config, "to_json_string"):
            h.update(config.to_json_string(use_diff=False).encode())
        for name, tensor in self.model.state_dict().items():
            h.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            flat = tensor.detach().reshape(-1)
            if flat.numel():
                h.update(flat.cpu().contiguous().view(torch.uint8).numpy())
        if self._tokenizer_hash is None:
            # hashed once: tokenizers do not change after loading (datasets' own reducer)
            from datasets.fingerprint import Hasher

            self._tokenizer_hash = Hasher.hash(self.tokenizer)
        h.update(self._tokenizer_hash.encode())
        return h.hexdigest()


def _num_hidden_states(model: Any) -> int | None:
    """Embeddings + blocks, from the model's config when it says (else None: not checked)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    return n + 1 if isinstance(n, int) else None


def _model_device(model: Any) -> Any:
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _texts(batch: Mapping[str, Any], column: str) -> list[str]:
    """The batch's texts as a list of str, with errors that say how to fix the map call."""
    if not isinstance(batch, Mapping) or column not in batch:
        keys = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise NeardupInputError(
            f"TransformerEmbedder: the batch has no column {column!r} (it has {keys}); "
            "pass text_column= naming the column that holds the texts."
        )
    texts = batch[column]
    if isinstance(texts, str):
        raise NeardupInputError(
            f"TransformerEmbedder got a single text in column {column!r}; map with "
            "batched=True so that each call receives a list of texts."
        )
    texts = list(texts)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if texts and bad is not None:
        raise NeardupInputError(
            f"TransformerEmbedder: column {column!r} holds {type(bad).__name__} values, not "
            "texts; point text_column= at a string column."
        )
    return texts


def _pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """Pool ``(B, T, H)`` hidden states to ``(B, H)`` over the tokens where ``mask`` is 1."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return hidden.masked_fill(m == 0, float("-inf")).amax(dim=1)
