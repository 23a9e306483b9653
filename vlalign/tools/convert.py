"""Converts any training source into TFRecord shards the pipeline reads fastest, in parallel and
resumably, skipping (and counting) every record the training pipeline would skip.

python -m vlalign.tools.convert --input='wds:/data/laion/{00000..00999}.tar' --output=/data/tfr \
    [--input=...] [--workers=8] [--min_image_side=200 --max_aspect_ratio=3 --min_unigrams=3 \
    --max_unigrams=20 --max_shared_text=10 --min_unigram_count=5]

Each input file (or each of --tfds_shards slices of a TFDS split) becomes one output shard
part-<i>-of-<n>.tfrecord of tf.train.Example records {image, text, id}; the image bytes are kept
as they came (every format the pipeline decodes), after checking that they decode. A finished
shard leaves .done/part-<i>.json with its counts, so a rerun after an interruption converts only
the missing shards. The frequency filters (shared alt-texts, rare words) need corpus counts: a
first pass writes them to <output>/text_stats.json, which training can use as
config.data.filters.stats_file. The last line printed is one JSON object:
{"written": N, "skipped": {"<reason>": n, ...}}.

Inputs are read with the pipeline's readers, so the bounds on what a file may claim hold here
too (--max_record_bytes, --max_member_bytes, --max_json_depth, --max_image_aspect; config.data's
defaults). With --workers > 1 a worker that dies (a crash, the OOM killer) is reported with its
input and its shard counted as `worker_crashed`; the others go on, and a rerun retries it.
"""

import dataclasses
import json
import logging
import multiprocessing
import os
import queue
import signal
import sys
import time
from typing import Iterator

from absl import app, flags

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Unit:
  """One output shard: the input (a file, a TFDS sub-split) it is written from, as the Source
  that reads just that input (its kind's convert_inputs)."""
  index: int
  spec: str
  kind: str
  input: str
  source: object  # data.sources.Source


# The bounds on what an input file may claim (config.data, data/filters.py), as flags.
BOUNDS = ('max_record_bytes', 'max_member_bytes', 'max_json_depth', 'max_image_aspect')


def _define_flags() -> None:
  flags.DEFINE_multi_string('input', None, 'Source spec(s): tfrecord:<glob>, wds:<glob>, '
                            'tfds:<name>[/<config>]:<split>, csv:<glob>.')
  flags.DEFINE_string('output', None, 'Output directory for part-*.tfrecord.')
  flags.DEFINE_integer('workers', 2, 'Parallel worker processes.')
  flags.DEFINE_integer('tfds_shards', 16, 'Output shards per TFDS split.')
  flags.DEFINE_string('image_key', 'image', 'Image feature of tfrecord / tfds inputs.')
  flags.DEFINE_string('text_key', 'text', 'Text feature of tfrecord / tfds inputs.')
  flags.DEFINE_string('id_key', 'id', 'Id feature of tfrecord inputs.')
  flags.DEFINE_string('tfds_data_dir', '', 'TFDS data_dir.')
  flags.DEFINE_string('csv_image_column', 'filepath', 'Image path column of csv inputs.')
  flags.DEFINE_string('csv_caption_column', 'title', 'Caption column of csv inputs.')
  flags.DEFINE_string('csv_separator', '\t', 'Separator of csv inputs (a tab or ",").')
  flags.DEFINE_integer('max_text_bytes', 4096, 'Longer captions are skipped (text_too_long).')
  flags.DEFINE_integer('max_record_bytes', 64 << 20, 'Larger TFRecord records are skipped.')
  flags.DEFINE_integer('max_member_bytes', 32 << 20, 'Larger tar members are skipped unread.')
  flags.DEFINE_integer('max_json_depth', 32, 'Deeper .json captions are skipped unparsed.')
  flags.DEFINE_float('max_image_aspect', 20.0, 'Images with a longer/shorter side ratio above '
                     'this are skipped (extreme_aspect).')
  flags.DEFINE_integer('min_image_side', 0, 'ALIGN: 200 (0: off).')
  flags.DEFINE_float('max_aspect_ratio', 0.0, 'ALIGN: 3 (0: off).')
  flags.DEFINE_integer('min_unigrams', 0, 'ALIGN: 3 (0: off).')
  flags.DEFINE_integer('max_unigrams', 0, 'ALIGN: 20 (0: off).')
  flags.DEFINE_integer('max_shared_text', 0, 'ALIGN: 10: drop alt-texts of more images (0: off).')
  flags.DEFINE_integer('min_unigram_count', 0, 'Drop texts with a rarer word (0: off).')


