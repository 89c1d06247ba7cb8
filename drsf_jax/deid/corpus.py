"""Corpus runs: many videos, several processes (hosts), resumable and fault-isolated.

Each process takes its share of the sorted input list by ``jax.process_index()`` /
``jax.process_count()`` (``videos[index::count]``) and de-identifies it with one
:class:`drsf_jax.deid.pipeline.Deidentifier`, whose batches are sharded over the process's
local devices. A video is *done* when its output and a complete report (schema, frame
count, the same settings) exist; such videos are skipped on a re-run. Outputs and
reports are written to temporary files and renamed, so a video interrupted mid-way
leaves no output that looks complete; its stale temporary files are removed when it is
redone. A video that fails (corrupt, unreadable, no face) is recorded with its one-line
reason and the others go on.

Each process writes ``corpus_summary.process-I-of-N.json`` as it goes; process 0 gathers
every process's part (through ``jax.distributed``'s key-value store when there are
several) and writes ``corpus_summary.json``.
"""

import dataclasses
import json
import logging
import os
import time

import jax

from drsf_jax.deid import pipeline
from drsf_jax.io import outputs
from drsf_jax.io import video

SUMMARY_SCHEMA = "drsf-jax/corpus-summary/1"
SUMMARY_NAME = "corpus_summary.json"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ts", ".mts")
_KV_PREFIX = "drsf_jax/deid/corpus/"
_GATHER_TIMEOUT_MS = 7 * 24 * 3600 * 1000  # Other processes may take days on a big share.


@dataclasses.dataclass
class Item:
  """One video of the corpus and where its results go."""
  input: str
  output: str
  report: str


def list_inputs(spec: str) -> tuple[list[str], str]:
  """Videos named by ``spec`` and the root their output paths are relative to.

  ``spec`` is a directory (searched recursively for video file extensions) or a text file
  with one path per line (blank lines and lines starting with ``#`` ignored; a ``#`` inside
  a line is part of the path, e.g. ``clip#2.mkv``; surrounding spaces are stripped;
  relative paths are relative to the list file). Listed files are not checked here: a
  missing one fails alone.
  """
  if os.path.isdir(spec):
    root = os.path.abspath(spec)
    found = []
    for d, dirs, files in os.walk(root):
      dirs[:] = sorted(x for x in dirs if not x.startswith("."))
      found += [os.path.join(d, f) for f in files
                if not f.startswith(".") and f.lower().endswith(VIDEO_EXTENSIONS)]
    if not found:
      raise ValueError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {spec}")
    return sorted(found), root
  if not os.path.isfile(spec):
    raise FileNotFoundError(f"input list not found: {spec}")
  base = os.path.dirname(os.path.abspath(spec))
  paths = []
  with open(spec, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if line and not line.startswith("#"):
        paths.append(os.path.normpath(os.path.join(base, os.path.expanduser(line))))
  if not paths:
    raise ValueError(f"input list is empty: {spec}")
  if len(set(paths)) != len(paths):
    dup = sorted({p for p in paths if paths.count(p) > 1})[0]
    raise ValueError(f"input list names {dup} more than once")
  root = os.path.commonpath([os.path.dirname(p) for p in paths])
  return paths, root


def plan(inputs: list[str], root: str, output_dir: str, codec: str = "ffv1") -> list[Item]:
  """Output and report paths: the input's path under ``root``, mirrored in ``output_dir``."""
  if codec == "png-seq":
    raise ValueError("corpus mode writes video files; use a container codec, not png-seq")
  out_root = os.path.abspath(output_dir)
  real_inputs = {outputs.real(p): p for p in inputs}
  items, seen = [], {}
  for p in inputs:
    rel = os.path.splitext(os.path.relpath(os.path.abspath(p), root))[0]
    out = os.path.join(out_root, rel + "_deid.mkv")
    report = os.path.splitext(out)[0] + ".json"
    for what, path in (("output", out), ("report", report)):
      if outputs.real(path) in seen:
        raise ValueError(f"{p} and {seen[outputs.real(path)]} would write the same {what} {path}")
      if outputs.real(path) in real_inputs:
        raise ValueError(f"the {what} of {p} would overwrite the input {real_inputs[outputs.real(path)]}")
      seen[outputs.real(path)] = p
    items.append(Item(os.path.abspath(p), out, report))
  return items


def check_output_dir(spec: str, output_dir: str) -> None:
  """Refuses an output directory equal to or inside a listed input directory.

  A directory listing is searched recursively, so outputs written inside it would be
  listed as inputs by the next run. A list file names its inputs explicitly: its outputs
  are never listed by construction, so any output directory is accepted (outputs that
  would land on an input are refused by :func:`plan`).
  """
  if not os.path.isdir(spec):
    return
  src, out = outputs.real(spec), outputs.real(output_dir)
  if out == src or out.startswith(src.rstrip(os.sep) + os.sep):
    raise ValueError(f"--output_dir {output_dir} is {'the' if out == src else 'inside the'} input "
                     f"directory {spec}: a re-run would list its outputs as inputs; choose a "
                     "directory outside it (or list the inputs in a file)")
  if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f"--output_dir {output_dir} is a file, not a directory")


