"""``ImageEmbedder``: a torch module or a Keras model as the ``embed_fn`` of image columns.

``datasets`` decodes an ``Image()`` column to PIL images; the embedder hands the batch's images
to your ``preprocess`` callable (resize, scale, normalise: whatever the model was trained
with), runs the model (or one of its layers) in inference mode and pools the output to one
float32 vector per image. Neither framework is imported here until an embedder is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xxhash

from neardup import NeardupInputError
from neardup.validators import closest_names

from .._common import DEFAULT_POOL, check_pool, pool_array
from ._weights import weights_hash

__all__ = ["ImageEmbedder"]


class ImageEmbedder:
    """Embed the images of a ``datasets`` batch with a torch module or a Keras model.

    ``embedder(batch)`` calls ``preprocess(batch[image_column])`` (a list of PIL images, or
    arrays with ``with_format("numpy")``) and feeds its result to the model: for torch an
    ``(B, C, H, W)`` tensor or array, for Keras an ``(B, H, W, C)`` array (whatever the model
    takes). ``layer`` picks an intermediate layer (a name from ``named_modules()`` for torch,
    a layer name for Keras); ``None`` uses the model's output. The output is pooled per image
    with ``pool`` (``"avg"``/``"max"`` over the spatial axes, ``"flatten"``, or a callable)
    to a ``(B, d)`` float32 array.

    Identity for ``datasets`` caching: :meth:`neardup_fingerprint` hashes the current weights
    (raw bytes, xxhash), the options and ``preprocess`` (``datasets``' hash, once), so after
    fine-tuning the next ``map`` computes new vectors instead of loading the old ones.

    Parameters
    ----------
    model:
        A ``torch.nn.Module`` or a ``keras.Model``.
    preprocess:
        ``callable(images: list) -> batch`` the model accepts.
    image_column:
        The column holding the images (default ``"image"``).
    layer, pool:
        What to read and how to reduce feature maps (see above; default ``"max"``, the
        pooling both callbacks use, chosen by ``benchmarks/bench_pooling.py``).
    device:
        torch only: where to run (default: where the model's parameters are).
    """

    def __init__(
        self,
        model: Any,
        preprocess: Callable[[Sequence[Any]], Any],
        *,
        image_column: str = "image",
        layer: str | None = None,
        pool: str | Callable[[Any], Any] = DEFAULT_POOL,
        device: Any = None,
    ) -> None:
        if not callable(preprocess):
            raise NeardupInputError(
                f"preprocess must be callable(images) -> model input batch, got "
                f"{type(preprocess).__name__} (e.g. a torchvision transform applied per image "
                "and stacked)."
            )
        if not isinstance(image_column, str) or not image_column:
            raise NeardupInputError(f"image_column must be a column name, got {image_column!r}.")
        self.kind = _framework_of(model)
        self.model = model
        self.preprocess = preprocess
        self.image_column = image_column
        self.layer = layer
        self.pool = check_pool(pool)
        self._runner = _torch_runner(model, layer, device) if self.kind == "torch" else None
        if self.kind == "keras":
            self._runner = _keras_runner(model, layer)
        self._preprocess_hash: str | None = None

    def __repr__(self) -> str:
        return (
            f"ImageEmbedder({type(self.model).__name__} ({self.kind}), layer={self.layer!r}, "
            f"pool={self.pool!r}, image_column={self.image_column!r})"
        )

    def __call__(self, batch: Mapping[str, Any]) -> np.ndarray:
        """``(B, d)`` float32 vectors of ``batch[image_column]``."""
        if not isinstance(batch, Mapping) or self.image_column not in batch:
            keys = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise NeardupInputError(
                f"ImageEmbedder: the batch has no column {self.image_column!r} (it has "
                f"{keys}); pass image_column= naming the image column, and map with "
                "batched=True."
            )
        images = batch[self.image_column]
        if not isinstance(images, (list, tuple, np.ndarray)):
            raise NeardupInputError(
                "ImageEmbedder got a single image; map with batched=True so that each call "
                "receives a list of images."
            )
        outputs = self._runner(self.preprocess(list(images)))
        return pool_array(outputs, self.pool, channels_last=self.kind == "keras").astype(
            np.float32, copy=False
        )

    def neardup_fingerprint(self) -> str:
        """A stable hash of the current weights, the options and ``preprocess``."""
        if self._preprocess_hash is None:
            from datasets.fingerprint import Hasher

            try:
                self._preprocess_hash = Hasher.hash(self.preprocess)
            except Exception:  # unpicklable: identify it by its qualified name
                fn = self.preprocess
                self._preprocess_hash = f"{getattr(fn, '__module__', '')}." + str(
                    getattr(fn, "__qualname__", type(fn).__qualname__)
                )
        pool = self.pool if isinstance(self.pool, str) else getattr(self.pool, "__qualname__", "")
        text = (
            f"ImageEmbedder/1|{self.kind}|{self.image_column}|{self.layer}|{pool}|"
            f"{self._preprocess_hash}|{weights_hash([self.model])}"
        )
        return xxhash.xxh64(text.encode()).hexdigest()


def _framework_of(model: Any) -> str:
    import sys

    # Keras first: on Keras 3's torch backend a keras.Model is also a torch.nn.Module, whose
    # named_modules() hold Keras' internals instead of its layer names.
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return "keras"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    raise NeardupInputError(
        f"model must be a torch.nn.Module or a keras.Model, got {type(model).__name__}; for "
        "anything else give ActivationHook your own embed_fn(batch) -> (B, d) array."
    )


def _torch_runner(model: Any, layer: str | None, device: Any) -> Callable[[Any], np.ndarray]:
    import torch

    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    target = None
    if layer is not None:
        modules = dict(model.named_modules())
        if layer not in modules or not layer:
            raise NeardupInputError(
                f"layer {layer!r} is not a submodule of {type(model).__name__} "
                f"({closest_names(layer, [n for n in modules if n])}); use a name from "
                "model.named_modules()."
            )
        target = modules[layer]

    def run(inputs: Any) -> np.ndarray:
        x = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs))
        x = x.to(device)
        if x.is_floating_point():
            x = x.to(next((p.dtype for p in model.parameters()), x.dtype))
        captured: list[Any] = []
        handle = (
            target.register_forward_hook(lambda _m, _a, out: captured.append(out))
            if target is not None
            else None
        )
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                out = model(x)
        finally:
            model.train(was_training)
            if handle is not None:
                handle.remove()
        if target is not None:
            if not captured:
                raise NeardupInputError(
                    f"layer {layer!r} did not run in the model's forward pass; pick a module "
                    "the forward pass calls."
                )
            out = captured[0]
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().float().cpu().numpy()

    return run


def _keras_runner(model: Any, layer: str | None) -> Callable[[Any], np.ndarray]:
    import keras

    source = model
    if layer is not None:
        names = [lay.name for lay in model.layers]
        if layer not in names:
            raise NeardupInputError(
                f"layer {layer!r} is not a layer of {model.name!r} ({closest_names(layer, names)})."
            )
        source = keras.Model(model.inputs, model.get_layer(layer).output)

    def run(inputs: Any) -> np.ndarray:
        out = source.predict_on_batch(np.asarray(inputs))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return np.asarray(keras.ops.convert_to_numpy(out))

    return run
