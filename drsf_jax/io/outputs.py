"""Output safety, one rule for every script: never destroy a user's file.

Every script names its inputs and outputs to :func:`check` before it loads a model or
reads a frame, and writes every output to a temporary name beside it (:func:`temp_path`,
:func:`temp_dir`), renamed into place by :func:`commit` only once everything is written.
The rule:

* no output may resolve (``os.path.realpath``: symlinks followed, ``..`` and other
  spellings; ``os.path.samefile`` for hard links) to an input or to another output of the
  same run;
* an existing file is replaced only with ``--overwrite`` (or when the caller knows the
  tool wrote it: corpus mode's own outputs); an existing *directory* is never replaced nor
  deleted: naming one as an output file is an error ("is a directory"), and a PNG-sequence
  output goes into a new or an empty directory only;
* the output's directory must be creatable and writable (probed with a real temporary
  file, which also holds for root and read-only file systems);
* temporary files are ``.NAME.XXXX.part.EXT`` beside the output; the ones a killed run
  left for the same output are removed when a new run starts (:func:`remove_stale_parts`),
  and the ones of this run are removed on any error or Ctrl-C (:func:`discard_pending`).

Errors are one-line ``ValueError`` / ``FileNotFoundError`` messages (``cli.run`` prints
them as ``error: ...``).
"""

import errno
import glob
import logging
import math
import os
import re
import shutil
import tempfile
from typing import Iterable, Sequence

# Temporary paths of this process not yet renamed into place (removed on error/Ctrl-C).
_PENDING: set[str] = set()
# Final paths this process has committed (cli.run names them if the run is interrupted).
COMMITTED: list[str] = []
# Set by the scripts' SIGINT handler (cli.run). Python runs a signal handler at the next
# bytecode, which may be inside a garbage-collector callback (JAX registers one), where
# the KeyboardInterrupt is printed as "Exception ignored" and dropped; measured: a Ctrl-C
# during the attack then let deid finish and write. The flag survives that: commit() and
# the pipeline's batch loop raise it again.
INTERRUPTED = False


def raise_if_interrupted() -> None:
  """Raises KeyboardInterrupt if a Ctrl-C arrived (even one whose exception was lost)."""
  if INTERRUPTED:
    raise KeyboardInterrupt
_SEQ_FRAME = re.compile(r"^\d{6}\.png$")


def _umask() -> int:
  m = os.umask(0)
  os.umask(m)
  return m


def real(path: str) -> str:
  return os.path.realpath(os.path.expanduser(path))


def _same(a: str, b: str) -> bool:
  if real(a) == real(b):
    return True
  try:
    return os.path.samefile(a, b)  # Hard links, case-insensitive file systems.
  except OSError:
    return False


def check_input(path: str, what: str = "input") -> str:
  """An input file must exist and be a file: one-line errors otherwise."""
  if not path:
    raise ValueError(f"{what}: empty path")
  if os.path.isdir(path):
    raise ValueError(f"{what} {path} is a directory, not a file")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{what} not found: {path}")
  return path


def check_writable_dir(d: str, what: str = "output") -> None:
  """``d`` exists as a writable directory or can be created (nothing is created here)."""
  probe = os.path.abspath(d)
  while not os.path.lexists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise ValueError(f"cannot write {what} under {d}: {probe} is a file, not a directory")
  try:
    fd, tmp = tempfile.mkstemp(prefix=".drsf-write-probe.", dir=probe)
  except OSError as e:
    raise ValueError(f"{what} directory {probe} is not writable ({e.strerror})") from None
  os.close(fd)
  os.unlink(tmp)


def check(outputs: Sequence[tuple[str, str]], inputs: Iterable[str | None] = (),
          overwrite: bool = False, dirs: Iterable[str] = (), replaceable: Iterable[str] = (),
          clean_stale: bool = True) -> None:
  """Checks a run's outputs against its inputs and the file system, before any work.

  Args:
    outputs: ``(what, path)`` pairs, e.g. ``[("output", "o.mkv"), ("report", "o.json")]``.
    inputs: the run's input paths (``None`` entries ignored).
    overwrite: the user passed ``--overwrite``: existing *files* may be replaced.
    dirs: the paths among ``outputs`` that are directories (a PNG sequence).
    replaceable: existing files the caller knows this tool wrote (replaced without
      ``--overwrite``).
    clean_stale: once every check passed, remove temporary files a killed run left for
      these outputs.

  Raises:
    ValueError: with one line naming the output and the problem.
  """
  inputs = [p for p in inputs if p]
  dirs = {real(p) for p in dirs}
  replaceable = {real(p) for p in replaceable}
  seen: list[tuple[str, str]] = []
  for what, path in outputs:
    if not path:
      raise ValueError(f"{what}: empty path")
    for inp in inputs:
      if _same(path, inp):
        raise ValueError(f"{what} {path} would overwrite the input {inp}")
    for other_what, other in seen:
      if _same(path, other):
        raise ValueError(f"{what} {path} and {other_what} {other} are the same file")
    seen.append((what, path))
    is_dir_output = real(path) in dirs
    if os.path.lexists(path):
      if is_dir_output:
        if not os.path.isdir(path):
          raise ValueError(f"{what} {path} exists and is not a directory")
        if os.listdir(path):
          raise ValueError(f"{what} {path} is a directory with files in it; a PNG sequence is "
                           "written only into a new or empty directory")
      else:
        if os.path.isdir(path):
          raise ValueError(f"{what} {path} is a directory")
        if not overwrite and real(path) not in replaceable:
          raise ValueError(f"{what} {path} exists; pass --overwrite to replace it")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), what)
  if clean_stale:
    for _, path in outputs:
      remove_stale_parts(path)


