"""Gradient aggregation on the Gram matrix of the per-task gradients (pure jax.numpy, jit-able).

Every strategy here maps the Gram matrix `M = G Gᵀ` of the per-task gradients `G [T, D]` of the
shared parameters (and which tasks are present in the batch, `present [T]`) to weights `w [T]`;
the update is `wᵀ G`. This is TorchJD's "gramian weighting" form: the strategies never touch the
D-dimensional gradients, so the step computes `M` once (a sum of per-leaf `G_l G_lᵀ`), the
weights on a `T × T` problem, and the update as one weighted sum per leaf. On a mesh the per-task
gradients are those of the global batch (XLA all-reduces them inside the jitted step), so `M` and
`w` do not depend on the number of devices.

A task without a label in the batch (`present = False`) has a zero gradient row; each strategy
leaves it out (weight 0) rather than letting a zero row change the others' weights (MGDA's
min-norm point would be 0, Nash-MTL's bargaining would divide by zero).

  pcgrad(M, present, perms)   Yu et al. 2020 (TorchJD PCGrad: Σ_i projected g_i, random order)
  mgda(M, present)            Sener & Koltun 2018, Frank-Wolfe (TorchJD MGDA: eps 1e-3, 100 iter)
  upgrad(M, present)          Quinton & Rey 2024 (TorchJD UPGrad: Σ_i projection of g_i/T onto
                              the dual cone of the rows; gramian trace-normalised + 1e-4 I)
  cagrad(M, present, c)       Liu et al. 2021 (TorchJD CAGrad weights)
  nash_mtl(M, present)        Navon et al. 2022: α with (M α)_i = 1/α_i, norm clipped
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Small constants of the reference implementation (TorchJD 0.18.0), kept for agreement.
NORM_EPS = 1e-4
REG_EPS = 1e-4


def _present_f(present, dtype):
  return present.astype(dtype)


def _iterate(update, x0, max_iters: int, tol: float = 1e-7):
  """Applies `x ← update(x)` until the largest change is below `tol` (relative to the largest
  entry) or `max_iters` times (a `while_loop`: most steps stop after a few iterations)."""

  def cond(c):
    _, it, change = c
    return (it < max_iters) & (change > tol)

  def body(c):
    x, it, _ = c
    new = update(x)
    change = jnp.max(jnp.abs(new - x)) / jnp.maximum(jnp.max(jnp.abs(new)), 1e-30)
    return new, it + 1, change

  x, _, _ = jax.lax.while_loop(cond, body, (x0, 0, jnp.asarray(jnp.inf, x0.dtype)))
  return x


def _normalize(M):
  """Gramian of the Frobenius-normalised matrix (`M / trace(M)`; 0 when the trace is tiny)."""
  tr = jnp.trace(M)
  return jnp.where(tr < NORM_EPS, jnp.zeros_like(M), M / jnp.where(tr < NORM_EPS, 1.0, tr))


# ----------------------------------------------------------------------------------------- PCGrad
def pcgrad(M, present, perms):
  """PCGrad weights. `perms [T, T]`: for task i, the order in which the other tasks are visited
  (a random permutation per step, as in the paper). Projecting g_i off g_j when g_i·g_j < 0 is
  done on coefficient vectors: `c ← c - (M_j·c / M_jj) e_j`."""
  T = M.shape[0]
  p = _present_f(present, M.dtype)

  def one(i, perm):
    def visit(c, j):
      inner = M[j] @ c
      proj = (inner < 0) & (j != i) & (M[j, j] > 0)
      step = jnp.where(proj, inner / jnp.where(M[j, j] > 0, M[j, j], 1.0), 0.0)
      return c.at[j].add(-step), None

    c, _ = jax.lax.scan(visit, jax.nn.one_hot(i, T, dtype=M.dtype), perm)
    return c

  w = jax.vmap(one)(jnp.arange(T), perms)
  return jnp.sum(w * p[:, None], axis=0)


# ----------------------------------------------------------------------------------------- MGDA
def mgda(M, present, *, epsilon: float = 1e-3, max_iters: int = 100):
  """Min-norm point of the convex hull of the present tasks' gradients (Frank-Wolfe; the same
  iteration and stopping rule as TorchJD's MGDA)."""
  p = _present_f(present, M.dtype)
  n = jnp.maximum(jnp.sum(p), 1.0)

  def body(carry):
    alpha, it, _ = carry
    Ma = M @ alpha
    t = jnp.argmin(jnp.where(p > 0, Ma, jnp.inf))
    e = jax.nn.one_hot(t, M.shape[0], dtype=M.dtype)
    a, b, c = alpha @ M[:, t], alpha @ Ma, M[t, t]
    den = jnp.where(b + c - 2 * a == 0, 1.0, b + c - 2 * a)
    gamma = jnp.where(c <= a, 1.0, jnp.where(b <= a, 0.0, (b - a) / den))
    return (1 - gamma) * alpha + gamma * e, it + 1, gamma < epsilon

  def cond(carry):
    _, it, done = carry
    return (it < max_iters) & ~done

  alpha, _, _ = jax.lax.while_loop(cond, body, (p / n, 0, jnp.sum(p) == 0))
  return alpha * p


