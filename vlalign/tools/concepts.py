"""Builds ViCHA's visual concepts: a concept vocabulary from the training captions, ranked per
training image by a trained vlalign checkpoint (the teacher), the top ones stored per example id.

python -m vlalign.tools.concepts --config=configs/demo.py --workdir=workdirs/demo \
    --output=concepts.jsonl [--top=15] [--min_count=5] [--max_concepts=1000] \
    [--save_embeddings]

The config is the teacher's (its model, tokenizer and checkpoint in --workdir); its
config.data.sources are the training data whose examples get concepts (override them with
--config.data.sources=... when the student trains on other data). Train with
config.method.concepts_file=<output>.

Vocabulary (no NLP model can be downloaded here, so no POS tagger): the lower-cased alphabetic
words of the captions that are not closed-class English words (CLOSED_CLASS: determiners,
pronouns, prepositions, conjunctions, auxiliaries, numerals, quantifiers, common adverbs), at
least 3 letters long, that occur in at least --min_count captions; the --max_concepts most
frequent (ties by spelling). This keeps nouns, and also content adjectives and verbs (on the
embedded data: shapes, colours, sizes, positions, styles) that a POS filter would drop.
Ranking: cosine of the teacher's normalised image embedding (eval view) with the teacher's text
embedding of each concept word (tokenized with the teacher's tokenizer); the --top highest,
ties by vocabulary order. Output: JSON lines {"id", "concepts", "scores"} (data/concepts.py);
--save_embeddings also writes <output>.npz (ids, vocab, image_emb, concept_emb).
"""

import collections
import json
import os
import re

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS

CLOSED_CLASS = frozenset('''
a an the this that these those some any each every either neither no all both half several
many much more most few fewer less least other another such what which whose whatever
i me my mine you your yours he him his she her hers it its we us our ours they them their
theirs myself yourself himself herself itself ourselves themselves who whom someone something
anyone anything everyone everything nobody nothing one ones
in on at by for with about against between into through during before after above below to
from up down out off over under again further near onto upon within without along across
behind beside besides beyond inside outside toward towards around among amongst via per than
as like of
and or but nor so yet if because while although though unless until whereas whether then
be is am are was were been being have has had having do does did doing will would shall
should can could may might must ought get gets got
zero two three four five six seven eight nine ten first second third
very too also just only not there here where when why how now still even ever never always
often quite rather almost again once
'''.split())


def _define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Teacher config (`path.py` or `path.py:arg`).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The teacher\'s training workdir (its checkpoint ranks).')
  flags.DEFINE_string('output', None, 'The concepts file to write (JSON lines).')
  flags.DEFINE_integer('checkpoint', None, 'Teacher step (default: the newest).')
  flags.DEFINE_integer('top', 15, 'Concepts kept per image.')
  flags.DEFINE_integer('min_count', 5, 'Captions a word must occur in to be a concept.')
  flags.DEFINE_integer('max_concepts', 1000, 'Largest vocabulary (most frequent first).')
  flags.DEFINE_integer('batch', 256, 'Images embedded per call.')
  flags.DEFINE_bool('save_embeddings', False, 'Also write <output>.npz with the embeddings.')


def concept_vocabulary(texts, min_count: int = 5, max_concepts: int = 1000) -> list[str]:
  """Content words of the captions (see the module docstring), most frequent first."""
  counts = collections.Counter()
  for text in texts:
    text = text.decode('utf-8', 'replace') if isinstance(text, bytes) else text
    words = set(re.findall(r'[a-z]+', text.lower()))
    counts.update(w for w in words if len(w) >= 3 and w not in CLOSED_CLASS)
  ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
  return ranked[:max_concepts]


