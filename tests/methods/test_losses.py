"""Method pieces on one device against NumPy: bank FIFO order and nearest-neighbour lookup, the
BriVL queue loss, DeCLIP's MVS / SimSiam / MLM / NNS losses (values and gradients), EMA."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.methods import reference as ref
from tests.reference import contrastive_loss
from vlalign import parallel
from vlalign.methods import bank, brivl, declip, ema


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh({'data': 1}, jax.devices()[:1])


def test_bank_is_a_fifo_over_several_steps(mesh):
  rng = np.random.RandomState(0)
  state = bank.init(jax.random.PRNGKey(0), 20, 4)
  fifo = ref.Fifo(np.asarray(state['entries']))
  push = jax.jit(lambda b, k: bank.enqueue(b, k, mesh))
  for step, n in enumerate([6, 6, 6, 6, 3, 6]):  # wraps round twice, with a short batch
    keys = rng.randn(n, 4).astype(np.float32)
    state = push(state, keys)
    fifo.push(keys)
    np.testing.assert_array_equal(np.asarray(state['entries']), fifo.entries, err_msg=str(step))
    assert int(state['ptr']) == fifo.ptr
  # The newest 20 rows, oldest first, start at the pointer.
  order = np.roll(np.asarray(state['entries']), -int(state['ptr']), axis=0)
  assert np.array_equal(order[-6:], keys)
  with pytest.raises(ValueError, match='cannot enqueue 21 rows'):
    bank.enqueue(state, jnp.zeros((21, 4)), mesh)


def test_nearest_matches_brute_force(mesh):
  rng = np.random.RandomState(1)
  entries = ref.unit(rng, 50, 8)
  entries[30] = entries[7]  # a tie: the lower index wins
  queries = ref.unit(rng, 12, 8)
  queries[3] = entries[7] + 0.01 * rng.randn(8).astype(np.float32)
  rows, idx = jax.jit(lambda e, q: bank.nearest(e, q, mesh))(entries, queries)
  want_rows, want_idx = ref.nearest(entries, queries)
  np.testing.assert_array_equal(np.asarray(idx), want_idx)
  np.testing.assert_array_equal(np.asarray(rows), want_rows)
  assert int(idx[3]) == 7


def test_brivl_queue_loss_value_and_gradient(mesh):
  rng = np.random.RandomState(2)
  q, k, queue = ref.unit(rng, 8, 16), ref.unit(rng, 8, 16), ref.unit(rng, 24, 16)
  k[:4] = q[:4]  # some positives that beat the queue
  f = lambda a, b: brivl.queue_loss(a, b, queue, 1 / 0.07, mesh)
  (val, acc), (gq, gk) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(q, k)
  want, want_gq, want_acc = ref.queue_loss(q, k, queue, 1 / 0.07)
  np.testing.assert_allclose(float(val), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(gq), want_gq, atol=1e-5)
  assert float(acc) == want_acc and 0 < want_acc < 1
  assert not np.any(np.asarray(gk))  # the keys get no gradient


def test_simsiam_loss_value_gradient_and_stop_gradient():
  rng = np.random.RandomState(3)
  p1, z1, p2, z2 = (rng.randn(6, 10).astype(np.float32) for _ in range(4))
  val, grads = jax.value_and_grad(declip.simsiam_loss, argnums=(0, 1, 2, 3))(p1, z1, p2, z2)
  want, g1, g2 = ref.simsiam(p1, z1, p2, z2)
  np.testing.assert_allclose(float(val), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grads[0]), g1, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grads[2]), g2, atol=1e-6)
  assert not np.any(np.asarray(grads[1])) and not np.any(np.asarray(grads[3]))


def test_mlm_loss_value_and_gradient():
  rng = np.random.RandomState(4)
  logits = rng.randn(3, 5, 11).astype(np.float32)
  labels = np.full((3, 5), -1)
  labels[0, 1], labels[1, 3], labels[2, 0], labels[2, 4] = 4, 10, 0, 7
  (val, acc), g = jax.value_and_grad(declip.mlm_loss, has_aux=True)(logits, labels)
  want, want_g = ref.mlm(logits, labels)
  np.testing.assert_allclose(float(val), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g), want_g, atol=1e-6)
  hits = [logits[i, j].argmax() == labels[i, j] for i, j in zip(*np.nonzero(labels >= 0))]
  assert float(acc) == np.mean(hits)
  assert float(declip.mlm_loss(logits, np.full((3, 5), -1))[0]) == 0.0  # nothing masked


def test_mvs_loss_is_the_mean_over_the_four_pairs(mesh):
  rng = np.random.RandomState(5)
  xs, ys = [ref.unit(rng, 8, 16) for _ in range(2)], [ref.unit(rng, 8, 16) for _ in range(2)]
  cfg = ml_collections.ConfigDict({'name': 'softmax', 'label_smoothing': 0.0,
                                   'reduction': 'mean', 'impl': 'gather', 'chunk': 8})
  f = lambda a, b, s: declip.mvs_loss(a, b, s, cfg, mesh, ('data',))['loss']
  val, (gx, gy, gs) = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(xs, ys, jnp.float32(6.0))
  parts = [contrastive_loss(x, y, 6.0, 0.0, 'mean') for x in xs for y in ys]
  np.testing.assert_allclose(float(val), np.mean([p[0] for p in parts]), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(gx[0]), (parts[0][3] + parts[1][3]) / 4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gy[1]), (parts[1][4] + parts[3][4]) / 4, atol=1e-6)
  np.testing.assert_allclose(float(gs), np.mean([p[5] for p in parts]), rtol=1e-4)


def test_nns_loss_value_and_gradient(mesh):
  rng = np.random.RandomState(6)
  entries = ref.unit(rng, 40, 16)
  xs = [ref.unit(rng, 8, 16) for _ in range(2)]
  texts = [ref.unit(rng, 8, 16) for _ in range(2)]
  f = lambda a, t: declip.nns_loss(a, t, entries, 5.0, mesh, ('data',), 0.1)
  val, (gx, gt) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(xs, texts)
  want, want_gx = ref.nns(xs, texts, entries, 5.0, 0.1)
  np.testing.assert_allclose(float(val), want, rtol=1e-5)
  for g, w in zip(gx, want_gx):
    np.testing.assert_allclose(np.asarray(g), w, atol=1e-6)
  assert not any(np.any(np.asarray(g)) for g in gt)  # a lookup: no gradient to the texts


def test_ema_formula_and_no_gradient_through_it():
  rng = np.random.RandomState(7)
  e = {'a': rng.randn(3, 2).astype(np.float32), 'b': {'c': rng.randn(4).astype(np.float32)}}
  p = jax.tree.map(lambda x: x + 1.0, e)
  out = ema.update(e, p, 0.99)
  for o, a, b in zip(jax.tree.leaves(out), jax.tree.leaves(e), jax.tree.leaves(p)):
    np.testing.assert_allclose(np.asarray(o), 0.99 * a + 0.01 * b, rtol=1e-6)
  grad = jax.grad(lambda q: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(ema.update(e, q, 0.5))))(p)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grad))
