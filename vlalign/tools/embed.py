"""Exports image and text embeddings of any source with a workdir's model.

python -m vlalign.tools.embed --workdir=workdirs/demo --output=workdirs/demo/index \
    [--source=embedded:heldout|tfrecord:<glob>|wds:<glob>|tfds:<name>:<split>|embedded[:<name>]] \
    [--max_examples=N] [--checkpoint=STEP] [--dtype=float16] [--config=configs/demo.py]

The model comes from vlalign.inference.load (the workdir's config.json, or --config). Every
usable record of the source (in file order; records the data checks reject are skipped and
counted, images that do not decode too) is one row: <output>/image_emb.npy and text_emb.npy
([N, d], L2-normalised, float16 or float32), <output>/items.jsonl (one {"row", "record", "id",
"text"} per row, in the same order; the embedded held-out split adds "colors", "shapes",
"sizes", "num_objects") and <output>/meta.json (workdir, step, source, dtype, count, dim,
skipped). Load the arrays with np.load(..., allow_pickle=False).
The meta also holds the run fingerprint of the checkpoint's parameters, which tools.search
checks.
"""

import json
from typing import Any
import os
import sys
from typing import Iterator

from absl import app, flags, logging

from vlalign import cli

FLAGS = flags.FLAGS
DTYPES = ('float16', 'float32')
HELDOUT = 'embedded:heldout'
CHUNK = 512  # records decoded and embedded at a time


def _define_flags() -> None:
  cli.define_config_flag(sys.argv, 'Config file (`path.py[:arg]`) instead of the workdir\'s '
                         'config.json; --config.<field>=<value> overrides either.')
  flags.DEFINE_string('workdir', None, 'Workdir (or imported model directory) that embeds.')
  flags.DEFINE_string('output', None, 'Directory for the exported index.')
  flags.DEFINE_string('source', HELDOUT, 'Source spec to embed (default: the embedded held-out '
                      'split).')
  flags.DEFINE_integer('max_examples', 0, 'Embed at most this many rows (0: all).')
  flags.DEFINE_integer('checkpoint', None, 'Step (default: the newest).')
  flags.DEFINE_enum('dtype', 'float32', DTYPES, 'Stored dtype of the embeddings.')


def resolve_source(spec: str, config):
  """The data.sources.Source of a spec; embedded:heldout is the embedded held-out split (the
  embedded kinds generate the embedded dataset on first use, as training does)."""
  from vlalign.data import sources  # pylint: disable=g-import-not-at-top
  if spec != HELDOUT and sources.parse_spec(spec)[0] != 'embedded':
    return sources.resolve(spec, config.data)
  from vlalign.data.embedded import generator  # pylint: disable=g-import-not-at-top
  e = config.data.embedded
  embedded = generator.ensure_dataset(
      os.path.join(config.data.cache_dir, 'embedded'), seed=e.seed,
      train_sizes=dict(e.train_sizes), heldout_size=e.heldout_size,
      noise_fraction=e.noise_fraction, num_shards=e.num_shards, vocab_size=e.vocab_size)
  if spec == HELDOUT:
    return sources.Source(spec, 'tfrecord', files=sources.list_files(embedded['heldout']))
  return sources.resolve(spec, config.data, embedded)


def run_fingerprint(params: Any) -> str:
  """sha256 (hex, 16 digits) of a checkpoint's parameters: names, shapes, dtypes and bytes. An
  index records the one it was exported with; search recomputes it from --workdir."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    arr = np.asarray(jax.device_get(leaf))
    h.update(f'{jax.tree_util.keystr(path)}:{arr.shape}:{arr.dtype};'.encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()[:16]


def pairs(source, config, skipped: dict | None = None) -> Iterator[tuple[int, bytes, str, str]]:
  """(record, image bytes, caption, id) of the usable records in file order; `record` numbers
  them (the same on every pass); rejected records are counted in `skipped` by reason."""
  from vlalign.data import filters, sources  # pylint: disable=g-import-not-at-top
  n = 0
  for image, text, uid, reason in sources.records(source, config.data,
                                                  filters.Checks.from_config(config.data)):
    if reason:
      if skipped is not None:
        key = filters.REASONS[int(reason)]
        skipped[key] = skipped.get(key, 0) + 1
      continue
    yield n, bytes(image), bytes(text).decode('utf-8', 'replace'), bytes(uid).decode(
        'utf-8', 'replace')
    n += 1


def decode_views(images: list[bytes], data_cfg) -> tuple['np.ndarray', list[int]]:
  """(eval views of the images that decode, their positions in `images`)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.evaluate import datasets  # pylint: disable=g-import-not-at-top
  try:
    return datasets.decode_eval(images, data_cfg), list(range(len(images)))
  except tf.errors.InvalidArgumentError:  # one at a time, dropping the ones that fail
    views, kept = [], []
    for i, image in enumerate(images):
      try:
        views.append(datasets.decode_eval([image], data_cfg)[0])
        kept.append(i)
      except tf.errors.InvalidArgumentError:
        pass
    size = data_cfg.image_size
    return (np.stack(views) if views else np.zeros((0, size, size, 3), np.float32)), kept


