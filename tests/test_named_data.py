"""Named data: the model's training outputs, the heads' outputs, dataset records and make_dataloader's result
are NamedTuples read by field name (unpacking in the documented order keeps working)."""
from collections import namedtuple

import torch
from PIL import Image

from datasets import DataLoaders, ImageDataset, ImageRecord, make_dataloader
from model import FeatureOutput, HeadOutput, build_model
from model.heads import BNNeckHead
from tests.helpers import tiny_cfg
from tests.test_data_synthetic import tiny_cfg as synthetic_cfg

NUM_CLASSES, NUM_CAMS = 6, 3


def test_training_outputs_are_named_logits_and_pre_bn_features():
    cfg = tiny_cfg()
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).train()
    torch.manual_seed(0)
    images, cams = torch.randn(4, 3, *cfg.INPUT.SIZE_TRAIN), torch.arange(4) % NUM_CAMS
    out = model(images, cams)
    with torch.no_grad():
        feats = model.extract(images, cams)
    assert list(out) == list(feats) and len(out) == 6
    for name, output in out.items():
        assert isinstance(output, FeatureOutput)
        assert output.logits.shape == (4, NUM_CLASSES)
        assert torch.allclose(output.feature, feats[name], atol=1e-5)  # before the BNNeck: the triplet input
        logits, feature = output                                       # unpacking still works
        assert logits is output.logits and feature is output.feature


def test_head_output_names_logits_and_bn_feature():
    head = BNNeckHead(8, 5).eval()
    with torch.no_grad():
        head.bn.running_mean.fill_(2.0)
        feat = torch.randn(3, 8)
        out = head(feat)
    assert isinstance(out, HeadOutput)
    assert torch.allclose(out.bn_feature, head.bn(feat)) and not torch.allclose(out.bn_feature, feat)
    assert torch.allclose(out.logits, head.classifier(out.bn_feature))


def test_the_loss_takes_the_named_outputs():
    from loss import build_loss

    cfg = tiny_cfg()
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).train()
    images, pids = torch.randn(4, 3, *cfg.INPUT.SIZE_TRAIN), torch.tensor([0, 0, 1, 1])
    total, terms = build_loss(cfg, NUM_CLASSES)(model(images, pids), pids)
    assert len(terms) == 12 and torch.isfinite(total)


def test_image_records_are_read_by_field_name(tmp_path):
    for i, colour in enumerate(((255, 0, 0), (0, 255, 0))):
        Image.new("RGB", (4, 8), colour).save(tmp_path / f"{i}.png")
    # another field order than ImageRecord's: positional reading would mix up path, pid and camid
    Shuffled = namedtuple("Shuffled", "camid extra pid path")
    records = [Shuffled(5, "x", 7, str(tmp_path / "0.png")), Shuffled(6, "y", 7, str(tmp_path / "1.png"))]
    dataset = ImageDataset(records)
    image, pid, camid, index = dataset[1]
    assert (pid, camid, index) == (7, 6, 1)
    assert image.getpixel((0, 0)) == (0, 255, 0)
    record = ImageRecord("a.jpg", 3, 1)
    assert (record.path, record.pid, record.camid) == ("a.jpg", 3, 1) and tuple(record) == ("a.jpg", 3, 1)


def test_make_dataloader_returns_named_loaders(tmp_path):
    cfg = synthetic_cfg(tmp_path)
    cfg.INPUT.SIZE_TRAIN = cfg.INPUT.SIZE_TEST = [32, 16]
    cfg.DATALOADER.NUM_WORKERS, cfg.DATALOADER.NUM_INSTANCE = 0, 2
    cfg.SOLVER.IMS_PER_BATCH, cfg.TEST.IMS_PER_BATCH = 4, 5
    data = make_dataloader(cfg)
    assert isinstance(data, DataLoaders)
    assert (data.num_query, data.num_classes, data.num_cams) == (6, 3, 3)
    assert len(data.val_loader.dataset) == data.num_query + 2 * 3 * 1 + 1  # gallery: ids x cameras x 1 + distractor
    assert len(data.train_loader.dataset) == 3 * 3 * 2
    train, val, num_query, num_classes, num_cams = data[:5]  # the first five fields keep their order
    assert (train, val, num_query) == (data.train_loader, data.val_loader, data.num_query)
