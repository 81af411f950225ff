"""Looking inside a trained FusionReID (paper Sec. IV-E): Grad-CAM, HTM attention weights, ranked lists.

Computation (tensors in, tensors out) and drawing (PNG files) are separate functions.

Grad-CAM (Fig. 7), :func:`grad_cam`: activations are captured by forward hooks on the model's own
modules during one ordinary ``model.extract`` call, never by a second copy of the pipeline:

* ``cnn/backbone``: the ResNet feature map X_c (``model.cnn``), [C, h, w];
* ``cnn/lru``: after the Local Refinement Unit (``model.lru['cnn']``), [D, h, w];
* ``cnn/htm{k}``: the local tokens output by the SEU of HTM k (``model.htm[k-1].seu``) for the CNN
  branch, reshaped to the CNN grid (the HTM's own output is a global token only; its SEU output is
  the last place where the branch still has spatial tokens). Absent when the HTM has no SEU
  (``HTM_ORDER 'mfu'``). With the default order (SEU then MFU) these tokens are read only by the
  *other* branch's MFU, so their CAM shows what the other branch's global token draws from this branch;
* the same three for the Transformer branch: the patch tokens on their grid (``model.transformer``'s
  ``feature_map``, [C, h, w] with (h, w) = ``model.transformer.grid_size``), the LRU output, the SEU local
  tokens.

When one SEU is shared by both branches it runs twice per HTM; each call is attributed to its branch by
its input, whose local tokens are exactly that branch's LRU tokens (see ``HeterogenousTransmissionModule``).

Target of the gradients (``target``):

* ``'class'`` (default): the ID logit, of the class given in ``class_ids`` or else of the predicted class
  (argmax), of the BNNeck classifier of ``head`` (one of ``model.feature_dims``); ``head='all'``
  (default) sums the logits of every head, so that every visualised activation gets a gradient (a
  single head reaches only the activations it depends on: e.g. ``head='cnn'`` leaves every
  Transformer map empty). The classes are the *training* identities.
* ``'norm'``: the L2 norm of the pre-BN feature(s) of ``head``, summed over heads for ``'all'``; use it for
  images of people that were not among the training identities, where no logit means anything.

CAM = ReLU(sum_c alpha_c A_c), alpha_c = spatial mean of dScore/dA_c, scaled per image to [0, 1]
(all zeros when the map is constant). The model runs in eval mode (BN statistics, no drop path).

Attention (Figs. 8-9), :func:`attention_grids`: ``model.extract(..., attention=maps)`` gives per HTM
layer k and branch b the SEU self-attention of b's global token over [global; b's local tokens]
(``htm{k}/seu/{b}``, [B, heads, 1 + N_b]) and the MFU cross-attention of b's global token over the
*other* branch's local tokens (``htm{k}/mfu/{b}``, [B, heads, N_other]). Local-token weights are
reshaped to the grid of the branch they weigh: CNN grid = the CNN feature-map size (16x8 at 256x128),
Transformer grid = ``model.transformer.grid_size``.
"""
import logging
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import UsageError

logger = logging.getLogger(__name__)

BRANCHES = ("cnn", "transformer")
OTHER = {"cnn": "transformer", "transformer": "cnn"}
BRANCH_TITLES = {"cnn": "CNN", "transformer": "Transformer"}


# ----------------------------------------------------------------------------- hooks
class ForwardRecorder:
    """Context manager recording ``(inputs, output)`` of every call of the given modules.

    ``modules``: ``{name: nn.Module}``; ``calls[name]`` is a list (a shared module may run several times).
    """

    def __init__(self, modules):
        self.modules = OrderedDict(modules)
        self.calls = OrderedDict((name, []) for name in self.modules)
        self._handles = []

    def __enter__(self):
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(
                lambda m, inputs, output, name=name: self.calls[name].append((inputs, output))))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False


