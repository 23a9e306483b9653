"""Evaluators on any source (config.evals.datasets): zero-shot classification with a prompt
ensemble (top-1 and top-5), retrieval with several captions per image, and a linear probe on
frozen image features. Each entry is a dict:

  {'name': 'cifar10', 'kind': 'zeroshot', 'source': 'tfds:cifar10:test', 'label_key': 'label'}
  {'name': 'coco', 'kind': 'retrieval', 'source': 'tfds:coco_captions:val',
   'text_key': 'captions/text'}
  {'name': 'shape_probe', 'kind': 'linear_probe', 'source': 'embedded:heldout',
   'label_key': 'shape'}

Standard benchmarks are one entry away: {'name': 'imagenet', 'benchmark': 'imagenet1k'},
'coco5k', 'flickr30k' (presets and result files in evaluate/benchmarks.py).

Common keys: max_examples (0: all), image_key. zeroshot: label_key, classes_file (one class
name per line; default: the TFDS label feature's names), templates_file (one template with {}
per line; default: templates.txt next to this module). linear_probe: label_key, train_fraction
(the first part of the examples trains the probe, the rest tests it), l2, steps. stream (tfds
zero-shot sources): read the images again at each evaluation, a chunk at a time, instead of
holding them in memory (ImageNet's 50,000 validation images). Retrieval from a folder with a
Karpathy split file: source 'karpathy:<dir or .json>', split, image_dir.
Labelled sources: tfds:... (a ClassLabel feature), tfrecord:<glob> (an int64 feature) and
embedded:heldout (label_key color | shape | size, single-object scenes). Retrieval reads any
training source spec; records with identical image bytes are one image with several captions.
"""

import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf

from vlalign.data import filters, image_ops, sources
from vlalign.data.spec import DataError
from vlalign.evaluate import benchmarks
from vlalign.evaluate import metrics as metrics_lib
from vlalign.evaluate import retrieval

KINDS = ('zeroshot', 'retrieval', 'linear_probe')
STREAM_CHUNK = 1024  # images decoded and embedded at a time by streaming entries
DEFAULT_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates.txt')
_ATTRIBUTES = {'color': 'colors', 'shape': 'shapes', 'size': 'sizes'}


def entry_defaults(entry) -> dict:
  """An evals.datasets entry with every key filled in."""
  out = {'name': '', 'kind': '', 'source': '', 'label_key': 'label', 'text_key': 'text',
         'image_key': 'image', 'classes_file': '', 'templates_file': '', 'max_examples': 0,
         'train_fraction': 0.5, 'l2': 1e-4, 'steps': 200, 'benchmark': '', 'dataset': '',
         'stream': False, 'split': 'test', 'image_dir': ''}
  try:
    entry = benchmarks.with_preset(entry)
  except ValueError as e:
    raise DataError(f'config.evals.datasets[{dict(entry).get("name")}]: {e}') from None
  unknown = set(entry) - set(out)
  if unknown:
    raise DataError(f'config.evals.datasets: unknown keys {sorted(unknown)} in {dict(entry)}')
  out.update(dict(entry))
  return out


def _read_lines(path: str, what: str) -> list[str]:
  if not tf.io.gfile.exists(path):
    raise DataError(f'config.evals.datasets: {what} {path} does not exist')
  with tf.io.gfile.GFile(path) as f:
    lines = [line.strip() for line in f if line.strip()]
  if not lines:
    raise DataError(f'config.evals.datasets: {what} {path} is empty')
  return lines


