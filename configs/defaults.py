"""Every configuration key of the repository, with its default and meaning.

The defaults are the paper's default model: ResNet50 + ViT-B/16* (overlapping patches, stride 12),
fused dimension D=768, L=2 Heterogenous Transmission Modules, 256x128 inputs, trained as in Sec. IV-B.
Values are names, never integer codes; list values are tuples (a YAML list or ``[a, b]`` on the command line
becomes a tuple). YAML files override these keys (see ``configs/config.py``).
Renamed keys keep their old names as deprecated aliases (``configs/config.py: RENAMED_KEYS``):
INPUT.PROB -> INPUT.FLIP_PROB, MODEL.POOLING -> MODEL.FUSION.POOLING.
"""
from yacs.config import CfgNode as CN

_C = CN()

# ----------------------------------------------------------------------------- model
_C.MODEL = CN()
# 'auto' (CUDA when available, else CPU) | 'cuda' | 'cpu'
_C.MODEL.DEVICE = "auto"
# Where backbone weights come from: 'imagenet' (each backbone from its PRETRAIN_PATH),
# 'self' (a whole FusionReID checkpoint from MODEL.PRETRAIN_PATH) | 'none' (random init).
_C.MODEL.PRETRAIN_CHOICE = "imagenet"
# Whole-model checkpoint read when PRETRAIN_CHOICE is 'self'.
_C.MODEL.PRETRAIN_PATH = ""
# Initial p of every Generalized-Mean pooling (learnable): MODEL.CNN.POOLING and MODEL.FUSION.POOLING.
_C.MODEL.GEM_P = 3.0
# Weights of the two loss terms of Eq. 12, applied to every supervised feature.
_C.MODEL.ID_LOSS_WEIGHT = 1.0
_C.MODEL.TRIPLET_LOSS_WEIGHT = 1.0
# Label-smoothing epsilon of the ID loss (0 = plain cross-entropy).
_C.MODEL.LABEL_SMOOTH = 0.1
# Under DDP, where the batch-hard triplet loss mines: 'global' (among the features of every process, gathered
# with their gradients: N processes x B/N images train as one process on B, as the release did on one GPU) |
# 'per_process' (among this process's B/N images only).
_C.MODEL.TRIPLET_BATCH = "global"
# Convert BatchNorm layers to SyncBatchNorm under DDP on CUDA (statistics over the whole batch, as on one GPU;
# PyTorch's SyncBatchNorm is CUDA-only: on CPU each process keeps its own, with a warning).
_C.MODEL.SYNC_BN = True
# Activation checkpointing: recompute the transformer blocks, each ResNet residual block and the HTM layers in the
# backward pass instead of keeping their activations (less memory, more time; same gradients and BatchNorm
# statistics as without it).
_C.MODEL.GRAD_CHECKPOINT = False
# Run the CNN branch in channels-last memory format.
_C.MODEL.CHANNELS_LAST = False
# torch.compile the model for training and evaluation; where it cannot compile, a warning says why and the
# model runs uncompiled.
_C.MODEL.COMPILE = False

# CNN branch of the Dual-branch Feature Extraction
_C.MODEL.CNN = CN()
# A CNN registered in model/backbones (e.g. 'resnet50', 'resnet101', 'resnet152'); '' disables the CNN branch.
_C.MODEL.CNN.NAME = "resnet50"
# Stride of the last ResNet stage (1 keeps a 16x8 map for 256x128 inputs).
_C.MODEL.CNN.LAST_STRIDE = 1
# Local torchvision-format ResNet state dict (e.g. pretrained/resnet50-0676ba61.pth).
_C.MODEL.CNN.PRETRAIN_PATH = ""
# Pooling of the CNN feature map into the backbone feature f^_c: 'gem' (paper) | 'avg' | 'max'.
_C.MODEL.CNN.POOLING = "gem"