def _seu_modules(model):
    """``{'htm{k}/{unit key}': SEU module}`` for every HTM layer that has an SEU."""
    modules = OrderedDict()
    for k, layer in enumerate(model.htm, start=1):
        if layer.seu is not None:
            for key, unit in layer.seu.items():
                modules[f"htm{k}/{key}"] = unit
    return modules


def _tokens_to_map(tokens, grid):
    """Local tokens [B, N, C] -> [B, C, h, w]."""
    h, w = grid
    if tokens.shape[1] != h * w:
        raise ValueError(f"{tokens.shape[1]} local tokens do not fill a {h}x{w} grid")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _branch_of_seu_call(inputs, lru_tokens):
    """Which branch an SEU call encoded: the one whose LRU tokens are its input's local tokens."""
    local = inputs[0][:, 1:]
    for branch, tokens in lru_tokens.items():
        if local.shape == tokens.shape and torch.equal(local, tokens):
            return branch
    raise RuntimeError("an SEU call whose local tokens are neither branch's LRU tokens")


def capture_activations(model, images, cam_ids=None, attention=None):
    """Run ``model.extract`` once with hooks; returns ``(features, activations, grids)``.

    ``activations``: ``OrderedDict(label -> (tensor, to_map))`` in the order of :func:`layer_labels`
    (labels ``{branch}/backbone``, ``{branch}/lru``, ``{branch}/htm{k}``): the module output exactly as
    the model used it (so gradients can be taken with respect to it) and the function that turns it,
    or its gradient, into a [B, C, h, w] map. ``grids``: ``{branch: (h, w)}``; ``attention``: optional
    dict for the HTM weights (see ``FusionReID.extract``).
    """
    watched = OrderedDict((f"{branch}/backbone", backbone) for branch, backbone in model.backbones().items())
    for branch, unit in model.lru.items():
        watched[f"{branch}/lru"] = unit
    watched.update(_seu_modules(model))
    with ForwardRecorder(watched) as rec:
        feats = model.extract(images, cam_ids, attention=attention)

    def as_is(t):
        return t

    def local_tokens(grid):
        return lambda t: _tokens_to_map(t[:, 1:], grid)

    grids, acts = {}, OrderedDict()
    for branch in model.backbones():
        fmap = rec.calls[f"{branch}/backbone"][0][1].feature_map  # BackboneOutput: X_c / X_t as [B, C, h, w]
        acts[f"{branch}/backbone"] = (fmap, as_is)
        grids[branch] = tuple(fmap.shape[-2:])
    lru_tokens = {}
    for branch in model.lru:
        fmap = rec.calls[f"{branch}/lru"][0][1]
        acts[f"{branch}/lru"] = (fmap, as_is)
        lru_tokens[branch] = fmap.flatten(2).transpose(1, 2)
    for name, calls in rec.calls.items():
        if not name.startswith("htm"):
            continue
        layer = name.split("/")[0]
        for inputs, output in calls:
            branch = _branch_of_seu_call(inputs, lru_tokens)
            acts[f"{branch}/{layer}"] = (output, local_tokens(grids[branch]))
    order = {label: i for i, label in enumerate(layer_labels(model))}
    return feats, OrderedDict(sorted(acts.items(), key=lambda kv: order[kv[0]])), grids


def activation_maps(activations):
    """``OrderedDict(label -> [B, C, h, w])`` of :func:`capture_activations`' activations."""
    return OrderedDict((label, to_map(t)) for label, (t, to_map) in activations.items())


def layer_labels(model):
    """Every Grad-CAM label the model can give, branch by branch, from the backbone to the last HTM."""
    labels = []
    for branch in BRANCHES:
        if getattr(model, branch) is None:
            continue
        labels.append(f"{branch}/backbone")
        if branch in model.lru:
            labels.append(f"{branch}/lru")
        labels += [f"{branch}/htm{k}" for k, layer in enumerate(model.htm, start=1) if layer.seu is not None]
    return labels


