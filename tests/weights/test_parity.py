"""Golden-fixture parity: towers imported from open_clip, transformers and timm checkpoints give
the reference libraries' own outputs (tests/fixtures/make_weight_fixtures.py wrote them), both
through `python -m vlalign.tools.import_weights` (a workdir) and through the init_from fields
(train.init_state). Tolerance: 2e-5 absolute on features of magnitude ~1 (float32; measured
differences are below 1e-6)."""

import os
import tempfile

import jax
import numpy as np
import pytest
from flax import traverse_util

from vlalign import config_lib, optim, parallel, train
from vlalign.models import two_tower
from vlalign.tools import import_weights
from vlalign.weights import common, convert, load

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'weights')
ATOL = 2e-5


def fixture(name: str) -> tuple[str, dict]:
  return os.path.join(FIXTURES, f'{name}.safetensors'), dict(np.load(os.path.join(
      FIXTURES, f'{name}.npz')))


def tiny_config():
  config = config_lib.base_config()
  config.data.global_batch = 4
  config.data.image_size, config.data.resize_size, config.data.max_len = 32, 32, 12
  config.model.image.update(patch=8, width=32, depth=1, num_heads=2)
  config.model.text.update(width=32, depth=1, num_heads=2)
  config.model.embed_dim = 16
  config.total_steps = 10
  config.optimizer.warmup_steps = 0
  return config


def build(config):
  """(model, initial state) through train.init_state, so every init_from is applied."""
  model = two_tower.build_model(config.model, config.model.vocab_size or 100,
                                config.data.max_len)
  tx, _ = optim.make_optimizer(config.optimizer, config.total_steps,
                               optim.frozen_towers(config.model))
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  return model, train.init_state(config, model, tx, mesh)[0]


def image_out(model, params, images):
  fn = lambda p, x: model.apply({'params': p}, x, method=lambda m, x: m.image_tower(x))
  return np.asarray(jax.jit(fn)(params, images))


def text_out(model, params, tokens):
  fn = lambda p, x: model.apply({'params': p}, x, method=lambda m, x: m.text_tower(x))
  return np.asarray(jax.jit(fn)(params, tokens))


def workdir_params(workdir):
  flat = load._workdir_variables(str(workdir))  # pylint: disable=protected-access
  return traverse_util.unflatten_dict({k[len('params/'):]: v for k, v in flat.items()
                                       if k.startswith('params/')}, sep='/')


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_openclip_import_init_from_and_resize(imported):
  _, ref = fixture('openclip_vit')
  config, workdir = imported('openclip_vit', 'openclip')
  assert config.model.image.act == 'quick_gelu' and config.model.text.pool == 'eot'
  assert config.data.pixel_mean[0] == pytest.approx(0.48145466 * 255)
  model = two_tower.build_model(config.model, 100, config.data.max_len)
  out = jax.jit(lambda p, x, t: model.apply({'params': p}, x, t))(
      workdir_params(workdir), ref['images'], ref['tokens'])
  np.testing.assert_allclose(out['image'], unit(ref['image_features']), atol=ATOL)
  np.testing.assert_allclose(out['text'], unit(ref['text_features']), atol=ATOL)
  np.testing.assert_allclose(out['scale'], np.exp(ref['logit_scale']), rtol=1e-6)
  # model.init_from = the imported workdir, at 48 px: the position table is resized as
  # open_clip's resize_pos_embed does it (bicubic, antialiased, class token kept).
  config.model.init_from = str(workdir)
  config.data.image_size = config.data.resize_size = 48
  config_lib.validate(config)
  model, state = build(config)
  np.testing.assert_allclose(image_out(model, state.params, ref['images48']),
                             ref['image_features48'], atol=ATOL)
  # open_clip pools at the highest id; the last non-zero token is wrong when a caption holds
  # id 0 (row 0), right otherwise.
  config.model.text.pool = 'last'
  last = text_out(two_tower.build_model(config.model, 100, 16), state.params, ref['tokens'])
  assert np.abs(last[0] - ref['text_features'][0]).max() > 0.1
  np.testing.assert_allclose(last[1:], ref['text_features'][1:], atol=ATOL)


