"""Which evaluation annotation belongs to which explained target: declared by the reader (a whole
task, one class, one attribute), never read off a target's name. Unit checks of the matching on
hand-made sources, and the decoy digits explain run end to end: every explained digit, whatever
its class, is scored against its digit box (IoU recomputed from the saved maps and the raw box)."""

import os
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest

from mtljax.data.annotations import Owner, owners, target_keys
from mtljax.data.digits import DigitsSource, write_digits
from mtljax.explain import image_report as report
from mtljax.explain import setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = "--config=configs/digits.py:decoy,tiny"


class _Source:
  """Two tasks: `shape` (3 classes, no class names) and `parts` (2 attributes "ear", "tail").
  Example j's annotations: a task-wide `box` for `shape`, a class-1 `circle` mask for `shape`
  on even examples only, attribute masks and keypoints for `parts`, and an unowned `noise`."""

  target_fields = {
    "shape": {"kind": "classification", "num_classes": 3},
    "parts": {"kind": "multilabel", "num_classes": 2, "class_names": ("ear", "tail")},
  }

  def __init__(self, owners=True):
    if owners:
      self.annotation_owners = lambda: {
        "box": (Owner("shape"),),
        "circle": (Owner("shape", 1),),
        "ear": (Owner("parts", 0),),
        "tail": (Owner("parts", 1),),
      }

  @staticmethod
  def region(j, what):
    m = np.zeros((4, 4), bool)
    m[{"box": 0, "circle": 1, "ear": 2, "tail": 3, "noise": 0}[what], j % 4] = True
    return m

  def explain_annotations(self, j):
    names = ["box", "ear", "tail", "noise"] + (["circle"] if j % 2 == 0 else [])
    masks = {n: self.region(j, n) for n in names}
    return {"masks": masks, "keypoints": {"tail": np.array([3.0, j], np.float32)}}


def _config(tasks):
  return ml_collections.ConfigDict(
    {
      "tasks": {
        "shape": {"kind": "classification", "num_classes": 3},
        "parts": {"kind": "multilabel", "num_classes": 2},
      },
      "explain": {"task": tasks[0], "tasks": tasks},
    }
  )


def test_each_target_takes_the_annotation_declared_for_it():
  config = _config(("shape", "parts"))
  targets = setup.target_owners(config)
  assert targets == [Owner("shape", k) for k in range(3)] + [Owner("parts", 0), Owner("parts", 1)]
  # (example, target): class 1 of shape on an even and an odd example, class 0 and 2, both
  # attributes; the example index maps to the source index (×10).
  pairs = np.array([[0, 1], [1, 1], [0, 0], [1, 2], [0, 3], [1, 4]], np.int32)
  index = np.array([10, 11])
  masks, keypoints, has = report.annotations(_Source(), index, pairs, targets, (4, 4))
  src = _Source
  want = ["circle", "box", "box", "box", "ear", "tail"]  # class 1 falls back to its task's box
  for p, (i, _) in enumerate(pairs):
    np.testing.assert_array_equal(masks[p], src.region(int(index[i]), want[p]), err_msg=str(p))
  assert has.all()
  assert np.isnan(keypoints[:5]).all() and keypoints[5].tolist() == [3.0, 11.0]
  # Without a declaration the tasks' class names (and task names) say it: the attributes keep
  # their masks, no class of `shape` has one (no class names; `box` and `circle` name no task).
  masks, _, has = report.annotations(_Source(owners=False), index, pairs, targets, (4, 4))
  assert has.tolist() == [False, False, False, False, True, True]
  np.testing.assert_array_equal(masks[4], src.region(10, "ear"))


def test_two_annotations_for_one_target_is_one_error():
  src = _Source()
  src.annotation_owners = lambda: {"box": (Owner("shape"),), "frame": (Owner("shape"),)}
  pairs = np.array([[0, 0]], np.int32)
  with pytest.raises(setup.ExplainError, match=r"\['box', 'frame'\] are all declared to belong"):
    report.annotations(src, np.array([0]), pairs, setup.target_owners(_config(("shape",))), (4, 4))


