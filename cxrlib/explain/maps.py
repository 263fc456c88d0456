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
:func:`cxrlib.data.pipeline.model_inputs`, masks by :func:`prepare_mask` with the same geometry).

**Measure, don't eyeball.** A heat map over a radiograph is persuasive, and people see what
they expect in it: a blob "on the lungs" convinces whether it covers 80 % of the map's
energy or 30 %. So the course measures: :func:`energy_inside` (the share of a map's energy
inside a ground-truth lesion mask), :func:`pointing_game` (is the map's peak on the lesion),
:func:`border_share` (how much sits in the border band where text markers live) and
:func:`lung_share`, each compared with a random map's score. :func:`lesion_scores` does it
per image over a data set; the shortcut experiment of notebook 05 (:mod:`cxrlib.course.shortcut`) shows the numbers catching a
model that learnt a marker instead of the disease, and the border crop taking that shortcut
away.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
import weakref
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.data.images import ImageReadError, read_image
from cxrlib.data.pipeline import Prep, border_crop, model_inputs, resize
from cxrlib.data.splits import sample_per_class
from cxrlib.models.backbones import BACKBONES, preprocess_function
from cxrlib.runs.evaluate import predict

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "scorecam", "fastscorecam", "saliency",
                            "smoothgrad", "occlusion", "random")
"""Heat-map methods accepted by :func:`heatmap`."""

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "fastscorecam")
CENTRAL_REGION = (0.15, 0.85, 0.12, 0.88)
"""(top, bottom, left, right) fractions of the frame: where the lungs of a centred PA film
lie, used by :func:`lung_share` when no lung mask is given."""

_READ_ERRORS = (ImageReadError, OSError, ValueError)


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