def owned_outputs(item: Item) -> list[str]:
  """The existing files of ``item`` this tool wrote (replaced without ``--overwrite``).

  The report says so: this tool's schema, naming this output. The output beside such a
  report is its video (they are committed together, report first).
  """
  try:
    with open(item.report, encoding="utf-8") as f:
      rep = json.load(f)
  except (OSError, ValueError):
    return []
  if not isinstance(rep, dict) or rep.get("schema") != pipeline.REPORT_SCHEMA:
    return []
  if os.path.abspath(str(rep.get("output", ""))) != item.output:
    return []
  return [p for p in (item.report, item.output) if os.path.isfile(p)]


def _settings(cfg: pipeline.DeidConfig) -> dict:
  return json.loads(json.dumps(dataclasses.asdict(cfg)))


def is_complete(item: Item, cfg: pipeline.DeidConfig) -> str | None:
  """``None`` when the item is done with these settings, else why it must be (re)done."""
  if not os.path.isfile(item.report):
    return "no report"
  if not os.path.isfile(item.output):
    return "report without output"
  try:
    with open(item.report, encoding="utf-8") as f:
      rep = json.load(f)
  except (OSError, ValueError):
    return "unreadable report"
  if rep.get("schema") != pipeline.REPORT_SCHEMA or "summary" not in rep:
    return "incomplete report"
  if os.path.abspath(rep.get("input", "")) != item.input:
    return "report is for another input"
  settings = {k: v for k, v in rep.get("settings", {}).items() if k in _settings(cfg)}
  if settings != _settings(cfg):
    return "settings changed"
  try:
    n = video.count_frames(item.output)
  except (ValueError, FileNotFoundError):
    return "unreadable output"
  if n and n != rep.get("video", {}).get("num_frames"):
    return f"output has {n} frames, report says {rep.get('video', {}).get('num_frames')}"
  return None


def remove_stale_parts(item: Item):
  """Deletes temporary files a killed run left for this item (``.NAME.*.part.EXT``)."""
  for final in (item.output, item.report):
    outputs.remove_stale_parts(final)


def share(items: list, index: int, count: int) -> list:
  """The items process ``index`` of ``count`` handles: every count-th from ``index``."""
  if not 0 <= index < count:
    raise ValueError(f"process index {index} not in [0, {count})")
  return items[index::count]


def _error_line(e: BaseException) -> str:
  msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
  known = isinstance(e, (ValueError, FileNotFoundError))  # Our one-line input errors.
  return msg if msg and known else (f"{type(e).__name__}: {msg}" if msg else type(e).__name__)


