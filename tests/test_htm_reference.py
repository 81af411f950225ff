"""The stacked HTMs of the real model against Eqs. 3-9 written out by hand (float64).

The reference below is written from the paper (Sec. III-B, Eqs. 3-9) and docs/PAPER.md ("Details the paper leaves open") with plain
torch arithmetic: layer_norm, multi-head attention with softmax, the GELU feed-forward network and the residuals
spelled out with matmuls, every weight read by name from the model's state dict. It calls nothing of
model.fusion and no timm forward. The model is built by model.build_model from a tiny config (float64, L=2)
and observed in its real training forward: forward hooks on the LRUs and their poolings give F_c, F_t and
f'_(c,0), f'_(t,0); the model's returned htm_cnn / htm_transformer features are f'_(c,L), f'_(t,L).

- SEU (Eqs. 3-5, NOTES "SEU"): S^ = MHSA(LN(F')) + F'; S = FFN(LN(S^)) + S^; then one more LayerNorm;
  q/k/v without bias, output projection with bias; the first token is S^g, the others S^l.
- MFU (Eqs. 6-9, NOTES "MFU"): query LN(query token) -> q; keys LN_k(local tokens of the other branch) -> k;
  values from the *un-normalised* local tokens -> v; M^ = query + proj(softmax(q k^T / sqrt(d)) v);
  f' = M^ + FFN(LN(M^)); no final norm.
- HTM layer k+1: each branch's input is its global token from layer k (f'_(b,0) = GeM(LRU output) for the
  first) followed by the *initial* LRU tokens F_b, the same in every layer (Sec. III-B, "Stacking of HTM").
  Orders (Table III): seu_mfu (the MFU of branch b queries with S^g_b over S^l of the other branch), seu
  (S^g_b is the output), mfu_seu (the MFU output is the SEU's global token), mfu. Sharing (Table IV): one SEU
  for both branches or one per branch; one MFU per direction or one for both.
"""
import math

import pytest
import torch

from model import build_model
from tests.helpers import tiny_cfg

NUM_CLASSES, NUM_CAMS = 5, 3
LN_EPS = 1e-5  # every fusion LayerNorm is PyTorch's default (NOTES, "LayerNorm eps")
BRANCHES = ("cnn", "transformer")
OTHER = {"cnn": "transformer", "transformer": "cnn"}
TOL = 1e-10

# (order, SHARE_SEU, SHARE_MFU): every order, the sharing choices that apply to it
CASES = [(order, share_seu, share_mfu)
         for order in ("seu_mfu", "seu", "mfu_seu", "mfu")
         for share_seu in ((True, False) if "seu" in order else (True,))
         for share_mfu in ((False, True) if "mfu" in order else (False,))]


# ----------------------------------------------------------------------------- the reference, by hand
def layer_norm(x, w, b):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * w + b


def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softmax(s):
    e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def multi_head_attention(q, k, v, heads):
    """q [B, Nq, D], k and v [B, Nk, D] -> heads concatenated [B, Nq, D]: softmax(q_h k_h^T / sqrt(d)) v_h."""
    B, Nq, D = q.shape
    d = D // heads
    out = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d)  # B, Nq, Nk
        out.append(softmax(scores) @ v[..., cols])                             # B, Nq, d
    return torch.cat(out, dim=-1)


def ffn(x, p, prefix):
    return linear(gelu(linear(x, p[prefix + "fc1.weight"], p[prefix + "fc1.bias"])),
                  p[prefix + "fc2.weight"], p[prefix + "fc2.bias"])


def seu(tokens, p, prefix, heads):
    """Eqs. 3-5 and the SEU's final LayerNorm; ``prefix`` of the unit's weights in the state dict ``p``."""
    D = tokens.shape[-1]
    x = layer_norm(tokens, p[prefix + "block.norm1.weight"], p[prefix + "block.norm1.bias"])
    qkv = linear(x, p[prefix + "block.attn.qkv.weight"])  # rows: q, k, v, D each
    q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
    s_hat = tokens + linear(multi_head_attention(q, k, v, heads),
                            p[prefix + "block.attn.proj.weight"], p[prefix + "block.attn.proj.bias"])  # Eq. 3
    s = s_hat + ffn(layer_norm(s_hat, p[prefix + "block.norm2.weight"], p[prefix + "block.norm2.bias"]),
                    p, prefix + "block.mlp.")                                                          # Eq. 4
    return layer_norm(s, p[prefix + "norm.weight"], p[prefix + "norm.bias"])


