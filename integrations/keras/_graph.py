"""Feature extractors over a Keras 3 model's own layers (private to the Keras callback).

A layer is named by its name (``"conv2"``) or, inside nested sub-models, by a path
(``"encoder/conv2"``); a bare name is also found inside sub-models when it is unique there.
The extractor is one ``keras.Model(model.inputs, [outputs...])`` sharing the model's
weights. A layer inside a nested functional/Sequential sub-model has its output in the
sub-model's own graph, not the outer one: we build a sub-extractor over the sub-model's graph
and call it on the tensors the outer graph feeds that sub-model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from neardup import NeardupInputError
from neardup.validators import closest_names

__all__ = [
    "build_extractor",
    "default_layer",
    "graph_of",
    "layer_index",
    "layer_paths",
    "model_input_shapes",
]

_LISTED = 40  # layer names shown in an error message

_SUBCLASSED_HELP = (
    "Two ways out: build it as a functional model (keras.Model(inputs, outputs)) or a "
    "Sequential that starts with keras.Input(shape=...), or pass "
    "feature_fn=lambda model, x: model.encoder(x) returning the activations to analyse "
    "(an array, or a dict name -> array)."
)


def graph_of(model: Any) -> Any | None:
    """The functional graph of ``model`` (a Sequential's inner one), or None without one."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_nodes_by_depth") and hasattr(model, "_inputs"):
        return model
    return None


def _require_graph(model: Any, what: str = "model") -> Any:
    """The graph of ``model``, or a clear error for subclassed and never-built models."""
    graph = graph_of(model)
    if graph is not None:
        return graph
    name = getattr(model, "name", "?")
    if isinstance(model, keras.Sequential):
        raise NeardupInputError(
            f"the Sequential {what} {name!r} has no inputs yet (it was never built), so its "
            "layers have no outputs to read. Start it with keras.Input(shape=...), call "
            "model.build((None, ...)), or run it once (e.g. fit) before the analysis."
        )
    raise NeardupInputError(
        f"the {what} {name!r} (class {type(model).__name__}) is a subclassed keras.Model: it "
        "has no symbolic graph of layers, so intermediate activations cannot be read from "
        f"it. {_SUBCLASSED_HELP}"
    )


def _inputs(graph: Any) -> Any:
    """The graph's inputs in the structure it was built with (a tensor, list or dict).

    Reusing that structure lets the extractor take data exactly as the model does, without
    Keras's warning about mismatched input structures.
    """
    struct = getattr(graph, "_inputs_struct", None)
    return graph.inputs if struct is None else struct


def model_input_shapes(model: Any) -> list[tuple[int | None, ...]]:
    """Shapes (batch axis included) of the model's symbolic inputs, in flattened order."""
    graph = _require_graph(model)
    return [tuple(t.shape) for t in keras.tree.flatten(graph.inputs)]


def layer_index(model: Any) -> dict[str, list[Any]]:
    """``path -> chain of layers`` (sub-models first, the layer last) for every layer.

    Unique bare names of nested layers are indexed too, so ``"conv2"`` finds
    ``"encoder/conv2"`` when no other layer is called ``conv2``.
    """
    paths: dict[str, list[Any]] = {}

    def walk(owner: Any, prefix: str, chain: list[Any]) -> None:
        for layer in getattr(owner, "layers", []):
            path = f"{prefix}{layer.name}"
            paths[path] = [*chain, layer]
            if isinstance(layer, keras.Model) and graph_of(layer) is not None:
                walk(layer, f"{path}/", [*chain, layer])

    walk(model, "", [])
    bare: dict[str, list[str]] = {}
    for path in paths:
        bare.setdefault(path.rsplit("/", 1)[-1], []).append(path)
    for name, found in bare.items():
        if name not in paths and len(found) == 1:
            paths[name] = paths[found[0]]
    return paths


def layer_paths(model: Any) -> list[str]:
    """Every layer's path (``"conv2"``, ``"encoder/conv2"``) in the model's order."""
    paths: list[str] = []

    def walk(owner: Any, prefix: str) -> None:
        for layer in getattr(owner, "layers", []):
            paths.append(f"{prefix}{layer.name}")
            if isinstance(layer, keras.Model) and graph_of(layer) is not None:
                walk(layer, f"{prefix}{layer.name}/")

    walk(model, "")
    return paths


def _listing(model: Any) -> str:
    """The model's layer paths for an error message (nested sub-models included)."""
    paths = layer_paths(model)
    shown = ", ".join(repr(p) for p in paths[:_LISTED])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > _LISTED else "")


def _output_rank(layer: Any) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError, TypeError):  # never called, or called several times
        return None


def _is_conv(layer: Any) -> bool:
    return "Conv" in type(layer).__name__ and not isinstance(layer, keras.Model)


