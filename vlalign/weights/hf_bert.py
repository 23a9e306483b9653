"""Hugging Face BERT checkpoints (BertModel / BertForPreTraining / ALIGN's text model, any size
from Tiny to Large) -> the Bert text tower (vlalign/models/bert.py)."""

from typing import Mapping

import numpy as np

from vlalign.weights import common

Tensors = Mapping[str, np.ndarray]

# Prefixes that wrap BertModel's names in the checkpoints of its task heads and of ALIGN.
PREFIXES = ('text_model.', 'bert.')


def _tensors(t: Tensors) -> dict[str, np.ndarray]:
  t = common.strip_prefix(t, PREFIXES)
  if 'embeddings.word_embeddings.weight' not in t:
    raise common.WeightsError('not a Hugging Face BERT checkpoint: no '
                              'embeddings.word_embeddings.weight')
  return t


def _depth(t: Tensors) -> int:
  depth = 0
  while f'encoder.layer.{depth}.attention.self.query.weight' in t:
    depth += 1
  return depth


def text_params(t: Tensors) -> dict[str, np.ndarray]:
  """Bert parameters ('token_embed/embedding', 'layer0/attn/query/kernel', ...)."""
  t = _tensors(t)
  e = 'embeddings'
  out = {'token_embed/embedding': t[f'{e}.word_embeddings.weight'],
         'pos_embed/embedding': t[f'{e}.position_embeddings.weight'],
         'type_embed/embedding': t[f'{e}.token_type_embeddings.weight']}
  out.update(common.ln(t, f'{e}.LayerNorm', 'ln_embed'))
  for i in range(_depth(t)):
    s, d = f'encoder.layer.{i}', f'layer{i}'
    for name in ('query', 'key', 'value'):
      out.update(common.dense(t, f'{s}.attention.self.{name}', f'{d}/attn/{name}'))
    out.update(common.dense(t, f'{s}.attention.output.dense', f'{d}/attn/out'))
    out.update(common.ln(t, f'{s}.attention.output.LayerNorm', f'{d}/ln_attn'))
    out.update(common.dense(t, f'{s}.intermediate.dense', f'{d}/fc1'))
    out.update(common.dense(t, f'{s}.output.dense', f'{d}/fc2'))
    out.update(common.ln(t, f'{s}.output.LayerNorm', f'{d}/ln_mlp'))
  if 'pooler.dense.weight' in t:
    out.update(common.dense(t, 'pooler.dense', 'pooler'))
  return out


def text_config(t: Tensors, hints: dict) -> tuple[dict, int, int]:
  """(config.model.text for Bert, vocabulary size, position table size); `hints` is the
  checkpoint's config.json (for the number of heads; default width / 64)."""
  t = _tensors(t)
  vocab, width = t['embeddings.word_embeddings.weight'].shape
  mlp = t['encoder.layer.0.intermediate.dense.weight'].shape[0]
  if mlp != 4 * width:
    raise common.WeightsError(f'BERT feed-forward width {mlp} is not 4 x hidden size {width}, '
                              'which the Bert tower assumes')
  act = hints.get('hidden_act', 'gelu')
  if act != 'gelu':
    raise common.WeightsError(f'BERT hidden_act {act!r}: the Bert tower uses exact GELU')
  positions = int(t['embeddings.position_embeddings.weight'].shape[0])
  return ({'name': 'bert', 'depth': _depth(t), 'width': int(width),
           'num_heads': int(hints.get('num_attention_heads', max(1, width // 64))),
           'max_position': positions,
           'type_vocab_size': int(t['embeddings.token_type_embeddings.weight'].shape[0]),
           'pooler': 'pooler.dense.weight' in t, 'pad_id': int(hints.get('pad_token_id', 0)),
           'dropout': float(hints.get('hidden_dropout_prob', 0.1))},
          int(vocab), positions)
