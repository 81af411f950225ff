"""The paper's ablation tables as data: each row's config overrides and the paper's reported numbers.

Used by ``tools/model_stats.py --table N`` (Params/FLOPs) and the table runner. Accuracies are on
MSMT17 unless a row says otherwise; Params in millions, FLOPs in GMACs at 256x128, batch 1.
``scope`` says what the Params/FLOPs columns cover: the whole model, or one HTM (Tables III and IV).
"""
from typing import List, NamedTuple, Optional


class Row(NamedTuple):
    """One row of a paper table: its config overrides and the paper's numbers (None where not reported)."""

    name: str
    overrides: List[str]      # KEY VALUE pairs over the defaults
    mAP: Optional[float]      # %
    rank1: Optional[float]    # %
    params: Optional[float]   # millions
    flops: Optional[float]    # GMACs
    scope: str                # 'model' (the whole model) or 'htm' (one HTM: Tables III and IV)


_NO_FUSION = ["MODEL.FUSION.LRU", "False", "MODEL.FUSION.HTM_LAYERS", "0"]
_CNN_ONLY = ["MODEL.TRANSFORMER.NAME", "''"] + _NO_FUSION
_TRANS_ONLY = ["MODEL.CNN.NAME", "''"] + _NO_FUSION


def _backbones(cnn: str, trans: str) -> List[str]:
    return ["MODEL.CNN.NAME", cnn, "MODEL.TRANSFORMER.NAME", trans]


