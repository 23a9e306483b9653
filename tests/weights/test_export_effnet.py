"""EfficientNet export: an imported HF ALIGN / timm tf_efficientnet fixture exported again gives
the reference library's own tensors bit for bit; the export imports back to the same vlalign
variables, which reproduce the library's golden outputs."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from tests.weights.test_parity import ATOL, fixture, tiny_config
from vlalign.models import two_tower
from vlalign.tools import export
from vlalign.weights import common, convert, hf_align, load, timm_effnet


def _assert_same(got: dict, want: dict) -> None:
  """Same names, shapes, dtypes and bits."""
  assert sorted(got) == sorted(want)
  for k, v in want.items():
    assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)


def _raw(path: str) -> dict:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  return load_file(path)


def test_hf_align_export_is_exact_and_reimports(imported, tmp_path):
  config, workdir = imported('hf_align', 'hf')
  written = export.export(str(workdir), 'hf', str(tmp_path / 'out'))  # auto: AlignModel
  want = {k: v for k, v in _raw(fixture('hf_align')[0]).items()
          if not k.startswith('text_model.pooler.')}  # ALIGN embeds [CLS]: no pooler kept
  _assert_same(_raw(written[0]), want)
  with open(written[1]) as f:
    cfg = json.load(f)
  assert cfg['architectures'] == ['AlignModel'] and cfg['projection_dim'] == 80
  assert cfg['temperature_init_value'] == 0.05
  assert cfg['vision_config']['depthwise_padding'] == []
  assert cfg['vision_config']['width_coefficient'] == 0.25
  assert cfg['text_config']['num_attention_heads'] == 2
  again = tiny_config()
  again.data.image_size = again.data.resize_size = 64
  convert.configure(again, 'hf', written[0], load.hints_for(written[0]))
  for tower in ('image', 'text'):
    assert again.model[tower].to_dict() == config.model[tower].to_dict()
  assert again.model.init_from == f'hf:{written[0]}'
  variables = hf_align.model_params(common.read_safetensors(written[0]))
  _assert_same(variables, load._workdir_variables(str(workdir)))  # pylint: disable=protected-access
  # The re-imported export reproduces transformers' outputs.
  _, ref = fixture('hf_align')
  model = two_tower.build_model(again.model, 100, again.data.max_len)
  tree = traverse_util.unflatten_dict(variables, sep='/')
  image = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: m.project_image(x)))
  np.testing.assert_allclose(image(tree, ref['images63']), ref['image_features63'], atol=ATOL)
  text = jax.jit(lambda v, t: model.apply(v, t, method=lambda m, t: m.project_text(t)))
  np.testing.assert_allclose(text(tree, ref['tokens']), ref['text_features'], atol=ATOL)


def test_hf_align_vision_tower_export(imported, tmp_path):
  config, workdir = imported('hf_align', 'hf')
  written = export.export(str(workdir), 'hf', str(tmp_path / 'out'), tower='image')
  want = {k[len('vision_model.'):]: v for k, v in _raw(fixture('hf_align')[0]).items()
          if k.startswith('vision_model.')}
  _assert_same(_raw(written[0]), want)
  again = tiny_config()
  again.data.image_size = again.data.resize_size = 64
  assert convert.configure(again, 'hf', written[0], load.hints_for(written[0])) == ['image']
  assert again.model.image.to_dict() == {**config.model.image.to_dict(),
                                         'init_from': f'hf:{written[0]}'}
  assert again.data.image_size == 64


def test_timm_efficientnet_export_is_exact_and_reimports(imported, tmp_path):
  config, workdir = imported('timm_effnet', 'timm')
  written = export.export(str(workdir), 'timm', str(tmp_path / 'out'))
  # The import keeps no head (model.image.include_top=False, as ALIGN / BriVL use the tower).
  want = {k: v for k, v in _raw(fixture('timm_effnet')[0]).items()
          if not k.startswith(('conv_head.', 'bn2.'))}
  _assert_same(_raw(written[0]), want)
  with open(written[1]) as f:
    cfg = json.load(f)
  assert cfg['architecture'] == 'tf_efficientnet_b0' and cfg['num_features'] == 80
  assert (cfg['channel_multiplier'], cfg['depth_multiplier']) == (0.25, 0.25)
  assert cfg['pretrained_cfg']['mean'] == pytest.approx([0.485, 0.456, 0.406])
  again = tiny_config()
  convert.configure(again, 'timm', written[0], {})
  assert again.model.image.to_dict() == {**config.model.image.to_dict(),
                                         'init_from': f'timm:{written[0]}'}
  flat = load._workdir_variables(str(workdir))  # pylint: disable=protected-access
  _assert_same({common.place(k, 'image'): v for k, v in
                timm_effnet.image_params(common.read_safetensors(written[0])).items()},
               {k: v for k, v in flat.items() if '/image_tower/' in k})


def test_efficientnet_export_names_the_padding_it_needs(imported, tmp_path):
  _, workdir = imported('timm_effnet', 'timm')  # TF 'same' padding + tiny_config's text tower
  with pytest.raises(common.WeightsError, match="padding='hf'"):
    export.export(str(workdir), 'hf', str(tmp_path / 'out'), tower='image')
  _, workdir = imported('hf_align', 'hf')
  with pytest.raises(common.WeightsError, match="padding='same'"):
    export.export(str(workdir), 'timm', str(tmp_path / 'out'))
  with pytest.raises(common.WeightsError, match='image towers only'):
    export.export(str(workdir), 'timm', str(tmp_path / 'out'), tower='text')


def test_timm_state_with_the_head_is_the_whole_checkpoint():
  """With model.image.include_top the map covers timm's conv_head / bn2 too (pure NumPy)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from vlalign.weights import export_effnet  # pylint: disable=import-outside-toplevel
  mapped = timm_effnet.image_params(common.read_safetensors(fixture('timm_effnet')[0]))
  stats = {k[len(common.STATS):]: v for k, v in mapped.items() if k.startswith(common.STATS)}
  params = {k: v for k, v in mapped.items() if not k.startswith(common.STATS)}
  assert 'top_conv/kernel' in params
  image_cfg = ml_collections.ConfigDict({'name': 'efficientnet', 'variant': 'b0',
                                         'include_top': True, 'width_coefficient': 0.25,
                                         'depth_coefficient': 0.25})
  _assert_same(export_effnet.timm_state(params, stats, image_cfg), _raw(fixture('timm_effnet')[0]))
  data = ml_collections.ConfigDict({'image_size': 64, 'pixel_mean': (127.5,) * 3,
                                    'pixel_std': (127.5,) * 3})
  assert export_effnet.timm_config(params, image_cfg, data)['num_features'] == 320