def test_targets_of_a_task_without_class_names_are_numbered_from_zero():
  config = _config(("shape", "parts"))
  data = {
    "targets": {"shape": np.array([2, 0]), "parts": np.array([[1, 0], [1, 1]], np.float32)},
    "mask": {"shape": np.ones(2, np.float32), "parts": np.ones((2, 2), np.float32)},
  }
  config.explain.target = -1
  config.explain.split = "test"
  _, names, labels, _ = setup.explained_pairs(config, _Source(), data)
  assert names == ["shape[0]", "shape[1]", "shape[2]", "ear", "tail"]
  assert labels[0] == "shape: shape[0]"
  single = ml_collections.ConfigDict({"tasks": {"y": {"kind": "regression"}}})
  single.explain = {"task": "y", "tasks": (), "target": -1, "split": "test"}
  src = types.SimpleNamespace(target_fields={"y": {"kind": "regression"}})
  data = {"targets": {"y": np.zeros(2, np.float32)}, "mask": {"y": np.ones(2, np.float32)}}
  assert setup.explained_pairs(single, src, data)[1] == ["y"]  # one output: the task's name


def test_the_digit_box_belongs_to_every_class_and_the_decoy_to_none(tmp_path):
  root = write_digits(tmp_path, num_train=20, num_val=10, size=14, patch=3, decoy=True, seed=0)
  src = DigitsSource(root, "test")
  keys = target_keys(owners(src), [Owner("digit", k) for k in range(10)])
  assert keys == [("digit",)] * 10  # "decoy" scores no target


def test_a_prepared_split_keeps_what_its_annotations_belong_to(tmp_path):
  from mtljax.data.prepared import records

  cmd = [sys.executable, "-m", "mtljax.prepare", "--config=configs/digits.py:decoy,tiny",
         f"--out={tmp_path}", "--config.data.synthetic.num_train=60"]  # fmt: skip
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
  src = records.PreparedSource(str(tmp_path), "test")
  assert owners(src) == {"digit": (Owner("digit"),)}
  assert sorted(src.explain_annotations(0)["masks"]) == ["decoy", "digit"]


def test_the_annotations_module_imports_from_the_data_package():
  """`from mtljax.data import annotations` in a fresh process is the module (the readers and the
  explanation loss import it so), not a name the package's own imports bound."""
  code = "from mtljax.data import annotations as a; print(a.__name__)"
  res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert res.stdout.strip() == "mtljax.data.annotations", res.stderr[-2000:]


def _main(workdir, *args):
  cmd = [sys.executable, "-m", "mtljax.main", DIGITS, f"--workdir={workdir}", *args]
  if "--mode=explain" in args and not any(a.startswith("--config.explain.metrics") for a in args):
    cmd.append("--config.explain.metrics=()")  # the trust metrics are tested in test_trust_run.py
  env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def decoy_digits(tmp_path_factory):
  work = tmp_path_factory.mktemp("digits") / "run"
  res = _main(work, "--config.train.num_epochs=1")
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return work


@pytest.mark.slow
def test_decoy_digits_explain_scores_every_target_against_its_box(decoy_digits):
  res = _main(decoy_digits, "--mode=explain")
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  assert "Explaining 64 targets" in res.stdout and "64 with a ground-truth mask" in res.stdout
  maps = np.load(decoy_digits / "explanations" / "test" / "maps_saliency.npz")
  labels = np.asarray(np.load(decoy_digits / "synthetic_data" / "test.npz")["label"])
  assert len(maps["pairs"]) == 64
  # Each pair's target is its digit's true class (most classes appear), named like the others.
  np.testing.assert_array_equal(maps["pairs"][:, 1], labels[maps["index"]])
  assert len(set(maps["pairs"][:, 1].tolist())) > 5
  assert set(maps["target_names"].tolist()) <= {f"digit[{k}]" for k in range(10)}
  assert np.isfinite(maps["ensemble_iou"]).all() and np.isfinite(maps["member_iou"]).all()
  # The saved IoU recomputed from the saved maps and the digit box of the raw data.
  box = np.asarray(np.load(decoy_digits / "synthetic_data" / "test.npz")["relevant"])
  pred, truth = maps["ensemble"] >= 0.3, box[maps["index"]]
  iou = (pred & truth).sum((1, 2)) / (pred | truth).sum((1, 2))
  np.testing.assert_allclose(maps["ensemble_iou"], iou, rtol=1e-6)