def _stale_candidates(final: str) -> list[str]:
  """Paths named as :func:`temp_path`/:func:`temp_dir` name temporaries of ``final``
  (``.BASE.`` + mkstemp's 8 random characters + ``.partEXT``), and no other output's."""
  d = os.path.dirname(os.path.abspath(final))
  base, ext = os.path.splitext(os.path.basename(os.path.abspath(final)))
  pattern = re.compile(rf"^\.{re.escape(base)}\.[a-z0-9_]{{8}}\.part{re.escape(ext)}$")
  return [p for p in glob.glob(os.path.join(glob.escape(d), f".{glob.escape(base)}.*.part{glob.escape(ext)}"))
          if pattern.match(os.path.basename(p))]


def remove_stale_parts(final: str) -> list[str]:
  """Removes the temporary files (``.NAME.*.part.EXT``) a killed run left for ``final``.

  A stale PNG-sequence directory is removed only if it holds nothing but numbered frames.
  """
  removed = []
  for p in _stale_candidates(final):
    if p in _PENDING:
      continue
    try:
      if os.path.isdir(p) and not os.path.islink(p):
        if all(_SEQ_FRAME.match(f) for f in os.listdir(p)):
          shutil.rmtree(p)
        else:
          continue
      else:
        os.unlink(p)
      removed.append(p)
      logging.info("removed stale partial file %s", p)
    except OSError:
      pass
  return removed


def temp_path(final: str) -> str:
  """A new temporary file beside ``final`` (same directory: the rename is atomic).

  Mode ``0666 & ~umask`` like any file the user creates (mkstemp's 0600 would make
  outputs private to their writer).
  """
  d = os.path.dirname(os.path.abspath(final))
  try:
    os.makedirs(d, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(final))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".part{ext}", dir=d)
  except OSError as e:
    raise ValueError(f"cannot write {final}: {e.strerror}") from None
  _PENDING.add(tmp)
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_umask())
  return tmp


def temp_dir(final: str) -> str:
  """A new temporary directory beside ``final`` (mode ``0777 & ~umask``)."""
  d = os.path.dirname(os.path.abspath(final))
  try:
    os.makedirs(d, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(final))}.", suffix=".part", dir=d)
  except OSError as e:
    raise ValueError(f"cannot write {final}: {e.strerror}") from None
  _PENDING.add(tmp)
  os.chmod(tmp, 0o777 & ~_umask())
  return tmp


def discard(tmp: str | None) -> None:
  """Removes a temporary file or PNG-sequence directory made by this module."""
  if not tmp:
    return
  _PENDING.discard(tmp)
  try:
    if os.path.isdir(tmp) and not os.path.islink(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.lexists(tmp):
      os.unlink(tmp)
  except OSError:
    pass


def discard_pending() -> None:
  """Removes every temporary output of this process not yet committed (Ctrl-C)."""
  for tmp in list(_PENDING):
    discard(tmp)


def _move(tmp: str, final: str, overwrite: bool) -> bool:
  """Renames ``tmp`` onto ``final``; returns whether ``final`` existed before."""
  if os.path.isdir(tmp):
    existed = os.path.isdir(final)
    try:
      os.rename(tmp, final)  # Onto a missing or empty directory only (POSIX rename).
    except OSError as e:
      if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        raise ValueError(f"{final} is no longer a new or empty directory; nothing written") from None
      raise
    return existed
  if os.path.isdir(final):
    raise ValueError(f"{final} is a directory")
  if overwrite:
    existed = os.path.lexists(final)
    os.replace(tmp, final)
    return existed
  try:
    os.link(tmp, final)  # Fails if final exists: no window in which another file is replaced.
  except FileExistsError:
    raise ValueError(f"{final} appeared while this run was writing; pass --overwrite to replace "
                     "it") from None
  except OSError:  # File systems without hard links.
    if os.path.lexists(final):
      raise ValueError(f"{final} appeared while this run was writing; pass --overwrite to "
                       "replace it") from None
    os.replace(tmp, final)
    return False
  os.unlink(tmp)
  return False


def commit(pairs: Sequence[tuple[str, str]], overwrite: bool = False,
           replaceable: Iterable[str] = ()) -> list[str]:
  """Renames every ``(temporary, final)`` pair into place, in order, all or nothing.

  If one rename fails, the outputs this call already created are removed again and every
  remaining temporary file is deleted, so either all of ``pairs`` appear or none that was
  not there before. ``overwrite``/``replaceable`` as in :func:`check`.
  """
  replaceable = {real(p) for p in replaceable}
  done: list[tuple[str, bool]] = []
  try:
    raise_if_interrupted()  # Never put an output in place after a Ctrl-C.
    for tmp, final in pairs:
      existed = _move(tmp, final, overwrite or real(final) in replaceable)
      _PENDING.discard(tmp)
      done.append((final, existed))
  except BaseException:
    for final, existed in done:
      if not existed:
        discard(final)
    for tmp, _ in pairs:
      if tmp in _PENDING:
        discard(tmp)
    raise
  finals = [f for f, _ in done]
  COMMITTED.extend(finals)
  return finals


def non_finite_path(obj, where: str = "$") -> str | None:
  """The JSON path of the first NaN/inf float inside ``obj`` (dicts, lists, tuples), or None.

  Reports and prediction files refuse such values (JSON has no NaN); callers raise their
  own one-line error naming the path.
  """
  if isinstance(obj, float) and not math.isfinite(obj):
    return f"{where} ({obj})"
  if isinstance(obj, dict):
    items = ((f"{where}.{k}", v) for k, v in obj.items())
  elif isinstance(obj, (list, tuple)):
    items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
  else:
    return None
  for path, v in items:
    found = non_finite_path(v, path)
    if found is not None:
      return found
  return None
