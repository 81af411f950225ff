"""A dataset and a backbone registered by user code need no import-order trick: in a fresh interpreter, as a user's
script, the config may be loaded before the registering code runs (even before ``datasets`` / ``model`` are
imported: ``configs`` loads neither) or after it; the names are checked when the data and the model are built."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, TINY

USER_CODE = r'''
import json, sys
ORDER, ROOT = sys.argv[1], sys.argv[2]
OPTS = {tiny!r} + ["DATASETS.NAMES", "my_people", "MODEL.CNN.NAME", "my_cnn", "DATASETS.ROOT_DIR", ROOT,
                   "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "4", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4",
                   "DATASETS.SYNTHETIC.IMAGE_SIZE", "[32, 16]", "SOLVER.IMS_PER_BATCH", "8",
                   "DATALOADER.NUM_INSTANCE", "2", "DATALOADER.NUM_WORKERS", "0"]
seen = {{}}


def register():
    from datasets import register_dataset
    from datasets.synthetic import SyntheticReID
    from model.backbones import register_backbone
    from tests.toys import ToyCNN

    @register_dataset("my_people")
    class MyPeople(SyntheticReID):
        """The generated people, under another name."""

    @register_backbone("my_cnn", "cnn")
    def my_cnn(img_size=(256, 128)):
        return ToyCNN(img_size, name="my_cnn")


if ORDER == "register_first":
    register()
from configs import load_cfg
cfg = load_cfg("", OPTS)
seen["loaded_before_datasets_and_torch"] = not {{"datasets", "model", "torch"}} & set(sys.modules)
if ORDER == "load_first":
    register()
from datasets import make_dataloader
from model import build_model
data = make_dataloader(cfg)
model = build_model(cfg, data.num_classes, data.num_cams)
images, pids, camids, _ = next(iter(data.train_loader))
model.train()(images, camids)
seen.update(names=list(cfg.DATASETS.NAMES), classes=data.num_classes, cnn=type(model.cnn).__name__)
print(json.dumps(seen))
'''


@pytest.mark.parametrize("order", ["load_first", "register_first"])
def test_user_registered_dataset_and_backbone_work_in_either_order(tmp_path, order):
    script = tmp_path / "user_code.py"
    script.write_text(USER_CODE.format(tiny=TINY), encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), order, str(tmp_path / "data")], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"loaded_before_datasets_and_torch": order == "load_first", "names": ["my_people"],
                    "classes": 4, "cnn": "ToyCNN"}
