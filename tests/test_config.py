"""Config files, command-line overrides and validation errors."""

import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs import treesat as treesat_config
from mtljax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "treesat.py")

# Minimal field descriptions of the TreeSAT dataset (as the reader reports them).
INPUT_FIELDS = {
  "aerial": {"kind": "image"},
  "s1": {"kind": "small_image"},
  "s2": {"kind": "small_image"},
  "age": {"kind": "tabular"},
}
TARGET_FIELDS = {
  "l3": {"kind": "classification", "num_classes": 15},
  "l2": {"kind": "classification", "num_classes": 9},
  "l1": {"kind": "classification", "num_classes": 3},
  "age": {"kind": "regression"},
  "l3_multi": {"kind": "multilabel", "num_classes": 15},
}


def _parse(*args):
  """Parses a command line exactly as `mtljax.main` does (absl + config_flags, locked)."""
  argv = ["prog", *args]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def test_overrides_with_types():
  c = _parse(
    f"--config={CONFIG}:exp=3,tiny",
    "--config.train.batch_size=8",
    "--config.tasks.l3.weight=2.5",
    "--config.data.root=/data/ts",
    "--config.eval.prediction_splits=('test',)",
  )
  assert c.train.batch_size == 8
  assert c.tasks.l3.weight == 2.5
  assert c.data.root == "/data/ts"
  assert tuple(c.eval.prediction_splits) == ("test",)
  assert set(c.tasks) == {"l3", "l2"}


def test_misspelt_key_is_rejected():
  with pytest.raises(AttributeError, match='batch_sise(.|\n)*Did you mean "batch_size"'):
    _parse(f"--config={CONFIG}", "--config.train.batch_sise=8")


def test_wrong_type_is_rejected():
  with pytest.raises(flags.IllegalFlagValueError):
    _parse(f"--config={CONFIG}", "--config.train.batch_size=eight")


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match="unknown variant 'exp7'"):
    treesat_config.get_config("exp7")
  with pytest.raises(ValueError, match="not a Table 3 row"):
    treesat_config.get_config("exp=9")


@pytest.mark.parametrize("exp", range(1, 9))
def test_table3_experiments_validate(exp):
  c = treesat_config.get_config(f"exp={exp}")
  configlib.validate(c, INPUT_FIELDS, TARGET_FIELDS)
  aux_in, aux_out = treesat_config.EXPERIMENTS[exp]
  assert set(c.inputs) == {"aerial", "s1", "s2", *aux_in}
  assert set(c.tasks) == {"l3", *aux_out}
  assert c.tasks.l3.weight == 4.0 and all(c.tasks[t].weight == 1.0 for t in aux_out)


def test_task_naming_a_missing_modality():
  c = treesat_config.get_config()
  c.tasks.dem = {"kind": "regression", "weight": 1.0, "head": "linear"}
  with pytest.raises(
    configlib.ConfigError,
    match=r"config.tasks.dem: the dataset 'treesat' has "
    r"no target 'dem'",
  ):
    configlib.validate(c, INPUT_FIELDS, TARGET_FIELDS)


def test_all_problems_reported_at_once():
  c = treesat_config.get_config()
  c.inputs.l2 = {"encoder": "transformerx"}
  c.tasks.l2.num_classes = 7
  c.main_task = "l9"
  c.tasks.age.kind = "classification"
  with pytest.raises(configlib.ConfigError) as e:
    configlib.validate(c, INPUT_FIELDS, TARGET_FIELDS)
  msg = str(e.value)
  assert "config.inputs.l2: the dataset 'treesat' has no input modality 'l2'" in msg
  assert "config.inputs.l2.encoder='transformerx'" in msg
  assert "config.inputs.l2" in msg and "is also an input" in msg
  assert "config.tasks.l2.num_classes=7 but the dataset's 'l2' has 9 classes" in msg
  assert "config.main_task='l9'" in msg
  assert "config.tasks.age.kind='classification' but the dataset's 'age' is 'regression'" in msg


def test_incompatible_workdir_config_is_refused():
  a = treesat_config.get_config("exp=7")
  b = treesat_config.get_config("exp=3")
  import json

  saved = json.loads(a.to_json())
  configlib.check_compatible(saved, a, "W/config.json")  # same: fine
  b2 = treesat_config.get_config("exp=7")
  b2.train.num_epochs = 50  # training length may change on resume
  configlib.check_compatible(saved, b2, "W/config.json")
  with pytest.raises(configlib.ConfigError, match="differs in: tasks"):
    configlib.check_compatible(saved, b, "W/config.json")


def test_variant_parser():
  """config_blocks.Variants: flags, int and str options, bare words; errors name the file and
  every allowed variant."""
  from mtljax import config_blocks

  v = config_blocks.Variants(
    "configs/x.py",
    exp=config_blocks.Option(7, choices=range(1, 9), what="a row"),
    dataset=config_blocks.Option("cub", choices=("cub", "isic"), bare=True),
    strategy="seeds",
    size=1,
    tiny=False,
  )
  o = v.parse(None)
  assert (o.exp, o.dataset, o.strategy, o.size, o.tiny) == (7, "cub", "seeds", 1, False)
  o = v.parse("tiny,exp=3,isic,size=4,strategy=bagging")
  assert (o.exp, o.dataset, o.strategy, o.size, o.tiny) == (3, "isic", "bagging", 4, True)
  assert v.parse("dataset=isic").dataset == "isic"
  for bad, match in (
    ("exp7", "unknown variant 'exp7'"),
    ("exp=9", "exp=9 is not a row"),
    ("tiny=1", "unknown variant 'tiny=1'"),
    ("size=0", "unknown variant 'size=0'"),
    ("size=x", "unknown variant 'size=x'"),
    ("strategy=", "unknown variant 'strategy='"),
    ("dataset=foo", "dataset=foo is not"),
  ):
    with pytest.raises(ValueError, match=match) as e:
      v.parse(bad)
    assert str(e.value).startswith("configs/x.py: ")
    assert "allowed variants: exp=N (a row: 1..8; default 7), cub|isic" in str(e.value)
    assert "strategy=S (default seeds), size=N (default 1), tiny" in str(e.value)