def _top_channels(maps: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` channels with the highest mean activation (the ones this image drives)."""
    return np.argsort(-maps.reshape(-1, maps.shape[-1]).mean(axis=0), kind="stable")[:n]


def activation_comparison(maps_by_model: dict[str, np.ndarray], n: int = 8,
                          save: str | os.PathLike | None = None) -> Figure:
    """Rows of feature maps from several models at the same layer (e.g. frozen vs fine-tuned).

    The channels are the first model's most active ones, and every row shows those same
    channels: after fine-tuning, channel k still descends from the pretrained channel k.
    """
    from cxrlib.plots import finish_figure, new_figure

    names = list(maps_by_model)
    if not names:
        raise ValueError("maps_by_model is empty.")
    chosen = _top_channels(np.asarray(maps_by_model[names[0]]), n)
    figure = new_figure(1.4 * len(chosen) + 1.2, 1.5 * len(names))
    axes = np.atleast_2d(figure.subplots(len(names), len(chosen)))
    for row, name in enumerate(names):
        maps = np.asarray(maps_by_model[name])
        for col, channel in enumerate(chosen):
            ax = axes[row, col]
            ax.imshow(maps[..., channel], cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"ch {channel}", fontsize="x-small")
        axes[row, 0].set_ylabel(name, fontsize="small")
    return finish_figure(figure, save)


# --------------------------------------------------------------------------- heat maps


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each map of (N, H, W) to [0, 1]; NaN/inf → 0, a constant map → zeros."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    out = np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 1e-12)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, h, w) maps to (N, H, W)."""
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
    return normalise_maps(_resize_maps(maps, size))


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


# --------------------------------------------------------------------------- pictures


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """The heat map in colour over the grey radiograph: RGB uint8 (S, S, 3).

    ``image`` is uint8 (S, S) (or (S, S, C): its first channel is used); ``heat`` is in
    [0, 1] and is resized to the image when the sizes differ.
    """
    import matplotlib

    gray = np.asarray(image)
    if gray.ndim == 3:
        gray = gray[..., 0]
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0, 1)
    heat = _resize_maps(heat[None], gray.shape)[0]
    colour = matplotlib.colormaps[cmap](heat)[..., :3]
    base = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    mixed = (1 - alpha) * base + alpha * colour
    return np.clip(mixed * 255 + 0.5, 0, 255).astype(np.uint8)


def plot_overlay(image: np.ndarray, heat: np.ndarray, title: str = "",
                 probabilities: dict[str, float] | None = None, alpha: float = 0.4,
                 cmap: str = "jet", save: str | os.PathLike | None = None,
                 original: np.ndarray | None = None) -> Figure:
    """The radiograph, the heat map over it (with a colour bar) and the class probabilities.

    ``original`` (the film as read, before the crop and the resize) is shown in the first panel
    instead of the model's input, as the pneumonia course's diagnosis script did."""
    from cxrlib.plots import finish_figure, new_figure

    gray = np.asarray(image)
    if gray.ndim == 3:
        gray = gray[..., 0]
    heat = _resize_maps(np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0, 1)[None], gray.shape)[0]
    panels = 3 if probabilities else 2
    figure = new_figure(3.6 * panels + 0.6, 3.9)
    axes = np.atleast_1d(figure.subplots(1, panels, width_ratios=[1, 1.12, 1.1][:panels]))
    first = gray if original is None else np.asarray(original)
    axes[0].imshow(first[..., 0] if first.ndim == 3 else first, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("radiograph (as the model saw it)" if original is None else "the original film",
                      fontsize="small")
    axes[1].imshow(gray, cmap="gray", vmin=0, vmax=255)
    shown = axes[1].imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    axes[1].set_title("heat map", fontsize="small")
    figure.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.03, label="importance")
    for ax in axes[:2]:
        ax.axis("off")
    if probabilities:
        names = list(probabilities)
        values = [float(probabilities[n]) for n in names]
        best = int(np.argmax(values))
        colours = ["crimson" if i == best else "steelblue" for i in range(len(names))]
        ax = axes[2]
        bars = ax.barh(np.arange(len(names)), values, color=colours)
        ax.set_yticks(np.arange(len(names)), names, fontsize="small")
        ax.invert_yaxis()
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], fontsize="small", padding=2)
        ax.set_xlim(0, 1.18)
        ax.set(xlabel="probability", title="class probabilities")
        ax.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title)
    return finish_figure(figure, save)


def gallery(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
            method: str = "gradcam", n_per_class: int = 4, correct: bool = True,
            layer: str | None = None, max_candidates: int = 200, seed: int = 0,
            save: str | os.PathLike | None = None, **options: Any) -> Figure:
    """Heat-map overlays of right (``correct=True``) or wrong predictions, one row per true class.

    Up to ``max_candidates`` images per class (a random sample) are classified to find
    ``n_per_class`` right or wrong ones; each tile shows the heat map of the *predicted* class,
    titled ``true →`` / ``predicted (probability)``. A class with none to show says so.
    """
    from cxrlib.plots import finish_figure, new_figure

    candidates = sample_per_class(manifest, max_candidates, seed, classes, warn=False)
    rows: list[list[tuple[np.ndarray, np.ndarray, str]]] = []
    for ci, name in enumerate(classes):
        inputs = model_inputs(candidates.loc[candidates["label"] == name, "path"].tolist(), prep)
        picked: list[tuple[np.ndarray, np.ndarray, str]] = []
        if inputs.kept:
            probs = predict(model, inputs.x)
            predicted = probs.argmax(axis=1)
            chosen = np.flatnonzero((predicted == ci) == correct)[:n_per_class]
            if len(chosen):
                heat = heatmap(model, inputs.x[chosen], method, [int(predicted[i]) for i in chosen],
                               layer, **options)
                for k, i in enumerate(chosen):
                    p = int(predicted[i])
                    picked.append((inputs.images[i], heat[k],
                                   f"{name} →\n{classes[p]} ({probs[i, p]:.0%})"))
        rows.append(picked)
    ncols = max(1, n_per_class)
    figure = new_figure(2.3 * ncols + 0.8, 2.5 * len(classes) + 0.4)
    axes = np.atleast_2d(figure.subplots(len(classes), ncols, squeeze=False))
    for r, (name, picked) in enumerate(zip(classes, rows)):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(picked):
                image, heat, label = picked[c]
                ax.imshow(overlay(image, heat))
                ax.set_title(label, fontsize="x-small")
            elif c == 0:
                ax.text(0.5, 0.5, f"no {'correct' if correct else 'wrong'}\npredictions",
                        ha="center", va="center", fontsize="small", transform=ax.transAxes)
        axes[r, 0].set_ylabel(name, fontsize="small")
    figure.suptitle(f"{'Correct' if correct else 'Wrong'} predictions, {method} of the predicted class")
    return finish_figure(figure, save)


# --------------------------------------------------------------------------- measurements


def prepare_mask(mask_path: str | os.PathLike, prep: Prep,
                 image_path: str | os.PathLike | None = None) -> np.ndarray:
    """A mask file → bool (S, S), through the same geometry as its image.

    Same border crop (when ``prep.crop``) and resize to ``prep.image_size``, with nearest
    interpolation. The crop depends on the film's size, so a mask stored at another size
    than its image (the real v4 database: 256 px masks, 299 px images) is first scaled to
    the image's size, read from ``image_path``'s header.
    """
    from PIL import Image

    mask = read_image(mask_path)
    if image_path is not None:
        from cxrlib.data.images import probe_image

        info = probe_image(image_path)
        size = (int(info["height"]), int(info["width"]))
        if mask.shape[:2] != size:
            mask = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
    if prep.crop:
        if prep.crop_reference is None:
            raise ValueError("crop=True needs crop_reference=(w_max, h_max).")
        mask = border_crop(mask, prep.crop_reference)
    return resize(mask, prep.image_size, "nearest") > 127


def _mask_like(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask resized (nearest) to ``shape``."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        from PIL import Image

        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (shape[1], shape[0]), Image.NEAREST)) > 127
    return mask.astype(bool)


def energy_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heat map's energy (sum) inside the mask, 0–1; NaN for an all-zero map.

    A map that ignored the mask would score the mask's area share on average.
    """
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)), 0, None)
    total = heat.sum()
    if total <= 0:
        return float("nan")
    return float(heat[_mask_like(mask, heat.shape)].sum() / total)


def pointing_game(heat: np.ndarray, mask: np.ndarray, tolerance: int = 2) -> bool:
    """True when the heat map's maximum lies inside the mask dilated by ``tolerance`` pixels
    (in any direction, diagonals included)."""
    from scipy.ndimage import binary_dilation

    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    region = _mask_like(mask, heat.shape)
    if not region.any() or heat.max() <= 0:
        return False
    if tolerance > 0:
        region = binary_dilation(region, np.ones((3, 3), bool), iterations=int(tolerance))
    return bool(region[np.unravel_index(np.argmax(heat), heat.shape)])


#: The border band, the outer 12 % of each side, where burned-in text and markers live: the
#: one band of the course (notebook 01 counts text in it, notebook 05 measures heat in it).
BORDER_BAND = 0.12


def border_mask(shape: tuple[int, int], band: float = BORDER_BAND, rim: float = 0.0) -> np.ndarray:
    """True in the border band of width ``band``·side on every edge, less its outermost
    ``rim``·side (at least one pixel when ``rim`` > 0: a film's frame line)."""
    h, w = int(shape[0]), int(shape[1])
    if not 0 < band < 0.5:
        raise ValueError(f"band must be in (0, 0.5), not {band}")
    bh, bw = max(1, round(band * h)), max(1, round(band * w))
    low = 1 if rim > 0 else 0
    rh, rw = min(bh - 1, max(low, round(h * rim))), min(bw - 1, max(low, round(w * rim)))
    mask = np.zeros((h, w), bool)
    mask[rh:h - rh, rw:w - rw] = True
    mask[bh:h - bh, bw:w - bw] = False
    return mask


def border_share(heat: np.ndarray, band: float = BORDER_BAND) -> float:
    """Share of the map's energy in the border band (where burned-in text lives).

    A flat map scores the band's area share (0.41 for ``band=0.12``).
    """
    heat = np.asarray(heat)
    return energy_inside(heat, border_mask(heat.shape, band))


def central_mask(shape: tuple[int, int]) -> np.ndarray:
    """True in :data:`CENTRAL_REGION`, where the lungs of a centred film lie."""
    h, w = shape
    top, bottom, left, right = CENTRAL_REGION
    region = np.zeros((h, w), bool)
    region[round(top * h):round(bottom * h), round(left * w):round(right * w)] = True
    return region


def lung_share(heat: np.ndarray, lung_mask: np.ndarray | None = None) -> float:
    """Share of the map's energy on the lungs: the data set's lung mask, else the central region."""
    heat = np.asarray(heat)
    return energy_inside(heat, central_mask(heat.shape) if lung_mask is None else lung_mask)


def lesion_scores(model, manifest: pd.DataFrame, classes: Sequence[str], prep: Prep,
                  method: str = "gradcam", layer: str | None = None, explain: str = "label",
                  batch_size: int = 16, seed: int = 0, **options: Any) -> pd.DataFrame:
    """Per image: how much of the heat map lies on the ground-truth lesion, against a random map.

    Uses the rows whose ``mask_kind`` is ``"lesion"`` and whose mask is not empty (a Normal
    film has no lesion). ``explain`` is ``"label"`` (the true class: is the evidence for it
    on the lesion?) or ``"predicted"``. Columns: path, label, predicted, energy_inside,
    pointing_hit, border_share, mask_share (the lesion's area share: what a uniform map
    scores), random_energy_inside and random_pointing_hit (a smooth random map per image).
    """
    if explain not in ("label", "predicted"):
        raise ValueError(f"explain must be 'label' or 'predicted', not {explain!r}")
    lookup = {name: i for i, name in enumerate(classes)}
    if "mask_kind" not in manifest or "mask_path" not in manifest:
        raise ValueError("The manifest has no mask_path/mask_kind columns (see cxrlib.data.datasets).")
    rows = manifest[(manifest["mask_kind"] == "lesion") & (manifest["mask_path"] != "")
                    & manifest["label"].isin(list(classes))]
    found = []
    for path, mask_path, label in zip(rows["path"], rows["mask_path"], rows["label"]):
        try:
            mask = prepare_mask(mask_path, prep, path)
        except _READ_ERRORS as error:
            log.warning("Skipping %s: %s", path, error)
            continue
        if mask.any():
            found.append((path, label, mask))
    records = []
    rng_seed = seed
    for start in range(0, len(found), batch_size):
        inputs = model_inputs([p[0] for p in found[start:start + batch_size]], prep)
        part = [found[start + i] for i in inputs.kept]
        if not part:
            continue
        x = inputs.x
        predicted = predict(model, x).argmax(axis=1)
        targets = ([lookup[p[1]] for p in part] if explain == "label" else [int(i) for i in predicted])
        heat = heatmap(model, x, method, targets, layer, **options)
        noise = random_maps(len(part), x.shape[1:3], rng_seed)
        rng_seed += 1
        for k, (path, label, mask) in enumerate(part):
            records.append({
                "path": path, "label": label, "predicted": classes[int(predicted[k])],
                "energy_inside": energy_inside(heat[k], mask),
                "pointing_hit": pointing_game(heat[k], mask),
                "border_share": border_share(heat[k]),
                "mask_share": float(mask.mean()),
                "random_energy_inside": energy_inside(noise[k], mask),
                "random_pointing_hit": pointing_game(noise[k], mask),
            })
    columns = ["path", "label", "predicted", "energy_inside", "pointing_hit", "border_share",
               "mask_share", "random_energy_inside", "random_pointing_hit"]
    return pd.DataFrame(records, columns=columns)


def summarise_scores(scores: pd.DataFrame) -> dict[str, float]:
    """Means of :func:`lesion_scores` columns: the method against the random baseline."""
    if scores.empty:
        return {"n": 0}
    out = {"n": int(len(scores))}
    for column in ("energy_inside", "random_energy_inside", "mask_share", "border_share"):
        out[column] = float(scores[column].mean())
    for column in ("pointing_hit", "random_pointing_hit"):
        out[column.replace("_hit", "_rate")] = float(scores[column].astype(float).mean())
    out["energy_ratio"] = (out["energy_inside"] / out["random_energy_inside"]
                           if out["random_energy_inside"] > 0 else float("nan"))
    return out