# Transformer branch of the Dual-branch Feature Extraction
_C.MODEL.TRANSFORMER = CN()
# A Transformer registered in model/backbones (e.g. 'vit_base_patch16_224', 'deit_base_patch16_224',
# 't2t_vit_t_14'); '' disables the Transformer branch.
_C.MODEL.TRANSFORMER.NAME = "vit_base_patch16_224"
# Stride of the 16x16 patch embedding: [12, 12] overlapping (ViT-B/16*), [16, 16] no overlap.
# Ignored by T2T-ViT, whose tokens come from its soft splits.
_C.MODEL.TRANSFORMER.STRIDE_SIZE = (12, 12)
# Local timm-format checkpoint (.pth/.npz/.safetensors) or the official T2T-ViT checkpoint.
_C.MODEL.TRANSFORMER.PRETRAIN_PATH = ""
# Stochastic depth rate of the transformer blocks.
_C.MODEL.TRANSFORMER.DROP_PATH = 0.1
# Dropout after the position embedding and in the MLPs.
_C.MODEL.TRANSFORMER.DROP_RATE = 0.0
# Dropout of the attention weights.
_C.MODEL.TRANSFORMER.ATTN_DROP_RATE = 0.0
# Learnable camera embedding (TransReID's SIE) added to every token.
_C.MODEL.TRANSFORMER.SIE_CAMERA = True
# Coefficient of the camera embedding.
_C.MODEL.TRANSFORMER.SIE_COE = 3.0
# T2T-ViT-14 only. Attention scale of its 14 blocks: 'head_dim' (head_dim^-0.5, as the released FusionReID
# builds it) | 'embed_dim' (384^-0.5, what the T2T-ViT authors' ImageNet weights were trained with).
_C.MODEL.TRANSFORMER.T2T_ATTN_SCALE = "head_dim"
# T2T-ViT-14 only. Position table: 'checkpoint' (the pretrained file's table resized bilinearly to the token
# grid, as the released FusionReID loads it) | 'sinusoid' (a sine/cosine table computed for the token grid).
_C.MODEL.TRANSFORMER.T2T_POS_EMBED = "checkpoint"

# Dual-attention Mutual Fusion
_C.MODEL.FUSION = CN()
# Fused dimension D (Fig. 6).
_C.MODEL.FUSION.DIM = 768
# Local Refinement Units (Eqs. 1-2) on both branches.
_C.MODEL.FUSION.LRU = True
# Number of stacked Heterogenous Transmission Modules L (Fig. 5); 0 = no HTM.
_C.MODEL.FUSION.HTM_LAYERS = 2
# Structure of one HTM (Table III): 'seu_mfu' | 'seu' | 'mfu_seu' | 'mfu'.
_C.MODEL.FUSION.HTM_ORDER = "seu_mfu"
# One Shared Encoding Unit for both branches (Table IV).
_C.MODEL.FUSION.SHARE_SEU = True
# One Mutual Fusion Unit for both directions (Table IV).
_C.MODEL.FUSION.SHARE_MFU = False
# Attention heads of the SEU and MFU.
_C.MODEL.FUSION.NUM_HEADS = 12
# Hidden width of the SEU/MFU feed-forward networks, as a multiple of D.
_C.MODEL.FUSION.MLP_RATIO = 4.0
# Pooling of the LRU output maps into the global tokens f'_(c,0) / f'_(t,0) of the Dual-attention Mutual
# Fusion: 'gem' | 'avg' (Table V). Was MODEL.POOLING (still accepted, with a deprecation warning).
_C.MODEL.FUSION.POOLING = "gem"
# Initialisation of the LRU and HTM modules (never read from ImageNet files): 'pytorch' (PyTorch's default
# initialisation of every layer, as released) | 'trunc_normal' (linears truncated normal std 0.02 within +-2
# std, zero biases, unit norms, convolutions kaiming fan-out).
_C.MODEL.FUSION.INIT = "pytorch"

# ----------------------------------------------------------------------------- input
_C.INPUT = CN()
# [height, width] of training and test images.
_C.INPUT.SIZE_TRAIN = (256, 128)
_C.INPUT.SIZE_TEST = (256, 128)
# Probability of a random horizontal flip. Was INPUT.PROB (still accepted, with a deprecation warning).
_C.INPUT.FLIP_PROB = 0.5
# Probability of random erasing.
_C.INPUT.RE_PROB = 0.5
# Zero padding (pixels) before the random crop.
_C.INPUT.PADDING = 10
# Normalisation (the released config: 0.5 / 0.5; docs/PAPER.md, "Augmentation").
_C.INPUT.PIXEL_MEAN = (0.5, 0.5, 0.5)
_C.INPUT.PIXEL_STD = (0.5, 0.5, 0.5)

