"""Plain NumPy references for the method losses (float64), used by the unit and sharded checks."""

import numpy as np

from tests.reference import contrastive_loss, log_softmax


def unit(rng, n, d):
  v = rng.randn(n, d)
  return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def queue_loss(q, k, queue, scale):
  """BriVL InfoNCE: positive k_i, negatives the queue rows; (loss, dL/dq, accuracy)."""
  q, k, queue = (np.asarray(a, np.float64) for a in (q, k, queue))
  n = q.shape[0]
  logits = scale * np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1)
  lp = log_softmax(logits)
  p = np.exp(lp)
  grad = scale * (p[:, :1] * k + p[:, 1:] @ queue - k) / n
  acc = np.mean(logits[:, 0] > logits[:, 1:].max(1))
  return -lp[:, 0].mean(), grad, acc


def simsiam(p1, z1, p2, z2):
  """-1/2 [mean cos(p1, z2) + mean cos(p2, z1)] and its gradient w.r.t. p1, p2 (z: constants)."""
  def cos_and_grad(p, z):
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    pn, zn = np.linalg.norm(p, axis=1, keepdims=True), np.linalg.norm(z, axis=1, keepdims=True)
    ph, zh = p / pn, z / zn
    c = (ph * zh).sum(1, keepdims=True)
    return c[:, 0], (zh - c * ph) / pn
  n = p1.shape[0]
  c1, g1 = cos_and_grad(p1, z2)
  c2, g2 = cos_and_grad(p2, z1)
  return -0.5 * (c1.mean() + c2.mean()), -0.5 * g1 / n, -0.5 * g2 / n


def mlm(logits, labels):
  """Mean cross-entropy over positions with label >= 0 and its gradient w.r.t. the logits."""
  logits = np.asarray(logits, np.float64)
  flat, lab = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
  valid = lab >= 0
  lp = log_softmax(flat)
  count = max(valid.sum(), 1)
  loss = -lp[valid, lab[valid]].sum() / count
  grad = np.exp(lp)
  grad[valid, lab[valid]] -= 1
  grad[~valid] = 0
  return loss, (grad / count).reshape(logits.shape)


def nearest(entries, queries):
  """Brute force top-1 (first index among ties)."""
  idx = np.argmax(np.asarray(queries, np.float64) @ np.asarray(entries, np.float64).T, axis=1)
  return entries[idx], idx


def nns(images, texts, entries, scale, smoothing=0.0):
  """DeCLIP NNS: mean over (image view, text view) of image->text CE against the texts' nearest
  bank rows; (loss, [dL/dimage_v])."""
  total, grads = 0.0, [np.zeros(x.shape) for x in images]
  for y in texts:
    nn_y = nearest(entries, y)[0]
    for v, x in enumerate(images):
      total += contrastive_loss(x, nn_y, scale, smoothing)[1]
      n = x.shape[0]
      targets = (1 - smoothing) * np.eye(n) + smoothing / n
      p = np.exp(log_softmax(scale * np.asarray(x, np.float64) @ nn_y.T.astype(np.float64)))
      grads[v] += scale * (p - targets) @ nn_y.astype(np.float64) / n
  k = len(images) * len(texts)
  return total / k, [g / k for g in grads]


class Fifo:
  """A circular buffer of rows written at a pointer: the reference for methods/bank."""

  def __init__(self, entries):
    self.entries, self.ptr = np.array(entries), 0

  def push(self, rows):
    for r in rows:
      self.entries[self.ptr] = r
      self.ptr = (self.ptr + 1) % len(self.entries)