def test_openclip_resnet_import_with_batch_norm_statistics(imported):
  _, ref = fixture('openclip_rn')
  config, workdir = imported('openclip_rn', 'openclip')
  assert config.model.image.name == 'clip_resnet' and config.data.image_size == 64
  flat = load._workdir_variables(str(workdir))  # pylint: disable=protected-access
  variables = traverse_util.unflatten_dict(flat, sep='/')
  assert variables['batch_stats']['image_tower']['stem_bn1']['var'].min() >= 0.5  # imported
  model = two_tower.build_model(config.model, 10, config.data.max_len)
  fn = lambda v, x: model.apply(v, x, method=lambda m, x: m.image_tower(x))
  np.testing.assert_allclose(jax.jit(fn)(variables, ref['images']), ref['image_features'],
                             atol=ATOL)


def test_timm_efficientnet_import_and_tf_same_padding(imported):
  """tf_efficientnet (width and depth 0.25) with its batch-norm statistics, at 64 px and at an
  odd 63 px, where TF 'SAME' (timm's tf_ variants, followed here) pads bottom/right."""
  _, ref = fixture('timm_effnet')
  config, workdir = imported('timm_effnet', 'timm')
  assert config.model.image.width_coefficient == 0.25 and not config.model.image.include_top
  variables = traverse_util.unflatten_dict(
      load._workdir_variables(str(workdir)), sep='/')  # pylint: disable=protected-access
  model = two_tower.build_model(config.model, 100, config.data.max_len)
  fn = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: m.image_tower(x)))
  np.testing.assert_allclose(fn(variables, ref['images']), ref['features'], atol=ATOL)
  np.testing.assert_allclose(fn(variables, ref['images63']), ref['features63'], atol=ATOL)


def test_hf_align_import_with_hf_padding(imported):
  """AlignModel: EfficientNet with padding='hf' (checked at an odd 63 px, where it differs from
  TF 'SAME'), BERT [CLS] -> Linear with bias, temperature as the logit scale."""
  _, ref = fixture('hf_align')
  config, workdir = imported('hf_align', 'hf')
  assert config.model.image.padding == 'hf' and config.model.text_projection == 'linear_bias'
  variables = traverse_util.unflatten_dict(
      load._workdir_variables(str(workdir)), sep='/')  # pylint: disable=protected-access
  model = two_tower.build_model(config.model, 100, config.data.max_len)
  image = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: m.project_image(x)))
  np.testing.assert_allclose(image(variables, ref['images']), ref['image_features'], atol=ATOL)
  np.testing.assert_allclose(image(variables, ref['images63']), ref['image_features63'],
                             atol=ATOL)
  text = jax.jit(lambda v, t: model.apply(v, t, method=lambda m, t: m.project_text(t)))
  np.testing.assert_allclose(text(variables, ref['tokens']), ref['text_features'], atol=ATOL)
  scale = model.apply(variables, method=lambda m: m.logit_scale())
  np.testing.assert_allclose(scale, 1 / 0.05, rtol=1e-6)


@pytest.mark.parametrize('padding,cells', [('same', 10), ('hf', 9)])
def test_efficientnet_grid_at_289px(padding, cells):
  """289 px: 10 x 10 at the last stage with TF 'SAME' (TF, timm), 9 x 9 with HF's padding."""
  from vlalign.models.efficientnet import EfficientNet  # pylint: disable=import-outside-toplevel
  net = EfficientNet('b0', width_coefficient=0.25, depth_coefficient=0.25, padding=padding)
  x = jax.ShapeDtypeStruct((1, 289, 289, 3), np.float32)
  variables = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
  grid = jax.eval_shape(lambda v, x: net.apply(v, x, capture_intermediates=True,
                                               mutable=['intermediates'])[1], variables, x)
  last = [v for k, v in grid['intermediates'].items() if k.startswith('block')][-1]
  assert last['__call__'][0].shape[1:3] == (cells, cells)


def test_hf_vit_import():
  """transformers ViTModel through import_weights: exact GELU, LayerNorm eps 1e-12."""
  path, ref = fixture('hf_vit')
  with tempfile.TemporaryDirectory() as workdir:
    config = import_weights.import_checkpoint(tiny_config(), 'hf', path, workdir,
                                              model_config=os.path.join(FIXTURES, 'hf_vit.json'))
    params = workdir_params(workdir)
  assert config.model.image.act == 'gelu' and config.model.image.ln_eps == 1e-12
  model = two_tower.build_model(config.model, 100, config.data.max_len)
  np.testing.assert_allclose(image_out(model, params, ref['images']), ref['features'], atol=ATOL)


