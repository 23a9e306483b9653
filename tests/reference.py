"""Plain NumPy reference implementations used as test oracles."""

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def contrastive_loss(x, y, scale, smoothing=0.0, reduction='sum'):
  """Full-matrix symmetric softmax contrastive loss and its gradient w.r.t. x, y and scale."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n = x.shape[0]
  targets = (1 - smoothing) * np.eye(n) + smoothing / n
  logits = scale * x @ y.T
  lp_i2t, lp_t2i = log_softmax(logits), log_softmax(logits.T)
  i2t = -(targets * lp_i2t).sum() / n
  t2i = -(targets * lp_t2i).sum() / n
  w = 1.0 if reduction == 'sum' else 0.5
  # dL/dlogits for each direction: (softmax - targets) / n.
  g_i2t = (np.exp(lp_i2t) - targets) / n
  g_t2i = (np.exp(lp_t2i) - targets) / n
  g_logits = w * (g_i2t + g_t2i.T)
  gx = scale * g_logits @ y
  gy = scale * g_logits.T @ x
  gs = (g_logits * (x @ y.T)).sum()
  return w * (i2t + t2i), i2t, t2i, gx, gy, gs


def sigmoid_loss(x, y, scale, bias):
  """Full-matrix SigLIP loss -1/n sum_ij log sigmoid(z_ij (s x_i.y_j + bias)), z = 2 I - 1, and
  its gradient w.r.t. x, y, scale and bias."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n = x.shape[0]
  z = 2.0 * np.eye(n) - 1.0
  raw = x @ y.T
  logits = scale * raw + bias
  loss = np.logaddexp(0.0, -z * logits).sum() / n  # -log sigmoid(t) = log(1 + exp(-t))
  g_logits = -z / (1.0 + np.exp(z * logits)) / n  # d/dl of log(1 + exp(-z l)), over n
  gx = scale * g_logits @ y
  gy = scale * g_logits.T @ x
  return loss, gx, gy, (g_logits * raw).sum(), g_logits.sum()