def _chunks(it, size: int):
  chunk = []
  for row in it:
    chunk.append(row)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def embed_source(model, source, max_examples: int = 0) -> tuple:
  """(image embeddings, text embeddings, items, skipped counts) of a source's usable pairs."""
  import itertools  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  skipped, img, txt, items = {}, [], [], []
  stream = pairs(source, model.config, skipped)
  for chunk in _chunks(itertools.islice(stream, max_examples or None), CHUNK):
    views, kept = decode_views([c[1] for c in chunk], model.config.data)
    skipped['undecodable'] = skipped.get('undecodable', 0) + len(chunk) - len(kept)
    chunk = [chunk[i] for i in kept]
    img.append(model.encode_image(views))
    txt.append(model.encode_text([c[2] for c in chunk]))
    items += [{'row': len(items) + i, 'record': c[0], 'id': c[3], 'text': c[2]}
              for i, c in enumerate(chunk)]
  if not items:
    raise ValueError(f'{source.spec}: no usable examples (skipped: {skipped})')
  if not skipped['undecodable']:
    del skipped['undecodable']
  return np.concatenate(img), np.concatenate(txt), items, skipped


def _heldout_attributes(source, items: list[dict]) -> None:
  """Adds the embedded held-out split's labels (first colour, shape, size; num_objects)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data.embedded import generator  # pylint: disable=g-import-not-at-top
  spec = {k: v for k, v in generator.feature_spec().items()
          if k in ('id', 'colors', 'shapes', 'sizes', 'num_objects')}
  labels = {}
  for record in tf.data.TFRecordDataset(source.files):
    ex = tf.io.parse_single_example(record, spec)
    labels[ex['id'].numpy().decode()] = {
        k: int(tf.concat([tf.sparse.to_dense(ex[k]), [-1]], 0)[0])
        for k in ('colors', 'shapes', 'sizes')} | {'num_objects': int(ex['num_objects'])}
  for item in items:
    item.update(labels[item['id']])


def export(workdir: str, output: str, source: str = HELDOUT, config=None, step=None,
           dtype: str = 'float32', max_examples: int = 0) -> dict:
  """Embeds a source with the workdir's model into `output`; returns meta (count, dim, ...)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vlalign import inference  # pylint: disable=g-import-not-at-top
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be one of {DTYPES}, got {dtype!r}')
  model = inference.load(workdir, step, config)
  src = resolve_source(source, model.config)
  img, txt, items, skipped = embed_source(model, src, max_examples)
  if source == HELDOUT:
    _heldout_attributes(src, items)
  os.makedirs(output, exist_ok=True)
  np.save(os.path.join(output, 'image_emb.npy'), img.astype(dtype), allow_pickle=False)
  np.save(os.path.join(output, 'text_emb.npy'), txt.astype(dtype), allow_pickle=False)
  with open(os.path.join(output, 'items.jsonl'), 'w') as f:
    for item in items:
      f.write(json.dumps(item) + '\n')
  meta = {'workdir': os.path.abspath(workdir), 'step': model.step, 'source': source,
          'dtype': dtype, 'count': len(items), 'dim': int(img.shape[1]), 'skipped': skipped,
          'fingerprint': run_fingerprint(model.variables['params'])}
  with open(os.path.join(output, 'meta.json'), 'w') as f:
    json.dump(meta, f, indent=1)
  return meta


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('workdir', 'output'):
    if FLAGS[name].value is None:
      raise app.UsageError(f'--{name} is required')
  from vlalign import errors  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.tools.embed'):
    try:
      meta = export(FLAGS.workdir, FLAGS.output, FLAGS.source, FLAGS.config, FLAGS.checkpoint,
                    FLAGS.dtype, FLAGS.max_examples)
    except ValueError as e:  # a source with no usable example, a bad --dtype
      raise SystemExit(f'vlalign.tools.embed: {e}') from None
  logging.info('exported %d embeddings (dim %d, %s) of step %d to %s', meta['count'],
               meta['dim'], meta['dtype'], meta['step'], FLAGS.output)
  print(json.dumps(meta))


if __name__ == '__main__':
  _define_flags()
  app.run(main, argv=cli.resolve_config_args(sys.argv), flags_parser=cli.parse_flags)
