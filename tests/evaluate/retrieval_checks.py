"""Multi-caption retrieval on 8 fake CPU devices against 1 device and brute-force NumPy.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.evaluate.retrieval_checks
"""

import json

import jax
import numpy as np
from jax.sharding import Mesh

from vlalign.evaluate import retrieval


def numpy_retrieval(img, txt, owner, ks=(1, 5, 10)) -> dict[str, float]:
  """Brute force: full similarity matrix, ranks by counting strictly higher scores."""
  sim = img.astype(np.float64) @ txt.astype(np.float64).T  # [N, M]
  n, m = sim.shape
  out = {}
  i2t_rank = np.array([min((sim[i] > sim[i, j]).sum() for j in np.where(owner == i)[0])
                       for i in range(n)])
  t2i_rank = np.array([(sim[:, j] > sim[owner[j], j]).sum() for j in range(m)])
  for k in ks:
    out[f'i2t_r{k}'] = float((i2t_rank < k).mean())
  for k in ks:
    out[f't2i_r{k}'] = float((t2i_rank < k).mean())
  out['rsum'] = 100.0 * sum(out.values())
  return out


def data(n=45, per=3, d=8, seed=0):
  rng = np.random.RandomState(seed)
  img = rng.randn(n, d).astype(np.float32)
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  owner = np.repeat(np.arange(n), per)
  owner = np.concatenate([owner, [0, 7]])  # two images with an extra caption
  txt = img[owner] + 0.8 * rng.randn(len(owner), d).astype(np.float32)
  txt /= np.linalg.norm(txt, axis=1, keepdims=True)
  txt[5] = txt[4]  # an exact tie between two captions
  perm = rng.permutation(len(owner))
  return img, txt[perm], owner[perm]


def main() -> dict:
  assert jax.device_count() == 8
  img, txt, owner = data()
  want = numpy_retrieval(img, txt, owner)
  mesh8 = Mesh(np.array(jax.devices()), ('images',))
  mesh2x4 = Mesh(np.array(jax.devices()).reshape(2, 4), ('a', 'b'))
  mesh1 = Mesh(np.array(jax.devices()[:1]), ('images',))
  out = {'numpy': want}
  for name, mesh, chunk in (('one_device', mesh1, 1024), ('eight', mesh8, 16),
                            ('eight_chunk7', mesh8, 7), ('two_by_four', mesh2x4, 10)):
    out[name] = retrieval.retrieval_metrics_multi(img, txt, owner, mesh, chunk=chunk)
  return out


if __name__ == '__main__':
  print(json.dumps(main()))
