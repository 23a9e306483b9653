"""Searches an exported index (vlalign.tools.embed) with a text, an image, or both.

python -m vlalign.tools.search --config=configs/demo.py --workdir=workdirs/demo \
    --index=workdirs/demo/index --text="a red circle" [--image=PATH|row:N] [--text_weight=1.0] \
    [--k=5] [--output=hits.png]

The query embedding is the model's normalised text embedding, image embedding, or for both
ALIGN's combination normalise(e_image + text_weight * e_text); hits are the images of highest
cosine similarity (exact search over the whole index). Prints one JSON line per hit and writes a
PNG contact sheet with each hit's image, caption and score.
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Config file (`path.py` or `path.py:arg`).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Training workdir (its checkpoint embeds the query).')
  flags.DEFINE_string('index', None, 'Directory written by vlalign.tools.embed.')
  flags.DEFINE_string('text', None, 'Text query.')
  flags.DEFINE_string('image', None, 'Image query: a PNG/JPEG path, or row:N for an indexed image.')
  flags.DEFINE_float('text_weight', 1.0, 'Weight of the text in an image+text query.')
  flags.DEFINE_integer('k', 5, 'Number of hits.')
  flags.DEFINE_string('output', None, 'Contact sheet PNG (default: <index>/search.png).')


def load_index(index: str) -> tuple:
  """(image embeddings float32 [N, d], items list, meta dict); never unpickles."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  img = np.load(os.path.join(index, 'image_emb.npy'), allow_pickle=False).astype(np.float32)
  with open(os.path.join(index, 'items.jsonl')) as f:
    items = [json.loads(line) for line in f]
  with open(os.path.join(index, 'meta.json')) as f:
    meta = json.load(f)
  if len(items) != len(img):
    raise ValueError(f'{index}: {len(img)} embeddings but {len(items)} items')
  return img, items, meta


class IndexMismatchError(ValueError):
  """The index was exported from another run (or checkpoint) than the one that embeds queries."""


def check_same_run(index: str, meta: dict, params, workdir: str) -> None:
  """IndexMismatchError (one line) unless the index's recorded run fingerprint equals that of
  the checkpoint restored from `workdir` at the index's step."""
  from vlalign.tools.embed import run_fingerprint  # pylint: disable=g-import-not-at-top
  want = meta.get('fingerprint')
  if not want:
    raise IndexMismatchError(f'{index}/meta.json records no run fingerprint (exported by an '
                             f'older vlalign): re-export it with python -m vlalign.tools.embed')
  got = run_fingerprint(params)
  if got != want:
    raise IndexMismatchError(
        f'{index} was exported from another run or checkpoint (fingerprint {want}, from '
        f'{meta.get("workdir")} step {meta.get("step")}) than --workdir={workdir} step '
        f'{meta.get("step")} (fingerprint {got}); re-export it with python -m '
        f'vlalign.tools.embed, or pass the workdir it came from')


def top_k(index_emb, query, k: int):
  """(rows, scores) of the k highest cosine similarities, best first (ties: lower row first)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  scores = index_emb @ query
  order = np.lexsort((np.arange(len(scores)), -scores))[:k]
  return order, scores[order]


def contact_sheet(path: str, title: str, images, captions, scores) -> None:
  """A PNG with the query on top and one tile (image, score, caption) per hit."""
  import textwrap  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  tile, text_h, pad = 160, 70, 8
  sheet = Image.new('RGB', (pad + len(images) * (tile + pad), 40 + tile + text_h), 'white')
  draw = ImageDraw.Draw(sheet)
  draw.text((pad, 10), title[:150], fill='black')
  for i, (img, cap, score) in enumerate(zip(images, captions, scores)):
    pixels = np.clip((np.asarray(img) + 1.0) * 127.5, 0, 255).astype(np.uint8)
    x = pad + i * (tile + pad)
    sheet.paste(Image.fromarray(pixels).resize((tile, tile), Image.NEAREST), (x, 40))
    lines = [f'#{i + 1}  {score:.3f}'] + textwrap.wrap(cap, 26)[:4]
    draw.multiline_text((x, 44 + tile), '\n'.join(lines), fill='black', spacing=2)
  sheet.save(path)


def search(config, workdir: str, index: str, text=None, image=None, text_weight: float = 1.0,
           k: int = 5, output=None) -> list[dict]:
  """Runs one query; returns the hits (row, id, text, score, ...) and writes the contact sheet."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data import image_ops  # pylint: disable=g-import-not-at-top
  from vlalign.tools.embed import load_heldout  # pylint: disable=g-import-not-at-top
  if not text and not image:
    raise ValueError('give --text, --image or both')
  index_emb, items, meta = load_index(index)
  r, evaluator, variables = load_heldout(config, workdir, meta['step'])
  check_same_run(index, meta, r['params'], workdir)
  model, data = r['model'], evaluator.data
  if len(data['image']) != len(items):
    raise ValueError(f'{index} has {len(items)} rows but the held-out split has '
                     f'{len(data["image"])}: re-export it with this config')
  query, parts = 0.0, []
  if image:
    if image.startswith('row:'):
      pixels = data['image'][int(image[4:])]
    else:
      with open(image, 'rb') as f:
        raw = tf.constant(f.read())
      pixels = image_ops.eval_view(image_ops.decode(raw), resize=config.data.resize_size,
                                   crop=config.data.image_size,
                                   **image_ops.pixel_stats(config.data)).numpy()
    e = model.apply(variables, jax.numpy.asarray(pixels[None]), method='encode_image')
    query = query + np.asarray(e[0], np.float32)
    parts.append(f'image {image}')
  if text:
    tokens = np.asarray(r['tokenizer'].tokenize(np.array([text], dtype=object)))
    e = model.apply(variables, jax.numpy.asarray(tokens), method='encode_text')
    query = query + (text_weight if image else 1.0) * np.asarray(e[0], np.float32)
    parts.append(f'text "{text}"' + (f' (weight {text_weight})' if image else ''))
  query = query / np.linalg.norm(query)
  rows, scores = top_k(index_emb, query, k)
  hits = [{**items[row], 'score': float(s)} for row, s in zip(rows, scores)]
  output = output or os.path.join(index, 'search.png')
  contact_sheet(output, ' + '.join(parts) + f'   (step {meta["step"]}, {len(items)} images)',
                [data['image'][row] for row in rows], [h['text'] for h in hits],
                [h['score'] for h in hits])
  logging.info('wrote %s', output)
  return hits


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('config', 'workdir', 'index'):
    if FLAGS[name].value is None:
      raise app.UsageError(f'--{name} is required')
  from vlalign import errors  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.tools.search'):
    try:
      hits = search(FLAGS.config, os.path.abspath(FLAGS.workdir), FLAGS.index, FLAGS.text,
                    FLAGS.image, FLAGS.text_weight, FLAGS.k, FLAGS.output)
    except (IndexMismatchError, ValueError) as e:  # bad index files or query
      raise SystemExit(f'vlalign.tools.search: {e}') from None
  for h in hits:
    print(json.dumps(h))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
