"""Fault injection: SIGKILL a tiny TreeSAT run at many points, resume it, compare with one
uninterrupted run.

Each trial runs the CLI with `MTLJAX_KILL_AT=<point>` (mtljax/faults.py), checks that it died by
SIGKILL, reruns the same command without it, and compares `final_metrics.json`, `metrics.jsonl`
(without timing fields) and every prediction file with the reference run. Printed at the end:
kill points tried, resumed identically, unresumable workdirs (the rerun failed).

  python -m profiling.experiments.fault_injection --random-steps 4 --jobs 2 [--all]

`tests/test_faults.py` uses the same functions on a handful of points.

`--damage` instead damages checkpoints: a run killed before its last save (latest/6, latest/8 and
best/6 on disk, each with its manifest) is copied once per case; the case truncates, deletes or
flips bytes of one kind of file (the largest state data file, `state/_METADATA`,
`_CHECKPOINT_METADATA`, `meta/metadata`, the manifest) of the newest `latest/` step or of `best/`,
then reruns the command. Each case is classified: resumed to the uninterrupted run's files /
stopped with one `error:` line naming the damaged step / traceback / silently wrong (exit 0,
different files) / other. `tests/test_checkpoint_integrity.py` tries a few cases.

  python -m profiling.experiments.fault_injection --damage --jobs 2 [--only latest:data:flip,...]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mtljax.writers import TIMING_FIELDS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# 96 training examples, batch 16: 6 steps per epoch, 12 steps in all; latest/ saves at steps 4, 6,
# 8, 12 (mid-epoch every 4 and each epoch end), train log records at steps 5, 6, 10, 12.
ARGS = (
  "--config=configs/treesat.py:tiny",
  "--config.train.num_epochs=2",
  "--config.train.checkpoint_every_steps=4",
)
TOTAL_STEPS = 12

# Every deterministic point (see mtljax/faults.py) with the occurrences a 2-epoch run reaches
# (`--all`), and a selection covering each phase at its first and a later occurrence (default).
OCCURRENCES = {
  "metrics.append": range(1, 9),  # train 5, train 6, val 6, train 10, train 12, val 12, *_best
  "ckpt.latest.before": range(1, 5),  # steps 4, 6 (epoch end), 8, 12 (epoch end)
  "ckpt.latest.saved": range(1, 5),
  "eval.val.done": range(1, 3),
  "predictions.rename": range(1, 5),  # val 1, test 1, val 2, test 2
  "ckpt.best.before": range(1, 3),  # each epoch that improves (only epoch 1 here)
  "ckpt.best.saved": range(1, 3),
  "ckpt.best.done": range(1, 3),
  "epoch.end.done": range(1, 3),
  "final.test": range(1, 2),
  "final_metrics.rename": range(1, 2),
}
SELECTION = {
  "metrics.append": (1, 3, 6, 8),
  "ckpt.latest.before": (2, 3),
  "ckpt.latest.saved": (1, 4),
  "eval.val.done": (1, 2),
  "predictions.rename": (2, 3),
  "ckpt.best.before": (1,),
  "ckpt.best.saved": (1,),
  "ckpt.best.done": (1,),
  "epoch.end.done": (1, 2),
  "final.test": (1,),
  "final_metrics.rename": (1,),
}


def make_root(folder: str) -> str:
  """A small synthetic TreeSatAI archive (96 train, 64 test examples, 32×32 aerial)."""
  from mtljax.data.treesat.synthetic import write_synthetic_treesat

  return str(write_synthetic_treesat(folder, num_train=96, num_test=64, seed=0, aerial_size=32))


def run(workdir, root, kill_at=None, timeout=900, extra=()) -> subprocess.CompletedProcess:
  """The harness's run on `root` (`extra`: more flags, e.g. a prepared dataset)."""
  cmd = [sys.executable, "-m", "mtljax.main", *ARGS, f"--workdir={workdir}", *extra]
  cmd.append(f"--config.data.root={root}")
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  env.pop("MTLJAX_KILL_AT", None)
  if kill_at:
    env["MTLJAX_KILL_AT"] = kill_at
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rs = [json.loads(line) for line in f if line.strip()]  # must parse whole: no torn line left
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rs]


def _close(a, b) -> bool:
  if isinstance(a, dict):
    return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
  if isinstance(a, (int, float)) and isinstance(b, (int, float)):
    return bool(np.isclose(a, b, rtol=1e-6, atol=1e-7))
  return a == b


