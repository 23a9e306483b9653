"""ViCHA (vlalign/methods/vicha.py): its losses against NumPy, the hierarchical and
distillation losses on 8 fake devices against 1 (tests/methods/vicha_checks.py), the tower
options it adds, concept sampling and the concepts tool, configs, and the tiny recipe through
vlalign.main (stopped at step 3 and resumed, equal to the straight run).

Subprocesses start together in one fixture and share a JAX compilation cache (2 cores).
"""

import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.tools.test_summary import ROOT, load_config
from tests.methods.test_recipes import _env, _finish, _start
from vlalign import config_lib, parallel
from vlalign.data import concepts as concepts_lib
from vlalign.data.spec import DataError
from vlalign.losses import contrastive
from vlalign.methods import vicha
from vlalign.models.bert import Bert
from vlalign.models.text_transformer import TextTransformer
from vlalign.models.vit import ViT
from vlalign.tools import concepts as concepts_tool

MAIN = [sys.executable, '-m', 'vlalign.main']


# ----------------------------------------------------------------------------- NumPy oracles

def _lse(x):
  m = x.max(axis=1, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


def _softmax(x):
  e = np.exp(x - x.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def np_hier(img, txt, scale):
  """Per level: mean of the two directions of the in-batch softmax loss."""
  out = []
  for lv in range(img.shape[1]):
    x = img[:, lv] / np.linalg.norm(img[:, lv], axis=1, keepdims=True)
    y = txt[:, lv] / np.linalg.norm(txt[:, lv], axis=1, keepdims=True)
    logits = scale * x @ y.T
    i2t = np.mean(_lse(logits) - np.diag(logits))
    t2i = np.mean(_lse(logits.T) - np.diag(logits))
    out.append(0.5 * (i2t + t2i))
  return out


def np_hier_grads(x, y, scale):
  """d/dx, d/dy of 1/2 (i2t + t2i) for unit rows x, y when the columns are constants (ViCHA's
  torch.no_grad gather): only the rows get gradient, s / B (softmax(s x_i Y^T) Y - y_i) / 2."""
  n = len(x)
  gx = scale * (_softmax(scale * x @ y.T) @ y - y) / (2 * n)
  gy = scale * (_softmax(scale * y @ x.T) @ x - x) / (2 * n)
  return gx, gy


def np_distill(q, qm, k, queue, scale, alpha):
  """(loss, d loss / d q) of ALBEF's ITC with momentum distillation, one direction."""
  cols = np.concatenate([k, queue])
  s, t = scale * q @ cols.T, scale * qm @ cols.T
  target = alpha * _softmax(t)
  target[np.arange(len(q)), np.arange(len(q))] += 1 - alpha
  loss = -np.mean(np.sum(target * (s - _lse(s)[:, None]), axis=1))
  grad = scale * (_softmax(s) - target) @ cols / len(q)
  return loss, grad


def np_mim(pred, images, keep, patch, eps=1e-6):
  """(loss, d loss / d pred) by an explicit loop over the patches."""
  n, h, w, _ = images.shape
  gw = w // patch
  terms, grad = [], np.zeros_like(pred)
  masked = [(i, j) for i in range(n) for j in range((h // patch) * gw) if j not in keep[i]]
  for i, j in masked:
    r, c = divmod(j, gw)
    t = images[i, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].reshape(-1)
    t = (t - t.mean()) / np.sqrt(t.var(ddof=1) + eps)  # MAE / ViCHA: torch's unbiased .var()
    terms.append(np.mean((pred[i, j] - t) ** 2))
    grad[i, j] = 2 * (pred[i, j] - t) / (t.size * len(masked))
  return np.mean(terms), grad


def _mesh1():
  return parallel.make_mesh({'data': 1}, jax.devices()[:1])


def _unit(a):
  return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------- losses

def test_hier_loss_matches_numpy():
  rng = np.random.RandomState(1)
  img, txt = rng.randn(6, 3, 5).astype(np.float32), rng.randn(6, 3, 5).astype(np.float32)
  mesh = _mesh1()
  got = jax.jit(lambda a, b: jnp.stack(vicha.hier_losses(a, b, jnp.float32(4.0), mesh)))(img, txt)
  got = np.asarray(got).tolist()
  np.testing.assert_allclose(got, np_hier(img, txt, 4.0), rtol=1e-5)


def test_hier_gradient_flows_through_rows_only_as_vichas_no_grad_gather():
  rng = np.random.RandomState(4)
  x, y = _unit(rng.randn(6, 5)), _unit(rng.randn(6, 5))
  mesh = _mesh1()
  def grads(column_grad):
    fn = lambda a, b: contrastive.softmax_contrastive(a, b, jnp.float32(5.0), mesh,
                                                      reduction='mean',
                                                      column_grad=column_grad)['loss']
    return jax.jit(jax.grad(fn, argnums=(0, 1)))(x, y)
  gx, gy = grads('none')
  want_x, want_y = np_hier_grads(x, y, 5.0)
  np.testing.assert_allclose(np.asarray(gx), want_x, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gy), want_y, rtol=1e-4, atol=1e-6)
  full_x, _ = grads('all')  # the exact gradient also has the column terms
  assert np.linalg.norm(full_x) > 1.3 * np.linalg.norm(gx)
  local_x, _ = grads('local')  # on one device every column is local
  np.testing.assert_allclose(np.asarray(local_x), np.asarray(full_x), rtol=1e-5, atol=1e-7)


def test_mae_decoder_positions_are_maes_sincos():
  table = vicha.sincos_2d(3, 8)
  assert table.shape == (10, 8) and not table[0].any()
  # token 5 = row 1, column 2: channels [sin, sin, cos, cos] of column 2, then of row 1.
  freqs = 1.0 / 10000 ** (np.arange(2) / 2)
  want = np.concatenate([np.sin(2 * freqs), np.cos(2 * freqs), np.sin(freqs), np.cos(freqs)])
  np.testing.assert_allclose(table[1 + 5], want, rtol=1e-6)
  dec = vicha.MaeDecoder(9, 12, 8, 1, 2)
  params = jax.eval_shape(dec.init, jax.random.PRNGKey(0), jnp.zeros((1, 3, 4)),
                          jnp.zeros((1, 2), jnp.int32))
  assert 'pos_embed' not in params['params']  # fixed, not learned


@pytest.mark.parametrize('alpha', [0.0, 0.4])
def test_distill_loss_and_gradient_match_numpy(alpha):
  rng = np.random.RandomState(2)
  q, qm, k = (_unit(rng.randn(6, 5)) for _ in range(3))
  queue = _unit(rng.randn(12, 5))
  mesh = _mesh1()
  fn = lambda x: vicha.distill_loss(x, qm, k, queue, jnp.float32(7.0), alpha, mesh)
  loss, grad = jax.jit(jax.value_and_grad(fn))(q)
  want, want_grad = np_distill(q, qm, k, queue, 7.0, alpha)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-6)


def test_distill_alpha_ramp():
  got = [float(vicha.distill_alpha(0.4, 4, jnp.int32(u))) for u in (0, 1, 2, 4, 9)]
  np.testing.assert_allclose(got, [0.0, 0.1, 0.2, 0.4, 0.4], rtol=1e-6)
  assert float(vicha.distill_alpha(0.4, 0, jnp.int32(0))) == pytest.approx(0.4)


def test_mim_loss_and_gradient_match_numpy():
  rng = np.random.RandomState(3)
  images = rng.uniform(-1, 1, (3, 8, 12, 3)).astype(np.float32)  # 2 x 3 patches of 4 px
  pred = rng.randn(3, 6, 48).astype(np.float32)
  keep = np.asarray(vicha.random_keep(jax.random.PRNGKey(0), 3, 6, 2))
  assert keep.shape == (3, 2) and all(len(set(r)) == 2 for r in keep.tolist())
  assert (np.diff(keep, axis=1) > 0).all() and keep.max() < 6
  fn = jax.jit(jax.value_and_grad(vicha.mim_loss), static_argnums=3)
  loss, grad = fn(pred, images, keep, 4)
  want, want_grad = np_mim(pred, images, keep, 4)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- towers

def test_vit_options_add_no_parameters_and_agree():
  vit = ViT(patch=4, width=16, depth=3, num_heads=2)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  extra = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 16))
  params = vit.init(jax.random.PRNGKey(1), x)

  @jax.jit
  def outputs(params):  # one compile for every variant
    full, aux = vit.apply(params, x, return_levels=True)
    return {'pooled': vit.apply(params, x), 'full': full, 'levels': aux['levels'],
            'kept': vit.apply(params, x, keep=jnp.tile(jnp.arange(4), (2, 1))),
            'part': vit.apply(params, x, keep=jnp.asarray([[0, 2], [1, 3]])),
            'hidden': vit.apply(params, x, extra_tokens=extra,
                                extra_valid=jnp.zeros((2, 3), bool)),
            'seen': vit.apply(params, x, extra_tokens=extra, extra_valid=jnp.ones((2, 3), bool))}

  o = {k: np.asarray(v) for k, v in outputs(params).items()}
  pooled = o['pooled']
  np.testing.assert_allclose(o['full'], pooled, atol=1e-6)
  assert o['levels'].shape == (2, 3, 16)
  np.testing.assert_allclose(o['levels'][:, -1], pooled, atol=1e-5)  # final norm of last CLS
  np.testing.assert_allclose(o['kept'], pooled, atol=1e-5)  # keeping every patch: no change
  assert np.abs(o['part'] - pooled).max() > 1e-3
  np.testing.assert_allclose(o['hidden'], pooled, atol=1e-5)  # masked-out extra tokens: no effect
  assert np.abs(o['seen'] - pooled).max() > 1e-3
  shapes = jax.eval_shape(lambda: vit.init(jax.random.PRNGKey(1), x, return_levels=True,
                                           extra_tokens=extra))
  assert jax.tree.structure(shapes) == jax.tree.structure(params)


@pytest.mark.parametrize('tower', [
    TextTransformer(vocab_size=20, max_len=6, width=16, depth=2, num_heads=2),
    Bert(vocab_size=20, max_len=6, size='tiny', depth=2, width=16, num_heads=2, dropout=0.0)])
def test_text_towers_return_levels(tower):
  tokens = jnp.asarray([[2, 7, 9, 3, 0, 0], [2, 5, 3, 0, 0, 0]])
  params = tower.init(jax.random.PRNGKey(0), tokens)
  both = jax.jit(lambda p: (tower.apply(p, tokens, return_levels=True), tower.apply(p, tokens)))
  (cls, levels), plain = both(params)
  np.testing.assert_allclose(cls, plain, atol=1e-6)
  assert levels.shape == (2, 2, 16)
  np.testing.assert_allclose(levels[:, -1], cls, atol=1e-5)
  assert np.abs(np.asarray(levels[:, 0]) - np.asarray(cls)).max() > 1e-3


# ----------------------------------------------------------------------------- concepts

def _write_concepts(path, n=3, top=15):
  with open(path, 'w') as f:
    for i in range(n):
      f.write(json.dumps({'id': f'ex/{i}', 'concepts': [f'c{i}x{j}' for j in range(top)],
                          'scores': [1.0 - j / top for j in range(top)]}) + '\n')


def test_concept_sampling_is_deterministic_and_with_replacement(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'c.jsonl')
  _write_concepts(path)
  c = concepts_lib.Concepts(path, sample=4, max_len=8)
  draw = lambda uid, index, seed: [w.decode() for w in c.text(tf.constant(uid), index,
                                                              seed)[0].numpy().split()]
  first = [draw('ex/1', i, 0) for i in range(60)]
  assert first == [draw('ex/1', i, 0) for i in range(60)]  # same seed and index: same draw
  assert first != [draw('ex/1', i, 1) for i in range(60)]  # another seed: other draws
  assert all(len(d) == 4 and all(w.startswith('c1x') for w in d) for d in first)
  positions = [[int(w.split('x')[1]) for w in d] for d in first]
  for i, p in enumerate(positions):  # exactly the stateless draw of (seed, index)
    assert p == concepts_lib.sample_indices(0, i, 4, 15).numpy().tolist()
  assert any(len(set(p)) < 4 for p in positions)  # with replacement
  assert len({x for p in positions for x in p}) == 15  # every stored concept can be drawn
  _, found = c.text(tf.constant('nope'), 0, 0)
  assert not bool(found)
  with pytest.raises(DataError, match=r"config.method.vicha.concepts_file: .*c.jsonl.*'nope'"):
    c.check(np.asarray([True, False]), np.asarray([b'ex/0', b'nope'], object))
  with pytest.raises(DataError, match='config.method.vicha.concepts_file: .*missing.jsonl'):
    concepts_lib.Concepts(str(tmp_path / 'missing.jsonl'), 4, 8)


def test_pipeline_adds_sampled_concept_tokens_and_names_missing_ids(small_dataset, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests.data.test_pipeline import _cfg, _files, _iter  # pylint: disable=g-import-not-at-top
  from vlalign.data.text import WordpieceTokenizer  # pylint: disable=g-import-not-at-top
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  files = _files(small_dataset)
  ids = [tf.io.parse_single_example(r, {'id': tf.io.FixedLenFeature([], tf.string)})['id']
         .numpy().decode() for r in tf.data.TFRecordDataset(files)]
  words = ['red', 'green', 'blue', 'yellow', 'circle', 'square', 'triangle', 'large', 'small']
  stored = {uid: [words[(n + j) % len(words)] for j in range(15)] for n, uid in enumerate(ids)}
  path = tmp_path / 'concepts.jsonl'
  path.write_text(''.join(json.dumps({'id': u, 'concepts': c}) + '\n' for u, c in stored.items()))
  run = lambda seed: _iter(_cfg(), files, tok, seed=seed,
                           concepts=concepts_lib.Concepts(str(path), 4, 8))
  it = run(3)
  a = next(it)
  assert a['concept_tokens'].shape == (8, 8) and (a['concept_tokens'][:, 0] == tok.cls_id).all()
  for uid, text in zip(it.ids, tok.detokenize(a['concept_tokens'])):
    drawn = text.split()
    assert len(drawn) == 4 and set(drawn) <= set(stored[uid.decode()]), (uid, text)
  np.testing.assert_array_equal(next(run(3))['concept_tokens'], a['concept_tokens'])
  path.write_text(''.join(json.dumps({'id': u, 'concepts': c}) + '\n'
                          for u, c in list(stored.items())[::2]))
  with pytest.raises(DataError, match='config.method.vicha.concepts_file: .*concepts.jsonl has no '
                                      'concepts for example ids'):
    half = run(3)
    for _ in range(3):  # half the ids are gone: the first batch already misses some
      next(half)


def test_concept_vocabulary_keeps_content_words():
  texts = [b'a large red circle in the top left', 'there is a small blue circle',
           'a picture of a red square and a circle'] * 2
  vocab = concepts_tool.concept_vocabulary(texts, min_count=2)
  assert vocab[0] == 'circle' and set(vocab) == {
      'circle', 'red', 'large', 'top', 'left', 'small', 'blue', 'picture', 'square'}
  assert concepts_tool.concept_vocabulary(texts, min_count=5) == ['circle']


# ----------------------------------------------------------------------------- configs

def test_paper_recipe_facts():
  c = load_config('vicha_vit_b16')
  assert (c.model.image.name, c.model.image.patch, c.model.image.width, c.model.image.depth,
          c.data.image_size) == ('vit', 16, 768, 12, 256)
  assert (c.model.text.name, c.model.text.depth, c.model.embed_dim) == ('bert', 6, 256)
  me = c.method.vicha
  assert tuple(map(tuple, me.levels)) == ((7, 1), (8, 2), (9, 3), (10, 4), (11, 5))
  assert (me.momentum, me.queue_size, me.alpha, me.hier_weight, me.mim_weight,
          me.mask_ratio) == (0.995, 65536, 0.4, 0.1, 1.0, 0.75)
  assert (me.decoder.depth, me.decoder.num_heads, me.concepts_sample) == (2, 16, 4)
  assert (me.decoder.width, me.decoder.pos_embed, me.hier_column_grad) == (768, 'sincos', 'none')
  lo, hi = c.optimizer.log_scale_range  # ALBEF: temperature clamped to [0.001, 0.5]
  assert (np.exp(-hi), np.exp(-lo)) == (pytest.approx(0.001), pytest.approx(0.5))
  assert c.model.temperature_init == 0.07 and c.data.global_batch == 128
  o = c.optimizer
  assert (o.name, o.lr, o.weight_decay, o.decay, o.lr * o.end_lr_factor) == (
      'adamw', 1e-4, 0.02, 'cosine', pytest.approx(1e-5))
  with pytest.raises(config_lib.ConfigError, match='config.data.sources'):
    config_lib.validate(c)
  config_lib.validate(load_config('vicha_vit_b16', 'small'))
  demo = load_config('demo', 'v48')  # the towers the small variants use
  small = load_config('vicha_vit_b16', 'small')
  for key in ('total_steps',):
    assert small[key] == demo[key]
  assert small.data.global_batch == demo.data.global_batch == 512
  assert small.model.image.to_dict() == demo.model.image.to_dict()
  assert small.model.text.to_dict() == demo.model.text.to_dict()
  assert small.optimizer.lr == demo.optimizer.lr


@pytest.mark.parametrize('field,value,match', [
    ('method.vicha.levels', ((3, 1),), r'config.method.vicha.levels\[0\]: \(3, 1\): image level 3'),
    ('method.vicha.levels', ((1, 5),), r'config.method.vicha.levels\[0\].*text level 5'),
    ('method.vicha.levels', ((0, 1),), r'config.method.vicha.levels\[0\]'),
    ('method.vicha.queue_size', 40, 'config.method.vicha.queue_size'),
    ('method.vicha.momentum', 1.0, 'config.method.vicha.momentum'),
    ('method.vicha.alpha', 1.5, 'config.method.vicha.alpha'),
    ('method.vicha.mask_ratio', 0.99, 'config.method.vicha.mask_ratio'),
    ('method.vicha.decoder.num_heads', 3, 'config.method.vicha.decoder.num_heads'),
    ('method.vicha.decoder.pos_embed', 'rope', 'config.method.vicha.decoder.pos_embed'),
    ('method.vicha.hier_column_grad', 'some', 'config.method.vicha.hier_column_grad'),
    ('method.vicha.concepts_file', '', 'config.method.vicha.concepts_file'),
    ('method.vicha.concepts_len', 99, 'config.method.vicha.concepts_len'),
    ('model.image.name', 'efficientnet', 'config.model.image.name'),
])
def test_bad_vicha_fields_are_named(field, value, match):
  config = load_config('vicha_vit_b16', 'tiny')
  config.method.vicha.concepts_file = '/some/concepts.jsonl'
  config_lib.validate(config)
  node, *path = field.split('.')
  target = config[node]
  for p in path[:-1]:
    target = target[p]
  target[path[-1]] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config)


# ----------------------------------------------------------------------------- subprocesses
# _env / _start / _finish: the helpers of tests/methods/test_recipes.py (imported above).

def _write_train_concepts(cache, path):
  """A concepts file for every training id of the tiny embedded data (top 15 of a fixed word
  list, in an order that depends on the id), so the ViCHA runs need not wait for the tool."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign import train  # pylint: disable=g-import-not-at-top
  config = load_config('vicha_vit_b16', 'tiny')
  config.data.cache_dir = str(cache)
  ids = []
  for src in train.prepare_data(config)['sources']:
    for rec in tf.data.TFRecordDataset(src.files):
      ex = tf.io.parse_single_example(rec, {'id': tf.io.FixedLenFeature([], tf.string)})
      ids.append(ex['id'].numpy().decode())
  words = ['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'pink', 'cyan', 'circle',
           'square', 'triangle', 'diamond', 'star', 'large', 'small', 'medium', 'left']
  with open(path, 'w') as f:
    for n, uid in enumerate(ids):
      order = np.random.RandomState(n).permutation(len(words))[:15]
      f.write(json.dumps({'id': uid, 'concepts': [words[j] for j in order]}) + '\n')
  return ids


@pytest.fixture(scope='module')
def runs(tmp_path_factory, cache):
  """Together: the 8-device checks and ViCHA tiny through main stopped at step 3. Then, with
  its compiled step cached: the resumed run, a straight one and the concepts tool with the
  stopped run's checkpoint as the teacher."""
  tmp = tmp_path_factory.mktemp('vicha')
  jax_cache = tmp / 'jax_cache'
  check = _start([sys.executable, '-m', 'tests.methods.vicha_checks'],
                 _env(cache, jax_cache, devices=8))
  env = _env(cache, jax_cache)
  train_concepts = tmp / 'train_concepts.jsonl'
  ids = _write_train_concepts(cache, train_concepts)  # also writes the embedded data, once
  cfg = os.path.join(ROOT, 'configs', 'vicha_vit_b16.py:tiny')
  main = lambda wd, *extra: [*MAIN, f'--config={cfg}', f'--workdir={wd}',
                             f'--config.method.vicha.concepts_file={train_concepts}',
                             '--config.evals.heldout=False', *extra]
  wd = {k: tmp / k for k in ('straight', 'resumed')}
  _finish(_start(main(wd['resumed'], '--config.stop_at_step=3'), env))
  # A copy of the run stopped at step 3 is the concepts tool's teacher (a tiny trained workdir).
  teacher, output = tmp / 'teacher', tmp / 'concepts.jsonl'
  shutil.copytree(wd['resumed'], teacher)
  tool = _start([sys.executable, '-m', 'vlalign.tools.concepts', f'--config={cfg}',
                 f'--config.method.vicha.concepts_file={train_concepts}',
                 '--config.evals.heldout=False',
                 f'--workdir={teacher}', f'--output={output}', '--save_embeddings'], env)
  procs = {'straight': _start(main(wd['straight']), env),
           'resumed': _start(main(wd['resumed']), env)}
  logs = {name: _finish(p)[1] for name, p in procs.items()}
  _, tool_err = _finish(tool)
  out, _ = _finish(check)
  return {'workdirs': wd, 'logs': logs, 'concepts': output, 'tool_log': tool_err,
          'train_ids': ids, 'checks': json.loads(out.strip().splitlines()[-1])}


def test_hier_and_distill_losses_on_8_devices_equal_1_device(runs):
  one, eight = runs['checks']['one'], runs['checks']['eight']
  np.testing.assert_allclose(eight['hier'], one['hier'], rtol=1e-6)
  np.testing.assert_allclose(eight['hier_levels'], one['hier_levels'], rtol=1e-6)
  assert len(set(np.round(one['hier_levels'], 4))) == 3  # the levels differ
  for key in ('hier_grad_img', 'hier_grad_txt'):
    np.testing.assert_allclose(eight[key], one[key], rtol=1e-5, atol=1e-7, err_msg=key)
  np.testing.assert_allclose(eight['distill'], one['distill'], rtol=1e-6)
  np.testing.assert_allclose(eight['distill_grad_q'], one['distill_grad_q'], rtol=1e-5,
                             atol=1e-7)
  # ... and both equal the NumPy oracle on the same inputs (labels at r * b + i everywhere).
  from tests.methods import vicha_checks  # pylint: disable=g-import-not-at-top
  x = vicha_checks._inputs()  # pylint: disable=protected-access
  np.testing.assert_allclose(eight['hier_levels'], np_hier(x['img'], x['txt'], 5.0), rtol=1e-5)
  want, _ = np_distill(x['q'], x['qm'], x['k'], x['queue'], 5.0, 0.4)
  np.testing.assert_allclose(eight['distill'], want, rtol=1e-5)


def test_concepts_tool_ranks_like_brute_force(runs):
  assert 'embedded' in runs['tool_log'] and 'concept vocabulary' in runs['tool_log']
  with open(runs['concepts']) as f:
    rows = [json.loads(line) for line in f]
  saved = np.load(str(runs['concepts']) + '.npz')
  vocab, img, con = list(saved['vocab']), saved['image_emb'], saved['concept_emb']
  assert [r['id'] for r in rows] == list(saved['ids']) and len(rows) == 400  # every example
  np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-4)
  cos = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (
      con / np.linalg.norm(con, axis=1, keepdims=True)).T
  top = np.argsort(-cos, axis=1, kind='stable')[:, :15]
  assert [r['concepts'] for r in rows] == [[vocab[j] for j in t] for t in top]
  np.testing.assert_allclose([r['scores'] for r in rows], np.take_along_axis(cos, top, 1),
                             atol=1e-5)
  assert {'circle', 'square', 'red', 'blue'} <= set(vocab) and 'the' not in vocab
  assert len({tuple(r['concepts']) for r in rows}) > 1  # rankings differ between images
  # The training pipeline's reader takes the file and finds every training id in it.
  assert set(concepts_lib.read(str(runs['concepts']))[0]) == set(runs['train_ids'])


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if 'train/loss' in line]