# ----------------------------------------------------------------------------------------- UPGrad
def _box_qp(Q, lower, iters):
  """argmin_v vᵀ Q v subject to v ≥ lower (Q positive definite): projected coordinate descent,
  sweeps until converged (at most `iters`; exact for the small T × T problems here)."""
  T = Q.shape[0]

  def sweep(v):
    def coord(v, k):
      vk = jnp.maximum(lower[k], v[k] - (Q[k] @ v) / Q[k, k])
      return v.at[k].set(vk), None

    v, _ = jax.lax.scan(coord, v, jnp.arange(T))
    return v

  return _iterate(sweep, lower, iters, tol=1e-9)


def upgrad(M, present, *, iters: int = 500):
  """UPGrad weights: Σ_i of the weights of the projection of g_i / n (n present tasks) onto the
  dual cone {x : G x ≥ 0}, each the box QP `min vᵀ M v s.t. v ≥ e_i / n` (Proposition 1 of the
  Jacobian-descent paper)."""
  T = M.shape[0]
  p = _present_f(present, M.dtype)
  n = jnp.maximum(jnp.sum(p), 1.0)
  Q = _normalize(M) + REG_EPS * jnp.eye(T, dtype=M.dtype)
  U = jnp.eye(T, dtype=M.dtype) * (p / n)[:, None]
  W = jax.vmap(lambda u: _box_qp(Q, u, iters))(U)
  return jnp.sum(W, axis=0) * p


# ----------------------------------------------------------------------------------------- CAGrad
def _simplex_projection(x, mask):
  """Euclidean projection of x onto the simplex over the entries where `mask` (others 0)."""
  big = jnp.where(mask > 0, x, -1e30)
  s = jnp.sort(big)[::-1]
  css = jnp.cumsum(jnp.where(s > -1e29, s, 0.0))
  k = jnp.arange(1, x.shape[0] + 1, dtype=x.dtype)
  cond = (s - (css - 1) / k > 0) & (s > -1e29)
  rho = jnp.max(jnp.where(cond, k, 1.0))
  theta = (css[rho.astype(jnp.int32) - 1] - 1) / rho
  return jnp.where(mask > 0, jnp.maximum(x - theta, 0.0), 0.0)