def test_timm_vit_init_from_resized():
  """model.image.init_from=timm:... at 48 px (the checkpoint is 32 px): the position table is
  resized as timm's resample_abs_pos_embed does it; exact GELU, LayerNorm eps 1e-6."""
  path, ref = fixture('timm_vit')
  config = tiny_config()
  config.data.image_size = config.data.resize_size = 48
  convert.configure(config, 'timm', path, {'num_heads': 2}, image_size=48)
  assert config.model.image.act == 'gelu' and config.model.image.ln_eps == 1e-6
  config_lib.validate(config)
  model, state = build(config)
  np.testing.assert_allclose(image_out(model, state.params, ref['images48']),
                             ref['features48'], atol=ATOL)
  # flax's default tanh GELU is measurably off timm's exact GELU
  config.model.image.act = 'gelu_tanh'
  tanh = image_out(two_tower.build_model(config.model, 100, 12), state.params, ref['images48'])
  assert np.abs(tanh - ref['features48']).max() > 1e-4


def test_hf_bert_import_and_init_from(imported):
  path, ref = fixture('hf_bert')
  config, workdir = imported('hf_bert', 'hf')
  assert config.model.text.name == 'bert' and config.model.text.pooler
  model = two_tower.build_model(config.model, 100, config.data.max_len)
  np.testing.assert_allclose(text_out(model, workdir_params(workdir), ref['tokens']),
                             ref['pooled'], atol=ATOL)
  # model.text.init_from with bfloat16 compute: the parameters stay float32 master weights,
  # equal to the checkpoint's bit for bit (outputs then match to bfloat16 precision).
  config = tiny_config()
  convert.configure(config, 'hf', path, load.hints_for(path))
  config.model.text.pooler = False  # the checkpoint's pooler is then left out
  config.model.compute_dtype = 'bfloat16'
  model, state = build(config)
  kernel = state.params['text_tower']['layer1']['fc1']['kernel']
  assert kernel.dtype == np.float32 and 'pooler' not in state.params['text_tower']
  np.testing.assert_array_equal(
      kernel, common.read_safetensors(path)['bert.encoder.layer.1.intermediate.dense.weight'].T)
  np.testing.assert_allclose(text_out(model, state.params, ref['tokens']), ref['cls'],
                             atol=0.1)


def test_shape_mismatch_lists_every_parameter_and_fresh_ones_are_listed():
  path, _ = fixture('timm_vit')
  config = tiny_config()
  convert.configure(config, 'timm', path, {'num_heads': 2})
  target = {'params': jax.eval_shape(lambda: two_tower.build_model(
      config.model, 100, 12).init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3)),
                                  np.zeros((1, 12), np.int32)))['params']}
  loaded = load.tower_tensors('timm', path, 'image', {'encoder/block0/attn/query/kernel':
                                                      (48, 2, 24)})
  named = {common.place(k, 'image'): v for k, v in loaded.items()}
  fresh = load.fit(dict(named), common.flat_shapes(target), 'x')
  assert 'params/image_proj/kernel' in fresh and 'params/log_scale' in fresh
  assert not [k for k in fresh if k.startswith('params/image_tower/')]
  config.model.image.width = 64  # every kernel, bias and norm of the tower is now wrong
  config.model.image.num_heads = 2
  with pytest.raises(common.WeightsError) as e:
    build(config)
  lines = str(e.value).splitlines()[1:]
  assert len(lines) == len(loaded) - 0 and all('checkpoint' in ln for ln in lines)


def test_pickle_refused_and_validate_names_the_field(tmp_path):
  bad = tmp_path / 'model.bin'
  bad.write_bytes(b'\x80\x04\x95' + b'\0' * 16)
  with pytest.raises(common.WeightsError, match='pickle checkpoint.*torch.load'):
    common.read_safetensors(str(bad))
  disguised = tmp_path / 'model.safetensors'
  disguised.write_bytes(b'PK\x03\x04' + b'\0' * 16)
  with pytest.raises(common.WeightsError, match='pickle'):
    common.read_safetensors(str(disguised))
  config = tiny_config()
  config.model.text.init_from = f'hf:{bad}'
  with pytest.raises(config_lib.ConfigError, match='model.text.init_from.*pickle'):
    config_lib.validate(config)
  config.model.text.init_from = ''
  config.model.image.init_from = 'timm:/no/such.safetensors'
  with pytest.raises(config_lib.ConfigError, match='model.image.init_from.*does not exist'):
    config_lib.validate(config)
  config.model.image.init_from = ''
  config.model.init_from = str(tmp_path)
  with pytest.raises(config_lib.ConfigError, match='model.init_from.*checkpoints'):
    config_lib.validate(config)
