"""Explaining a classifier: what it looks at, shown *and* measured.

A network that says "COVID" with 99 % confidence may be reading the lungs, or a burned-in
"PORTABLE" label that only the COVID ward's machine prints. The accuracy cannot tell these
apart; the methods here can, each answering a slightly different question:

``activation_maps``
    What a layer *sees*: the feature maps of one convolution for one image. Early layers
    respond to edges and textures, late ones to larger parts. Comparing a frozen backbone
    with a fine-tuned one shows what fine-tuning changed (``representative_layers`` picks an
    early, a middle and a late layer).
``gradcam``
    Grad-CAM: the last convolution's feature maps, weighted by how much the class score
    changes with each of them (its mean gradient). Coarse (the layer's resolution) but
    class-specific: "where is the evidence *for this class*".
``gradcam++``
    Grad-CAM++: the same idea with per-location weights, so several separate regions of
    evidence (two lungs, say) all show up instead of only the strongest one.
``scorecam`` / ``fastscorecam``
    Score-CAM: no gradients at all. Each feature map in turn masks the image and the map
    is weighted by how much the class score that masked image gets. Slower (one forward
    pass per channel; the fast variant keeps only the ``max_N`` most varied channels) and
    less noisy.
``saliency`` / ``smoothgrad``
    The gradient of the class score with respect to every input pixel: full resolution, but
    noisy; SmoothGrad averages it over noisy copies of the image.
``occlusion``
    The most literal test: grey out a patch, slide it over the image, and record how much
    the class probability drops. Model-agnostic and easy to believe, but expensive; here
    all occluded copies go through the model in batches.
``random``
    A smooth random map: the baseline any method must beat.

The CAM, saliency and Score-CAM methods run through tf-keras-vis 0.8.7, which works with
Keras 3 here (checked on flat functional models) with two local adjustments: its harmless
Keras 3 warnings and Score-CAM's ``predict`` progress bar are silenced, and for a one-unit
sigmoid model Score-CAM scores a fixed two-logit copy of the output (tf-keras-vis applies a
softmax to the output, which over one unit is always 1: every channel would weigh the same).

Every heat map is an (N, S, S) float32 array scaled to [0, 1] per image, at the input's size,
so it can be laid over the radiograph the model actually saw (images are prepared by
:func:`cxrlib.data.pipeline.model_inputs`, masks by :func:`cxrlib.explain.masks.prepare_mask` with
the same geometry).

The figures are :mod:`cxrlib.explain.figures`'s, the masks :mod:`cxrlib.explain.masks`' and the
measures :mod:`cxrlib.explain.measures`'.
"""

from __future__ import annotations

import contextlib
import io
import warnings
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from cxrlib.backbones import BACKBONES, preprocess_function
from cxrlib.runs.evaluate import predict

METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "scorecam", "fastscorecam", "saliency",
                            "smoothgrad", "occlusion", "random")
"""Heat-map methods accepted by :func:`heatmap`."""

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "fastscorecam")


# --------------------------------------------------------------------------- inputs


def _is_binary(model) -> bool:
    return model.output_shape[-1] == 1


def _class_indices(model, x: np.ndarray, class_index: int | Sequence[int] | None) -> list[int]:
    """One class per image: the given one(s), or the predicted class when None."""
    if class_index is None:
        return [int(i) for i in predict(model, x).argmax(axis=1)]
    if np.isscalar(class_index):
        return [int(class_index)] * len(x)
    indices = [int(i) for i in class_index]
    if len(indices) != len(x):
        raise ValueError(f"class_index has {len(indices)} entries for {len(x)} images.")
    return indices


# --------------------------------------------------------------------------- activations


def _conv_types() -> tuple[type, ...]:
    import keras

    return (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)


def conv_layers(model) -> list[str]:
    """Names of the model's convolution layers, input to output (the 1→3 adapter left out)."""
    kinds = _conv_types()
    return [layer.name for layer in model.layers
            if isinstance(layer, kinds) and layer.name != "adapter_conv"]


def _layer_name(model, layer: str | int) -> str:
    if isinstance(layer, (int, np.integer)):
        names = conv_layers(model)
        if not names:
            raise ValueError(f"Model {model.name} has no convolution layers.")
        return names[int(layer)]
    model.get_layer(layer)  # a clear ValueError for an unknown name
    return layer