def _documented_commands(text: str):
  """The `python -m ...` commands of a docstring or a docs page (lines, or quoted inline) as token
  lists: continuation lines joined, `$NAME` expanded from the text's own `NAME="..."` lines (as a shell would), a trailing
  `# comment` dropped."""
  import re
  import shlex

  env = {}
  for line in re.sub(r"\\\n\s*", " ", text).splitlines():
    line = line.strip()
    assignment = re.fullmatch(r'([A-Z]\w*)="(.*)"', line)
    if assignment:
      env[assignment.group(1)] = assignment.group(2)
      continue
    # a command line, or commands quoted inline (`python -m ...`) in a sentence
    for cmd in (
      [line] if line.startswith("python -m ") else re.findall(r"`(python -m [^`]+)`", line)
    ):
      yield shlex.split(re.sub(r"\$(\w+)", lambda m: env[m.group(1)], cmd), comments=True)


def _parse_main_command(toks: list[str]):
  """The config of a documented `python -m mtljax.<main or a sweep> ...` command, parsed as
  mtljax.main does."""
  args = [t for t in toks[3:] if t.startswith("--config")]
  args[0] = args[0].replace("configs/", os.path.join(ROOT, "configs") + "/", 1)
  return _parse(*args)


def test_documented_commands_parse():
  """Every `python -m ...` command in a config file's docstring parses (its config variant and
  overrides, as mtljax.main reads them; an experiment's arguments with its own parser) and names a
  module that exists."""
  import ast
  import glob
  import importlib.util

  count = 0
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
    with open(path) as f:
      doc = ast.get_docstring(ast.parse(f.read()), clean=False)
    for toks in _documented_commands(doc):
      assert importlib.util.find_spec(toks[2]), toks
      if toks[2].startswith("profiling."):  # an experiment's own command line
        importlib.import_module(toks[2]).parser().parse_args(toks[3:])
      else:
        assert _parse_main_command(toks).data.name, toks
      count += 1
  assert count >= 20


def test_explanation_guided_commands_parse():
  """Every command docs/explanation-guided.md shows parses: the training and explain runs' configs
  and overrides as mtljax.main reads them, the experiments' and benchmark's arguments with their
  own parsers, and each override names a key the config has (a locked config refuses others)."""
  import importlib

  with open(os.path.join(ROOT, "docs", "explanation-guided.md")) as f:
    commands = list(_documented_commands(f.read()))
  modules = {}
  for toks in commands:
    if toks[2] == "mtljax.main":
      config = _parse_main_command(toks)
      assert config.objective.terms[-1] == "explanation", toks
    else:
      importlib.import_module(toks[2]).parser().parse_args(toks[3:])
    modules[toks[2]] = modules.get(toks[2], 0) + 1
  assert modules == {
    "mtljax.main": 8,
    "profiling.experiments.egl_compare": 6,
    "profiling.experiments.egl_paired_accuracy": 1,
    "profiling.benchmarks.egl_bench": 1,
  }


def test_a_training_run_checks_and_builds_once(tiny_treesat_root, tmp_path, monkeypatch):
  """One training run (in process, one epoch): the whole-config check, each section's own check,
  the objective and the hierarchy's output transform run once; the dataset entry is looked up
  once by the check and once by the run's set-up, which passes it down."""
  from mtljax import data, hierarchy, objective, train, weighting
  from mtljax.egl import term as egl_term
  from mtljax.train import build

  calls = {}

  def count(owner, name):
    fn = getattr(owner, name)

    key = f"{owner.__name__.rsplit('.', 1)[-1]}.{name}"

    def wrapped(*args, **kwargs):
      calls[key] = calls.get(key, 0) + 1
      return fn(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)

  for owner, name in (
    (configlib, "check"),
    (configlib, "check_fields"),
    (weighting, "problems"),
    (hierarchy, "problems"),
    (egl_term, "check_config"),
    (objective, "build"),
    (hierarchy, "output_transform"),
  ):
    count(owner, name)
  looked_up = []
  lookup = data.get_dataset
  monkeypatch.setattr(data, "get_dataset", lambda n: looked_up.append("check") or lookup(n))
  monkeypatch.setattr(build, "get_dataset", lambda n: looked_up.append("setup") or lookup(n))
  c = treesat_config.get_config("tiny")
  c.data.root = tiny_treesat_root
  c.train.num_epochs = 1
  train.train_and_evaluate(c, str(tmp_path / "run"))
  assert calls == {
    "configlib.check": 1,
    "configlib.check_fields": 1,
    "weighting.problems": 1,
    "hierarchy.problems": 1,
    "term.check_config": 1,
    "objective.build": 1,
    "hierarchy.output_transform": 1,
  }, calls
  assert looked_up == ["check", "setup"], looked_up
