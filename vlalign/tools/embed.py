"""Exports image and text embeddings of the held-out split with a workdir's checkpoint.

python -m vlalign.tools.embed --config=configs/demo.py --workdir=workdirs/demo \
    --output=workdirs/demo/index [--checkpoint=STEP] [--dtype=float16]

Writes <output>/image_emb.npy and text_emb.npy ([N, d], L2-normalised, float16 or float32),
and <output>/items.jsonl (one {"row", "id", "text", "colors", "shapes", "sizes",
"num_objects"} per row, in the same order), plus <output>/meta.json (workdir, step, dtype, and
the run fingerprint of the checkpoint's parameters that tools.search checks). Load the arrays with np.load(..., allow_pickle=False).
"""

import json
import os
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
DTYPES = ('float16', 'float32')


def _define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Config file (`path.py` or `path.py:arg`).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Training workdir whose checkpoint embeds.')
  flags.DEFINE_string('output', None, 'Directory for the exported index.')
  flags.DEFINE_integer('checkpoint', None, 'Step (default: the newest).')
  flags.DEFINE_enum('dtype', 'float32', DTYPES, 'Stored dtype of the embeddings.')


def load_heldout(config, workdir: str, step=None) -> tuple[dict, Any, dict]:
  """(restored checkpoint as train.restore_for_inference gives it, a HeldoutEvaluator whose
  `.data` holds the held-out split, the model variables)."""
  from vlalign import train  # pylint: disable=g-import-not-at-top
  from vlalign.evaluate.heldout import HeldoutEvaluator  # pylint: disable=g-import-not-at-top
  r = train.restore_for_inference(config, workdir, step)
  evaluator = HeldoutEvaluator(config, r['model'], r['tokenizer'], r['paths']['heldout'],
                               with_datasets=False)
  return r, evaluator, evaluator.variables(r['params'], r['model_state'])


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


def export(config, workdir: str, output: str, step=None, dtype: str = 'float32') -> dict:
  """Embeds the held-out split; returns meta (with `count` and `dim`)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be one of {DTYPES}, got {dtype!r}')
  r, evaluator, variables = load_heldout(config, workdir, step)
  data = evaluator.data
  img, txt = evaluator.embed(variables)
  os.makedirs(output, exist_ok=True)
  np.save(os.path.join(output, 'image_emb.npy'), img.astype(dtype), allow_pickle=False)
  np.save(os.path.join(output, 'text_emb.npy'), txt.astype(dtype), allow_pickle=False)
  with open(os.path.join(output, 'items.jsonl'), 'w') as f:
    for i in range(len(img)):
      f.write(json.dumps({'row': i, 'id': data['id'][i].decode(), 'text': data['text'][i].decode(),
                          'colors': int(data['colors'][i]), 'shapes': int(data['shapes'][i]),
                          'sizes': int(data['sizes'][i]),
                          'num_objects': int(data['num_objects'][i])}) + '\n')
  meta = {'workdir': os.path.abspath(workdir), 'step': r['step'], 'dtype': dtype,
          'count': int(len(img)), 'dim': int(img.shape[1]), 'split': 'heldout',
          'fingerprint': run_fingerprint(r['params'])}
  with open(os.path.join(output, 'meta.json'), 'w') as f:
    json.dump(meta, f, indent=1)
  return meta


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('config', 'workdir', 'output'):
    if FLAGS[name].value is None:
      raise app.UsageError(f'--{name} is required')
  from vlalign import errors  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.tools.embed'):
    meta = export(FLAGS.config, os.path.abspath(FLAGS.workdir), FLAGS.output, FLAGS.checkpoint,
                  FLAGS.dtype)
  logging.info('exported %d embeddings (dim %d, %s) of step %d to %s', meta['count'],
               meta['dim'], meta['dtype'], meta['step'], FLAGS.output)
  print(json.dumps(meta))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
