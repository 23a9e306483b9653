"""Retrieval with several captions per image (COCO / Flickr30K convention), computed in chunks
with the image gallery sharded over the devices of a mesh.

image -> text: an image is a hit at K when one of its captions is among the K best-scoring
captions, i.e. fewer than K captions score strictly higher than its best-scoring own caption.
text -> image: a caption is a hit at K when fewer than K images score strictly higher than its
own image. Ties count in the query's favour, as in metrics.recall_at_k.

Each device holds a slice of the images; captions are walked in chunks of `chunk`, so a device
never holds more than (images / devices) x chunk similarities, whatever the number of captions.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vlalign.evaluate import metrics


def _pad_rows(x: np.ndarray, multiple: int, value=0) -> np.ndarray:
  n = -(-len(x) // multiple) * multiple
  pad = [(0, n - len(x))] + [(0, 0)] * (x.ndim - 1)
  return np.pad(x, pad, constant_values=value)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _i2t_counts(img, img_valid, txt_chunks, owner_chunks, mesh, axis, ks):
  """Per image (sharded): number of captions scoring strictly above its best own caption."""

  def body(img, valid, txt_chunks, owner_chunks):
    b = img.shape[0]
    ids = jax.lax.axis_index(axis) * b + jnp.arange(b)

    def best(carry, inp):
      txt, owner = inp
      sim = img @ txt.T
      own = owner[None, :] == ids[:, None]
      return jnp.maximum(carry, jnp.where(own, sim, -jnp.inf).max(axis=1)), None

    best_pos, _ = jax.lax.scan(best, img[:, 0] * 0.0 - jnp.inf,  # varying over the axis
                               (txt_chunks, owner_chunks))

    def count(carry, inp):
      txt, owner = inp
      sim = img @ txt.T
      above = (sim > best_pos[:, None]) & (owner[None, :] >= 0)  # padding captions: owner -1
      return carry + above.sum(axis=1), None

    n_above, _ = jax.lax.scan(count, ids * 0, (txt_chunks, owner_chunks))
    hits = jnp.stack([(n_above < k) & valid for k in ks])
    return jax.lax.psum(hits.sum(axis=1), axis)

  return jax.shard_map(body, mesh=mesh, in_specs=(P(axis), P(axis), P(), P()), out_specs=P())(
      img, img_valid, txt_chunks, owner_chunks)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _t2i_counts(img, img_valid, txt_chunks, owner_chunks, mesh, axis, ks):
  """Per caption: number of images scoring strictly above its own image (summed over devices
  of the image slices), then hits at each K."""

  def body(img, valid, txt_chunks, owner_chunks):
    b = img.shape[0]
    start = jax.lax.axis_index(axis) * b

    def one(carry, inp):
      txt, owner = inp
      sim = txt @ img.T  # [chunk, b]
      local = owner - start
      mine = (local >= 0) & (local < b)
      pos = jnp.where(mine, jnp.take_along_axis(sim, jnp.clip(local, 0, b - 1)[:, None],
                                                axis=1)[:, 0], 0.0)
      pos = jax.lax.psum(pos, axis)  # the own image's score, from the device that holds it
      above = ((sim > pos[:, None]) & valid[None, :]).sum(axis=1)
      return carry, jax.lax.psum(above, axis)

    _, n_above = jax.lax.scan(one, 0, (txt_chunks, owner_chunks))
    n_above = n_above.reshape(-1)
    real = owner_chunks.reshape(-1) >= 0
    return jnp.stack([((n_above < k) & real).sum() for k in ks])

  return jax.shard_map(body, mesh=mesh, in_specs=(P(axis), P(axis), P(), P()), out_specs=P())(
      img, img_valid, txt_chunks, owner_chunks)


def retrieval_metrics_multi(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                            mesh: Mesh | None = None, *, ks: Sequence[int] = (1, 5, 10),
                            chunk: int = 1024) -> dict[str, float]:
  """i2t_r{k}, t2i_r{k} and rsum (percent) for N normalised image embeddings [N, d] and M
  caption embeddings [M, d], caption j describing image text_image[j]. The images are sharded
  over all axes of `mesh` (default: every device on one axis); captions go in chunks."""
  image_emb = metrics.check_finite(np.asarray(image_emb, np.float32), 'image')
  text_emb = metrics.check_finite(np.asarray(text_emb, np.float32), 'text')
  text_image = np.asarray(text_image, np.int32)
  n, m = len(image_emb), len(text_emb)
  if text_image.shape != (m,) or text_image.min() < 0 or text_image.max() >= n:
    raise ValueError(f'text_image must give each of the {m} captions an image index in [0, {n})')
  if len(np.unique(text_image)) != n:
    raise ValueError('every image needs at least one caption')
  if mesh is None:
    mesh = Mesh(np.array(jax.devices()), ('images',))
  axis = tuple(mesh.axis_names) if len(mesh.axis_names) > 1 else mesh.axis_names[0]
  devices = mesh.devices.size
  img = _pad_rows(image_emb, devices)
  valid = _pad_rows(np.ones(n, bool), devices, False)
  chunk = min(chunk, m)
  txt = _pad_rows(text_emb, chunk).reshape(-1, chunk, text_emb.shape[1])
  owner = _pad_rows(text_image, chunk, -1).reshape(-1, chunk)
  shard = NamedSharding(mesh, P(axis))
  img, valid = jax.device_put(img, shard), jax.device_put(valid, shard)
  ks = tuple(int(k) for k in ks)
  i2t = np.asarray(_i2t_counts(img, valid, txt, owner, mesh, axis, ks)) / n
  t2i = np.asarray(_t2i_counts(img, valid, txt, owner, mesh, axis, ks)) / m
  out = {f'i2t_r{k}': float(v) for k, v in zip(ks, i2t)}
  out.update({f't2i_r{k}': float(v) for k, v in zip(ks, t2i)})
  out['rsum'] = 100.0 * sum(out.values())
  return out