def default_layer(model: Any) -> tuple[str, str]:
    """The layer analysed when ``layers=None``, and why: the rule of the Lightning callback.

    The end of the block holding the last convolution: the last layer after it whose output
    is still a feature map of the convolution's rank (activations, normalisation, pooling),
    before a Flatten / global pooling / Dense. Without convolutions: the first layer with
    weights (the last layers of a classifier merge same-class samples).
    """
    _require_graph(model)
    index = layer_index(model)
    ordered = [(p, index[p][-1]) for p in layer_paths(model)]
    ordered = [(p, layer) for p, layer in ordered if not isinstance(layer, keras.Model)]
    convs = [i for i, (_, layer) in enumerate(ordered) if _is_conv(layer)]
    if convs:
        last = convs[-1]
        rank = _output_rank(ordered[last][1])
        end = last
        for i in range(last + 1, len(ordered)):
            if rank is None or _output_rank(ordered[i][1]) != rank:
                break
            end = i
        conv = ordered[last][0]
        if end == last:
            return conv, "the last convolution"
        return ordered[end][0], f"the end of the block holding the last convolution ({conv!r})"
    weighted = [p for p, layer in ordered if layer.weights]
    if len(weighted) >= 2:
        return weighted[0], (
            "the first layer with weights (no convolution found; the last layers of a "
            "classifier merge same-class samples)"
        )
    if weighted:
        return weighted[0], "the only layer with weights"
    raise NeardupInputError(
        f"layers=None cannot pick a layer: model {model.name!r} has no layer with weights. "
        f"Pass layers=[...] with names from its layers: {_listing(model)}."
    )


def _resolve(model: Any, names: Sequence[str]) -> list[list[Any]]:
    index = layer_index(model)
    chains = []
    for name in names:
        if name not in index:
            raise NeardupInputError(
                f"model {model.name!r} has no layer {name!r} "
                f"({closest_names(name, index)}). Its layers: {_listing(model)}. Name "
                "nested layers as 'submodel/layer'."
            )
        chains.append(index[name])
    return chains


def _node_in(graph: Any, layer: Any, name: str) -> Any:
    """The single call of ``layer`` inside ``graph`` (shared layers are ambiguous)."""
    in_graph = {id(n) for nodes in graph._nodes_by_depth.values() for n in nodes}
    nodes = [n for n in layer._inbound_nodes if id(n) in in_graph]
    if len(nodes) == 1:
        return nodes[0]
    if not nodes:
        raise NeardupInputError(
            f"layer {name!r} is not connected to the model's inputs, so it has no "
            "activations to read; choose a layer on the path from the inputs to the outputs."
        )
    raise NeardupInputError(
        f"layer {name!r} is called {len(nodes)} times in the model (a shared layer), so its "
        "activations are ambiguous; pick another layer or pass feature_fn=."
    )


def _tensors(model: Any, chains: list[list[Any]], names: list[str]) -> list[Any]:
    """Symbolic outputs, in ``model``'s own graph, of the layers at the end of ``chains``."""
    graph = _require_graph(model)
    out: list[Any] = [None] * len(chains)
    nested: dict[int, tuple[Any, list[int]]] = {}
    for i, chain in enumerate(chains):
        if len(chain) == 1:
            outputs = _node_in(graph, chain[0], names[i]).outputs
            if len(outputs) != 1:
                raise NeardupInputError(
                    f"layer {names[i]!r} has {len(outputs)} outputs; pick a layer with one "
                    "output or pass feature_fn=."
                )
            out[i] = outputs[0]
        else:
            nested.setdefault(id(chain[0]), (chain[0], []))[1].append(i)
    for sub, positions in nested.values():
        inner = _tensors(sub, [chains[i][1:] for i in positions], [names[i] for i in positions])
        sub_graph = _require_graph(sub, "sub-model")
        node = _node_in(graph, sub, sub.name)
        args = node.arguments.args
        if len(args) != 1:
            raise NeardupInputError(
                f"sub-model {sub.name!r} is called with {len(args)} positional arguments; "
                "layers inside it cannot be read. Pass feature_fn= instead."
            )
        sub_extractor = keras.Model(_inputs(sub_graph), inner, name=f"{sub.name}_features")
        called = sub_extractor(args[0])
        for i, tensor in zip(positions, keras.tree.flatten(called)):
            out[i] = tensor
    return out


def build_extractor(model: Any, names: Sequence[str]) -> Any:
    """``keras.Model(model.inputs, [outputs of names])`` sharing ``model``'s weights."""
    names = list(names)
    graph = _require_graph(model)
    chains = _resolve(model, names)
    try:
        tensors = _tensors(model, chains, names)
        return keras.Model(_inputs(graph), tensors, name=f"{model.name}_neardup_features")
    except NeardupInputError:
        raise
    except ValueError as err:  # e.g. a layer Keras cannot reach from the inputs
        raise NeardupInputError(
            f"cannot build a feature model for layers {names} of model {model.name!r} "
            f"({err}). Pick other layers or pass feature_fn=."
        ) from err