# ----------------------------------------------------------------------------- datasets
_C.DATASETS = CN()
# Datasets trained on (their union), each registered in datasets/ (e.g. 'market1501', 'dukemtmcreid', 'msmt17',
# 'synthetic'): a YAML list, or one name (a YAML string, a bare word on the command line); a tuple once loaded.
_C.DATASETS.NAMES = ("synthetic",)
# Datasets evaluated every SOLVER.EVAL_PERIOD and by test_net.py, each separately, written as NAMES; empty = the
# training datasets (configs.load_cfg sets it to DATASETS.NAMES then, so that a loaded config names them).
_C.DATASETS.TEST_NAMES = ()
# Folder with train.csv, query.csv and gallery.csv (header path,pid,camid; paths relative to the folder):
# the dataset named 'csv'.
_C.DATASETS.CSV_DIR = ""
# Folder holding the dataset folders (Market-1501-v15.09.15, DukeMTMC-reID, MSMT17_V1/_V2, ...).
_C.DATASETS.ROOT_DIR = "./data"
# The generated dataset (written in Market-1501 format under ROOT_DIR on first use).
_C.DATASETS.SYNTHETIC = CN()
# Identities in the training split and in the query/gallery split.
_C.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = 64
_C.DATASETS.SYNTHETIC.NUM_TEST_IDS = 64
# Cameras.
_C.DATASETS.SYNTHETIC.NUM_CAMS = 4
# Images of each identity seen by each camera.
_C.DATASETS.SYNTHETIC.IMAGES_PER_CAM = 3
# [height, width] of the written images.
_C.DATASETS.SYNTHETIC.IMAGE_SIZE = (128, 64)
# Seed of the generator (same seed and sizes = same images).
_C.DATASETS.SYNTHETIC.SEED = 0

# ----------------------------------------------------------------------------- data loader
_C.DATALOADER = CN()
# Worker processes per loader.
_C.DATALOADER.NUM_WORKERS = 4
# 'identity' (P x K batches as released: P identities drawn uniformly among those with chunks of K images left,
# the leftover chunks of an epoch dropped) | 'balanced_identity' (P x K, identities drawn in proportion to the
# chunks they have left, the last batch filled with fresh chunks: every chunk is used) | 'random' (plain shuffling).
_C.DATALOADER.SAMPLER = "identity"
# K: images per identity in a batch (P = SOLVER.IMS_PER_BATCH / K).
_C.DATALOADER.NUM_INSTANCE = 16
# Skip unreadable images with a warning instead of stopping.
_C.DATALOADER.SKIP_CORRUPT = False