TABLES = {
    "2": ("Table II: key components (MSMT17, ResNet50 + ViT-B/16*)", [
        Row("ResNet50 only", _CNN_ONLY, 54.3, 78.1, 23.5, 4.1, "model"),
        Row("ViT-B only", _TRANS_ONLY, 64.6, 83.2, 85.7, 18.1, "model"),
        Row("Method1 (DFE)", _NO_FUSION, 67.5, 85.1, 109.1, 22.1, "model"),
        Row("Method2 (+LRU)", ["MODEL.FUSION.HTM_LAYERS", "0"], 67.7, 85.4, 111.3, 22.4, "model"),
        Row("Method3 (+SEU)", ["MODEL.FUSION.HTM_ORDER", "seu"], 68.7, 86.1, 125.5, 27.3, "model"),
        Row("Method4 (+MFU)", ["MODEL.FUSION.HTM_ORDER", "mfu"], 68.9, 86.0, 139.7, 23.3, "model"),
        Row("Method5 (full)", [], 69.5, 86.7, 153.8, 28.1, "model"),
    ]),
    "3": ("Table III: structure of one HTM (Params/FLOPs of one HTM)", [
        Row("SEU front, MFU back", ["MODEL.FUSION.HTM_ORDER", "seu_mfu"], 69.5, 86.7, 21.3, 2.9, "htm"),
        Row("SEU only", ["MODEL.FUSION.HTM_ORDER", "seu"], 68.7, 86.1, 7.1, 2.5, "htm"),
        Row("MFU front, SEU back", ["MODEL.FUSION.HTM_ORDER", "mfu_seu"], 68.5, 86.2, 21.3, 2.9, "htm"),
        Row("MFU only", ["MODEL.FUSION.HTM_ORDER", "mfu"], 68.9, 86.0, 14.2, 0.5, "htm"),
    ]),
    "4": ("Table IV: weight sharing (Params/FLOPs of one HTM)", [
        Row("SEU shared, MFU shared", ["MODEL.FUSION.SHARE_SEU", "True", "MODEL.FUSION.SHARE_MFU", "True"],
            69.1, 86.6, 14.2, 2.9, "htm"),
        Row("SEU shared, MFU unshared", ["MODEL.FUSION.SHARE_SEU", "True", "MODEL.FUSION.SHARE_MFU", "False"],
            69.5, 86.7, 21.3, 2.9, "htm"),
        Row("SEU unshared, MFU shared", ["MODEL.FUSION.SHARE_SEU", "False", "MODEL.FUSION.SHARE_MFU", "True"],
            68.7, 86.0, 21.3, 2.9, "htm"),
        Row("SEU unshared, MFU unshared", ["MODEL.FUSION.SHARE_SEU", "False", "MODEL.FUSION.SHARE_MFU", "False"],
            69.2, 86.3, 28.4, 2.9, "htm"),
    ]),
    "5": ("Table V: pooling in DMF", [
        Row("GeMP", ["MODEL.FUSION.POOLING", "gem"], 69.5, 86.7, 153.8, 28.1, "model"),
        Row("GAP", ["MODEL.FUSION.POOLING", "avg"], 68.6, 86.2, 153.8, 28.1, "model"),
    ]),
    "6": ("Table VI: backbones (MSMT17, f_a)", [
        Row("ResNet50 only", _CNN_ONLY, 54.3, 78.1, 23.5, 4.1, "model"),
        Row("ResNet101 only", ["MODEL.CNN.NAME", "resnet101"] + _CNN_ONLY, 58.8, 81.4, 42.5, 6.5, "model"),
        Row("ResNet152 only", ["MODEL.CNN.NAME", "resnet152"] + _CNN_ONLY, 61.0, 82.7, 58.1, 8.9, "model"),
        Row("T2T-ViT-14 only", ["MODEL.TRANSFORMER.NAME", "t2t_vit_t_14"] + _TRANS_ONLY, 50.9, 73.7, 21.0, 2.8,
            "model"),
        Row("ViT-B/16* only", _TRANS_ONLY, 64.6, 83.2, 85.7, 18.1, "model"),
        Row("DeiT-B/16* only", ["MODEL.TRANSFORMER.NAME", "deit_base_patch16_224"] + _TRANS_ONLY, 63.3, 83.1,
            85.7, 18.1, "model"),
        Row("ResNet50 + T2T-ViT-14", _backbones("resnet50", "t2t_vit_t_14"), 61.9, 81.6, 89.0, 11.4, "model"),
        Row("ResNet50 + ViT-B/16*", _backbones("resnet50", "vit_base_patch16_224"), 69.5, 86.7, 153.8, 28.1,
            "model"),
        Row("ResNet50 + DeiT-B/16*", _backbones("resnet50", "deit_base_patch16_224"), 69.7, 86.4, 153.8, 28.1,
            "model"),
        # The paper prints 107.0 for this row; the R50 and R152 rows agree with 108.0 (a typo).
        Row("ResNet101 + T2T-ViT-14", _backbones("resnet101", "t2t_vit_t_14"), 63.4, 82.6, 108.0, 13.9, "model"),
        Row("ResNet101 + ViT-B/16*", _backbones("resnet101", "vit_base_patch16_224"), 70.5, 87.3, 172.8, 30.5,
            "model"),
        Row("ResNet101 + DeiT-B/16*", _backbones("resnet101", "deit_base_patch16_224"), 70.3, 87.1, 172.8, 30.5,
            "model"),
        Row("ResNet152 + T2T-ViT-14", _backbones("resnet152", "t2t_vit_t_14"), 64.5, 83.4, 123.6, 16.3, "model"),
        Row("ResNet152 + ViT-B/16*", _backbones("resnet152", "vit_base_patch16_224"), 71.8, 87.9, 188.5, 32.9,
            "model"),
        Row("ResNet152 + DeiT-B/16*", _backbones("resnet152", "deit_base_patch16_224"), 70.9, 87.5, 188.5, 32.9,
            "model"),
    ]),
    "fig5": ("Fig. 5: number of stacked HTMs L (paper: gains mostly from 1 to 2, saturated after 2)", [
        Row(f"L = {n}", ["MODEL.FUSION.HTM_LAYERS", str(n)], 69.5 if n == 2 else None, 86.7 if n == 2 else None,
            None, None, "model") for n in range(1, 7)
    ]),
    "fig6": ("Fig. 6: fused dimension D (paper: best 1152, 70.0 / 86.8; default 768)", [
        Row(f"D = {d}", ["MODEL.FUSION.DIM", str(d)], {768: 69.5, 1152: 70.0}.get(d),
            {768: 86.7, 1152: 86.8}.get(d), None, None, "model") for d in (384, 576, 768, 1152, 1536)
    ]),
}

# Table I: FusionReID on the three datasets at two input sizes and two patch strides.
TABLE1 = {
    # (size, stride): {dataset: (mAP, rank1)}
    ((256, 128), 12): {"market1501": (91.7, 96.3), "dukemtmcreid": (83.5, 91.0), "msmt17": (69.5, 86.7)},
    ((256, 128), 16): {"market1501": (90.9, 95.9), "dukemtmcreid": (82.9, 90.3), "msmt17": (68.3, 86.1)},
    ((384, 128), 12): {"market1501": (91.6, 96.2), "dukemtmcreid": (83.7, 91.0), "msmt17": (70.5, 87.3)},
    ((384, 128), 16): {"market1501": (91.1, 96.0), "dukemtmcreid": (83.5, 90.8), "msmt17": (69.5, 86.6)},
}