def mfu(query, context, p, prefix, heads):
    """Eqs. 6-9: ``query`` [B, D] global token of one branch, ``context`` [B, N, D] local tokens of the other."""
    q = linear(layer_norm(query[:, None], p[prefix + "norm_q.weight"], p[prefix + "norm_q.bias"]),
               p[prefix + "q.weight"])
    k = linear(layer_norm(context, p[prefix + "norm_k.weight"], p[prefix + "norm_k.bias"]), p[prefix + "k.weight"])
    v = linear(context, p[prefix + "v.weight"])  # values from the un-normalised tokens
    m_hat = query + linear(multi_head_attention(q, k, v, heads)[:, 0],
                           p[prefix + "proj.weight"], p[prefix + "proj.bias"])                 # Eqs. 6-7
    return m_hat + ffn(layer_norm(m_hat, p[prefix + "norm_ffn.weight"], p[prefix + "norm_ffn.bias"]),
                       p, prefix + "ffn.")                                                     # Eqs. 8-9


def reference_htm(p, glob, local, layers, order, share_seu, share_mfu, heads):
    """f'_(c,L), f'_(t,L) from f'_(b,0) (``glob``) and the initial LRU tokens F_b (``local``, [B, N_b, D])."""
    g = dict(glob)
    for k in range(layers):
        seu_of = {b: f"htm.{k}.seu.{'shared' if share_seu else b}." for b in BRANCHES}
        mfu_of = {b: f"htm.{k}.mfu.{'shared' if share_mfu else b}." for b in BRANCHES}

        def encode(b, token):  # F'_(b,k) = [token; F_b] -> S_(b,k)
            return seu(torch.cat([token[:, None], local[b]], dim=1), p, seu_of[b], heads)

        if order == "seu":
            g = {b: encode(b, g[b])[:, 0] for b in BRANCHES}
        elif order == "mfu":
            g = {b: mfu(g[b], local[OTHER[b]], p, mfu_of[b], heads) for b in BRANCHES}
        elif order == "seu_mfu":
            s = {b: encode(b, g[b]) for b in BRANCHES}
            g = {b: mfu(s[b][:, 0], s[OTHER[b]][:, 1:], p, mfu_of[b], heads) for b in BRANCHES}
        else:  # mfu_seu
            m = {b: mfu(g[b], local[OTHER[b]], p, mfu_of[b], heads) for b in BRANCHES}
            g = {b: encode(b, m[b])[:, 0] for b in BRANCHES}
    return g


# ----------------------------------------------------------------------------- the model, observed
def _model(order, share_seu, share_mfu):
    cfg = tiny_cfg("MODEL.FUSION.HTM_ORDER", order, "MODEL.FUSION.SHARE_SEU", str(share_seu),
                   "MODEL.FUSION.SHARE_MFU", str(share_mfu), "MODEL.FUSION.HTM_LAYERS", "2")
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).double().train()
    # LayerNorms away from 1 and 0, so that mixing them up (query vs key norm, norm1 vs norm2) shows
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.htm.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen, dtype=torch.float64))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen, dtype=torch.float64))
    return cfg, model


def _observe(cfg, model):
    """The model's real training forward: (f'_(b,0), F_b as [B, HW, D], the returned f'_(b,L))."""
    seen = {}
    hooks = [model.lru[b].register_forward_hook(lambda m, i, o, b=b: seen.__setitem__(f"F_{b}", o))
             for b in BRANCHES]
    hooks += [model.pool_lru[b].register_forward_hook(lambda m, i, o, b=b: seen.__setitem__(f"g_{b}", o))
              for b in BRANCHES]
    h, w = cfg.INPUT.SIZE_TRAIN
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, h, w, generator=gen, dtype=torch.float64)
    try:
        out = model(images, torch.arange(4) % NUM_CAMS)
    finally:
        for hook in hooks:
            hook.remove()
    glob = {b: seen[f"g_{b}"].detach() for b in BRANCHES}
    local = {b: seen[f"F_{b}"].detach().flatten(2).transpose(1, 2) for b in BRANCHES}
    return glob, local, {b: out[f"htm_{b}"].feature.detach() for b in BRANCHES}


@pytest.mark.parametrize("order,share_seu,share_mfu", CASES)
def test_htm_forward_matches_eqs_3_to_9(order, share_seu, share_mfu):
    cfg, model = _model(order, share_seu, share_mfu)
    glob, local, got = _observe(cfg, model)
    assert local["cnn"].shape[1] != local["transformer"].shape[1]  # the branches are told apart
    params = {n: t.detach() for n, t in model.state_dict().items()}
    want = reference_htm(params, glob, local, len(model.htm), order, share_seu, share_mfu,
                         cfg.MODEL.FUSION.NUM_HEADS)
    for b in BRANCHES:
        assert got[b].dtype == torch.float64
        scale = float(want[b].abs().max())
        err = float((got[b] - want[b]).abs().max())
        assert scale > 0.1 and err <= TOL * scale, (b, err, scale)
    # the fused tokens depend on both branches and on the layer stack (the comparison is not vacuous)
    one_layer = reference_htm(params, glob, local, 1, order, share_seu, share_mfu, cfg.MODEL.FUSION.NUM_HEADS)
    assert all(float((one_layer[b] - want[b]).abs().max()) > 1e-3 for b in BRANCHES)
