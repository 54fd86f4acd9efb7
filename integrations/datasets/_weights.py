"""Hash a model's current weights, and find the models an embedding function closes over.

Used to tie an :class:`ActivationHook`'s cache identity to the weights the hook will run
with: ``datasets`` would otherwise hand back vectors computed by an older model. Works on
torch modules and Keras models without importing either framework (duck typing), so the
hook stays framework-free.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
import xxhash

__all__ = ["models_in", "weights_hash"]

_MAX_DEPTH = 3


def _is_torch_module(obj: Any) -> bool:
    """A plain torch module: on Keras 3's torch backend a Keras model is one too, but its
    weights are read the Keras way (``get_weights``), the same on every backend."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module) and not _is_keras_model(obj)


def _is_keras_model(obj: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


def is_model(obj: Any) -> bool:
    """A torch ``nn.Module`` or a Keras ``Model`` (checked only if the framework is loaded)."""
    return _is_torch_module(obj) or _is_keras_model(obj)


def weights_hash(models: list[Any]) -> str:
    """xxhash of every weight of ``models`` (names, dtypes, shapes and raw bytes)."""
    h = xxhash.xxh64()
    for model in models:
        h.update(f"|{type(model).__module__}.{type(model).__name__}|".encode())
        if _is_torch_module(model):
            torch = sys.modules["torch"]
            for name, tensor in model.state_dict().items():
                h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                flat = tensor.detach().reshape(-1)
                if flat.numel():
                    h.update(flat.cpu().contiguous().view(torch.uint8).numpy())
        else:  # a Keras model, on any backend
            for i, weight in enumerate(model.get_weights()):
                array = np.ascontiguousarray(weight)
                h.update(f"{i}|{array.dtype}|{array.shape}|".encode())
                h.update(array.view(np.uint8).reshape(-1))
    return h.hexdigest()


def models_in(fn: Any) -> list[Any]:
    """The torch/Keras models ``fn`` reaches: itself, its closure cells, ``__self__``,
    ``functools.partial`` arguments and attributes of callable objects (a few levels deep)."""
    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > _MAX_DEPTH:
            return
        seen.add(id(obj))
        if is_model(obj):
            found.append(obj)
            return
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
            return
        if isinstance(obj, dict):
            for item in obj.values():
                visit(item, depth + 1)
            return
        if isinstance(obj, functools.partial):
            visit(obj.func, depth + 1)
            visit(obj.args, depth + 1)
            visit(obj.keywords, depth + 1)
            return
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                visit(cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                continue
        owner = getattr(obj, "__self__", None)
        if owner is not None:
            visit(owner, depth + 1)
        if callable(obj) and not isinstance(obj, type) and hasattr(obj, "__dict__"):
            for value in vars(obj).values():
                visit(value, depth + 1)
        code = getattr(obj, "__code__", None)
        scope = getattr(obj, "__globals__", None)
        if code is not None and scope is not None:  # globals the function names
            for name in code.co_names:
                if name in scope and is_model(scope[name]):
                    visit(scope[name], depth + 1)

    visit(fn, 0)
    return found