def activation_maps(model, image: np.ndarray, layer: str | int) -> np.ndarray:
    """Feature maps (h, w, channels) of ``layer`` for one preprocessed image (S, S, C).

    ``layer`` is a layer name or an index into :func:`conv_layers` (0 = the first
    convolution, -1 = the last).
    """
    import keras

    name = _layer_name(model, layer)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, model.get_layer(name).output)
    x = np.asarray(image, dtype=np.float32)
    out = np.asarray(probe(x[None] if x.ndim == 3 else x, training=False))
    if out.ndim != 4:
        raise ValueError(f"Layer {name!r} has no spatial output (shape {out.shape}).")
    return out[0]


def representative_layers(model) -> list[str]:
    """An early, a middle and a late convolution of the model (fewer if it has fewer)."""
    names = conv_layers(model)
    if not names:
        raise ValueError(f"Model {model.name} has no convolution layers.")
    picks = [names[0], names[(len(names) - 1) // 2], names[-1]]
    return list(dict.fromkeys(picks))


# --------------------------------------------------------------------------- heat maps


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each map of (N, H, W) to [0, 1]; NaN/inf → 0, a constant map → zeros."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    out = np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 1e-12)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, h, w) float maps to (N, H, W).

    Not :func:`cxrlib.data.prepare.resize`, which is for uint8 pixels and masks: a heat map
    is float, and rounding it to 256 levels would band the smooth upsampled overlay."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[1:] == tuple(size):
        return maps
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(m, mode="F").resize((size[1], size[0]), Image.BILINEAR))
                     for m in maps])


def default_layer(model, min_side: int = 7) -> str:
    """The layer heat maps read when none is named: the backbone's last convolutional block.

    That is ``scratch_conv5`` (``cxrlib.models.build.SCRATCH_LAST_CONV``) for the
    scratch CNN and the registry's ``last_conv`` for an ImageNet backbone, found from the
    model's own layers; a model without one uses its last layer with a spatial output.

    Unless that map is smaller than ``min_side`` × ``min_side``: a CAM cannot be finer than
    its layer, and on a small input (the scratch CNN at 64 px has a 4×4 last block, each
    cell 16 px wide) it smears everything over a quarter of the film, so it can put a
    corner marker "in the lungs". Then the last non-pooling layer *before* it with a map of at
    least ``min_side`` per side is used (``scratch_relu4``, 8×8, at 64 px). Every backbone at
    its course size keeps its last block (7×7 to 14×14).
    """
    from cxrlib.models.build import SCRATCH_LAST_CONV

    layers = model.layers
    names = [layer.name for layer in layers]
    spatial = [i for i, layer in enumerate(layers[1:], start=1) if len(layer.output.shape) == 4]
    if not spatial:
        raise ValueError(f"Model {model.name} has no layer with a spatial output.")
    chosen = spatial[-1]
    candidates = [SCRATCH_LAST_CONV] + [entry.last_conv for entry in BACKBONES.values()]
    for name in candidates:
        if name in names and names.index(name) in spatial:
            chosen = names.index(name)
            break
    if min(layers[chosen].output.shape[1:3]) >= min_side:
        return names[chosen]
    pooling = ("pool", "Pooling")
    for i in reversed([i for i in spatial if i < chosen]):
        layer = layers[i]
        if min(layer.output.shape[1:3]) >= min_side and not any(p in type(layer).__name__ for p in pooling):
            return names[i]
    return names[chosen]


# Scores are read on the logits. Every cxrlib model ends in ``head_logits`` → an activation,
# so the logit model is the same graph stopped one layer earlier: it shares the model's
# layers and weights (no copy, nothing to re-synchronise after more training). It is made
# once per model.
_LOGIT_MODELS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _linear_model(model) -> dict:
    """``{"linear": the model's logits}`` (cached per model), from its ``head_logits`` layer."""
    cached = _LOGIT_MODELS.get(model)
    if cached is None:
        import keras

        from cxrlib.models.build import HEAD_PREFIX

        try:
            logits = model.get_layer(HEAD_PREFIX + "logits").output
        except ValueError:
            raise ValueError(f"Model {model.name} has no {HEAD_PREFIX}logits layer: heat maps "
                             "need a model built by cxrlib.models.build.") from None
        cached = {"linear": keras.Model(model.inputs, logits, name=f"{model.name}_logits")}
        _LOGIT_MODELS[model] = cached
    return cached