def compare(ref: str, work: str) -> list[str]:
  """What differs between the workdirs `work` and `ref` (empty when the run resumed identically)."""
  diffs = []
  with open(os.path.join(ref, "final_metrics.json")) as f:
    final_ref = json.load(f)
  with open(os.path.join(work, "final_metrics.json")) as f:
    final = json.load(f)
  if not _close(final_ref, final):
    diffs.append("final_metrics.json")
  a, b = _records(ref), _records(work)
  if [(r["step"], r["split"]) for r in a] != [(r["step"], r["split"]) for r in b]:
    diffs.append(f"metrics.jsonl records {[(r['step'], r['split']) for r in b]}")
  elif not all(_close(ra, rb) for ra, rb in zip(a, b)):
    diffs.append("metrics.jsonl values")
  rel = lambda d: sorted(os.path.relpath(p, d) for p in glob.glob(f"{d}/predictions/*/*.npz"))
  if rel(ref) != rel(work):
    diffs.append(f"prediction files {rel(work)}")
  for name in rel(ref):
    if name not in rel(work):
      continue
    with np.load(os.path.join(ref, name)) as x, np.load(os.path.join(work, name)) as y:
      if sorted(x.files) != sorted(y.files):
        diffs.append(f"{name}: keys")
        continue
      for k in x.files:
        same = (
          np.array_equal(x[k], y[k])
          if x[k].dtype.kind in "USOb"
          else np.allclose(x[k], y[k], rtol=1e-6, atol=1e-7)
        )
        if not same:
          diffs.append(f"{name}: {k}")
  return diffs


def trial(ref: str, root: str, point: str, workdir: str, extra=()) -> tuple[str, str]:
  """Kill at `point`, resume; returns `(outcome, detail)`, outcome one of "identical",
  "differs", "unresumable", "not killed" (the point was not reached: the run finished)."""
  killed = run(workdir, root, kill_at=point, extra=extra)
  if killed.returncode != -signal.SIGKILL:
    return "not killed", f"rc {killed.returncode}: {killed.stderr[-500:]}"
  again = run(workdir, root, extra=extra)
  if again.returncode != 0:
    return "unresumable", f"rc {again.returncode}: {again.stderr[-1500:]}"
  diffs = compare(ref, workdir)
  return ("differs", "; ".join(diffs)) if diffs else ("identical", "")


def points(random_steps: int, seed: int, every: bool = False) -> list[str]:
  """The kill points of a sweep, round-robin over the phases (so that a sweep stopped early has
  tried each phase), the random training steps among them."""
  groups = [[f"{p}@{n}" for n in ns] for p, ns in (OCCURRENCES if every else SELECTION).items()]
  rng = random.Random(seed)
  steps = rng.sample(range(1, TOTAL_STEPS + 1), min(random_steps, TOTAL_STEPS))
  groups.append([f"train.step@{s}" for s in steps])
  return [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]


# ------------------------------------------------------------------------------ damage
# Killed before latest/12 is saved: latest/6 and latest/8 (each with its manifest, written when
# the next save started) and best/6.
DAMAGE_KILL = "ckpt.latest.before@4"
DAMAGE_STEPS = {"latest": 8, "best": 6}
FILES = {
  "data": None,  # the largest file under state/ (array chunks)
  "_METADATA": "state/_METADATA",
  "_CHECKPOINT_METADATA": "_CHECKPOINT_METADATA",
  "meta": "meta/metadata",
  "manifest": "mtljax_manifest.json",
}
DAMAGES = ("truncate", "delete", "flip")


def damage_cases() -> list[str]:
  return [f"{w}:{f}:{d}" for w in DAMAGE_STEPS for f in FILES for d in DAMAGES]


