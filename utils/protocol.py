"""Is a run the paper's protocol? The pretrained files it read, and every way it differs, in words.

Reproduction threads of TransReID-family repositories keep finding the same causes of a gap: MSMT17 V2
instead of V1, an ImageNet file other than the paper's, a smaller batch, more GPUs without rescaling, a
different AMP mode, an already-split copy of a dataset. :func:`protocol_record` checks a run's config and
what it read against the protocol the paper's numbers came from (the released training, docs/PAPER.md
"Training as run") and lists each difference; ``processor.Trainer`` logs it once at start and writes it into
``results.json`` under ``provenance.protocol``, ``test_net.py`` into ``test_results.json``.

Pretrained files are identified by content: torchvision's and timm's release files carry the first 8 hex
digits of their SHA-256 in their names (``resnet50-0676ba61.pth``), and :data:`PAPER_FILES` lists those of
the files the paper used, so a renamed copy is still recognised and a same-named other file is not.

Plain values only (str, int, float, bool, None, list, dict): the record goes into checkpoints loaded with
``torch.load(weights_only=True)``. Nothing here imports the config, data or model packages.
"""
import hashlib
import logging
import os
from typing import Any, Dict, List, Mapping, Optional

from .dotted import get_dotted

logger = logging.getLogger(__name__)

