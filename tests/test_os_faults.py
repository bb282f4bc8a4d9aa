"""OS errors are the user's to fix: a full disk during a checkpoint save and a read-only workdir
end in one `error:` line naming the path and the cause (exit 2), with nothing half-written left to
harm the rerun, which resumes once space is freed (mtljax/errors.py `os_error_message`).

Root ignores file permissions, so the faults are real mounts: a small tmpfs as the workdir (full
at the first checkpoint save), remounted larger, then read-only. Each test skips with a message
when it cannot mount (not root, no mount permission in the container)."""

import errno
import json
import os
import re
import subprocess

import pytest
from helpers.commands import main_command, stderr_lines

from mtljax import errors, workdir
from mtljax.writers import MetricWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ("--config.train.num_epochs=1", "--config.train.checkpoint_every_steps=4")


def _mount(*args):
  return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path):
  """A 200 KB tmpfs (a checkpoint of the tiny model is about 560 KB), unmounted at the end."""
  if os.geteuid() != 0:
    pytest.skip("mounting a tmpfs needs root")
  point = tmp_path / "mnt"
  point.mkdir()
  res = _mount("-t", "tmpfs", "-o", "size=200k", "tmpfs", str(point))
  if res.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
  try:
    yield point
  finally:
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _main(workdir, root, *flags, cache):
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  # The rerun takes the train step from the first run's compile.
  env.update(
    JAX_COMPILATION_CACHE_DIR=str(cache),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
  )
  cmd = main_command(workdir, f"--config.data.root={root}", *ARGS, *flags)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(res) -> str:
  assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
  assert "Traceback" not in res.stderr, res.stderr[-3000:]
  lines = stderr_lines(res.stderr)
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


@pytest.mark.slow
def test_full_disk_then_read_only_workdir_then_resume(tiny_treesat_root, tmpfs):
  work, cache = tmpfs / "w", tmpfs.parent / "jax_cache"  # the cache outside the small tmpfs
  latest = work / "checkpoints" / "latest"
  res = _main(work, tiny_treesat_root, cache=cache)
  assert _one_error_line(res) == (
    f"error: {latest}: no space left on device while saving checkpoint step 4; free space and "
    "rerun to resume"
  )
  # The first run failed before any checkpoint: it leaves no workdir (the space is free again).
  assert not work.exists()

  # Space freed: the rerun completes.
  assert _mount("-o", "remount,size=16m", str(tmpfs)).returncode == 0
  res = _main(work, tiny_treesat_root, cache=cache)
  assert res.returncode == 0, res.stderr[-3000:]
  assert json.loads((work / "final_metrics.json").read_text())["best_epoch"] == 1
  assert sorted(os.listdir(latest)) == ["12", "8"]  # keep=2

  # A damaged line in the middle of metrics.jsonl stops a resume with one line naming it.
  log = work / "metrics.jsonl"
  text = log.read_text()
  lines = text.splitlines(keepends=True)
  log.write_text("".join(lines[:2] + ['{"step": 4, "spl\n'] + lines[2:]))
  res = _main(work, tiny_treesat_root, cache=cache)
  assert re.match(
    rf"error: {re.escape(str(log))}:3: not a JSON record \(.*\): the run's log is damaged "
    r"before its last line; move that line out of the file \(e\.g\. into metrics\.jsonl\.corrupt\)",
    _one_error_line(res),
  )
  assert log.read_text().count("\n") == len(lines) + 1  # left as it was
  log.write_text(text)

  # A read-only workdir: one line in every mode, nothing written, nothing changed.
  before = sorted(os.listdir(work))
  assert _mount("-o", "remount,ro", str(tmpfs)).returncode == 0
  for mode in ("train", "eval", "explain", "analyze"):
    res = _main(work, tiny_treesat_root, f"--mode={mode}", cache=cache)
    assert _one_error_line(res) == (
      f"error: {work}: read-only file system while writing .lock; use a writable --workdir, or "
      "remount it read-write"
    ), mode
  assert sorted(os.listdir(work)) == before


def test_os_error_message_finds_the_cause_anywhere_in_the_chain(tmp_path):
  # An OSError as the cause of a library's own error (a data file the user may not read).
  try:
    try:
      raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "a.tif"))
    except OSError as e:
      raise RuntimeError("reading the data failed") from e
  except RuntimeError as e:
    assert errors.os_error_message(e) == (
      f"{tmp_path / 'a.tif'}: permission denied; use a path you may read and write"
    )
  # Only quoted in a wrapped error's message (TensorStore inside orbax).
  wrapped = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database at local file '
    '"/w/checkpoints/best/24.orbax-checkpoint-tmp/state/ocdbt.process_0/": [OS error 28: No '
    "space left on device]"
  )
  assert errors.os_error_message(wrapped) == (
    "/w/checkpoints/best: no space left on device while saving checkpoint step 24; free space "
    "and rerun to resume"
  )
  # A bare OSError (a write's, no path) before it in the chain: the one naming a path is told.
  bare = OSError(errno.ENOSPC, "No space left on device")
  bare.__context__ = wrapped
  assert errors.os_error_message(bare) == errors.os_error_message(wrapped)
  assert errors.os_error_message(OSError(errno.ENOSPC, "No space left on device"), "/w") == (
    "/w: no space left on device; free space and rerun to resume"
  )
  # An existing file, and fileio's temporary file named by the file it stands for.
  f = tmp_path / "metrics.jsonl"
  f.write_text("")
  assert errors.os_error_message(OSError(errno.EROFS, "Read-only file system", str(f))) == (
    f"{f}: read-only file system; use a writable --workdir, or remount it read-write"
  )
  tmp = tmp_path / ".final_metrics.json.123.0a1b2c3d.tmp"
  assert errors.os_error_message(OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp))) == (
    f"{tmp_path}: disk quota exceeded while writing final_metrics.json; free space and rerun to "
    "resume"
  )
  # Other OS errors are not the user's environment: left to the traceback.
  assert errors.os_error_message(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
  assert errors.os_error_message(ValueError("a bug")) is None


def test_a_damaged_line_before_the_last_stops_a_resume_a_torn_last_one_does_not(tmp_path, capsys):
  log = tmp_path / "metrics.jsonl"
  good = ['{"step": 1, "split": "train"}\n', '{"step": 2, "split": "train"}\n']
  log.write_text(good[0] + "{not json\n" + good[1])
  with pytest.raises(workdir.WorkdirError, match=rf"^{log}:2: not a JSON record .* rerun"):
    MetricWriter(str(tmp_path)).truncate_after(5)
  assert log.read_text() == good[0] + "{not json\n" + good[1]  # nothing dropped
  log.write_text(good[0] + good[1] + '{"step": 3, "spl')  # a run killed mid-append
  MetricWriter(str(tmp_path)).truncate_after(5)
  assert log.read_text() == good[0] + good[1]
  assert "dropped a torn last line" in capsys.readouterr().err