def layer_title(label):
    """Human title of a Grad-CAM label, e.g. 'CNN after HTM 1 (SEU local tokens)'."""
    branch, where = label.split("/")
    name = BRANCH_TITLES[branch]
    if where == "backbone":
        return f"{name} backbone ({'ResNet map' if branch == 'cnn' else 'patch tokens'})"
    if where == "lru":
        return f"{name} after LRU"
    return f"{name} after HTM {where[3:]} (SEU local tokens)"


# ----------------------------------------------------------------------------- Grad-CAM
def _score(model, feats, head, target, class_ids):
    """The scalar to differentiate (summed over the batch) and the classes used (or None)."""
    heads = list(model.feature_dims) if head == "all" else [head]
    unknown = [h for h in heads if h not in model.feature_dims]
    if unknown:
        raise UsageError(f"head {unknown[0]!r} is not a feature of this model; it has "
                         f"{', '.join(['all', *model.feature_dims])}")
    if target == "norm":
        return sum(feats[h].norm(dim=1) for h in heads).sum(), None
    if target != "class":
        raise UsageError(f"Grad-CAM target must be 'class' or 'norm', got {target!r}")
    logits = sum(model.heads[h](feats[h]).logits for h in heads)
    if class_ids is None:
        classes = logits.argmax(dim=1)
    else:
        classes = torch.as_tensor(class_ids, dtype=torch.long, device=logits.device).reshape(-1)
        if classes.numel() != logits.shape[0]:
            raise UsageError(f"{classes.numel()} class ids for {logits.shape[0]} images")
        if (classes < 0).any() or (classes >= logits.shape[1]).any():
            raise UsageError(f"class ids must be in [0, {logits.shape[1]}), got {classes.tolist()}")
    return logits.gather(1, classes[:, None]).sum(), classes


def normalize_maps(maps):
    """[B, h, w] -> each map scaled to [0, 1] by its min and max (constant maps become zeros)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(dim=1, keepdim=True)[0], flat.max(dim=1, keepdim=True)[0]
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.reshape(maps.shape)


def cam_from(activation, gradient):
    """Grad-CAM of [B, C, h, w] activations and their gradients -> [B, h, w] in [0, 1]."""
    if gradient is None:  # the target does not depend on this activation
        return torch.zeros(activation.shape[0], *activation.shape[-2:])
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return normalize_maps(F.relu((weights * activation).sum(dim=1)).detach().float().cpu())


def grad_cam(model, images, cam_ids=None, head="all", target="class", class_ids=None):
    """Grad-CAM of every layer of :func:`layer_labels` (see the module docstring).

    Returns ``(cams, classes)``: ``OrderedDict(label -> [B, h, w] in [0, 1])`` at each layer's own
    resolution, and the classes whose logits were used (``None`` for ``target='norm'``).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            images = images.detach().clone().requires_grad_(True)  # a graph even if the weights are frozen
            feats, acts, _ = capture_activations(model, images, cam_ids)
            score, classes = _score(model, feats, head, target, class_ids)
            grads = torch.autograd.grad(score, [t for t, _ in acts.values()], allow_unused=True)
    finally:
        model.train(was_training)
    cams = OrderedDict((label, cam_from(to_map(t.detach()), None if g is None else to_map(g)))
                       for (label, (t, to_map)), g in zip(acts.items(), grads))
    return cams, None if classes is None else classes.detach().cpu()


# ----------------------------------------------------------------------------- attention
@torch.no_grad()
def attention_grids(model, images, cam_ids=None):
    """HTM attention weights reshaped to the grids they weigh.

    Returns ``OrderedDict(key -> dict)`` for keys ``htm{k}/seu/{branch}`` and ``htm{k}/mfu/{branch}``, each
    with ``weights`` (the raw [B, heads, n] weights, summing to 1 over n), ``grid`` ([B, heads, h, w]: the
    weights on local tokens), ``over`` (the branch whose tokens are weighed) and for the SEU ``self``
    ([B, heads], the global token's weight on itself).
    """
    was_training = model.training
    model.eval()
    maps = {}
    try:
        _, _, grids = capture_activations(model, images, cam_ids, attention=maps)
    finally:
        model.train(was_training)
    out = OrderedDict()
    for key in sorted(maps, key=_attention_sort_key):
        weights = maps[key].float().cpu()
        _, unit, branch = key.split("/")
        if unit == "seu":
            over, local, entry = branch, weights[:, :, 1:], {"self": weights[:, :, 0]}
        else:
            over, local, entry = OTHER[branch], weights, {}
        h, w = grids[over]
        entry.update(weights=weights, over=over, grid=local.reshape(*local.shape[:2], h, w))
        out[key] = entry
    return out


