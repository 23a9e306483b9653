"""The BriVL and DeCLIP recipes end to end: both tiny configs through vlalign.main (DeCLIP also
stopped at step 3 and resumed, equal to the straight run), the 8-device step checks
(tests/methods/method_checks.py), configs and their validation.

The subprocesses start together in one fixture (the machine has 2 cores; each mostly compiles on
one), and share a JAX compilation cache so the resumed run does not compile again.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.config_checks import assert_refused
from tests.tools.test_summary import ROOT, load_config
from vlalign import config_lib, train

MAIN = [sys.executable, '-m', 'vlalign.main']


def _env(cache, jax_cache, devices=1):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu',
             JAX_COMPILATION_CACHE_DIR=str(jax_cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _start(cmd, env):
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-4000:]
  return out, err


def _main(config, workdir, *overrides):
  return [*MAIN, f'--config={os.path.join(ROOT, "configs", config)}', f'--workdir={workdir}',
          *overrides]


@pytest.fixture(scope='module')
def runs(tmp_path_factory, cache):
  tmp = tmp_path_factory.mktemp('recipes')
  jax_cache = tmp / 'jax_cache'
  check = _start([sys.executable, '-m', 'tests.methods.method_checks'],
                 _env(cache, jax_cache, devices=8))
  config = load_config('declip_vit_b32', 'tiny')
  config.data.cache_dir = str(cache)
  train.prepare_data(config)  # once, before the runs that read it start together
  env = _env(cache, jax_cache)
  wd = {k: tmp / k for k in ('brivl', 'declip', 'declip_resumed')}
  procs = {'brivl': _start(_main('brivl_effnet_bert.py:tiny', wd['brivl']), env)}
  _finish(_start(_main('declip_vit_b32.py:tiny', wd['declip_resumed'], '--config.stop_at_step=3'),
                 env))
  # Both find the DeCLIP step compiled by the run that just stopped in the compilation cache.
  procs['declip'] = _start(_main('declip_vit_b32.py:tiny', wd['declip']), env)
  procs['resumed'] = _start(_main('declip_vit_b32.py:tiny', wd['declip_resumed']), env)
  results = {name: _finish(p) for name, p in procs.items()}
  out, _ = _finish(check)
  return {'workdirs': wd, 'logs': {k: v[1] for k, v in results.items()},
          'checks': json.loads(out.strip().splitlines()[-1])}


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if 'train/loss' in line]


def _eval(workdir):
  with open(os.path.join(workdir, 'eval', 'heldout.json')) as f:
    return json.load(f)


@pytest.mark.parametrize('name,components', [
    ('brivl', ('i2t', 't2i')), ('declip', ('mvs', 'iss', 'tss', 'nns', 'i2t', 't2i'))])
def test_tiny_recipes_train_through_main(runs, name, components):
  rows = _rows(runs['workdirs'][name])
  assert [r['step'] for r in rows] == [2, 4, 6]
  for r in rows:
    for c in components:
      assert np.isfinite(r[f'train/loss/{c}']), (c, r)
  last = rows[-1]
  if name == 'brivl':
    np.testing.assert_allclose(last['train/loss'], last['train/loss/i2t'] + last['train/loss/t2i'],
                               rtol=1e-6)
    assert last['train/temperature'] == pytest.approx(0.07)
  else:
    w = load_config('declip_vit_b32', 'tiny').method.declip.weights
    total = sum(w[c] * last[f'train/loss/{c}'] for c in ('mvs', 'iss', 'tss', 'nns'))
    np.testing.assert_allclose(last['train/loss'], total, rtol=1e-5)
    # log-scale clamped to [3, 6] at init and after every update, value capped at 100.
    for r in rows:
      assert 0.01 - 1e-6 <= r['train/temperature'] <= math.exp(-3.0) + 1e-6, r
  ev = _eval(runs['workdirs'][name])
  assert ev['step'] == 6 and 0 <= ev['eval/retrieval/i2t_r1'] <= ev['eval/retrieval/i2t_r10'] <= 1


def test_declip_resumed_through_main_equals_the_straight_run(runs):
  assert 'Resumed from checkpoint at step 3' in runs['logs']['resumed']
  straight = {r['step']: r for r in _rows(runs['workdirs']['declip'])}
  resumed = {r['step']: r for r in _rows(runs['workdirs']['declip_resumed'])}
  assert sorted(resumed) == [2, 3, 4, 6]
  for step in (4, 6):
    for key in ('train/loss', 'train/loss/nns', 'train/loss/tss', 'train/loss/iss'):
      np.testing.assert_allclose(resumed[step][key], straight[step][key], rtol=1e-6, err_msg=key)
  a, b = _eval(runs['workdirs']['declip']), _eval(runs['workdirs']['declip_resumed'])
  for k in a:
    np.testing.assert_allclose(b[k], a[k], atol=1e-6, err_msg=k)


@pytest.mark.parametrize('name', ['brivl', 'declip'])
def test_8_devices_equal_1_device(runs, name):
  r = runs['checks'][name]
  np.testing.assert_allclose(r['losses_8'], r['losses_1'], rtol=2e-6)
  assert r['losses_1'][3] != r['losses_1'][0]
  for k, v in r['components_1'].items():
    np.testing.assert_allclose(r['components_8'][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
  assert r['param_diff'] < 2e-5 and r['extra_diff'] < 2e-6, r
  # Queues / bank rows are split over the 8 devices.
  assert r['extra_sharded'] and all(s == "P('data',)" for s in r['extra_sharded'])


@pytest.mark.parametrize('name', ['brivl', 'declip'])
def test_resume_restores_queues_and_banks_exactly(runs, name):
  r = runs['checks'][name]['resume']
  assert r['restored_step'] == 2 and r['position'] == 32
  assert r['restored_extra_diff'] == 0.0 and r['restored_params_diff'] == 0.0
  assert r['params_diff'] == 0.0 and r['extra_diff'] == 0.0
  np.testing.assert_array_equal(r['losses'], runs['checks'][name]['losses_8'][2:])


def test_brivl_momentum_encoder_and_queues(runs):
  r = runs['checks']['brivl']
  # Step 1: EMA of identical copies; the queues' first B rows are the momentum keys of batch 1.
  assert r['ema_step1_diff'] == 0.0
  assert r['queue_text_rows_diff'] < 1e-6 and r['queue_image_rows_diff'] < 1e-6
  assert r['queue_rest_diff'] == 0.0
  # Step 2: m * ema + (1 - m) * params of step 1, not touched by the optimizer.
  assert r['ema_step2_diff'] < 1e-6
  assert r['ema_vs_params_diff'] > 1e-4


def test_declip_bank_takes_t_and_t_prime_first(runs):
  assert runs['checks']['declip']['bank_changed_rows'] == list(range(32))


@pytest.mark.parametrize('name', ['declip_vit_b32', 'declip_rn50', 'brivl_effnet_bert'])
def test_paper_configs_need_data_and_small_ones_validate(name):
  with pytest.raises(config_lib.ConfigError, match='config.data.sources'):
    config_lib.validate(load_config(name))
  for arg in ('small', 'tiny'):
    config_lib.validate(load_config(name, arg))


def test_paper_recipe_facts():
  b = load_config('brivl_effnet_bert')
  me = b.method.brivl
  assert (me.momentum, me.temperature, me.queue_size) == (0.99, 0.07, 9600)
  assert me.queue_size % b.data.global_batch == 0 and b.model.embed_dim == 2048
  assert b.model.image.name == 'efficientnet' and b.model.text.name == 'bert'
  for name, image in (('declip_vit_b32', 'clip_vit'), ('declip_rn50', 'clip_resnet')):
    d = load_config(name)
    # DeCLIP's 65,536 per GPU x 32 GPUs of 128: the same 256 steps of history, globally.
    assert d.method.declip.bank_size == 65536 * 32 and d.data.global_batch == 4096
    assert d.optimizer.eps == 1e-8 and tuple(d.optimizer.log_scale_range) == (3.0, 6.0)
    assert dict(d.method.declip.weights) == {'mvs': 0.4, 'iss': 0.2, 'tss': 0.2, 'nns': 0.2}
    assert d.model.image.name == image and d.model.text.name == 'clip_text'
    assert d.optimizer.weight_decay == 0.1 and d.method.declip.max_logit_scale == 100.0
  assert load_config('declip_vit_b32', 'mvs06').method.declip.weights.mvs == 0.6


@pytest.mark.parametrize('field,value,match', [
    ('method.name', 'moco', 'config.method.name'),
    ('method.brivl.queue_size', 50, 'config.method.brivl.queue_size'),
    ('method.brivl.momentum', 1.0, 'config.method.brivl.momentum'),
    ('method.brivl.temperature', 0.0, 'config.method.brivl.temperature'),
])
def test_bad_brivl_fields_are_named(field, value, match):
  _bad('brivl_effnet_bert', field, value, match)


@pytest.mark.parametrize('field,value,match', [
    ('method.declip.bank_size', 40, 'config.method.declip.bank_size'),
    ('method.declip.weights.nns', -0.1, 'config.method.declip.weights.nns'),
    ('method.declip.projector_dim', 0, 'config.method.declip.projector_dim'),
    ('method.declip.max_logit_scale', 0.0, 'config.method.declip.max_logit_scale'),
    ('data.views.text_eda', False, 'config.data.views.text_eda'),
    ('data.views.image2', False, 'config.data.views.image2'),
    ('data.views.mlm_prob', 1.5, 'config.data.views.mlm_prob'),
    ('data.views.crop_scale', (0.5, 0.2), 'config.data.views.crop_scale'),
    ('data.views.blur', 2.0, 'config.data.views.blur'),
])
def test_bad_declip_fields_are_named(field, value, match):
  _bad('declip_vit_b32', field, value, match)


def _bad(name, field, value, match):
  assert_refused(load_config(name, 'tiny'), field, value, match)


def test_declip_vit_b32_has_the_clip_towers():
  import jax
  import jax.numpy as jnp
  from vlalign.models import two_tower
  config = load_config('declip_vit_b32')
  model = two_tower.build_model(config.model, config.model.vocab_size, config.data.max_len)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32),
                          jax.ShapeDtypeStruct((1, 77), jnp.int32))['params']
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert count(shapes['image_tower']) == 87_849_216  # docs/METHODS.md, Oracles
  assert count(shapes['text_tower']) == 63_428_096
