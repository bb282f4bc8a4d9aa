"""What several test files run in a subprocess: the `mtljax.main` command line, and the check
scripts of this folder on simulated CPU devices (imported as `helpers.commands`: pytest puts
tests/ on sys.path)."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_TREESAT = "configs/treesat.py:tiny"


def main_command(workdir, *flags: str, config: str = TINY_TREESAT) -> list[str]:
  """`python -m mtljax.main --config=<config> --workdir=<workdir> <flags>`, to run from ROOT."""
  return [
    sys.executable,
    "-m",
    "mtljax.main",
    f"--config={config}",
    f"--workdir={workdir}",
    *flags,
  ]


def run_main(workdir, *flags: str, config: str = TINY_TREESAT, env=None, timeout=600):
  """`main_command(...)` run from ROOT with this checkout on PYTHONPATH (and `env` added): its
  `subprocess.CompletedProcess`, output captured as text."""
  env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
  cmd = main_command(workdir, *flags, config=config)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def device_check(script: str, *args, devices: int = 4) -> dict:
  """Runs tests/helpers/<script> with `args` on `devices` simulated CPU devices and returns the
  JSON it prints after `RESULT ` (the script's own process: XLA reads the device count once)."""
  env = dict(
    os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=ROOT
  )
  cmd = [sys.executable, os.path.join(ROOT, "tests", "helpers", script), *map(str, args)]
  res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return json.loads(res.stdout.split("RESULT ", 1)[1])


# tqdm's progress bars also go to stderr: segments like "epoch 1/1:  25%|██▌  | 3/12 [...]".
_BAR = re.compile(r"^[^:]*: *\d+%\||^[^:]*: \d+it \[|it/s\]$|s/it\]$")


def stderr_lines(stderr: str) -> list[str]:
  """The non-empty lines of a run's stderr, its progress bars left out (a user's mistake or a
  stop is one such line)."""
  parts = re.split(r"[\r\n]", stderr)
  return [p.strip() for p in parts if p.strip() and not _BAR.search(p.strip())]
