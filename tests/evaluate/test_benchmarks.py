"""Standard benchmarks one config.evals entry away: ImageNet-1k zero-shot (1,000 class names, 80
CLIP templates, streamed images; tfds mock data), COCO 5k Karpathy test retrieval (tfds mock
data), Flickr30k from a Karpathy folder (a fixture folder written here), and the results in
CLIP_benchmark's JSON fields."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.evaluate.retrieval_checks import numpy_retrieval
from tests.evaluate.test_datasets import _cfg, _embedders
from vlalign import config_lib
from vlalign.data.spec import DataError
from vlalign.data.text import WordpieceTokenizer
from vlalign.evaluate import benchmarks, datasets


def _png(rgb, size=(40, 50)) -> bytes:
  return tf.io.encode_png(np.full((size[1], size[0], 3), rgb, np.uint8)).numpy()


def _bag_of_tokens(vocab_size: int, d: int = 16):
  """A vectorised stand-in text tower (80,000 prompts): sum of random token vectors, [PAD]
  (id 0) contributing nothing, L2-normalised."""
  table = np.random.default_rng(5).normal(size=(vocab_size, d))
  table[0] = 0.0
  emb = lambda t: table[np.asarray(t)].sum(1)
  return lambda t: emb(t) / np.linalg.norm(emb(t), axis=1, keepdims=True)


def test_imagenet_data_files_are_indexed_by_position():
  with open(benchmarks.IMAGENET_CLASSES) as f:
    classes = f.read().splitlines()
  with open(benchmarks.CLIP_TEMPLATES) as f:
    templates = f.read().splitlines()
  assert len(classes) == 1000 and len(templates) == 80
  assert classes[0] == 'tench' and classes[999] == 'toilet paper'
  repeated = sorted({c for c in classes if classes.count(c) > 1})
  assert repeated == ['missile', 'sunglasses']  # two labels each: classes are by position
  assert all(t.count('{}') == 1 for t in templates)
  assert templates[0] == 'a bad photo of a {}.' and templates[-1] == 'a tattoo of the {}.'


def test_imagenet1k_zero_shot_streams_and_equals_numpy(small_dataset, monkeypatch):
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  entry = {'name': 'imagenet', 'benchmark': 'imagenet1k', 'max_examples': 11}
  monkeypatch.setattr(datasets, 'STREAM_CHUNK', 4)  # 3 chunks
  with tfds.testing.mock_data(num_examples=20):
    ev = datasets.DatasetEvaluator.build(entry, _cfg(), tok, None)
    assert ev.images is None and len(ev.labels) == 11  # images are read at each run
    assert ev.num_classes == 1000 and ev.num_templates == 80
    emb_img, _ = _embedders(tok.vocab_size)
    emb_txt = _bag_of_tokens(tok.vocab_size)
    prompt_emb = []  # the 80,000 prompt embeddings, computed once
    got = ev.run(emb_img, lambda t: prompt_emb.append(emb_txt(t)) or prompt_emb[-1])
    kept = datasets.DatasetEvaluator.build({**entry, 'stream': False}, _cfg(), tok, None)
  np.testing.assert_array_equal(kept.labels, ev.labels)
  cls_emb = prompt_emb[0].reshape(1000, 80, -1).mean(1)
  scores = emb_img(kept.images) @ (cls_emb / np.linalg.norm(cls_emb, axis=1, keepdims=True)).T
  pred = scores.argmax(1)
  recall = [np.mean(pred[ev.labels == c] == c) for c in set(ev.labels.tolist())]
  top5 = np.argsort(-scores, 1)[:, :5]
  assert got['eval/imagenet/top1'] == pytest.approx(np.mean(pred == ev.labels))
  assert got['eval/imagenet/top5'] == pytest.approx(np.mean((top5 == ev.labels[:, None]).any(1)))
  assert got['eval/imagenet/mean_per_class_recall'] == pytest.approx(np.mean(recall))
  record = benchmarks.clip_benchmark_record(benchmarks.with_preset(entry), got, 'm', 'step1')
  assert record == {'dataset': 'imagenet1k', 'model': 'm', 'pretrained': 'step1',
                    'task': 'zeroshot_classification', 'language': 'en',
                    'metrics': {'acc1': got['eval/imagenet/top1'],
                                'acc5': got['eval/imagenet/top5'],
                                'mean_per_class_recall':
                                    got['eval/imagenet/mean_per_class_recall']}}


def _coco_test_split(n: int):
  """An as_dataset_fn for tfds.testing.mock_data: coco_captions' test split, image i with
  2 + i % 3 captions (its random examples break on the nested caption sequence)."""
  colours = [(i * 40 % 256, i * 90 % 256, i * 150 % 256) for i in range(n)]

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    del self, shuffle_files
    assert read_config and read_config.add_tfds_id
    assert str(split) == 'test' and decoders and 'image' in decoders, split
    caps = [[f'shape {i} caption {j}'.encode() for j in range(4)] for i in range(n)]
    data = {'image': [_png(c) for c in colours],
            'captions': {'text': tf.ragged.constant(caps),
                         'id': tf.ragged.constant([[4 * i + j for j in range(4)]
                                                   for i in range(n)])}}
    data['tfds_id'] = [f'coco_captions-test.tfrecord-00000-of-00001__{i}' for i in range(n)]
    return tf.data.Dataset.from_tensor_slices(data)

  return as_dataset


def test_coco5k_karpathy_test_retrieval(small_dataset):
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  entry = {'name': 'coco', 'benchmark': 'coco5k'}
  assert benchmarks.with_preset(entry)['source'] == 'tfds:coco_captions:test'
  with tfds.testing.mock_data(as_dataset_fn=_coco_test_split(6)):
    ev = datasets.DatasetEvaluator.build(entry, _cfg(), tok, None)
  assert len(ev.images) == 6 and len(ev.text_tokens) == 24
  emb_img, emb_txt = _embedders(tok.vocab_size, seed=2)
  got = ev.run(emb_img, emb_txt)
  want = numpy_retrieval(emb_img(ev.images), emb_txt(ev.text_tokens), ev.text_image)
  for k, v in want.items():
    assert got[f'eval/coco/{k}'] == pytest.approx(v, abs=1e-9)
  record = benchmarks.clip_benchmark_record(benchmarks.with_preset(entry), got, 'm', 's')
  assert record['task'] == 'zeroshot_retrieval' and record['dataset'] == 'mscoco_captions'
  assert record['metrics'] == {
      **{f'image_retrieval_recall@{k}': want[f't2i_r{k}'] for k in (1, 5, 10)},
      **{f'text_retrieval_recall@{k}': want[f'i2t_r{k}'] for k in (1, 5, 10)}}


def _flickr_folder(root) -> list[dict]:
  """A Karpathy-layout Flickr30k folder: dataset_flickr30k.json + flickr30k-images/*.jpg
  (PNG bytes under .jpg names, as decode_image reads either); 3 test images, 1 train."""
  os.makedirs(root / 'flickr30k-images')
  items = []
  for i, split in enumerate(('test', 'train', 'test', 'test')):
    name = f'{1000 + i}.jpg'
    (root / 'flickr30k-images' / name).write_bytes(_png((60 * i, 255 - 60 * i, 90)))
    items.append({'filename': name, 'imgid': i, 'split': split,
                  'sentences': [{'raw': f'picture {i} text {j}', 'tokens': []}
                                for j in range(5)]})
  (root / 'dataset_flickr30k.json').write_text(json.dumps({'dataset': 'flickr30k',
                                                           'images': items}))
  return items


def test_flickr30k_from_a_karpathy_folder(small_dataset, tmp_path):
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  _flickr_folder(tmp_path / 'f30k')
  entry = {'name': 'flickr', 'benchmark': 'flickr30k', 'source': f'karpathy:{tmp_path}/f30k'}
  ev = datasets.DatasetEvaluator.build(entry, _cfg(), tok, None)
  assert len(ev.images) == 3 and ev.text_image.tolist() == [0] * 5 + [1] * 5 + [2] * 5
  # The second test image is file 1002 (the train image 1001 is left out).
  assert tok.detokenize(ev.text_tokens[5:6])[0].startswith('picture 2')
  emb_img, emb_txt = _embedders(tok.vocab_size, seed=3)
  got = ev.run(emb_img, emb_txt)
  want = numpy_retrieval(emb_img(ev.images), emb_txt(ev.text_tokens), ev.text_image)
  assert {k: got[f'eval/flickr/{k}'] for k in want} == pytest.approx(want, abs=1e-9)
  os.remove(tmp_path / 'f30k' / 'flickr30k-images' / '1003.jpg')
  with pytest.raises(DataError, match='1003.jpg is missing'):
    datasets.DatasetEvaluator.build(entry, _cfg(), tok, None)


def test_benchmark_entries_validate_with_one_clear_error():
  config = config_lib.base_config()
  config.evals.datasets = ({'name': 'imagenet', 'benchmark': 'imagenet1k'},
                           {'name': 'coco', 'benchmark': 'coco5k'},
                           {'name': 'f30k', 'benchmark': 'flickr30k', 'source': 'karpathy:/d'})
  config_lib.validate(config)
  config.evals.datasets = ({'name': 'f30k', 'benchmark': 'flickr30k'},)
  with pytest.raises(config_lib.ConfigError, match=r'evals.datasets\[0\].benchmark.*karpathy'):
    config_lib.validate(config)
  config.evals.datasets = ({'name': 'x', 'benchmark': 'imagenet21k'},)
  with pytest.raises(config_lib.ConfigError, match="'imagenet21k' is not one of"):
    config_lib.validate(config)


def test_config_flag_is_the_workdirs_config_json_with_overrides(tiny_workdir, tmp_path):
  """The evaluate/embed/search --config flag: without --config, the workdir's config.json with
  --config.<field> overrides on top; with it, the file."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vlalign import cli  # pylint: disable=g-import-not-at-top
  entry = "({'name': 'f30k', 'benchmark': 'flickr30k', 'source': 'karpathy:/d'},)"
  argv = ['prog', f'--workdir={tiny_workdir}', '--config.evals.heldout=False',
          f'--config.evals.datasets={entry}']
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'the workdir', flag_values=fv)
  cli.define_config_flag(argv, 'help', fv)
  fv(argv)
  saved = config_lib.load_json(str(tiny_workdir / 'config.json'))
  assert fv.config.evals.heldout is False and fv.config.evals.datasets[0]['name'] == 'f30k'
  saved.evals.heldout, saved.evals.datasets = False, fv.config.evals.datasets
  assert fv.config.to_dict() == saved.to_dict()
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'the workdir', flag_values=fv)
  argv = ['prog', f'--workdir={tiny_workdir}', f'--config={cli.packaged_config("demo.py")}']
  cli.define_config_flag(argv, 'help', fv)
  fv(argv)
  assert fv.config.total_steps == 650 and saved.total_steps == 6  # the file, not config.json


def test_evaluate_writes_clip_benchmark_files(tiny_workdir, tmp_path):
  from vlalign import train  # pylint: disable=g-import-not-at-top
  _flickr_folder(tmp_path / 'f30k')
  config = config_lib.load_json(str(tiny_workdir / 'config.json'))
  config.evals.heldout = False
  config.evals.datasets = ({'name': 'f30k', 'benchmark': 'flickr30k',
                            'source': f'karpathy:{tmp_path}/f30k'},)
  step, results = train.evaluate_checkpoint(config, str(tiny_workdir))
  assert step == 6 and set(results) == {f'eval/f30k/{k}' for k in (
      'i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum')}
  with open(tiny_workdir / 'eval' / f'f30k_step{step}.json') as f:
    assert json.load(f) == {'step': step, **results}
  with open(tiny_workdir / 'eval' / f'f30k_step{step}.clip_benchmark.json') as f:
    record = json.load(f)
  assert record['dataset'] == 'flickr30k' and record['task'] == 'zeroshot_retrieval'
  assert record['pretrained'] == f'step{step}' and record['model'] == tiny_workdir.name
  assert record['metrics']['text_retrieval_recall@1'] == results['eval/f30k/i2t_r1']
  assert record['metrics']['image_retrieval_recall@5'] == results['eval/f30k/t2i_r5']
