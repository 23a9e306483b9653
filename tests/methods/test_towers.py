"""Text towers' token outputs (DeCLIP's MLM head reads them): the pooled output of the token
path equals the usual output, and the parameter trees are those of the plain towers."""

import jax
import numpy as np
import pytest

from vlalign.models.bert import Bert
from vlalign.models.clip import ClipText
from vlalign.models.text_transformer import TextTransformer

TOWERS = {
    'transformer': lambda: TextTransformer(vocab_size=40, max_len=8, width=16, depth=1,
                                           num_heads=2),
    'bert': lambda: Bert(vocab_size=40, max_len=8, size='tiny', depth=1, width=16, num_heads=2,
                         dropout=0.0),
    'clip_text': lambda: ClipText(vocab_size=40, max_len=8, width=16, depth=2, num_heads=2,
                                  output_dim=12),
}


@pytest.mark.parametrize('name', sorted(TOWERS))
def test_token_outputs_and_unchanged_parameters(name):
  tower = TOWERS[name]()
  tokens = np.array([[2, 9, 17, 3, 0, 0, 0, 0], [2, 5, 6, 7, 8, 11, 3, 0]], np.int32)
  variables = jax.jit(tower.init)(jax.random.PRNGKey(0), tokens)
  with_tokens = jax.eval_shape(lambda k: tower.init(k, tokens, return_tokens=True),
                               jax.random.PRNGKey(0))
  assert jax.tree.structure(variables) == jax.tree.structure(with_tokens)
  plain, (pooled, seq) = jax.jit(lambda v: (tower.apply(v, tokens),
                                            tower.apply(v, tokens, return_tokens=True)))(variables)
  np.testing.assert_allclose(np.asarray(pooled), np.asarray(plain), atol=2e-6)
  assert seq.shape == (2, 8, 16)
  if name != 'clip_text':  # [CLS] pooling: the pooled row is position 0 of the sequence
    np.testing.assert_array_equal(np.asarray(seq[:, 0]), np.asarray(pooled))
  # Every position has its own features (not a broadcast of the pooled one).
  assert np.abs(np.asarray(seq[:, 1] - seq[:, 2])).max() > 1e-3
