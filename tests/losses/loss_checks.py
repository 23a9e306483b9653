"""Blockwise softmax and ring sigmoid losses on 8 fake CPU devices against the gathered loss,
1 device and NumPy (run in a subprocess; XLA_FLAGS set by the caller before jax imports).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.losses.loss_checks
Prints one JSON line; tests/losses/test_losses_sharded.py asserts on it.
"""

import json

import jax
import numpy as np

from tests import reference
from vlalign import parallel
from vlalign.losses import blockwise, contrastive, sigmoid

B, D = 32, 16  # 8 devices: b = 4 rows each


def _unit(rng, n, d):
  v = rng.randn(n, d).astype(np.float32)
  return v / np.linalg.norm(v, axis=1, keepdims=True)


def _pairs(rng):
  """Paired unit embeddings, most pairs closest to each other, a few not (accuracy in (0, 1))."""
  x = _unit(rng, B, D)
  y = x + 0.9 * rng.randn(B, D).astype(np.float32) / np.sqrt(D)
  y /= np.linalg.norm(y, axis=1, keepdims=True)
  x[3] = y[17]  # a row whose best match is not its positive
  return x, y


def _accuracies(x, y) -> list[float]:
  logits = x @ y.T
  return [float(np.mean(logits.argmax(1) == np.arange(B))),
          float(np.mean(logits.argmax(0) == np.arange(B)))]


def _max_diff(a, b) -> float:
  return float(max(np.abs(np.asarray(u) - np.asarray(v)).max() for u, v in zip(a, b)))


def _run(fn, args, mesh, shard_argnums=(0, 1)):
  """(outputs dict, grads of 'loss' w.r.t. every arg, compiled HLO text)."""
  sh = parallel.batch_sharding(mesh, ('data',))
  args = [jax.device_put(a, sh) if i in shard_argnums else a for i, a in enumerate(args)]
  out = jax.jit(fn)(*args)
  grad = jax.jit(jax.grad(lambda *a: fn(*a)['loss'], argnums=tuple(range(len(args)))))
  hlo = grad.lower(*args).compile().as_text()
  return ({k: float(v) for k, v in out.items()}, [np.asarray(g) for g in grad(*args)], hlo)


def blockwise_check() -> dict:
  """Blockwise softmax (several chunk sizes, padding included) == gathered loss == NumPy."""
  rng = np.random.RandomState(0)
  x, y = _pairs(rng)
  s = np.float32(6.0)
  mesh = parallel.make_mesh({'data': 8})
  want, i2t, t2i, gx, gy, gs = reference.contrastive_loss(x, y, s, 0.1, 'sum')
  plain, g_plain, hlo_plain = _run(lambda a, b, c: contrastive.softmax_contrastive(
      a, b, c, mesh, label_smoothing=0.1), (x, y, s), mesh)
  out = {'numpy': [float(want), float(i2t), float(t2i)], 'plain': plain,
         'numpy_acc': _accuracies(x, y),
         'plain_vs_numpy_grad': _max_diff(g_plain, [gx, gy, gs]),
         'plain_hlo_has_bxB': 'f32[4,32]' in hlo_plain, 'chunks': {}}
  # chunk 8: one local column per device per step (4 steps); 12: two (2 steps); 24: three, the
  # last step half padding; 4096: everything in one step.
  for chunk in (8, 12, 24, 4096):
    for smoothing, reduction in ((0.1, 'sum'), (0.0, 'mean')):
      f = lambda a, b, c: blockwise.softmax_contrastive(
          a, b, c, mesh, label_smoothing=smoothing, reduction=reduction, chunk=chunk)
      g = lambda a, b, c: contrastive.softmax_contrastive(
          a, b, c, mesh, label_smoothing=smoothing, reduction=reduction)
      got, g_got, hlo = _run(f, (x, y, s), mesh)
      ref, g_ref, _ = _run(g, (x, y, s), mesh)
      out['chunks'][f'{chunk}/{smoothing}/{reduction}'] = {
          'value_diff': max(abs(got[k] - ref[k]) for k in ref), 'grad_diff': _max_diff(g_got, g_ref),
          'acc': [got['accuracy/i2t'], got['accuracy/t2i']], 'hlo_has_bxB': 'f32[4,32]' in hlo,
          'hlo_has_Bxd': f'f32[32,{D}]' in hlo}
  return out


def sigmoid_check() -> dict:
  """Ring sigmoid == gathered sigmoid on 8 devices == 1 device == NumPy (value and gradients
  w.r.t. both embeddings, scale and bias)."""
  rng = np.random.RandomState(1)
  x, y = _pairs(rng)
  s, bias = np.float32(10.0), np.float32(-3.0)
  want, gx, gy, gs, gb = reference.sigmoid_loss(x, y, s, bias)
  out = {'numpy': float(want)}
  for n in (1, 8):
    mesh = parallel.make_mesh({'data': n}, jax.devices()[:n])
    for impl in ('ring', 'gather'):
      f = lambda a, b, c, d: sigmoid.sigmoid_loss(a, b, c, d, mesh, impl=impl)
      got, grads, hlo = _run(f, (x, y, s, bias), mesh)
      out[f'{impl}_{n}'] = {'loss': got['loss'], 'acc_i2t': got['accuracy/i2t'],
                            'acc_t2i': got['accuracy/t2i'],
                            'grad_diff': _max_diff(grads[:2], [gx, gy]),
                            'grad_scale_rel': abs(float(grads[2]) - gs) / abs(gs),
                            'grad_bias_rel': abs(float(grads[3]) - gb) / abs(gb),
                            'hlo_has_bxB': 'f32[4,32]' in hlo}
  out['numpy_acc'] = _accuracies(x, y)
  return out


if __name__ == '__main__':
  assert jax.device_count() == 8, jax.devices()
  print(json.dumps({'blockwise': blockwise_check(), 'sigmoid': sigmoid_check()}))