def data_config(values: dict):
  """A config.data-shaped ConfigDict from flag values (what sources/filters read)."""
  from vlalign import config_lib  # pylint: disable=g-import-not-at-top
  d = config_lib.base_config().data
  for key in ('image_key', 'text_key', 'id_key', 'tfds_data_dir', 'max_text_bytes') + BOUNDS:
    if key in values:  # the bounds keep config.data's defaults unless given
      d[key] = values[key]
  for key in ('image_column', 'caption_column', 'separator'):
    if 'csv_' + key in values:
      d.csv[key] = values['csv_' + key]
  for key in ('min_image_side', 'max_aspect_ratio', 'min_unigrams', 'max_unigrams',
              'max_shared_text', 'min_unigram_count'):
    d.filters[key] = values[key]
  return d


def plan(specs: list[str], data_cfg, tfds_shards: int) -> list[Unit]:
  """The output shards, in a fixed order."""
  from vlalign.data import sources  # pylint: disable=g-import-not-at-top
  units = []
  for spec in specs:
    kind = sources.kind_of(sources.parse_spec(spec)[0])
    if kind.convert_refusal:
      raise sources.DataError(f'--input={spec}: {kind.convert_refusal}')
    src = sources.resolve(spec, data_cfg)
    for name, sub in kind.convert_inputs(src, tfds_shards):
      units.append(Unit(len(units), spec, kind.name, name, sub))
  return units


def _source(unit: Unit):
  return unit.source


def text_stats(units: list[Unit], data_cfg, path: str):
  """Corpus caption and word counts over every record that passes the record checks (before
  the filters that use them); read from `path` when a previous run wrote it."""
  from vlalign.data import filters, sources  # pylint: disable=g-import-not-at-top
  if os.path.exists(path):
    logging.info('using the text statistics in %s', path)
    return filters.TextStats.load(path)
  d = data_cfg.copy_and_resolve_references()
  d.filters.update(max_shared_text=0, min_unigram_count=0)
  checks = filters.Checks.from_config(d)
  t0 = time.time()

  def texts():
    for i, unit in enumerate(units):
      for _, text, _, reason in sources.records(_source(unit), d, checks):
        if reason == 0:
          yield text.decode('utf-8')
      logging.info('text statistics: %d/%d inputs read (%.0fs)', i + 1, len(units),
                   time.time() - t0)

  stats = filters.TextStats.build(texts())
  stats.save(path + '.tmp')
  os.replace(path + '.tmp', path)
  return stats


_STATE = {}


def _init_worker(data_cfg_json: str, stats_path: str) -> None:
  import ml_collections  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data import filters  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  d = ml_collections.ConfigDict(json.loads(data_cfg_json))
  d.filters.stats_file = stats_path
  _STATE['cfg'] = d
  _STATE['checks'] = filters.Checks.from_config(d)


def _decodes(image: bytes) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.io.decode_image(image, channels=3, expand_animations=False)
    return True
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
    return False


