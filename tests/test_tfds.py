"""The TFDS catalog as a source, offline: a tiny builder written here (a PNG image whose colour
carries the class, a float Sensor-1-like tensor, a ClassLabel, a float scalar planted in the
tensor's mean) is prepared as ArrayRecord into a temporary folder, then trained on end to end
through `python -m mtljax.main --config=configs/tfds.py:...`: kinds, encoders and the split
mapping from the builder's features; missing or unprepared builders and features that cannot be
modalities are one config problem. Skipped without tensorflow-datasets (an optional extra)."""

import io
import json
import subprocess

import numpy as np
import pytest
from helpers.commands import ROOT, main_command

tfds = pytest.importorskip(
  "tensorflow_datasets", reason="tensorflow-datasets is not installed (pip install '.[tfds]')"
)

from configs import tfds as tfds_config  # noqa: E402
from mtljax import configlib  # noqa: E402
from mtljax.errors import ConfigError, DataError  # noqa: E402

NAME = "mtljax_tiny_eo"
NAMES = ("crop", "forest", "water")


def _examples(n: int, seed: int):
  from PIL import Image

  rng = np.random.default_rng(seed)
  for i in range(n):
    k = i % 3
    img = rng.integers(0, 80, (8, 8, 3)).astype(np.uint8)
    img[..., k] += 120  # the class is the brightest channel
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    height = float(rng.uniform(0, 30))
    s1 = (rng.normal(0, 0.2, (4, 4, 2)) + height / 10).astype(np.float32)
    yield f"{seed}-{i}", {"image": buf.getvalue(), "s1": s1, "label": k, "height": height,
                          "note": f"example {i}"}  # fmt: skip


class MtljaxTinyEo(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Made by the test; its DatasetInfo is built here (outside a package TFDS cannot find one)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    f = tfds.features
    return tfds.core.DatasetInfo(
      builder=self,
      features=f.FeaturesDict(
        {
          "image": f.Image(shape=(8, 8, 3)),
          "s1": f.Tensor(shape=(4, 4, 2), dtype=np.float32),
          "label": f.ClassLabel(names=list(NAMES)),
          "height": f.Scalar(dtype=np.float32),
          "note": f.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(120, 0), "test": self._generate_examples(45, 1)}

  def _generate_examples(self, n, seed):
    yield from _examples(n, seed)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  MtljaxTinyEo(data_dir=str(d), file_format="array_record").download_and_prepare()
  return d


def _config(arg, data_dir, **tfds_settings):
  c = tfds_config.get_config(arg)
  c.data.tfds.name, c.data.tfds.data_dir = NAME, str(data_dir)
  for k, v in tfds_settings.items():
    c.data.tfds[k] = v
  return c


def test_trains_end_to_end_from_the_command_line(data_dir, tmp_path):
  workdir = tmp_path / "run"
  cmd = main_command(
    workdir,
    f"--config.data.tfds.name={NAME}",
    f"--config.data.tfds.data_dir={data_dir}",
    "--config.train.num_epochs=4",
    "--config.train.batch_size=16",
    "--config.train.learning_rate=0.003",
    config="configs/tfds.py:inputs=image+s1,targets=label+height",
  )
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
  final = json.loads((workdir / "final_metrics.json").read_text())
  # The builder's test split; our val is the last 10% of its train (it has no validation).
  assert final["test"]["label/count"] == 45 and final["val"]["label/count"] == 12
  assert final["test"]["label/accuracy"] > 0.8, final["test"]
  assert final["test"]["height/r2"] > 0.3, final["test"]  # planted in s1's mean
  recorded = json.loads((workdir / "config.json").read_text())
  cols = recorded["data"]["schema"]["columns"]
  assert cols["label"]["classes"] == list(NAMES) and cols["label"]["kind"] == "classification"
  assert cols["height"]["kind"] == "regression"
  assert (cols["image"]["shape"], cols["image"]["dtype"]) == ([8, 8, 3], "uint8")
  assert recorded["inputs"]["image"]["encoder"] == "mlp"  # an 8×8 image, as in the manifest


def test_features_as_targets_and_the_split_mapping(data_dir):
  """s1 moved to the targets is a dense regression target; named splits are TFDS specs."""
  from mtljax.data import build

  c = _config("inputs=image,targets=label+s1,tiny", data_dir)
  c.data.tfds.splits.val = "train[:20]"
  configlib.check(c)
  assert (c.tasks.s1.kind, c.tasks.s1.num_outputs, c.data.grid) == ("dense_regression", 2, 4)
  assert c.model.fusion == "spatial" and c.inputs.image.encoder == "unet"
  sources, _ = build.make_sources(c, "/nonexistent")
  assert [len(sources[s]) for s in ("train", "val", "test")] == [120, 20, 45]
  ex = sources["val"][3]
  assert ex["inputs"]["image"].shape == (4, 4, 3)  # resampled to the dense target's grid
  assert ex["targets"]["s1"].shape == (4, 4, 2) and ex["mask"]["s1"].min() == 1.0
  # TFDS orders records by a hash of their key: the label is checked against the planted colour.
  for i in range(20):
    ex = sources["val"][i]
    assert int(ex["targets"]["label"]) == int(np.argmax(ex["inputs"]["image"].mean((0, 1))))


@pytest.mark.parametrize(
  "change, expected",
  [
    ({"name": ""}, "config.data.tfds.name is empty"),
    ({"name": "mtljax_no_such_builder"}, "no such TFDS builder"),
    ({"arg": "inputs=note,targets=label"}, "feature 'note': expected an image, tensor"),
    ({"arg": "inputs=image,targets=label+depth"}, "feature 'depth': expected a feature"),
    ({"arg": "inputs=image,targets=label", "kind": "segmentation"}, "a raster for kind"),
  ],
  ids=["no_name", "unknown", "text_feature", "missing_feature", "kind_mismatch"],
)
def test_problems_are_one_config_error(data_dir, change, expected):
  c = _config(change.get("arg", "inputs=image,targets=label"), data_dir)
  if "name" in change:
    c.data.tfds.name = change["name"]
  if "kind" in change:
    c.tasks.label.kind = change["kind"]
  with pytest.raises((ConfigError, DataError)) as e:
    configlib.check(c)
  assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)