def _attention_sort_key(key):
    layer, unit, branch = key.split("/")
    return int(layer[3:]), BRANCHES.index(branch), unit != "seu"


def attention_title(key, entry=None, index=0):
    """E.g. 'HTM 1 SEU, Transformer global token over Transformer tokens (self 0.12)'."""
    layer, unit, branch = key.split("/")
    text = (f"HTM {layer[3:]} {unit.upper()}: {BRANCH_TITLES[branch]} global token over "
            f"{BRANCH_TITLES[OTHER[branch] if unit == 'mfu' else branch]} local tokens")
    if entry is not None and "self" in entry:
        text += f" (self-weight {float(entry['self'][index].mean()):.2f}, mean of heads)"
    return text


# ----------------------------------------------------------------------------- ranking
def rank_gallery(distmat, topk, q_pids=None, g_pids=None, q_camids=None, g_camids=None):
    """Top-``topk`` gallery indices per query, nearest first, as [Q, k] int64 numpy (-1 pads short rows).

    With identities and cameras given, gallery items of the query's identity *and* camera are left
    out, as in the evaluation protocol (utils/metrics.py).
    """
    dist = torch.as_tensor(np.asarray(distmat), dtype=torch.float32).clone()
    if all(x is not None for x in (q_pids, g_pids, q_camids, g_camids)):
        junk = (torch.as_tensor(np.asarray(q_pids))[:, None] == torch.as_tensor(np.asarray(g_pids))[None]) & \
               (torch.as_tensor(np.asarray(q_camids))[:, None] == torch.as_tensor(np.asarray(g_camids))[None])
        dist[junk] = float("inf")
    k = min(topk, dist.shape[1])
    order = torch.argsort(dist, dim=1, stable=True)[:, :k]
    out = np.full((dist.shape[0], topk), -1, dtype=np.int64)
    finite = torch.isfinite(torch.gather(dist, 1, order)).numpy()
    out[:, :k] = np.where(finite, order.numpy(), -1)
    return out


