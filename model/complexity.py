"""Parameter and multiply-accumulate counts in the paper's convention (Tables II-VI).

Params: parameters of the layers that run, without the ID classifiers and without the Transformer's
position/class/camera embeddings (the paper's columns leave them out; ``embeddings`` reports them).
FLOPs: multiply-accumulates (MACs) of convolution and linear layers at batch 1; the attention score
products (q k^T, attn v) are left out, as in the paper; ``total`` counts every op (torch's flop counter).
"""
from collections import defaultdict
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

EMBEDDING_NAMES = ("pos_embed", "cls_token", "sie_embed")


def count_params(module: nn.Module, exclude_classifiers: bool = True) -> Tuple[int, int]:
    """(layer params, embedding params) of ``module`` in units, de-duplicating shared parameters."""
    layers = embeds = 0
    for name, p in module.named_parameters():
        if exclude_classifiers and name.endswith("classifier.weight"):
            continue
        if name.split(".")[-1] in EMBEDDING_NAMES:
            embeds += p.numel()
        else:
            layers += p.numel()
    return layers, embeds


def _layer_macs(module, inputs, output):
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        return output.numel() * k
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, images: torch.Tensor,
               cam_ids: Optional[torch.Tensor] = None) -> Dict[str, Union[int, Dict[str, int]]]:
    """MACs of one forward: ``{'layers': conv+linear MACs, 'total': all MACs, 'by_module': {name: MACs}}``.

    ``by_module`` maps every conv/linear module name to its MACs (sum over calls), so callers can sum
    a sub-tree such as ``htm.0``.
    """
    by_module = defaultdict(int)
    handles = [m.register_forward_hook(lambda mod, i, o, n=name: by_module.__setitem__(
        n, by_module[n] + _layer_macs(mod, i, o))) for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            model(images, cam_ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {"layers": sum(by_module.values()), "total": counter.get_total_flops() // 2, "by_module": dict(by_module)}


def subtree_macs(by_module: Dict[str, int], prefix: str) -> int:
    """MACs of the module ``prefix`` and everything under it (``by_module`` from :func:`count_macs`)."""
    return sum(v for k, v in by_module.items() if k == prefix or k.startswith(prefix + "."))
