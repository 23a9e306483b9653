"""ZeroVL's text augmentation: selection rate and the mask / random / delete split against the
stated 0.2 x (1/2, 1/10, 4/10), special tokens kept, rows closed up and re-padded."""

import numpy as np
import tensorflow as tf

from vlalign.data import views


def test_rates_specials_and_deletion():
  rng = np.random.default_rng(0)
  n, length, vocab, mask_id = 400, 24, 300, 4
  lens = rng.integers(6, length - 1, n)
  tokens = np.zeros((n, length), np.int32)
  for i, m in enumerate(lens):
    tokens[i, 0], tokens[i, m + 1] = 2, 3  # [CLS] pieces [SEP]
    tokens[i, 1:m + 1] = rng.integers(5, vocab, m)
  out = views.zerovl_text_augment(tf.constant(tokens), tf.constant([7, 11], tf.int64), prob=0.2,
                                  vocab_size=vocab, mask_id=mask_id).numpy()
  regular = int((tokens >= 5).sum())
  kept = (out >= 5) | (out == mask_id)
  deleted = regular - int(kept.sum())
  masked = int((out == mask_id).sum())
  assert abs(masked / regular - 0.2 * 0.5) < 0.015
  assert abs(deleted / regular - 0.2 * 0.4) < 0.015
  assert (out[:, 0] == 2).all() and ((out == 3).sum(1) == 1).all()
  # Each row: its pieces closed up in order, then [SEP], then padding.
  new_len = (out != 0).sum(1)
  assert (new_len == lens + 2 - ((tokens >= 5).sum(1) - kept.sum(1))).all()
  assert all((row[m:] == 0).all() for row, m in zip(out, new_len))
  same = views.zerovl_text_augment(tf.constant(tokens), tf.constant([7, 11], tf.int64), prob=0.2,
                                   vocab_size=vocab, mask_id=mask_id).numpy()
  np.testing.assert_array_equal(out, same)  # stateless: the key decides
  none = views.zerovl_text_augment(tf.constant(tokens), tf.constant([7, 11], tf.int64), prob=0.0,
                                   vocab_size=vocab, mask_id=mask_id).numpy()
  np.testing.assert_array_equal(none, tokens)
