"""Builds ViCHA's visual concepts: a concept vocabulary from the training captions, ranked per
training image by a teacher model, the top ones stored per example id.

python -m vlalign.tools.concepts --workdir=TEACHER --output=concepts.jsonl \
    [--config=configs/vicha_vit_b16.py] [--checkpoint=STEP] [--top=15] [--min_count=5] \
    [--max_concepts=1000] [--save_embeddings]

The teacher is any model vlalign.inference.load reads: a trained workdir or one written by
python -m vlalign.tools.import_weights, e.g. an OpenCLIP ViT-B/16 as ViCHA uses CLIP:
  python -m vlalign.tools.import_weights --format=openclip \
      --checkpoint=ViT-B-16/open_clip_model.safetensors --output=workdirs/clip_b16
  python -m vlalign.tools.concepts --workdir=workdirs/clip_b16 \
      --config=configs/vicha_vit_b16.py --config.data.sources=... --output=concepts.jsonl
Its model, tokenizer (the concept words are tokenized with the teacher's own: CLIP's BPE for an
OpenCLIP import) and image view (size, resize, pixel mean / std) come from <workdir>/config.json.
--config (default: the teacher's config) names the training data whose examples get concepts:
its config.data.sources (and data settings: cache_dir, filters). Train with
config.method.vicha.concepts_file=<output>.

Vocabulary (no NLP model can be downloaded here, so no POS tagger): the lower-cased alphabetic
words of the captions that are not closed-class English words (CLOSED_CLASS: determiners,
pronouns, prepositions, conjunctions, auxiliaries, numerals, quantifiers, common adverbs), at
least 3 letters long, that occur in at least --min_count captions; the --max_concepts most
frequent (ties by spelling). This keeps nouns, and also content adjectives and verbs (on the
embedded data: shapes, colours, sizes, positions, styles) that a POS filter would drop.
Ranking: cosine of the teacher's normalised image embedding (its eval view) with its text
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
  config_flags.DEFINE_config_file('config', None, 'Config of the training data whose examples '
                                  'get concepts (default: the teacher\'s).', lock_config=True)
  flags.DEFINE_string('workdir', None, 'The teacher: a trained or imported workdir '
                      '(vlalign.inference.load).')
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


def _training_images(config, view, sources, batch: int):
  """Yields (ids, texts, images) batches of every kept training record of `config`'s data,
  once, as the teacher's eval view (`view`: its config.data)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data import filters, image_ops, pipeline  # pylint: disable=g-import-not-at-top
  d = config.data
  checks = filters.Checks.from_config(d)

  def prepare(index, record):
    del index
    image, text, uid, _ = record
    img = image_ops.eval_view(image_ops.decode(image), resize=view.resize_size,
                              crop=view.image_size, **image_ops.pixel_stats(view))
    return {'id': uid, 'text': text, 'image': img}

  for s, src in enumerate(sources):
    ds = pipeline.record_stream(src, d, checks, seed=pipeline.source_seed(config.seed, s),
                                epochs=1)
    ds = ds.filter(lambda i, r: tf.equal(r[3], 0)).map(prepare).ignore_errors()
    for b in ds.batch(batch).as_numpy_iterator():
      yield b['id'], b['text'], b['image']


def embed_training_images(teacher, config, batch: int):
  """(ids, captions, unit image embeddings [N, d]) of `config`'s training records, each id once
  (the first record of a repeated id)."""
  from vlalign import train  # pylint: disable=g-import-not-at-top
  sources = train.prepare_data(config)['sources']
  ids, texts, embs, seen = [], [], [], set()
  for uid, text, images in _training_images(config, teacher.config.data, sources, batch):
    emb = teacher.encode_image(images)
    for i, u in enumerate(uid):
      if u not in seen:
        seen.add(u)
        ids.append(u.decode())
        texts.append(text[i])
        embs.append(emb[i])
    logging.info('embedded %d training images', len(ids))
  if not ids:
    raise ValueError('config.data.sources: no training records to rank')
  return ids, texts, np.stack(embs)


def _write(output: str, ids, vocab, idx, scores) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  tmp = output + '.tmp'
  with open(tmp, 'w') as f:
    for i, uid in enumerate(ids):
      f.write(json.dumps({'id': uid, 'concepts': [vocab[j] for j in idx[i]],
                          'scores': [round(float(s), 6) for s in scores[i]]}) + '\n')
  os.replace(tmp, output)


def build(config, workdir: str, output: str, *, step=None, top: int = 15, min_count: int = 5,
          max_concepts: int = 1000, batch: int = 256, save_embeddings: bool = False) -> dict:
  """Writes the concepts file (module docstring) ranked by the model in `workdir`, for the
  training data of `config` (None: the teacher's config); returns a summary."""
  from vlalign import inference  # pylint: disable=g-import-not-at-top
  teacher = inference.load(workdir, step=step, batch_size=batch)
  logging.info('teacher: %s at step %d, %s tokenizer', workdir, teacher.step,
               teacher.config.data.tokenizer.kind)
  ids, texts, image_emb = embed_training_images(teacher, config or teacher.config, batch)
  vocab = concept_vocabulary(texts, min_count, max_concepts)
  logging.info('concept vocabulary: %d words (min_count %d), most frequent %s', len(vocab),
               min_count, vocab[:10])
  concept_emb = teacher.encode_text(vocab)
  idx, scores = rank(image_emb, concept_emb, top)
  _write(output, ids, vocab, idx, scores)
  if save_embeddings:
    np.savez(output + '.npz', ids=np.array(ids), vocab=np.array(vocab), image_emb=image_emb,
             concept_emb=concept_emb)
  summary = {'output': output, 'examples': len(ids), 'vocab': len(vocab), 'top': top,
             'teacher': os.path.abspath(workdir), 'step': teacher.step}
  logging.info('wrote %s', summary)
  return summary


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('workdir', 'output'):
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