def run(items: list[Item], output_dir: str, cfg: pipeline.DeidConfig,
        weights_dir: str | None = None, progress: bool = True,
        process_index: int | None = None, process_count: int | None = None,
        deidentifier: pipeline.Deidentifier | None = None, overwrite: bool = False) -> dict:
  """De-identifies this process's share of ``items``; returns its summary part.

  Process 0 (or the only process) also writes the merged ``corpus_summary.json``. A
  video's existing output and report are replaced only when this tool wrote them
  (:func:`owned_outputs`) or with ``overwrite``; otherwise that video fails alone.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  mine = share(items, index, count)
  cfg.validate()
  part_path = os.path.join(output_dir, f"corpus_summary.process-{index}-of-{count}.json")
  summaries = [part_path] + ([os.path.join(output_dir, SUMMARY_NAME)] if index == 0 else [])
  outputs.check([(os.path.basename(p), p) for p in summaries], [i.input for i in items],
                overwrite=overwrite, replaceable=[p for p in summaries if _is_summary(p)])
  os.makedirs(output_dir, exist_ok=True)
  part = {"schema": SUMMARY_SCHEMA, "process_index": index, "process_count": count,
          "videos_total": len(items), "videos": [], "started": time.time()}
  d = deidentifier
  logging.warning("process %d/%d: %d of %d videos", index, count, len(mine), len(items))
  for n, item in enumerate(mine):
    rec = {"input": item.input, "output": item.output, "report": item.report}
    why = is_complete(item, cfg)
    if why is None:
      rec["status"] = "skipped"
      rec["reason"] = "already done with the same settings"
    else:
      remove_stale_parts(item)
      t0 = time.time()
      try:
        if d is None:
          d = pipeline.Deidentifier(cfg, weights_dir)
        rep = pipeline.deidentify(item.input, item.output, cfg, weights_dir, item.report,
                                  progress=progress, deidentifier=d, overwrite=overwrite,
                                  replaceable=owned_outputs(item))
        rec.update(status="done", frames=rep["video"]["num_frames"],
                   frames_per_second=rep["frames_per_second"])
        if why not in ("no report",):
          rec["redone_because"] = why
      except (KeyboardInterrupt, SystemExit):
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Model-loading errors are the run's, not the video's: they would fail every video.
        if d is None:
          raise
        rec.update(status="failed", reason=_error_line(e))
        logging.error("%s failed: %s", item.input, rec["reason"])
      rec["wall_time_s"] = time.time() - t0
    part["videos"].append(rec)
    print(f"[process {index}] {n + 1}/{len(mine)} {rec['status']}: {item.input}"
          + (f" ({rec['reason']})" if rec["status"] == "failed" else ""), flush=True)
    video.write_json_atomic(part_path, _with_counts(part))
  part["finished"] = time.time()
  part = _with_counts(part)
  video.write_json_atomic(part_path, part)
  parts = _gather(part, index, count)
  if index == 0:
    merged = merge(parts, len(items))
    video.write_json_atomic(os.path.join(output_dir, SUMMARY_NAME), merged)
    return merged
  return part


def _is_summary(path: str) -> bool:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("schema") == SUMMARY_SCHEMA
  except (OSError, ValueError, AttributeError):
    return False


def _with_counts(part: dict) -> dict:
  out = dict(part)
  out["counts"] = {s: sum(v["status"] == s for v in part["videos"])
                   for s in ("done", "skipped", "failed")}
  return out


def merge(parts: list[dict], total: int) -> dict:
  """One corpus summary from every process's part."""
  videos = sorted((v for p in parts for v in p["videos"]), key=lambda v: v["input"])
  return {"schema": SUMMARY_SCHEMA, "process_count": len(parts), "videos_total": total,
          "counts": {s: sum(v["status"] == s for v in videos) for s in ("done", "skipped", "failed")},
          "done": [v["input"] for v in videos if v["status"] == "done"],
          "skipped": [v["input"] for v in videos if v["status"] == "skipped"],
          "failed": [{"input": v["input"], "reason": v["reason"]} for v in videos
                     if v["status"] == "failed"],
          "videos": videos,
          "wall_time_s": max(p["finished"] for p in parts) - min(p["started"] for p in parts)}


def _gather(part: dict, index: int, count: int) -> list[dict]:
  """Every process's summary part at process 0 (via jax.distributed's key-value store)."""
  if count == 1:
    return [part]
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  client = distributed.global_state.client
  if client is None:
    raise RuntimeError("several processes but jax.distributed is not initialized")
  client.key_value_set(f"{_KV_PREFIX}{index}", json.dumps(part))
  parts = [part]
  if index == 0:
    for i in range(1, count):
      parts.append(json.loads(client.blocking_key_value_get(f"{_KV_PREFIX}{i}", _GATHER_TIMEOUT_MS)))
  # Nobody leaves before process 0 has read every part.
  client.wait_at_barrier("drsf_jax_corpus_end", _GATHER_TIMEOUT_MS)
  return parts


def init_distributed(coordinator_address: str | None, num_processes: int | None,
                     process_id: int | None, auto: bool = False):
  """``jax.distributed.initialize`` from flags; must run before any JAX computation.

  With ``coordinator_address`` (and the process count and id), a multi-process run on
  any cluster; with ``auto`` and no address, JAX's own detection (Cloud TPU, SLURM, ...).
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id {process_id} not in [0, {num_processes})")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif auto:
    jax.distributed.initialize()
  elif num_processes not in (None, 1) or process_id not in (None, 0):
    raise ValueError("--num_processes/--process_id need --coordinator_address")