def cagrad(M, present, *, c: float = 0.4, iters: int = 2000):
  """CAGrad weights (TorchJD's CAGradWeighting): on the trace-normalised gramian, w* =
  argmin_{w ∈ simplex} g_wᵀ g_0 + c‖g_0‖ ‖g_w‖ (g_0 the mean gradient), solved by accelerated
  projected gradient; the weights are `1/n + c‖g_0‖/‖g_w*‖ · w*`."""
  p = _present_f(present, M.dtype)
  n = jnp.maximum(jnp.sum(p), 1.0)
  Mn = _normalize(M)
  u = p / n
  g0_norm = jnp.sqrt(jnp.maximum(u @ Mn @ u, 0.0))
  sqrt_phi = c * g0_norm
  b = Mn @ u

  def f(w):
    return b @ w + sqrt_phi * jnp.sqrt(jnp.maximum(w @ Mn @ w, 1e-20))

  grad = jax.grad(f)
  lip = jnp.maximum(jnp.max(jnp.linalg.eigvalsh(Mn)), 1e-6)

  lr = 1.0 / (lip * (1.0 + sqrt_phi * 10.0))

  def step(c):  # c = [w, y, t] stacked: accelerated projected gradient with restarts
    w, y, t = c[0], c[1], c[2, 0]
    w_new = _simplex_projection(y - lr * grad(y), p)
    t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
    y_new = w_new + ((t - 1) / t_new) * (w_new - w)
    up = f(w_new) > f(w)  # restart when the objective goes up (keeps it monotone)
    y_new, t_new = jnp.where(up, w_new, y_new), jnp.where(up, 1.0, t_new)
    return jnp.stack([w_new, y_new, jnp.full_like(w_new, t_new)])

  c0 = jnp.stack([u, u, jnp.ones_like(u)])
  w = _iterate(step, c0, iters, tol=1e-9)[0]
  gw = jnp.sqrt(jnp.maximum(w @ Mn @ w, 0.0))
  ok = gw >= NORM_EPS
  return jnp.where(ok, (u + sqrt_phi / jnp.where(ok, gw, 1.0) * w) * p, jnp.zeros_like(u))


# ----------------------------------------------------------------------------------------- Nash
def nash_mtl(M, present, *, max_norm: float = 1.0, iters: int = 50):
  """Nash-MTL weights: on `M / ‖M‖_F`, the α > 0 with `(M α)_i = 1/α_i` (the minimiser of the
  strictly convex `½ αᵀMα - Σ log α_i`, found by damped Newton steps), then scaled so that
  ‖αᵀG‖ ≤ max_norm (TorchJD's NashMTL defaults; absent tasks get weight 0)."""
  T = M.shape[0]
  p = _present_f(present, M.dtype)
  fro = jnp.sqrt(jnp.sum(M * M))
  Mn = M / jnp.where(fro > 0, fro, 1.0)
  # absent tasks: a decoupled identity row (α_i = 1), zeroed at the end
  Mn = Mn * (p[:, None] * p[None, :]) + jnp.diag(1.0 - p) + 1e-8 * jnp.eye(T, dtype=M.dtype)

  def newton(a):
    g = Mn @ a - 1.0 / a
    H = Mn + jnp.diag(1.0 / (a * a))
    d = jnp.linalg.solve(H, g)
    # keep α > 0: a fraction of the largest feasible step
    ratio = jnp.where(d > 0, a / jnp.where(d > 0, d, 1.0), jnp.inf)
    s = jnp.minimum(1.0, 0.9 * jnp.min(ratio))
    return a - s * d

  a0 = jnp.ones(T, M.dtype) / jnp.sqrt(jnp.maximum(jnp.sum(Mn), 1e-12))
  alpha = _iterate(newton, jnp.abs(a0), iters, tol=1e-9)
  # α of the normalised problem → α of M itself: (M α')_i = 1/α'_i for α' = α / sqrt(‖M‖_F)
  alpha = alpha * p * (fro > 0) / jnp.sqrt(jnp.where(fro > 0, fro, 1.0))
  if max_norm > 0:
    norm = jnp.sqrt(jnp.maximum(alpha @ M @ alpha, 0.0))
    alpha = jnp.where(norm > max_norm, alpha / jnp.where(norm > 0, norm, 1.0) * max_norm, alpha)
  return alpha


def gram(task_grads_leaves) -> jax.Array:
  """`M = Σ_l G_l G_lᵀ` of per-task gradient leaves `[T, ...]`."""
  out = 0.0
  for g in task_grads_leaves:
    g2 = g.reshape(g.shape[0], -1)
    out = out + g2 @ g2.T
  return out
