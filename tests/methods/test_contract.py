"""The method contract (methods/base.py): every recipe in the table fulfils it, plain CLIP is a
method that chooses ZeroVL's mixup and decoupled accumulation in one place, and the data a
method needs (views, concepts) comes from the method."""

import json
import types

import jax
import pytest

from vlalign import config_lib, methods, parallel
from vlalign.methods import base, clip, zerovl
from tests.config_checks import assert_refused
from tests.tools.test_summary import load_config


def test_every_method_fulfils_the_contract():
  assert set(methods.METHODS) == {'clip', 'brivl', 'declip', 'vicha'}
  for name, method in methods.METHODS.items():
    assert isinstance(method, base.Method) and method.name == name
    for field in base.REQUIRED + base.OPTIONAL:
      assert callable(getattr(method, field)), (name, field)
  # Plain CLIP has no heads and no state: the defaults.
  assert methods.METHODS['clip'].init is base.no_state
  assert methods.METHODS['brivl'].init is not base.no_state


def test_a_module_without_an_objective_is_refused():
  module = types.ModuleType('half_method')
  module.validate = lambda config: None
  with pytest.raises(TypeError, match=r"half_method lacks \['make_objective'\]"):
    base.from_module('half', module)


def test_clip_chooses_mixup_and_decoupled_accumulation():
  config = load_config('demo', 'tiny')
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  plain = clip.make_objective(config, None, mesh)
  assert plain.__qualname__.startswith('plain_objective')
  assert clip.make_value_and_grad(config, None, mesh) is None
  config.mixup.enabled = True
  config.grad_accum.micro_batches = 2
  mixed = clip.make_objective(config, None, mesh)
  assert mixed.__module__ == zerovl.__name__
  assert clip.make_value_and_grad(config, None, mesh).__module__ == zerovl.__name__


def test_decoupled_accumulation_refuses_batch_norm_towers_at_validation():
  config = load_config('align_b7', 'runlocal')
  config.grad_accum.micro_batches = 2
  with pytest.raises(config_lib.ConfigError, match=r'config\.grad_accum\.micro_batches: .*'
                     r"batch norm.*'efficientnet'"):
    methods.get_method('clip').validate(config)


def test_data_needs_come_from_the_method():
  declip = load_config('declip_vit_b32', 'tiny')
  assert methods.get_method('declip').data_needs(declip).views == ('image2', 'text_mlm',
                                                                   'text_eda')
  declip.data.views.text_mlm = False
  with pytest.raises(config_lib.ConfigError, match=r'config\.data\.views\.text_mlm: must be True '
                     r'for method.name="declip"'):
    config_lib.validate(declip)
  vicha = load_config('vicha_vit_b16', 'tiny')
  vicha.method.vicha.concepts_file = '/x/concepts.jsonl'
  me = vicha.method.vicha
  assert methods.get_method('vicha').data_needs(vicha).concepts == (
      '/x/concepts.jsonl', me.concepts_sample, me.concepts_len)
  vicha.method.vicha.use_concepts = False
  assert methods.get_method('vicha').data_needs(vicha) == base.DataNeeds()
  assert methods.get_method('clip').data_needs(vicha) == base.DataNeeds()


def test_each_method_has_its_own_namespace_with_its_modules_defaults():
  config = config_lib.base_config()
  assert sorted(k for k in config.method if k != 'name') == ['brivl', 'declip', 'vicha']
  for name in ('brivl', 'declip', 'vicha'):
    assert config.method[name].to_dict() == methods.get_method(name).defaults().to_dict()
  assert 'momentum' not in config.method and 'clip' not in config.method


@pytest.mark.parametrize('recipe,field,value,match', [
    ('brivl_effnet_bert', 'method.declip.bank_size', 40,
     r'config\.method\.declip\.bank_size: 40 is a setting of method "declip", but method.name '
     r'is "brivl"; leave it at its default 65536'),
    ('demo', 'method.vicha.decoder.width', 64, r'config\.method\.vicha\.decoder\.width: 64'),
    ('brivl_effnet_bert', 'loss.label_smoothing', 0.2,
     r'config\.loss\.label_smoothing: 0.2 is ignored by method "brivl"'),
    ('vicha_vit_b16', 'loss.reduction', 'mean', r'config\.loss\.reduction: .* method "vicha"'),
])
def test_fields_the_chosen_method_ignores_are_refused(recipe, field, value, match):
  config = load_config(recipe, 'tiny')
  if recipe == 'vicha_vit_b16':
    config.method.vicha.concepts_file = '/x/concepts.jsonl'
  assert_refused(config, field, value, match)


def test_declip_reads_config_loss():
  config = load_config('declip_vit_b32', 'tiny')
  config.loss.label_smoothing = 0.2  # DeCLIP's MVS and NNS losses use it
  config_lib.validate(config)


def test_config_json_of_earlier_runs_moves_flat_method_fields():
  config = load_config('vicha_vit_b16', 'tiny')
  config.method.vicha.concepts_file = '/x/concepts.jsonl'
  values = json.loads(config_lib.to_json(config))
  # The layout before per-method namespaces: every method's fields flat in `method`.
  flat = {'name': 'vicha', **values['method']['vicha'], 'temperature': 0.07,
          'weights': {'mvs': 0.4, 'iss': 0.2, 'tss': 0.2, 'nns': 0.2}, 'bank_size': 65536}
  values['method'] = flat
  back = config_lib.from_json(json.dumps(values))
  assert back.method.vicha.to_dict() == config.method.vicha.to_dict()
  assert back.method.brivl.temperature == 0.07 and back.method.declip.bank_size == 65536
  config_lib.validate(back)