def test_tiny_vicha_trains_through_main(runs):
  rows = _rows(runs['workdirs']['straight'])
  assert [r['step'] for r in rows] == [2, 4, 6]
  me = load_config('vicha_vit_b16', 'tiny').method.vicha
  for r in rows:
    for c in ('itc', 'hier', 'mim', 'hier/1_1', 'i2t', 't2i'):
      assert np.isfinite(r[f'train/loss/{c}']), (c, r)
    np.testing.assert_allclose(
        r['train/loss'], r['train/loss/itc'] + me.hier_weight * r['train/loss/hier'] +
        me.mim_weight * r['train/loss/mim'], rtol=1e-5)
  assert [r['train/distill_alpha'] for r in rows] == pytest.approx([0.1, 0.3, 0.4])
  assert rows[-1]['train/loss/mim'] < rows[0]['train/loss/mim']


def test_tiny_vicha_resumed_equals_straight(runs):
  assert 'Resumed from checkpoint at step 3' in runs['logs']['resumed']
  straight = {r['step']: r for r in _rows(runs['workdirs']['straight'])}
  resumed = {r['step']: r for r in _rows(runs['workdirs']['resumed'])}
  assert sorted(resumed) == [2, 3, 4, 6]
  for step in (4, 6):
    for key in ('train/loss', 'train/loss/itc', 'train/loss/hier', 'train/loss/mim'):
      np.testing.assert_allclose(resumed[step][key], straight[step][key], rtol=1e-6,
                                 err_msg=f'{key} at {step}')