def decode_eval(images: list[bytes], data_cfg) -> np.ndarray:
  """float32 eval views (config.data's resize, crop and pixel stats) of encoded images."""
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(images, tf.string)).map(
      lambda b: image_ops.eval_view(image_ops.decode(b), resize=data_cfg.resize_size,
                                    crop=data_cfg.image_size, **image_ops.pixel_stats(data_cfg)),
      num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  return np.concatenate(list(ds.as_numpy_iterator()))


def _tfds_split(entry: dict, data_cfg) -> tuple[tf.data.Dataset, list[str] | None]:
  """(the entry's TFDS split in file order, images undecoded; the label feature's names)."""
  from vlalign.data.source_kinds import tfds as tfds_kind  # pylint: disable=g-import-not-at-top
  return tfds_kind.labelled_split(entry, data_cfg)


def stream_images(entry: dict, data_cfg, chunk: int):
  """Eval views of a TFDS split's images, `chunk` at a time, in the order of its labels."""
  ds, _ = _tfds_split(entry, data_cfg)
  key = entry['image_key']
  ds = ds.map(lambda ex: image_ops.eval_view(
      image_ops.decode(ex[key]), resize=data_cfg.resize_size, crop=data_cfg.image_size,
      **image_ops.pixel_stats(data_cfg)), num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(chunk).prefetch(1).as_numpy_iterator()


def read_labelled(entry: dict, data_cfg, heldout: dict | None) -> tuple[np.ndarray, np.ndarray,
                                                                         list[str] | None]:
  """(eval-view images, int labels, class names or None) of a labelled source."""
  spec, key, n_max = entry['source'], entry['label_key'], entry['max_examples'] or None
  if spec == 'embedded:heldout':
    if heldout is None or key not in _ATTRIBUTES:
      raise DataError(f'config.evals.datasets[{entry["name"]}]: embedded:heldout labels are '
                      f'{sorted(_ATTRIBUTES)} and need the embedded held-out split')
    single = heldout['num_objects'] == 1
    return (heldout['image'][single][:n_max], heldout[_ATTRIBUTES[key]][single][:n_max],
            None)
  cfg = data_cfg.copy_and_resolve_references()
  cfg.image_key, cfg.text_key = entry['image_key'], entry['text_key']
  src = sources.resolve(spec, cfg)
  images, labels, names = sources.kind_of(src.kind).labelled(src, entry, cfg)
  if not len(labels):
    raise DataError(f'config.evals.datasets[{entry["name"]}]: {spec} has no examples')
  if images is None:  # streamed at each run (stream_images)
    return None, np.asarray(labels, np.int64), names
  return decode_eval(images, data_cfg), np.asarray(labels, np.int64), names


def read_captioned(entry: dict, data_cfg) -> tuple[np.ndarray, list[bytes], np.ndarray]:
  """(images, captions, caption -> image index) of a source, up to max_examples images;
  records whose image bytes are identical are one image."""
  if entry['source'].startswith('karpathy:'):
    return read_karpathy(entry, data_cfg)
  cfg = data_cfg.copy_and_resolve_references()
  cfg.image_key, cfg.text_key = entry['image_key'], entry['text_key']
  src = sources.resolve(entry['source'], cfg)
  index, images, texts, owner = {}, [], [], []
  for image, text, _, reason in sources.records(src, cfg, filters.Checks()):
    if reason:
      continue
    h = hashlib.sha1(image).digest()
    if h not in index:
      if entry['max_examples'] and len(images) == entry['max_examples']:
        continue
      index[h] = len(images)
      images.append(image)
    texts.append(text)
    owner.append(index[h])
  if not images:
    raise DataError(f'config.evals.datasets[{entry["name"]}]: {entry["source"]} has no '
                    f'usable examples')
  return decode_eval(images, data_cfg), texts, np.asarray(owner, np.int32)


def _karpathy_file(entry: dict) -> str:
  """The Karpathy split file a 'karpathy:<dir or .json>' source names."""
  path = entry['source'][len('karpathy:'):]
  if path.endswith('.json'):
    found = [path] if tf.io.gfile.exists(path) else []
  else:
    found = sorted(tf.io.gfile.glob(os.path.join(path, 'dataset_*.json')))
  if len(found) != 1:
    raise DataError(f'config.evals.datasets[{entry["name"]}]: {entry["source"]} needs exactly '
                    f'one Karpathy split file (dataset_<name>.json), found {found}')
  return found[0]


def read_karpathy(entry: dict, data_cfg) -> tuple[np.ndarray, list[bytes], np.ndarray]:
  """(images, captions, caption -> image index) of the entry's split of a Karpathy split file
  ({"images": [{"filename", "split", "sentences": [{"raw"}], "filepath"?}]}), images read from
  <its folder>/<image_dir>/[<filepath>/]<filename>, up to max_examples images."""
  path, where = _karpathy_file(entry), f'config.evals.datasets[{entry["name"]}]'
  with tf.io.gfile.GFile(path) as f:
    try:
      items = json.load(f)['images']
    except (ValueError, KeyError, TypeError) as e:
      raise DataError(f'{where}: {path} is not a Karpathy split file ({e})') from None
  root = os.path.join(os.path.dirname(path), entry['image_dir'])
  images, texts, owner = [], [], []
  for i, item in enumerate(it for it in items if it.get('split') == entry['split']):
    if entry['max_examples'] and i == entry['max_examples']:
      break
    try:
      file = os.path.join(root, item.get('filepath', ''), item['filename'])
      captions = [sent['raw'].encode() for sent in item['sentences']]
    except (KeyError, TypeError) as e:
      raise DataError(f'{where}: {path}: image record {item!r:.200} lacks {e}') from None
    if not tf.io.gfile.exists(file) or not captions:
      raise DataError(f'{where}: {file} is missing or has no captions ({path})')
    with tf.io.gfile.GFile(file, 'rb') as f:
      images.append(f.read())
    texts += captions
    owner += [len(images) - 1] * len(captions)
  if not images:
    raise DataError(f'{where}: {path} has no images in split {entry["split"]!r}')
  return decode_eval(images, data_cfg), texts, np.asarray(owner, np.int32)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, num_classes: int, *, l2: float = 1e-4,
                 steps: int = 200) -> dict[str, float]:
  """Multinomial logistic regression (with bias, L2 on the weights) fit by L-BFGS on frozen
  features; train and test accuracy."""
  x = jnp.asarray(train_x, jnp.float32)
  y = jnp.asarray(train_y, jnp.int32)
  params = {'w': jnp.zeros((x.shape[1], num_classes)), 'b': jnp.zeros((num_classes,))}

  def loss(p):
    logits = x @ p['w'] + p['b']
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2 * jnp.sum(p['w'] ** 2)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def fit(p):
    def step(carry, _):
      p, state = carry
      value, grad = value_and_grad(p, state=state)
      updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
      return (optax.apply_updates(p, updates), state), value
    (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
    return p

  params = fit(params)
  acc = lambda a, b: float((np.argmax(np.asarray(a) @ np.asarray(params['w']) +
                                      np.asarray(params['b']), 1) == b).mean())
  return {'train_acc': acc(train_x, train_y), 'test_acc': acc(test_x, test_y),
          'final_loss': float(loss(params))}


@dataclasses.dataclass
class DatasetEvaluator:
  """One config.evals.datasets entry: its data read once, its embeddings each time it runs."""
  entry: dict
  images: np.ndarray
  labels: np.ndarray | None = None
  class_tokens: np.ndarray | None = None
  num_classes: int = 0
  num_templates: int = 0
  text_tokens: np.ndarray | None = None
  text_image: np.ndarray | None = None
  data_cfg: Any = None  # for entries whose images stream at each run (images None)

  @classmethod
  def build(cls, entry, data_cfg, tokenizer, heldout: dict | None) -> 'DatasetEvaluator':
    entry = entry_defaults(entry)
    t0 = time.time()
    if entry['kind'] == 'retrieval':
      images, texts, owner = read_captioned(entry, data_cfg)
      tokens = np.asarray(tokenizer.tokenize(np.array(texts, dtype=object)))
      ev = cls(entry, images, text_tokens=tokens, text_image=owner)
    elif entry['kind'] in ('zeroshot', 'linear_probe'):
      images, labels, names = read_labelled(entry, data_cfg, heldout)
      ev = cls(entry, images, labels=labels, data_cfg=data_cfg)
      if entry['kind'] == 'zeroshot':
        names = (_read_lines(entry['classes_file'], 'classes_file') if entry['classes_file']
                 else names)
        templates = None
        if entry['source'] == 'embedded:heldout':  # the attribute's own names and prompts
          from vlalign.data.embedded import generator  # pylint: disable=g-import-not-at-top
          prompts = generator.load_prompts()[entry['label_key']]
          names = names or prompts['classes']
          templates = None if entry['templates_file'] else prompts['templates']
        if not names:
          raise DataError(f'config.evals.datasets[{entry["name"]}]: no class names (set '
                          f'classes_file)')
        templates = templates or _read_lines(entry['templates_file'] or DEFAULT_TEMPLATES,
                                             'templates_file')
        prompts = [t.format(c.replace('_', ' ')) for c in names for t in templates]
        ev.class_tokens = np.asarray(tokenizer.tokenize(np.array(prompts, dtype=object)))
        ev.num_classes, ev.num_templates = len(names), len(templates)
      else:
        ev.num_classes = int(labels.max()) + 1
    else:
      raise DataError(f'config.evals.datasets: kind {entry["kind"]!r} is not one of '
                      f'{list(KINDS)}')
    logging.info('eval dataset %s (%s, %s): %d images, read in %.1fs', entry['name'],
                 entry['kind'], entry['source'], len(ev.labels if ev.images is None else ev.images),
                 time.time() - t0)
    return ev

  def _image_embeddings(self, embed_images) -> np.ndarray:
    if self.images is not None:
      return embed_images(self.images)
    chunks = [embed_images(c) for c in stream_images(self.entry, self.data_cfg, STREAM_CHUNK)]
    img = np.concatenate(chunks)
    if len(img) != len(self.labels):
      raise DataError(f'config.evals.datasets[{self.entry["name"]}]: {self.entry["source"]} '
                      f'gave {len(img)} images for {len(self.labels)} labels')
    return img

  def run(self, embed_images, embed_texts) -> dict[str, float]:
    """Metrics eval/<name>/...; embed_* map arrays to normalised embeddings."""
    e, prefix = self.entry, f'eval/{self.entry["name"]}/'
    img = self._image_embeddings(embed_images)
    if e['kind'] == 'retrieval':
      txt = embed_texts(self.text_tokens)
      res = retrieval.retrieval_metrics_multi(img, txt, self.text_image)
    elif e['kind'] == 'zeroshot':
      emb = embed_texts(self.class_tokens)
      cls = metrics_lib.class_embeddings(emb.reshape(self.num_classes, self.num_templates, -1))
      res = {'top1': metrics_lib.topk_accuracy(img, cls, self.labels, 1),
             'mean_per_class_recall': metrics_lib.mean_per_class_recall(img, cls, self.labels)}
      if self.num_classes > 5:
        res['top5'] = metrics_lib.topk_accuracy(img, cls, self.labels, 5)
    else:
      n = int(len(img) * e['train_fraction'])
      if not 0 < n < len(img):
        raise DataError(f'config.evals.datasets[{e["name"]}]: train_fraction '
                        f'{e["train_fraction"]} leaves no train or test examples')
      res = linear_probe(img[:n], self.labels[:n], img[n:], self.labels[n:],
                         self.num_classes, l2=e['l2'], steps=e['steps'])
    return {prefix + k: v for k, v in res.items()}


def build_all(config, tokenizer, heldout: dict | None) -> list[DatasetEvaluator]:
  return [DatasetEvaluator.build(e, config.data, tokenizer, heldout)
          for e in config.evals.datasets]


def run_all(evaluators: list[DatasetEvaluator], embed_images, embed_texts) -> dict[str, Any]:
  out = {}
  for ev in evaluators:
    out.update(ev.run(embed_images, embed_texts))
  return out

