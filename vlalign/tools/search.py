"""Searches an exported index (vlalign.tools.embed) with a text, an image, or both.

python -m vlalign.tools.search --index=workdirs/demo/index --text="a red circle" \
    [--image=PATH|row:N] [--text_weight=1.0] [--k=5] [--output=hits.png] \
    [--workdir=DIR] [--config=configs/demo.py]

The model is the index's (meta.json names its workdir and step; --workdir / --config override).
The query embedding is the model's normalised text embedding, image embedding, or for both
ALIGN's combination normalise(e_image + text_weight * e_text); hits are the images of highest
cosine similarity (exact search over the whole index). Prints one JSON line per hit and writes a
PNG contact sheet with each hit's image (read again from the index's source), caption and score.
"""

import json
import os
import sys

from absl import app, flags, logging

from vlalign import cli

FLAGS = flags.FLAGS


def _define_flags() -> None:
  cli.define_config_flag(sys.argv, 'Config file (`path.py[:arg]`) instead of the workdir\'s '
                         'config.json; --config.<field>=<value> overrides either.')
  flags.DEFINE_string('workdir', None, 'Workdir whose model embeds the query (default: the '
                      "index's).")
  flags.DEFINE_string('index', None, 'Directory written by vlalign.tools.embed.')
  flags.DEFINE_string('text', None, 'Text query.')
  flags.DEFINE_string('image', None, 'Image query: an image file, or row:N for an indexed image.')
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
  """A PNG with the query on top and one tile (uint8 image, score, caption) per hit."""
  import textwrap  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  tile, text_h, pad = 160, 70, 8
  sheet = Image.new('RGB', (pad + len(images) * (tile + pad), 40 + tile + text_h), 'white')
  draw = ImageDraw.Draw(sheet)
  draw.text((pad, 10), title[:150], fill='black')
  for i, (img, cap, score) in enumerate(zip(images, captions, scores)):
    pixels = np.asarray(img, np.uint8)
    x = pad + i * (tile + pad)
    sheet.paste(Image.fromarray(pixels).resize((tile, tile), Image.NEAREST), (x, 40))
    lines = [f'#{i + 1}  {score:.3f}'] + textwrap.wrap(cap, 26)[:4]
    draw.multiline_text((x, 44 + tile), '\n'.join(lines), fill='black', spacing=2)
  sheet.save(path)


def to_pixels(views, data_cfg):
  """uint8 pixels of eval views: the inverse of the config's pixel normalisation."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  mean = np.asarray(data_cfg.pixel_mean, np.float32)
  std = np.asarray(data_cfg.pixel_std, np.float32)
  return np.clip(np.rint(np.asarray(views) * std + mean), 0, 255).astype(np.uint8)


def fetch_views(config, source_spec: str, records: list[int]) -> dict:
  """{record: eval view} of the index's source records (one pass, up to the largest)."""
  from vlalign.tools import embed  # pylint: disable=g-import-not-at-top
  wanted, found = set(records), {}
  for n, image, _, _ in embed.pairs(embed.resolve_source(source_spec, config), config):
    if n in wanted:
      found[n] = embed.decode_views([image], config.data)[0][0]
      if len(found) == len(wanted):
        break
  return found


def _query(model, meta, items, text, image, text_weight) -> tuple:
  """(normalised query embedding, description)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  query, parts = 0.0, []
  if image:
    if image.startswith('row:'):
      row = int(image[4:])
      if not 0 <= row < len(items):
        raise ValueError(f'--image={image}: the index has rows 0..{len(items) - 1}')
      record = items[row].get('record', row)
      views = np.stack([fetch_views(model.config, meta['source'], [record])[record]])
    else:
      views = model.preprocess([image])
    query = query + model.encode_image(views)[0]
    parts.append(f'image {image}')
  if text:
    query = query + (text_weight if image else 1.0) * model.encode_text([text])[0]
    parts.append(f'text "{text}"' + (f' (weight {text_weight})' if image else ''))
  return query / np.linalg.norm(query), ' + '.join(parts)


def search(index: str, text=None, image=None, text_weight: float = 1.0, k: int = 5,
           output=None, workdir=None, config=None) -> list[dict]:
  """Runs one query; returns the hits (row, id, text, score, ...) and writes the contact sheet."""
  from vlalign import inference  # pylint: disable=g-import-not-at-top
  if not text and not image:
    raise ValueError('give --text, --image or both')
  index_emb, items, meta = load_index(index)
  workdir = workdir or meta['workdir']
  model = inference.load(workdir, meta['step'], config)
  check_same_run(index, meta, model.variables['params'], workdir)
  if model.config.model.embed_dim != index_emb.shape[1]:
    raise ValueError(f'{index} holds {index_emb.shape[1]}-d embeddings; the model makes '
                     f'{model.config.model.embed_dim}-d ones: re-export it with this model')
  query, title = _query(model, meta, items, text, image, text_weight)
  rows, scores = top_k(index_emb, query, k)
  hits = [{**items[row], 'score': float(s)} for row, s in zip(rows, scores)]
  records = [items[row].get('record', int(row)) for row in rows]
  views = fetch_views(model.config, meta.get('source', 'embedded:heldout'), records)
  output = output or os.path.join(index, 'search.png')
  contact_sheet(output, title + f'   (step {meta["step"]}, {len(items)} images)',
                [to_pixels(views[r], model.config.data) for r in records],
                [h['text'] for h in hits], [h['score'] for h in hits])
  logging.info('wrote %s', output)
  return hits


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.index is None:
    raise app.UsageError('--index is required')
  from vlalign import errors  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.tools.search'):
    try:
      hits = search(FLAGS.index, FLAGS.text, FLAGS.image, FLAGS.text_weight, FLAGS.k,
                    FLAGS.output, FLAGS.workdir, FLAGS.config)
    except (IndexMismatchError, ValueError) as e:  # bad index files or query
      raise SystemExit(f'vlalign.tools.search: {e}') from None
  for h in hits:
    print(json.dumps(h))


if __name__ == '__main__':
  _define_flags()
  app.run(main, argv=cli.resolve_config_args(sys.argv), flags_parser=cli.parse_flags)
