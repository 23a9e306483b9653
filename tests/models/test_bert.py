"""BERT: exact parameter counts (docs/METHODS.md, Oracles) and a numeric forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.util import count_params
from vlalign.models.bert import Bert


@pytest.mark.parametrize('size,pooler,want', [
    ('base', False, 108_891_648), ('base', True, 109_482_240),
    ('large', False, 334_092_288), ('large', True, 335_141_888)])
def test_param_counts_for_bert_vocab(size, pooler, want):
  assert count_params(Bert(30_522, size=size, pooler=pooler), (1, 8), jnp.int32) == want


def test_smaller_sizes_have_the_released_shapes():
  # Google's miniatures: Mini L4/H256, Small L4/H512, Medium L8/H512 (encoder + embeddings).
  counts = {s: count_params(Bert(30_522, size=s), (1, 8), jnp.int32)
            for s in ('mini', 'small', 'medium')}
  assert counts == {'mini': 11_104_768, 'small': 28_500_992, 'medium': 41_110_528}


def test_tiny_forward_is_finite_depends_on_tokens_and_ignores_padding():
  model = Bert(50, max_len=8, size='mini', depth=2, width=32, num_heads=2, dropout=0.0)
  tokens = jnp.asarray([[2, 5, 6, 7, 3, 0, 0, 0], [2, 9, 8, 3, 0, 0, 0, 0]], jnp.int32)
  variables = jax.jit(model.init)(jax.random.key(0, impl='rbg'), tokens)
  apply = jax.jit(model.apply)
  out = np.asarray(apply(variables, tokens))
  assert out.shape == (2, 32) and np.isfinite(out).all()
  assert np.abs(out[0] - out[1]).max() > 1e-2
  # Padding positions are masked out: changing a padding id's embedding row changes nothing
  # ... but changing a real token does.
  other = np.asarray(apply(variables, tokens.at[0, 6].set(0)))
  np.testing.assert_allclose(other, out, rtol=1e-6)
  changed = np.asarray(apply(variables, tokens.at[0, 2].set(11)))
  assert np.abs(changed[0] - out[0]).max() > 1e-3
  np.testing.assert_allclose(changed[1], out[1], rtol=1e-6)


def test_longer_text_than_max_len_is_an_error():
  with pytest.raises(ValueError, match='max_len'):
    Bert(50, max_len=4, size='mini').init(jax.random.PRNGKey(0), jnp.ones((1, 6), jnp.int32))