def rank(image_emb: np.ndarray, concept_emb: np.ndarray, top: int,
         chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """(indices [N, top], scores [N, top]): each image's `top` concepts by dot product (cosine of
  unit rows), best first, ties to the lower concept index."""
  if concept_emb.shape[0] < top:
    raise ValueError(f'the concept vocabulary has {concept_emb.shape[0]} words, fewer than '
                     f'--top={top}; lower --min_count or --top')
  idx, scores = [], []
  for start in range(0, len(image_emb), chunk):
    sims = image_emb[start:start + chunk].astype(np.float32) @ concept_emb.astype(np.float32).T
    order = np.argsort(-sims, axis=1, kind='stable')[:, :top]
    idx.append(order)
    scores.append(np.take_along_axis(sims, order, axis=1))
  return np.concatenate(idx), np.concatenate(scores)


def _training_images(config, sources, tokenizer_free_batch: int):
  """Yields (ids, texts, images) batches of every kept training record (eval view), once."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data import filters, image_ops, pipeline  # pylint: disable=g-import-not-at-top
  d = config.data
  checks = filters.Checks.from_config(d)

  def prepare(index, record):
    del index
    image, text, uid, _ = record
    img = image_ops.eval_view(image_ops.decode(image), resize=d.resize_size, crop=d.image_size,
                               **image_ops.pixel_stats(d))
    return {'id': uid, 'text': text, 'image': img}

  for s, src in enumerate(sources):
    ds = pipeline.record_stream(src, d, checks, seed=pipeline.source_seed(config.seed, s),
                                epochs=1)
    ds = ds.filter(lambda i, r: tf.equal(r[3], 0)).map(prepare).ignore_errors()
    for b in ds.batch(tokenizer_free_batch).as_numpy_iterator():
      yield b['id'], b['text'], b['image']


def build(config, workdir: str, output: str, *, step=None, top: int = 15, min_count: int = 5,
          max_concepts: int = 1000, batch: int = 256, save_embeddings: bool = False) -> dict:
  """Writes the concepts file (module docstring); returns a summary."""
  import jax  # pylint: disable=g-import-not-at-top
  from vlalign import train  # pylint: disable=g-import-not-at-top
  from vlalign.evaluate.heldout import batched_apply  # pylint: disable=g-import-not-at-top
  r = train.restore_for_inference(config, workdir, step)
  model, tokenizer = r['model'], r['tokenizer']
  variables = jax.device_get({'params': r['params'], **(r['model_state'] or {})})
  encode_image = jax.jit(lambda x: model.apply(variables, x, method='encode_image'))
  encode_text = jax.jit(lambda t: model.apply(variables, t, method='encode_text'))
  logging.info('teacher: %s at step %d', workdir, r['step'])
  ids, texts, embs, seen = [], [], [], set()
  for uid, text, images in _training_images(config, r['paths']['sources'], batch):
    emb = batched_apply(encode_image, images, batch)
    for i, u in enumerate(uid):
      if u in seen:  # the same id twice (repeated records): keep the first
        continue
      seen.add(u)
      ids.append(u.decode())
      texts.append(text[i])
      embs.append(emb[i])
    logging.info('embedded %d training images', len(ids))
  if not ids:
    raise ValueError('config.data.sources: no training records to rank')
  vocab = concept_vocabulary(texts, min_count, max_concepts)
  logging.info('concept vocabulary: %d words (min_count %d), most frequent %s', len(vocab),
               min_count, vocab[:10])
  tokens = np.asarray(tokenizer.tokenize(np.array(vocab, dtype=object)))
  concept_emb = batched_apply(encode_text, tokens, batch)
  image_emb = np.stack(embs)
  idx, scores = rank(image_emb, concept_emb, top)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  tmp = output + '.tmp'
  with open(tmp, 'w') as f:
    for i, uid in enumerate(ids):
      f.write(json.dumps({'id': uid, 'concepts': [vocab[j] for j in idx[i]],
                          'scores': [round(float(s), 6) for s in scores[i]]}) + '\n')
  os.replace(tmp, output)
  if save_embeddings:
    np.savez(output + '.npz', ids=np.array(ids), vocab=np.array(vocab), image_emb=image_emb,
             concept_emb=concept_emb)
  summary = {'output': output, 'examples': len(ids), 'vocab': len(vocab), 'top': top,
             'teacher': os.path.abspath(workdir), 'step': r['step']}
  logging.info('wrote %s', summary)
  return summary


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('config', 'workdir', 'output'):
    if FLAGS[name].value is None:
      raise app.UsageError(f'--{name} is required')
  from vlalign import errors  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.tools.concepts'):
    summary = build(FLAGS.config, os.path.abspath(FLAGS.workdir), FLAGS.output,
                    step=FLAGS.checkpoint, top=FLAGS.top, min_count=FLAGS.min_count,
                    max_concepts=FLAGS.max_concepts, batch=FLAGS.batch,
                    save_embeddings=FLAGS.save_embeddings)
  print(json.dumps(summary))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
