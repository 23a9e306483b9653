"""Where a row's text ends, for tokenizers whose pad id is also a real token (CLIP's BPE: 0 = '!')."""

import jax
import jax.numpy as jnp
import numpy as np

from vlalign.models import attention
from vlalign.models.clip import ClipText
from vlalign.models.text_transformer import TextTransformer

SOT, EOT = 49406, 49407


def test_text_positions_by_end_token_keeps_inner_zeros():
  tokens = jnp.array([[SOT, 5, 0, 0, EOT, 0, 0], [SOT, 0, EOT, 0, 0, 0, 0]])
  got = attention.text_positions(tokens, pad_id=0, eos_id=EOT)
  np.testing.assert_array_equal(got, [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(attention.text_positions(tokens, pad_id=0),
                                tokens != 0)


def _apply(module, tokens):
  params = module.init(jax.random.PRNGKey(0), tokens)
  return np.asarray(module.apply(params, tokens))


def test_clip_text_pools_at_the_first_end_token_when_text_ends_in_bang():
  """'x !' (BPE: ..., 0, EOT): 'last' with eos_id pools at EOT, as 'eot' (argmax) does."""
  kw = dict(vocab_size=EOT + 1, max_len=8, width=16, depth=1, num_heads=2, output_dim=8)
  tokens = jnp.array([[SOT, 7, 0, EOT, 0, 0, 0, 0]])
  by_eos = _apply(ClipText(**kw, pool='last', eos_id=EOT), tokens)
  by_argmax = _apply(ClipText(**kw, pool='eot'), tokens)
  np.testing.assert_allclose(by_eos, by_argmax, rtol=1e-6, atol=1e-6)


def test_text_transformer_attends_to_bang_tokens_with_eos_id():
  """With eos_id, a '!' (id 0) inside the text changes the output; padding after EOT does not."""
  m = TextTransformer(vocab_size=64, max_len=8, width=16, depth=1, num_heads=2, eos_id=63)
  a = jnp.array([[62, 5, 0, 63, 0, 0, 0, 0]])
  b = jnp.array([[62, 5, 9, 63, 0, 0, 0, 0]])
  params = m.init(jax.random.PRNGKey(0), a)
  out_a, out_b = (np.asarray(m.apply(params, t)) for t in (a, b))
  assert np.abs(out_a - out_b).max() > 1e-4
  c = jnp.array([[62, 5, 0, 63, 0, 0, 0, 0]]).at[0, 6].set(11)  # after EOT: not text
  np.testing.assert_allclose(np.asarray(m.apply(params, c)), out_a, rtol=1e-6, atol=1e-6)
