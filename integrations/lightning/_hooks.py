"""Forward hooks for the Lightning callback: resolve layer names, pool outputs, clean up.

Pure torch (no Lightning import), so the hook manager can be tested and reused on its own.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from neardup import NeardupInputError
from neardup.validators import closest_names

__all__ = [
    "HookManager",
    "channels_first",
    "compiled_wrappers",
    "default_layer",
    "pool_tensor",
    "resolve_layers",
    "select_tensor",
]

_DICT_KEYS = ("last_hidden_state", "hidden_states", "features", "logits")
_LISTED = 40  # module names shown in an error message


_ORIG = "_orig_mod"  # where torch.compile's OptimizedModule keeps the original module


def compiled_wrappers(model: nn.Module) -> list[str]:
    """Names of the ``torch.compile``'d modules in ``model`` (``""``: the model itself)."""
    return [n for n, m in model.named_modules() if hasattr(m, _ORIG) and callable(m)]


def _plain_name(name: str) -> str:
    """``net._orig_mod.conv`` -> ``net.conv``: the name as the user wrote the model."""
    parts = [p for p in name.split(".") if p != _ORIG]
    return ".".join(parts)


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """``name -> submodule`` for names of ``model.named_modules()``; unknown names raise.

    Inside a ``torch.compile``'d submodule both ``net.conv`` and ``net._orig_mod.conv`` name
    the original ``conv`` (hooks on it fire only while :class:`HookManager` runs the compiled
    modules eagerly, which it does whenever one of its modules sits inside one).
    """
    modules = dict(model.named_modules())
    plain = {_plain_name(n): m for n, m in modules.items() if _ORIG in n.split(".")}
    out = {}
    for name in layers:
        module = modules.get(name) if name else None
        if module is None and name:
            module = plain.get(name)
        if module is None:
            known = [n for n in dict.fromkeys(_plain_name(n) for n in modules if n) if n]
            shown = ", ".join(repr(n) for n in known[:_LISTED])
            more = f", ... ({len(known)} in all)" if len(known) > _LISTED else ""
            raise NeardupInputError(
                f"layer {name!r} is not a submodule of {type(model).__name__} "
                f"({closest_names(name, known)}); use names from model.named_modules(): "
                f"{shown}{more}."
            )
        out[name] = module
    return out


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CHANNELS_FIRST_1D = (
    nn.Conv1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.BatchNorm1d,
)


def default_layer(model: nn.Module) -> tuple[str, str]:
    """Pick the layer analysed when ``layers=None``, and say why.

    Rule, from the layer study in ``benchmarks/bench_lightning_overhead.py --layers``: the
    block holding the last convolution (its parent module, e.g. ``features`` or
    ``layer4.1``; the convolution itself when it sits directly in the model), whose pooled
    map still tells a copy from a same-class neighbour. Without convolutions: the first
    parametrised layer (the last layers of a classifier merge same-class samples).
    """
    named = [(_plain_name(n), m) for n, m in model.named_modules() if _plain_name(n)]
    named = [(n, m) for n, m in named if not hasattr(m, _ORIG)]  # compiled wrappers
    convs = [n for n, m in named if isinstance(m, _CONV)]
    if convs:
        parent = convs[-1].rpartition(".")[0]
        if parent:
            return parent, f"the block holding the last convolution ({convs[-1]!r})"
        return convs[-1], "the last convolution"
    leaves = [
        n
        for n, m in named
        if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
    ]
    if len(leaves) >= 2:
        return leaves[0], (
            "the first parametrised layer (no convolution found; the last layers of a "
            "classifier merge same-class samples)"
        )
    if leaves:
        return leaves[0], "the only parametrised layer"
    raise NeardupInputError(
        f"layers=None cannot pick a layer: {type(model).__name__} has no parametrised "
        "submodule. Pass layers=[...] with names from model.named_modules()."
    )


def channels_first(module: nn.Module) -> bool:
    """Whether a 3-d output of ``module`` is ``(B, C, L)`` (1-d conv stacks) or ``(B, T, H)``.

    4-d and larger outputs are always ``(B, C, ...)`` in PyTorch; 3-d ones are channel-first
    only for 1-d convolution/pooling/batch-norm stacks, sequence models put features last.
    """
    return any(isinstance(m, _CHANNELS_FIRST_1D) for m in module.modules())