def test_align_temperature_imports_back_to_the_same_log_scale():
  """The written temperature imports back to vlalign's log scale (to the bit where a float32
  temperature can give it: at temperatures above ~1 the log scale's own grid is finer; short
  values such as 0.05 are kept as written); a constant temperature is written as is."""
  import math  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from vlalign.weights import export_effnet  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict({'learn_temperature': True, 'temperature_init': 0.07})
  exact = 0
  for log_scale in np.random.default_rng(0).uniform(-1, 6, 500).astype(np.float32):
    t = export_effnet.model_temperature({'params/log_scale': log_scale}, cfg)
    back = np.float32(-math.log(float(t)))
    assert t.dtype == np.float32 and abs(back - log_scale) <= np.finfo(np.float32).eps, log_scale
    exact += back == log_scale
    if log_scale > 1.5:  # temperature < 0.22: float32 temperatures are denser than log scales
      assert back == log_scale, log_scale
  assert exact > 400  # 431 of 500 over log scales -1..6
  for t in (0.05, 0.07, 1.0):
    log_scale = np.float32(-math.log(float(np.float32(t))))
    assert export_effnet.model_temperature({'params/log_scale': log_scale}, cfg) == np.float32(t)
  cfg.learn_temperature = False
  assert export_effnet.model_temperature({'params/log_scale': np.float32(0)}, cfg) == \
      np.float32(0.07)
