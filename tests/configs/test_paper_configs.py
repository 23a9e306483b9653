"""The paper configs start from the public checkpoints their papers use (configs/pretrained.py):
the fields point under $VLALIGN_WEIGHTS, the tower settings fit the weights, a missing file stops
validation naming the field and the path, and a shallower tower takes a checkpoint's first layers
(ViCHA's 6 of BERT-Base's 12)."""

import os

import numpy as np
import pytest

from vlalign import config_lib
from vlalign.data import image_ops
from vlalign.weights import common, convert, hf_bert, load

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# config -> (image checkpoint, image format, act, pixel mean)
PAPERS = {
    'zerovl_vit_b16.py': ('vit_base_patch16_224.augreg_in21k', 'timm', 'gelu', (127.5,) * 3),
    'vicha_vit_b16.py': ('deit_base_patch16_224.fb_in1k', 'timm', 'gelu', image_ops.CLIP_MEAN),
    'brivl_effnet_bert.py': ('tf_efficientnet_b5.ns_jft_in1k', 'timm', None,
                             image_ops.IMAGENET_MEAN),
}


def get_config(name: str, arg: str = ''):
  module = config_lib.load_config_module(os.path.join(ROOT, 'configs', name))
  return module.get_config(arg)


@pytest.mark.parametrize('name', sorted(PAPERS))
def test_paper_config_points_at_the_published_checkpoints(name, tmp_path, monkeypatch):
  monkeypatch.setenv('VLALIGN_WEIGHTS', str(tmp_path))
  checkpoint, fmt, act, mean = PAPERS[name]
  config = get_config(name)
  m, t = config.model, config.data.tokenizer
  assert m.image.init_from == f'{fmt}:{tmp_path}/{checkpoint}/model.safetensors'
  assert m.text.init_from == f'hf:{tmp_path}/bert-base-uncased/model.safetensors'
  assert (t.kind, t.vocab_file, t.lower_case) == (
      'wordpiece', f'{tmp_path}/bert-base-uncased/vocab.txt', True)
  assert m.vocab_size == 30_522 and tuple(config.data.pixel_mean) == pytest.approx(mean)
  if act:
    assert (m.image.act, m.image.ln_eps) == (act, 1e-6)
  else:
    assert m.image.padding == 'same'
  assert m.text.get('init_first_layers', False) == (name == 'vicha_vit_b16.py')
  scratch = get_config(name, 'scratch')
  assert not scratch.model.image.get('init_from') and not scratch.model.text.get('init_from')
  for arg in ('small', 'tiny'):  # the CPU variants stay from scratch on the embedded data
    small = get_config(name, arg)
    assert not small.model.image.get('init_from') and not small.model.text.get('init_from')
    assert small.data.tokenizer.vocab_file == ''


@pytest.mark.parametrize('name', sorted(PAPERS))
def test_missing_checkpoint_names_the_field_and_the_file(name, tmp_path, monkeypatch):
  monkeypatch.setenv('VLALIGN_WEIGHTS', str(tmp_path))
  config = get_config(name)
  config.data.sources = ('embedded',)
  vocab = tmp_path / 'bert-base-uncased' / 'vocab.txt'
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config)
  assert 'config.data.tokenizer.vocab_file' in str(e.value) and str(vocab) in str(e.value)
  vocab.parent.mkdir()
  vocab.write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n')
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config)
  image = config.model.image.init_from.partition(':')[2]
  assert str(e.value) == f'config.model.image.init_from: {image} does not exist'
  os.makedirs(os.path.dirname(image))
  open(image, 'wb').close()
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config)
  text = tmp_path / 'bert-base-uncased' / 'model.safetensors'
  assert str(e.value) == f'config.model.text.init_from: {text} does not exist'


def test_env_default_is_the_cache_folder(monkeypatch):
  monkeypatch.delenv('VLALIGN_WEIGHTS', raising=False)
  config = get_config('zerovl_vit_b16.py')
  assert config.model.text.init_from == 'hf:' + os.path.expanduser(
      '~/.cache/vlalign/weights/bert-base-uncased/model.safetensors')


def test_shallower_text_tower_takes_the_first_layers():
  # pylint: disable-next=import-outside-toplevel
  from tests.weights.test_parity import build, fixture, tiny_config
  path, _ = fixture('hf_bert')  # a 2-layer BERT written by transformers
  config = tiny_config()
  convert.configure(config, 'hf', path, load.hints_for(path))
  with config.model.text.unlocked():  # the import's tower has no init_first_layers field
    config.model.text.update(depth=1, init_first_layers=True)
  config_lib.validate(config)
  _, state = build(config)  # train.init_state applies init_from
  want = hf_bert.text_params(common.read_safetensors(path))
  got = state.params['text_tower']
  assert 'layer1' not in got and 'layer1/fc1/kernel' in want
  for name in ('layer0/fc1/kernel', 'layer0/attn/query/kernel', 'token_embed/embedding'):
    leaf = got
    for part in name.split('/'):
      leaf = leaf[part]
    np.testing.assert_array_equal(leaf, want[name])
  config.model.text.init_first_layers = False  # a depth mismatch stops, listing the layers
  with pytest.raises(common.WeightsError, match=r'layer1/.*not a parameter of the model'):
    load.initial_variables(config.model, {'params': state.params})