# backbone -> (SHA-256 prefix of the ImageNet file the paper used, its usual file name)
PAPER_FILES = {
    "resnet50": ("0676ba61", "resnet50-0676ba61.pth (torchvision IMAGENET1K_V1)"),
    "resnet101": ("63fe2227", "resnet101-63fe2227.pth (torchvision IMAGENET1K_V1)"),
    "resnet152": ("394f9c45", "resnet152-394f9c45.pth (torchvision IMAGENET1K_V1)"),
    "vit_base_patch16_224": ("80ecf9dd", "jx_vit_base_p16_224-80ecf9dd.pth (ImageNet-21k, fine-tuned on 1k)"),
    "deit_base_patch16_224": ("df68dfff", "deit_base_distilled_patch16_224-df68dfff.pth"),
}
# SHA-256 prefixes of files often taken instead, and what they are
OTHER_FILES = {
    "11ad3fa6": "torchvision's IMAGENET1K_V2 ResNet-50",
    "cd907fc2": "torchvision's IMAGENET1K_V2 ResNet-101",
    "f82ba261": "torchvision's IMAGENET1K_V2 ResNet-152",
}
# The released training (docs/PAPER.md, "Training as run"): config key -> value
PAPER_TRAINING = {
    "SOLVER.IMS_PER_BATCH": 128,
    "DATALOADER.NUM_INSTANCE": 16,
    "DATALOADER.SAMPLER": "identity",
    "SOLVER.MAX_EPOCHS": 180,
    "SOLVER.OPTIMIZER_NAME": "SGD",
    "SOLVER.BASE_LR": 5e-3,
    "SOLVER.BIAS_LR_FACTOR": 2.0,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.WEIGHT_DECAY": 1e-4,
    "SOLVER.WEIGHT_DECAY_BIAS": 1e-4,
    "SOLVER.WEIGHT_DECAY_ON": "all",
    "SOLVER.FREEZE_GRADIENT_FREE": False,
    "SOLVER.SCHEDULE": "release",
    "SOLVER.WARMUP_EPOCHS": 10,
    "SOLVER.WARMUP_LR_INIT": 5e-5,
    "SOLVER.MIN_LR": 1e-5,
    "SOLVER.MARGIN": 0.0,
    "MODEL.LABEL_SMOOTH": 0.1,
    "MODEL.ID_LOSS_WEIGHT": 1.0,
    "MODEL.TRIPLET_LOSS_WEIGHT": 1.0,
    "MODEL.FUSION.INIT": "pytorch",
    "INPUT.FLIP_PROB": 0.5,
    "INPUT.RE_PROB": 0.5,
    "INPUT.PADDING": 10,
}
PAPER_SIZES = ([256, 128], [384, 128])  # Table I's two input sizes


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def pretrained_files(cfg: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{config key: {'path', 'sha256', 'backbone', 'paper_file', 'note'}}`` of every weight file the run reads
    (``MODEL.PRETRAIN_CHOICE`` imagenet: each backbone's path; self: ``MODEL.PRETRAIN_PATH``).

    ``paper_file``: True/False where the paper's file is known for that backbone (by SHA-256 prefix), None
    where it is not (T2T-ViT, a whole-model checkpoint). One warning per file that is not the paper's.
    """
    model = cfg["MODEL"]
    if model["PRETRAIN_CHOICE"] == "imagenet":
        entries = [("MODEL.CNN.PRETRAIN_PATH", model["CNN"]["NAME"], model["CNN"]["PRETRAIN_PATH"]),
                   ("MODEL.TRANSFORMER.PRETRAIN_PATH", model["TRANSFORMER"]["NAME"],
                    model["TRANSFORMER"]["PRETRAIN_PATH"])]
    elif model["PRETRAIN_CHOICE"] == "self":
        entries = [("MODEL.PRETRAIN_PATH", "fusionreid", model["PRETRAIN_PATH"])]
    else:
        entries = []
    out = {}
    for key, backbone, path in entries:
        if not backbone or not path or not os.path.isfile(path):
            continue
        digest = sha256_file(path)
        expected = PAPER_FILES.get(backbone)
        paper_file = None if expected is None else digest.startswith(expected[0])
        note = None
        if paper_file is False:
            what = OTHER_FILES.get(digest[:8], "not a file this repository knows")
            note = f"{os.path.basename(path)} is {what}; the paper used {expected[1]}"
            logger.warning("%s: %s", key, note)
        out[key] = {"path": os.path.abspath(path), "sha256": digest, "backbone": backbone,
                    "paper_file": paper_file, "note": note}
    return out


def protocol_record(cfg: Mapping[str, Any], amp_name: str, device_type: str, world_size: int,
                    datasets: Mapping[str, Mapping[str, Any]],
                    pretrained: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """``{'paper_protocol': bool, 'differences': [sentences]}`` of a run against the paper's protocol.

    Checked: the global batch and P x K, the sampler, image size, epochs, optimizer, schedule and weight
    decay, the loss, augmentation, AMP (fp16 + GradScaler on one GPU), world size (several processes are the
    paper's protocol only with global triplet mining and synchronised BatchNorm on CUDA), the pretrained files
    (ImageNet, the paper's files) and each dataset's split (a standard split; MSMT17 V1).
    """
    diffs: List[str] = []
    for key, value in PAPER_TRAINING.items():
        ours = get_dotted(cfg, key)
        same = abs(float(ours) - float(value)) <= 1e-12 * max(1.0, abs(float(value))) \
            if isinstance(value, float) and not isinstance(value, bool) else ours == value
        if not same:
            diffs.append(f"{key} is {ours!r}; the paper's training uses {value!r}")
    size = list(get_dotted(cfg, "INPUT.SIZE_TRAIN"))
    if size not in [list(s) for s in PAPER_SIZES]:
        diffs.append(f"INPUT.SIZE_TRAIN is {size}; the paper trains at 256x128 (and 384x128 in Table I)")
    if device_type != "cuda":
        diffs.append(f"trained on {device_type}, not a GPU (the paper: fp16 autocast + GradScaler on a GPU)")
    elif amp_name != "fp16":
        diffs.append(f"mixed precision is {amp_name}; the released training uses fp16 autocast + GradScaler")
    if world_size > 1:
        if get_dotted(cfg, "MODEL.TRIPLET_BATCH") != "global":
            diffs.append(f"{world_size} processes mine triplets among their own images only "
                         "(MODEL.TRIPLET_BATCH per_process); the release mines over the whole batch on one GPU")
        if device_type != "cuda" or not get_dotted(cfg, "MODEL.SYNC_BN"):
            diffs.append(f"{world_size} processes each normalise BatchNorm over their own share of the batch; the "
                         "release normalises over the whole batch on one GPU (MODEL.SYNC_BN on CUDA)")
    choice = get_dotted(cfg, "MODEL.PRETRAIN_CHOICE")
    if choice != "imagenet":
        diffs.append(f"MODEL.PRETRAIN_CHOICE is {choice!r}; the paper starts both backbones from ImageNet files")
    else:
        for key in ("MODEL.CNN.PRETRAIN_PATH", "MODEL.TRANSFORMER.PRETRAIN_PATH"):
            branch = key.split(".")[1]
            if not get_dotted(cfg, f"MODEL.{branch}.NAME"):
                continue
            record = pretrained.get(key)
            if record is None:
                diffs.append(f"{key} is not set: that backbone starts from random weights")
            elif record["paper_file"] is False:
                diffs.append(f"{key}: {record['note']}")
    for name, fp in datasets.items():
        split = fp.get("standard_split")
        if split is None:
            diffs.append(f"dataset {name}: its splits match no standard split")
        elif "V2" in split:
            diffs.append(f"dataset {name}: {split}; the paper's numbers are on MSMT17 V1")
    return {"paper_protocol": not diffs, "differences": diffs}


def log_protocol(record: Mapping[str, Any], logger_: Optional[logging.Logger] = None) -> None:
    """One log line: the paper's protocol, or not and why."""
    log = logger_ or logger
    if record["paper_protocol"]:
        log.info("protocol: the paper's (released training, paper's pretrained files, standard splits)")
    else:
        log.info("protocol: not the paper's, %d difference(s): %s", len(record["differences"]),
                 "; ".join(record["differences"]))