def damage(step_dir: str, kind: str, how: str) -> str:
  """Damages one file of `step_dir`; returns its relative path."""
  rel = FILES[kind]
  if rel is None:
    files = [
      os.path.relpath(os.path.join(r, n), step_dir)
      for r, _, ns in os.walk(os.path.join(step_dir, "state"))
      for n in ns
    ]
    rel = max(files, key=lambda f: os.path.getsize(os.path.join(step_dir, f)))
  path = os.path.join(step_dir, rel)
  size = os.path.getsize(path)
  if how == "truncate":
    os.truncate(path, size // 2)
  elif how == "delete":
    os.remove(path)
  else:  # a few bytes inverted in the middle
    with open(path, "r+b") as f:
      f.seek(size // 2)
      b = f.read(4)
      f.seek(size // 2)
      f.write(bytes(x ^ 0xFF for x in b))
  return rel


def damage_trial(ref: str, base: str, root: str, case: str, workdir: str) -> tuple[str, str]:
  """Copies the killed run `base`, applies `case` (`which:file:how`), reruns; `(outcome,
  detail)`, outcome one of "resumed", "stopped", "traceback", "silently wrong", "other"."""
  which, kind, how = case.split(":")
  shutil.copytree(base, workdir)
  step = DAMAGE_STEPS[which]
  rel = damage(os.path.join(workdir, "checkpoints", which, str(step)), kind, how)
  res = run(workdir, root)
  err = res.stderr.strip()
  note = f"{rel}; " + " | ".join(l for l in err.splitlines() if l.startswith(("warning", "error")))
  if "Traceback" in err:
    return "traceback", err[-800:]
  if res.returncode == 0:
    diffs = compare(ref, workdir)
    return ("silently wrong", "; ".join(diffs)) if diffs else ("resumed", note)
  lines = err.splitlines()
  if res.returncode == 2 and lines and lines[-1].startswith("error: "):
    if f"{which}/{step}" in lines[-1]:
      return "stopped", note
  return "other", f"rc {res.returncode}: {err[-800:]}"


def damage_main(args, base: str, ref: str, root: str) -> int:
  killed = os.path.join(base, "killed")
  if not os.path.isdir(killed):
    res = run(killed, root, kill_at=DAMAGE_KILL)
    if res.returncode != -signal.SIGKILL:
      print(f"the run to damage was not killed: rc {res.returncode}: {res.stderr[-2000:]}")
      return 1
  todo = args.only.split(",") if args.only else damage_cases()
  print(f"{len(todo)} damage cases; reference run in {ref}", flush=True)

  def one(case):
    work = os.path.join(base, "damage_" + case.replace(":", "_"))
    shutil.rmtree(work, ignore_errors=True)
    outcome, detail = damage_trial(ref, killed, root, case, work)
    print(f"{case:34s} {outcome}: {detail}", flush=True)
    return outcome

  with ThreadPoolExecutor(args.jobs) as pool:
    outcomes = list(pool.map(one, todo))
  counts = {k: outcomes.count(k) for k in ("resumed", "stopped", "traceback", "silently wrong")}
  counts["other"] = len(outcomes) - sum(counts.values())
  print("\n" + "\n".join(f"{k}: {v}" for k, v in counts.items()), flush=True)
  return 0 if counts["traceback"] == counts["silently wrong"] == counts["other"] == 0 else 1


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--random-steps", type=int, default=4, help="kills at random training steps")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--jobs", type=int, default=1, help="trials run at once")
  ap.add_argument("--only", default="", help="comma-separated points instead of all")
  ap.add_argument("--all", action="store_true", help="every occurrence of every point")
  ap.add_argument("--keep", default="", help="folder for the workdirs (its reference is reused)")
  ap.add_argument("--damage", action="store_true", help="damage checkpoints instead of killing")
  args = ap.parse_args(argv)
  base = args.keep or tempfile.mkdtemp(prefix="fault_injection_")
  os.makedirs(base, exist_ok=True)
  t0 = time.perf_counter()
  root, ref = os.path.join(base, "data"), os.path.join(base, "reference")
  if not os.path.exists(os.path.join(ref, "final_metrics.json")):
    root = make_root(root)
    shutil.rmtree(ref, ignore_errors=True)
    res = run(ref, root)
    if res.returncode != 0:
      print(res.stdout[-3000:], res.stderr[-3000:])
      return 1
  if args.damage:
    return damage_main(args, base, ref, root)
  todo = args.only.split(",") if args.only else points(args.random_steps, args.seed, args.all)
  print(f"{len(todo)} kill points; reference run in {ref}", flush=True)

  def one(i_point):
    i, point = i_point
    work = os.path.join(base, f"trial_{point.replace('@', '_')}")
    shutil.rmtree(work, ignore_errors=True)
    outcome, detail = trial(ref, root, point, work)
    print(f"{point:28s} {outcome}{': ' + detail if detail else ''}", flush=True)
    return outcome

  with ThreadPoolExecutor(args.jobs) as pool:
    outcomes = list(pool.map(one, enumerate(todo)))
  tried = sum(o != "not killed" for o in outcomes)
  print(
    f"\nkill points tried: {tried} (of {len(todo)} asked; {len(todo) - tried} not reached)\n"
    f"resumed identically: {outcomes.count('identical')}\n"
    f"unresumable workdirs: {outcomes.count('unresumable')}\n"
    f"(resumed but different: {outcomes.count('differs')}; "
    f"{time.perf_counter() - t0:.0f} s; workdirs in {base})"
  )
  return 0 if outcomes.count("identical") == tried else 1


if __name__ == "__main__":
  sys.exit(main())