# ----------------------------------------------------------------------------- solver
_C.SOLVER = CN()
# 'SGD' | 'AdamW'
_C.SOLVER.OPTIMIZER_NAME = "SGD"
_C.SOLVER.MAX_EPOCHS = 180
# Peak learning rate, reached after the warm-up.
_C.SOLVER.BASE_LR = 5e-3
# Learning-rate multiplier of bias parameters.
_C.SOLVER.BIAS_LR_FACTOR = 2.0
_C.SOLVER.MOMENTUM = 0.9
# Weight decay of the weights, and of the parameters whose name contains 'bias' (as released: both 1e-4).
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.WEIGHT_DECAY_BIAS = 1e-4
# Which parameters decay: 'all' (every trained parameter, norms, biases and embeddings included, as released) |
# 'weights' (none on norms, biases, PReLU slopes, GeM p and the position/class/camera embeddings).
_C.SOLVER.WEIGHT_DECAY_ON = "all"
# Stop training the parameters whose gradient is zero by construction (the LRU point-wise conv biases, the MFU
# key-LayerNorm biases, the last HTM's output biases, the ViT's final LayerNorm bias). Released: trained (under
# weight decay they shrink towards 0). Worth it with AdamW, which turns their rounding noise into steps.
_C.SOLVER.FREEZE_GRADIENT_FREE = False
# LR schedule: 'release' (timm cosine over all MAX_EPOCHS counted from epoch 0, the linear warm-up laid over its
# first WARMUP_EPOCHS, epoch E trains at lr(E); each parameter group warms up from WARMUP_LR_INIT to its own
# peak and ends at MIN_LR) | 'paper_text' (warm-up as a prefix, then cosine over the remaining epochs, epoch E
# trains at lr(E - 1); biases at BIAS_LR_FACTOR x the base LR throughout).
_C.SOLVER.SCHEDULE = "release"
# Linear warm-up length (epochs) and its starting learning rate (released: 0.01 x BASE_LR).
_C.SOLVER.WARMUP_EPOCHS = 10
_C.SOLVER.WARMUP_LR_INIT = 5e-5
# Learning rate at the end of the cosine decay (released: 0.002 x BASE_LR).
_C.SOLVER.MIN_LR = 1e-5
# Global batch size (all processes together): P x K.
_C.SOLVER.IMS_PER_BATCH = 128
# Triplet margin: 0 = soft margin log(1 + exp(d_ap - d_an)) (Eq. 11); > 0 = hinge with this margin.
_C.SOLVER.MARGIN = 0.0
# Mixed precision: 'auto' (fp16 autocast + GradScaler on a GPU, as released; off on CPU) | 'fp16' | 'bf16'
# (bfloat16 autocast, no scaler: no overflow, on Ampere and newer GPUs or CPUs with bfloat16 instructions) | 'off'.
_C.SOLVER.AMP = "auto"
# Clip the gradient norm at this value (0 = no clipping).
_C.SOLVER.GRAD_CLIP = 0.0
# Epochs between checkpoints / evaluations; iterations between log lines.
_C.SOLVER.CHECKPOINT_PERIOD = 30
_C.SOLVER.EVAL_PERIOD = 30
_C.SOLVER.LOG_PERIOD = 50
# The metric of the first test set that decides model_best.pth (higher is better; a tie keeps the earlier epoch).
_C.SOLVER.BEST_METRIC = "mAP"
# Seed of every random number generator.
_C.SOLVER.SEED = 1111

# ----------------------------------------------------------------------------- test
_C.TEST = CN()
# Images per evaluation batch.
_C.TEST.IMS_PER_BATCH = 256
# Trained model evaluated by test_net.py.
_C.TEST.WEIGHT = ""
# Feature used for retrieval: 'all' (f_a, the concatenation) | 'cnn' | 'transformer' | 'lru_cnn' |
# 'lru_transformer' | 'htm_cnn' | 'htm_transformer'.
_C.TEST.FEAT = "all"
# 'before' | 'after' the BNNeck.
_C.TEST.NECK_FEAT = "before"
# L2-normalise the retrieval feature as one vector (f_a as a whole, as released). One meaning: the model's
# eval output is normalised (what evaluation, test_net --save-features and the feature extractor get);
# evaluation passes the same key to its distance computation, a no-op on unit vectors.
_C.TEST.FEAT_NORM = True
# Also L2-normalise each of the six parts before concatenating them (not in the release: docs/RELEASE_DIFFERENCES.md).
_C.TEST.PART_NORM = False
# Test-time flip: the retrieval feature of an image is the mean of the features of the image and of its
# horizontal mirror, taken before the BNNeck and before any normalisation (FEAT_NORM / PART_NORM apply to
# the mean; NECK_FEAT 'after' applies the eval-mode BNNeck, an affine map, to it). Part of the model's eval output, so evaluation, test_net.py, tools/extract_features.py and
# the feature extractor all get it; it doubles the cost of extraction.
_C.TEST.FLIP = False
# Distance: 'euclidean' | 'cosine'.
_C.TEST.METRIC = "euclidean"
# k-reciprocal re-ranking and its parameters.
_C.TEST.RE_RANKING = False
_C.TEST.RE_RANKING_K1 = 20
_C.TEST.RE_RANKING_K2 = 6
_C.TEST.RE_RANKING_LAMBDA = 0.3
# CMC is reported up to this rank.
_C.TEST.MAX_RANK = 50

# ----------------------------------------------------------------------------- output
# Logs, TensorBoard events, checkpoints and results.
_C.OUTPUT_DIR = "./output"


def get_cfg_defaults() -> CN:
    """A fresh copy of the defaults."""
    return _C.clone()