def select_tensor(layer: str, output: Any, warned: set[str]) -> torch.Tensor:
    """The tensor to collect from a module output (tensor, tuple/list or dict)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        if output and isinstance(output[0], torch.Tensor):
            if layer not in warned:
                warned.add(layer)
                warnings.warn(
                    f"neardup: layer {layer!r} returns a {type(output).__name__} of "
                    f"{len(output)}; collecting its first element (shape "
                    f"{tuple(output[0].shape)}). Pass pool=callable(output) to choose another.",
                    stacklevel=2,
                )
            return output[0]
        kinds = [type(o).__name__ for o in output]
        raise NeardupInputError(
            f"layer {layer!r} returns a {type(output).__name__} of {kinds} whose first element "
            "is not a tensor; hook a submodule that returns a tensor, or pass "
            "pool=callable(output) -> (batch, features) tensor (it receives the raw output)."
        )
    if isinstance(output, dict):
        tensors = {k: v for k, v in output.items() if isinstance(v, torch.Tensor)}
        for key in _DICT_KEYS:
            if key in tensors:
                return tensors[key]
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        raise NeardupInputError(
            f"layer {layer!r} returns a dict with tensors {sorted(tensors)}; neardup cannot "
            "tell which one to collect. Pass pool=callable(output) -> (batch, features) tensor, "
            "e.g. pool=lambda out: out['pooled'] (it receives the raw output)."
        )
    raise NeardupInputError(
        f"layer {layer!r} returns {type(output).__name__}, not a tensor; hook a submodule "
        "that returns a tensor or pass pool=callable(output) -> (batch, features) tensor."
    )


def pool_tensor(
    layer: str, output: Any, pool: Any, warned: set[str], *, features_last: bool = False
) -> torch.Tensor:
    """``(B, features)`` float32 CPU copy of one layer output, pooled on the model's device.

    ``avg``/``max`` reduce every axis after the channel axis (axis 1) of PyTorch's
    ``(B, C, H, W)`` maps, or axis 1 (the sequence) of a 3-d ``(B, T, H)`` output when
    ``features_last`` (see :func:`channels_first`); ``flatten`` keeps everything.
    """
    if callable(pool):
        pooled = pool(output)
        if not isinstance(pooled, torch.Tensor):
            pooled = torch.as_tensor(pooled)
    else:
        x = select_tensor(layer, output, warned)
        if x.ndim <= 2 or pool == "flatten":
            pooled = x.reshape(len(x), -1) if x.ndim != 1 else x.reshape(-1, 1)
        else:
            dims = (1,) if x.ndim == 3 and features_last else tuple(range(2, x.ndim))
            pooled = x.mean(dim=dims) if pool == "avg" else x.amax(dim=dims)
    if pooled.ndim != 2:
        pooled = pooled.reshape(len(pooled), -1)
    return pooled.detach().to(device="cpu", dtype=torch.float32)


class HookManager:
    """Owns the forward hooks of one collection phase; pooled outputs wait in ``pending``.

    ``attach`` registers, ``detach`` removes every handle (idempotent; call it from every
    exit path). ``take()`` returns and clears the outputs seen since the last call.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.pending: dict[str, list[torch.Tensor]] = {}
        self.warned: set[str] = set()
        self.eager_compiled = False  # compiled modules run eagerly while hooks are attached
        self.warned_compiled = False
        self._stance = contextlib.ExitStack()

    @property
    def active(self) -> bool:
        return bool(self.handles)

    def attach(self, modules: dict[str, nn.Module], *, inside_compiled: bool = False) -> None:
        """Hook ``modules``; with ``inside_compiled`` (some sit inside a ``torch.compile``'d
        module, whose compiled code would skip hooks added after compiling) every compiled
        module runs eagerly (``torch.compiler.set_stance("force_eager")``) until
        :meth:`detach`."""
        self.detach()
        self.pending = {name: [] for name in modules}
        if inside_compiled:
            self._stance.enter_context(torch.compiler.set_stance("force_eager"))
            self.eager_compiled = True
        for name, module in modules.items():
            hook = self._hook(name, features_last=not channels_first(module))
            self.handles.append(module.register_forward_hook(hook))

    def _hook(self, name: str, *, features_last: bool) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            pooled = pool_tensor(name, output, self.pool, self.warned, features_last=features_last)
            self.pending[name].append(pooled)

        return hook

    def take(self) -> dict[str, torch.Tensor | None]:
        """Per layer, the rows hooked since the last call (None if the layer did not run)."""
        out: dict[str, torch.Tensor | None] = {}
        for name, parts in self.pending.items():
            out[name] = None if not parts else parts[0] if len(parts) == 1 else torch.cat(parts)
            parts.clear()
        return out

    def detach(self) -> None:
        while self.handles:
            self.handles.pop().remove()
        for parts in self.pending.values():
            parts.clear()
        self._stance.close()  # compiled modules run compiled again
        self.eager_compiled = False