def convert_unit(args: tuple[Unit, int, str]) -> dict:
  """Writes one output shard (atomically) and its .done file; returns its counts."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data import filters, sources  # pylint: disable=g-import-not-at-top
  unit, total, out_dir = args
  name = f'part-{unit.index:05d}-of-{total:05d}'
  done = os.path.join(out_dir, '.done', name + '.json')
  if os.path.exists(done):
    with open(done) as f:
      return {**json.load(f), 'resumed': True}
  crash_on = os.environ.get('VLALIGN_TEST_CRASH_INPUT')  # tests: a worker that dies
  if crash_on and crash_on in unit.input:
    os.kill(os.getpid(), signal.SIGSEGV)
  skipped, written = {}, 0
  final = os.path.join(out_dir, name + '.tfrecord')
  with tf.io.TFRecordWriter(final + '.tmp') as writer:
    for image, text, uid, reason in sources.records(_source(unit), _STATE['cfg'],
                                                    _STATE['checks']):
      if reason == 0 and not _decodes(image):
        reason = filters.CODE['corrupt_image']
      if reason:
        key = filters.REASONS[reason]
        skipped[key] = skipped.get(key, 0) + 1
        continue
      feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
               for k, v in (('image', image), ('text', text), ('id', uid))}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feats))
                   .SerializeToString())
      written += 1
  os.replace(final + '.tmp', final)
  result = {'shard': name, 'input': unit.input,
            'written': written, 'skipped': skipped}
  with open(done + '.tmp', 'w') as f:
    json.dump(result, f)
  os.replace(done + '.tmp', done)
  return result


def convert(specs: list[str], out_dir: str, values: dict, workers: int = 2,
            tfds_shards: int = 16) -> dict:
  """Converts the sources; returns {'written': N, 'skipped': {reason: n}}."""
  data_cfg = data_config(values)
  units = plan(specs, data_cfg, tfds_shards)
  os.makedirs(os.path.join(out_dir, '.done'), exist_ok=True)
  stats_path = ''
  if data_cfg.filters.max_shared_text or data_cfg.filters.min_unigram_count:
    stats_path = os.path.join(out_dir, 'text_stats.json')
    text_stats(units, data_cfg, stats_path)
  t0 = time.time()
  total = {'written': 0, 'skipped': {}}
  jobs = [(u, len(units), out_dir) for u in units]
  init = (data_cfg.to_json(), stats_path)
  if workers > 1:
    results = _pool_results(jobs, workers, init)
  else:
    _init_worker(*init)
    results = map(convert_unit, jobs)
  for i, r in enumerate(results):
    total['written'] += r['written']
    for k, v in r['skipped'].items():
      total['skipped'][k] = total['skipped'].get(k, 0) + v
    rate = (i + 1) / max(time.time() - t0, 1e-9)
    logging.info('[%d/%d] %s%s: %d written, %d skipped | ETA %.0fs', i + 1, len(units),
                 r['shard'], ' (done before)' if r.get('resumed') else '', r['written'],
                 sum(r['skipped'].values()), (len(units) - i - 1) / rate)
  total['skipped'] = dict(sorted(total['skipped'].items()))
  return total


def _worker(init: tuple, tasks, results) -> None:
  """A worker process: converts the units it is handed until it gets None."""
  _init_worker(*init)
  while (job := tasks.get()) is not None:
    try:
      results.put((job[0].index, convert_unit(job), ''))
    except Exception as e:  # pylint: disable=broad-except  (reported by the parent)
      results.put((job[0].index, None, f'{type(e).__name__}: {e}'))


def _crashed(job: tuple, exitcode: int | None) -> dict:
  """The result of a unit whose worker died: reported, its shard counted as worker_crashed
  (no .done file, so a rerun tries it again)."""
  unit, total, _ = job
  how = (f'signal {signal.Signals(-exitcode).name}' if exitcode and exitcode < 0 and
         -exitcode in signal.valid_signals() else f'exit code {exitcode}')
  logging.error('a worker died (%s) converting %s; its shard is counted as worker_crashed '
                'and not written (run the command again to retry it)', how,
                unit.input)
  return {'shard': f'part-{unit.index:05d}-of-{total:05d}', 'written': 0,
          'skipped': {'worker_crashed': 1}}


def _pool_results(jobs: list[tuple], workers: int, init: tuple) -> Iterator[dict]:
  """convert_unit's results from `workers` spawned processes (TensorFlow does not survive
  fork), each handed one unit at a time, so a worker that dies (a crash, the OOM killer) is
  noticed, its unit reported and counted, and a fresh worker takes its place."""
  ctx = multiprocessing.get_context('spawn')
  results, pending, slots = ctx.Queue(), list(reversed(jobs)), {}

  def start(slot: int) -> None:
    if not pending:
      return
    tasks = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(init, tasks, results), daemon=True)
    proc.start()
    slots[slot] = [proc, tasks, None]
    hand_out(slot)

  def hand_out(slot: int) -> None:
    slots[slot][2] = pending.pop() if pending else None
    slots[slot][1].put(slots[slot][2])

  try:
    for slot in range(min(workers, len(jobs))):
      start(slot)
    for _ in jobs:
      yield _next_result(results, slots, start, hand_out)
  finally:
    for proc, _, _ in slots.values():
      if proc.is_alive():
        proc.kill()
      proc.join()


def _next_result(results, slots: dict, start, hand_out) -> dict:
  """Waits for the next finished unit, checking every second for workers that died."""
  while True:
    try:
      index, result, error = results.get(timeout=1.0)
    except queue.Empty:
      for slot, (proc, _, job) in list(slots.items()):
        if job is not None and not proc.is_alive():
          slots[slot][2] = None
          start(slot)  # a fresh worker, if units are left
          return _crashed(job, proc.exitcode)
      continue
    slot = next(s for s, v in slots.items() if v[2] is not None and v[2][0].index == index)
    if error:
      raise RuntimeError(f'converting {slots[slot][2][0].path or index}: {error}')
    hand_out(slot)
    return result


def main(argv) -> None:
  del argv
  if not FLAGS.input or not FLAGS.output:
    raise app.UsageError('--input and --output are required')
  from vlalign.data.spec import DataError  # pylint: disable=g-import-not-at-top
  values = {k: FLAGS[k].value for k in (
      'image_key', 'text_key', 'id_key', 'tfds_data_dir', 'max_text_bytes', 'min_image_side',
      'max_aspect_ratio', 'min_unigrams', 'max_unigrams', 'max_shared_text',
      'min_unigram_count') + BOUNDS}
  try:
    total = convert(FLAGS.input, FLAGS.output, values, FLAGS.workers, FLAGS.tfds_shards)
  except DataError as e:
    raise SystemExit(f'vlalign.tools.convert: {e}') from None
  sys.stdout.write(json.dumps(total) + '\n')
  sys.stdout.flush()


if __name__ == '__main__':
  _define_flags()
  app.run(main)
