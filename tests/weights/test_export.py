"""Export: import -> export gives back the reference library's own state dict bit for bit (so
open_clip / transformers load it and produce the golden outputs), and the exported config
imports to the same vlalign towers."""

import json
import os

import numpy as np
import pytest

from tests.weights.test_parity import fixture, tiny_config
from vlalign.tools import export
from vlalign.weights import common, convert, load


def _roundtrip(imported, tmp_path, name: str, fmt: str,
               tower: str = 'auto') -> tuple[dict, dict, list]:
  config, workdir = imported(name, fmt)
  written = export.export(str(workdir), fmt, str(tmp_path / 'out'), tower=tower)
  return (common.read_safetensors(fixture(name)[0]), common.read_safetensors(written[0]),
          [config, written])


def test_openclip_import_export_is_exact_and_reimports(imported, tmp_path):
  want, got, (config, written) = _roundtrip(imported, tmp_path, 'openclip_vit', 'openclip')
  assert got.keys() == want.keys()
  for k, v in want.items():
    assert got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  again = tiny_config()
  convert.configure(again, 'openclip', written[0], load.hints_for(written[0]))
  for tower in ('image', 'text'):
    assert again.model[tower].to_dict() == config.model[tower].to_dict()
  assert os.path.basename(written[1]) == 'open_clip_config.json'


def test_hf_bert_import_export_is_exact(imported, tmp_path):
  want, got, (config, written) = _roundtrip(imported, tmp_path, 'hf_bert', 'hf', 'text')
  want = common.strip_prefix(want, ('bert.',))
  assert got.keys() == want.keys()
  for k, v in want.items():
    assert got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  again = tiny_config()
  convert.configure(again, 'hf', written[0], load.hints_for(written[0]))
  assert again.model.text.to_dict() == {**config.model.text.to_dict(),
                                        'init_from': f'hf:{written[0]}'}


def _assert_same(got: dict, want: dict) -> None:
  assert sorted(got) == sorted(want)
  for k, v in want.items():
    assert got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_openclip_resnet_export_is_exact_with_batch_norm_statistics(imported, tmp_path):
  want, got, (config, written) = _roundtrip(imported, tmp_path, 'openclip_rn', 'openclip')
  want = {k: v for k, v in want.items() if not k.endswith('num_batches_tracked')}
  _assert_same(got, want)
  again = tiny_config()
  convert.configure(again, 'openclip', written[0], load.hints_for(written[0]))
  assert again.model.image.to_dict() == config.model.image.to_dict()


def test_hf_vit_export_is_exact_and_reimports(imported, tmp_path):
  hints = os.path.join(os.path.dirname(fixture('hf_vit')[0]), 'hf_vit.json')
  config, workdir = imported('hf_vit', 'hf', hints)
  written = export.export(str(workdir), 'hf', str(tmp_path / 'out'), tower='image')
  want = common.strip_prefix(common.read_safetensors(fixture('hf_vit')[0]), ('vit.',))
  _assert_same(common.read_safetensors(written[0]), want)
  again = tiny_config()
  convert.configure(again, 'hf', written[0], load.hints_for(written[0]))
  assert again.model.image.to_dict() == {**config.model.image.to_dict(),
                                         'init_from': f'hf:{written[0]}'}
  with open(written[1]) as f:
    assert json.load(f)['hidden_act'] == 'gelu'


def test_hf_export_names_the_tower_it_cannot_write(imported, tmp_path):
  _, workdir = imported('openclip_vit', 'openclip')
  with pytest.raises(common.WeightsError, match='Bert text tower, a ViT or EfficientNet'):
    export.export(str(workdir), 'hf', str(tmp_path / 'out'))
  _, workdir = imported('hf_bert', 'hf')  # a vit image tower (tiny_config's) and bert text
  with pytest.raises(common.WeightsError, match='pass --tower=image or --tower=text'):
    export.export(str(workdir), 'hf', str(tmp_path / 'out'))