# ----------------------------------------------------------------------------- drawing
def to_display(images, mean, std):
    """Normalised image tensors [B, 3, H, W] -> float numpy [B, H, W, 3] in [0, 1]."""
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
    return (images.detach().float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def overlay(image, heat, alpha=0.5, cmap="jet"):
    """An [H, W, 3] image in [0, 1] with an [h, w] heat map in [0, 1] upsampled (bilinear) on top."""
    from matplotlib import colormaps

    heat = torch.as_tensor(heat, dtype=torch.float32)[None, None]
    heat = F.interpolate(heat, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    colours = colormaps[cmap](heat.clamp(0, 1).numpy())[..., :3]
    return (1 - alpha) * image + alpha * colours


def _figure(rows, cols, cell=(1.3, 2.4)):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(cell[0] * cols, cell[1] * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return plt, fig, axes


def _save(plt, fig, path, title, dpi):
    import os

    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path


def _short(title, width=16):
    """Wrap a panel title to a narrow column."""
    import textwrap
    return "\n".join(textwrap.wrap(title, width))


def plot_gradcam(images, cams, path, names=None, title="Grad-CAM", dpi=80):
    """One row per image: the image, then one overlay per Grad-CAM layer (column titles say which)."""
    labels = list(cams)
    plt, fig, axes = _figure(len(images), 1 + len(labels))
    for i, image in enumerate(images):
        axes[i, 0].imshow(image)
        axes[i, 0].set_title(_short(names[i] if names else f"image {i}"), fontsize=6)
        for j, label in enumerate(labels, start=1):
            axes[i, j].imshow(overlay(image, cams[label][i]))
            if i == 0:
                axes[i, j].set_title(_short(layer_title(label)), fontsize=6)
    return _save(plt, fig, path, title, dpi)


def plot_attention(image, grids, path, index=0, title="HTM attention weights per head", dpi=80, heads=None):
    """For image ``index``: one row per (HTM layer, unit, branch) of :func:`attention_grids`, one column
    per head (``heads``: how many to show; all by default) plus the image; each map scaled to [0, 1]."""
    keys = list(grids)
    num_heads = next(iter(grids.values()))["grid"].shape[1] if grids else 0
    num_heads = min(num_heads, heads or num_heads)
    plt, fig, axes = _figure(len(keys), 1 + num_heads, cell=(1.1, 2.2))
    for r, key in enumerate(keys):
        entry = grids[key]
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(_short(attention_title(key, entry, index), 22), fontsize=5)
        maps = normalize_maps(entry["grid"][index, :num_heads])
        for h in range(num_heads):
            axes[r, 1 + h].imshow(overlay(image, maps[h]))
            axes[r, 1 + h].set_title(f"head {h + 1}", fontsize=6)
    return _save(plt, fig, path, title, dpi)


def plot_attention_summary(images, grids, path, names=None, title=None, dpi=80):
    """Fig. 9 style: one row per image, one column per (layer, unit, branch), weights averaged over heads."""
    keys = list(grids)
    plt, fig, axes = _figure(len(images), 1 + len(keys), cell=(1.2, 2.4))
    for i, image in enumerate(images):
        axes[i, 0].imshow(image)
        axes[i, 0].set_title(_short(names[i] if names else f"image {i}"), fontsize=6)
        for j, key in enumerate(keys, start=1):
            mean = normalize_maps(grids[key]["grid"][i].mean(dim=0, keepdim=True))[0]
            axes[i, j].imshow(overlay(image, mean))
            if i == 0:
                axes[i, j].set_title(_short(attention_title(key), 18), fontsize=5)
    return _save(plt, fig, path, title or "HTM attention weights (mean of heads)", dpi)


BORDER = {True: (0.1, 0.7, 0.1), False: (0.85, 0.1, 0.1), None: (0.6, 0.6, 0.6)}


def _with_border(image, colour, width=4):
    out = np.array(image, dtype=np.float32, copy=True)
    out[:width], out[-width:], out[:, :width], out[:, -width:] = colour, colour, colour, colour
    return out


def plot_ranked_list(query_images, gallery_images, ranking, path, matches=None, distances=None,
                     query_names=None, title=None, dpi=80):
    """One row per query: the query, then its top-k gallery images (``ranking`` [Q, k] indices into
    ``gallery_images``, a list or a dict holding at least the ranked indices; -1 = none). ``matches``
    [Q, k] booleans: green border = same identity, red = another; grey when unknown. ``distances``
    [Q, k] are printed above the images."""
    k = ranking.shape[1]
    plt, fig, axes = _figure(len(query_images), 1 + k, cell=(1.1, 2.3))
    for q, image in enumerate(query_images):
        axes[q, 0].imshow(_with_border(image, (0.1, 0.3, 0.9)))
        axes[q, 0].set_title(_short(query_names[q] if query_names else f"query {q}"), fontsize=6)
        for j in range(k):
            g = int(ranking[q, j])
            if g < 0:
                continue
            match = None if matches is None else bool(matches[q][j])
            axes[q, 1 + j].imshow(_with_border(gallery_images[g], BORDER[match]))
            label = f"#{j + 1}"
            if distances is not None:
                label += f" d={float(distances[q][j]):.3g}"
            axes[q, 1 + j].set_title(label, fontsize=6)
    default = f"top-{k} gallery images per query (blue: query; green: same identity, red: other, grey: unknown)"
    return _save(plt, fig, path, title or default, dpi)