def _two_logit_model(cached: dict):
    """For a 1-unit sigmoid model: logits (-z/2, z/2), whose softmax is (1 - sigmoid(z), sigmoid(z)).

    tf-keras-vis's Score-CAM applies a softmax to the (linear) output before scoring; over a
    single unit that softmax is always 1, so every channel would get the same weight. This
    fixed layer turns the one logit into two whose softmax is exactly the model's
    probabilities for class 0 and class 1.
    """
    if "two_logit" not in cached:
        import keras

        linear = cached["linear"]
        split = keras.layers.Dense(2, use_bias=False, trainable=False, name="two_logits")
        outputs = split(linear.outputs[0])
        split.set_weights([np.array([[-0.5, 0.5]], dtype=np.float32)])
        cached["two_logit"] = keras.Model(linear.inputs, outputs, name="two_logit")
    return cached["two_logit"]


def _score(model, indices: list[int], on_probabilities: bool = False):
    """tf-keras-vis score: CategoricalScore, or for one sigmoid unit BinaryScore (±logit)."""
    from tf_keras_vis.utils.scores import BinaryScore, CategoricalScore

    if _is_binary(model) and not on_probabilities:
        return BinaryScore([bool(i) for i in indices])
    return CategoricalScore(indices)


@contextlib.contextmanager
def _quiet():
    """Silence tf-keras-vis's harmless Keras 3 noise: an input-structure warning (it passes
    a list for a single-input model) and Score-CAM's ``predict`` progress bar."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _cam(model, x: np.ndarray, indices: list[int], method: str, layer: str,
         options: dict) -> np.ndarray:
    """Grad-CAM, Grad-CAM++ or (Fast) Score-CAM through tf-keras-vis (checked with Keras 3)."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.scorecam import Scorecam

    cached = _linear_model(model)
    common = {"penultimate_layer": layer, "seek_penultimate_conv_layer": False,
              "normalize_cam": False}
    with _quiet():
        if method in ("gradcam", "gradcam++"):
            tool = (Gradcam if method == "gradcam" else GradcamPlusPlus)(
                cached["linear"], model_modifier=None, clone=False)
            return np.asarray(tool(_score(model, indices), x, **common))
        # Score-CAM runs (channels × images) masked copies through the model: chunk the images
        # so that those copies stay within about 256 MB.
        target = _two_logit_model(cached) if _is_binary(model) else cached["linear"]
        tool = Scorecam(target, model_modifier=None, clone=False)
        channels = model.get_layer(layer).output.shape[-1]
        max_n = None
        if method == "fastscorecam":
            max_n = min(int(options.get("max_N", 10)), channels)
            channels = max_n
        per_image = channels * x[0].nbytes
        chunk = max(1, int(256 * 2**20 // max(per_image, 1)))
        maps = []
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            score = _score(model, indices[start:start + chunk], on_probabilities=True)
            maps.append(np.asarray(tool(score, part, max_N=max_n,
                                        batch_size=int(options.get("batch_size", 32)),
                                        **common)).reshape((len(part),) + x.shape[1:3]))
        return np.concatenate(maps)


def _saliency(model, x: np.ndarray, indices: list[int], smooth_samples: int,
              options: dict) -> np.ndarray:
    """Vanilla saliency or SmoothGrad through tf-keras-vis."""
    from tf_keras_vis.saliency import Saliency

    tool = Saliency(_linear_model(model)["linear"], model_modifier=None, clone=False)
    with _quiet():
        maps = tool(_score(model, indices), x, smooth_samples=smooth_samples,
                    smooth_noise=float(options.get("smooth_noise", 0.2)), normalize_map=False)
    return np.asarray(maps).reshape(x.shape[:3])


def random_maps(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth random maps (N, H, W) in [0, 1]: the baseline a real explanation must beat.

    Blurred to about the scale of a CAM blob, so that a pointing game is not trivially lost
    by a map with a single hot pixel; over many images its expected energy inside a mask is
    the mask's area share.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    sigma = max(1.0, min(size) / 16)
    noise = rng.random((n,) + tuple(size))
    return normalise_maps(np.stack([gaussian_filter(m, sigma) for m in noise]) if n else noise)


def heatmap(model, images: np.ndarray, method: str = "gradcam",
            class_index: int | Sequence[int] | None = None, layer: str | None = None,
            **options: Any) -> np.ndarray:
    """Heat maps (N, S, S) float32 in [0, 1] for preprocessed ``images`` (N, S, S, C).

    ``method`` is one of :data:`METHODS`; ``class_index`` the class to explain (one for all,
    one per image, or None for each image's predicted class). ``layer`` is the layer the
    CAM methods read (default :func:`default_layer`). Options: ``max_N`` (fastscorecam,
    default 10), ``batch_size`` (scorecam, occlusion), ``smooth_samples`` (smoothgrad,
    default 20) and ``smooth_noise``, ``patch``, ``stride`` and ``baseline`` (occlusion),
    ``seed`` (random).

    Scores are read on the logits (the ``head_logits`` layer): on a saturated
    softmax the gradients vanish. For a one-unit sigmoid model, class 1 is explained by
    the logit and class 0 by its negative (``BinaryScore``).
    """
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"images must be (N, S, S, C), not {x.shape}.")
    size = x.shape[1:3]
    if len(x) == 0:
        return np.zeros((0,) + size, np.float32)
    if method == "random":
        return random_maps(len(x), size, int(options.get("seed", 0)))
    indices = _class_indices(model, x, class_index)
    if method in CAM_METHODS:
        maps = _cam(model, x, indices, method, layer or default_layer(model), options)
    elif method in ("saliency", "smoothgrad"):
        samples = int(options.get("smooth_samples", 20)) if method == "smoothgrad" else 0
        maps = _saliency(model, x, indices, samples, options)
    else:
        occlusion_options = {k: options[k] for k in ("patch", "stride", "batch_size", "baseline")
                             if k in options}
        maps = np.stack([occlusion_map(model, image, index, **occlusion_options)
                         for image, index in zip(x, indices)])
    return normalise_maps(resize_maps(maps, size))


# --------------------------------------------------------------------------- occlusion


def occlusion_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top (or left) offsets of the sliding patch along one side: 0, stride, ... < size."""
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be positive, not {patch} and {stride}.")
    return list(range(0, size, stride))


def occlusion_scan(model: Callable, image: np.ndarray, class_index: int, patch: int = 15,
                   stride: int = 10, batch_size: int = 64,
                   baseline: float | str = "mean") -> tuple[np.ndarray, int]:
    """Occlusion sensitivity of one preprocessed image (S, S, C): (raw map (S, S), model calls).

    A ``patch``×``patch`` square of ``baseline`` slides over the image in steps of
    ``stride``; each pixel's value is the mean drop of the class probability over the
    occluded copies that covered it (negative: hiding it *raised* the probability). All
    copies are built first and run through ``model`` (any callable returning
    probabilities) ``batch_size`` at a time, so one image costs
    ``ceil(positions / batch_size)`` calls plus one for the unoccluded reference.
    ``baseline`` is a value in preprocessed units, or ``"mean"`` for the image's own mean
    (per channel), a neutral grey whatever the preprocessing.
    """
    x = np.asarray(image, dtype=np.float32)
    h, w = x.shape[:2]
    fill = x.mean(axis=(0, 1)) if baseline == "mean" else np.float32(baseline)
    tops, lefts = occlusion_positions(h, patch, stride), occlusion_positions(w, patch, stride)
    boxes = [(top, left) for top in tops for left in lefts]

    def probability(batch: np.ndarray) -> np.ndarray:
        return predict(model, batch, batch_size=len(batch))[:, class_index]

    reference = probability(x[None])[0]
    calls = 1
    drops = np.empty(len(boxes))
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start:start + batch_size]
        batch = np.repeat(x[None], len(chunk), axis=0)
        for k, (top, left) in enumerate(chunk):
            batch[k, top:top + patch, left:left + patch] = fill
        drops[start:start + len(chunk)] = reference - probability(batch)
        calls += 1
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for (top, left), drop in zip(boxes, drops):
        total[top:top + patch, left:left + patch] += drop
        count[top:top + patch, left:left + patch] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0).astype(np.float32), calls


def occlusion_map(model: Callable, image: np.ndarray, class_index: int, patch: int = 15,
                  stride: int = 10, batch_size: int = 64,
                  baseline: float | str = "mean") -> np.ndarray:
    """Occlusion heat map (S, S) in [0, 1]: where hiding the image lowers the class probability.

    Only drops count as evidence (increases are clipped to 0); see :func:`occlusion_scan`.
    """
    raw, _ = occlusion_scan(model, image, class_index, patch, stride, batch_size, baseline)
    return normalise_maps(np.maximum(raw, 0)[None])[0]


def grey_baseline(backbone: str) -> float:
    """The preprocessed value of mid-grey (128) for ``backbone``: an occlusion baseline."""
    grey = np.full((1, 1, 1, 3), 128.0, dtype=np.float32)
    return float(np.mean(preprocess_function(backbone)(grey)))
