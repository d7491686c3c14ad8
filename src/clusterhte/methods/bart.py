"""Random-intercept BART S-learners for CATEs in cluster-randomized trials: riBART, mixedBART, stan4bart.

Estimand (spec ``crt_cate.md`` §2): tau(x, v) = E[Y(1) - Y(0) | X = x, V = v] in a two-arm parallel
CRT, the cluster random intercept integrated out.

Model (all three methods)::

    Y_ij = f(X_ij, V_i, A_i) + b_i + e_ij,   f ~ BART,  b_i ~ N(0, s_b^2),  e_ij ~ N(0, sigma^2)

The CATE draws come from the **sum of trees only** (random intercept set to 0)::

    tau_s(x, v) = f_s(x, v, 1) - f_s(x, v, 0)     for every retained posterior draw s

point estimate = posterior mean, 95% interval = 2.5%/97.5% posterior quantiles. A row's CATE does
not depend on its cluster label, so prediction works for new clusters and the training rows alike.
A tree that never splits on the treatment adds the same leaf to f(x, v, 1) and f(x, v, 0), so the
draws are computed from the trees that split on it only (15-25 % of the trees; stochtree's split
structure read once per fit, a compiled loop over rows; :func:`treatment_trees`). They equal the
whole-forest contrast up to rounding (1e-12) and cost a fifth of predicting every tree for both arms.

The sampler (one Gibbs sweep per iteration, :func:`run_chain`)
----------------------------------------------------------------
1. the forest f given the partial residual y - b: stochtree's low-level Bayesian backfitting step
   (``ForestSampler.sample_one_iteration``, Chipman et al. 2010 MCMC; optional grow-from-root
   warm-start sweeps);
2. the cluster intercepts from their Gaussian full conditional given r = y - f::

       b_j | . ~ N( (S_j / sigma^2) / (n_j / sigma^2 + 1 / s_b^2),  1 / (n_j / sigma^2 + 1 / s_b^2) )

   with S_j, n_j the per-cluster residual sums and sizes (``numpy.bincount``, no loop over clusters);
3. the random-intercept scale s_b given b, and the residual variance sigma^2 given the residual,
   under **the prior of each method's R original** (below).

Everything runs on the standardized outcome (y - mean(y)) / sd(y); the priors below are stated on
the outcome scale and converted. Chains are pooled; with ``n_threads > 1`` they run concurrently in
forked processes (same draws as one after another).

The three methods differ in the random-effect prior (and the residual-variance prior)
---------------------------------------------------------------------------------------
=============  =======================================================================================
riBART         ``dbarts::rbart_vi`` (``prior = cauchy``): s_b ~ half-Cauchy(0, 2.5 sd(y))
               (dbarts ``rbart.priors$cauchy``: ``dcauchy(x, 0, rel.scale * 2.5)``, ``rel.scale =
               sd(y)``). Non-conjugate: s_b is updated by slice sampling (as dbarts does, on the
               same log posterior -J log s - sum(b^2) / (2 s^2) + log p(s)). sigma^2: BART's
               sigma^2 ~ nu lambda / chi^2_nu, P(sigma < sigest) = sigquant, sigest = residual SD
               of the linear fit (dbarts).
mixedBART      ``mxBART::mxbart`` default ``mxps`` (``prior = 1``, ``df = 3``): the hierarchical
               inverse-Wishart of Huang & Wand (2013), for one random intercept
               s_b^2 | a ~ IG(df / 2, df / a), a ~ IG(1 / 2, 1 / A^2), i.e. s_b ~ half-t_df(0, A),
               sampled by mxBART's two conjugate Gibbs steps (``draw_varianceComponents``). mxBART's
               default scale is data based: A = sdu / qt(0.975, df) with sdu the random-intercept SD
               of ``lme4::lmer(y ~ x + (1 | id))`` (REML; :func:`random_intercept_reml` here).
               ``rfx_prior = "iw"`` gives mxBART's ``prior = 2``: s_b^2 ~ scaled-inv-chi^2(df, s),
               default s = sdu^2 qchisq(0.95, df) / df. sigma^2: as BART but sigest = the
               ``lmer`` residual SD and lambda = sigest^2 qchisq(sigquant, df) / df, which is
               literally what mxbart.R computes (BART's ``wbart`` uses ``qchisq(1 - sigquant)``).
stan4bart      ``stan4bart::stan4bart`` with rstanarm's ``decov()`` (``shape = 1``, ``scale = 1``):
               for one varying intercept the Stan model sets s_b = sigma * scale * t with
               t ~ Gamma(shape, 1) (``make_theta_L``: ``tau[i] * scale[i] * dispersion``), i.e. the
               random-intercept SD *relative to sigma* has a Gamma(shape, scale) prior; and
               sigma ~ Exponential(rate = 1 / sd(y)) (rstanarm ``exponential(autoscale = TRUE)``,
               stan4bart's default ``prior_aux``). t and sigma are updated by slice sampling
               (stan4bart uses Stan's HMC for the same conditional posterior).
=============  =======================================================================================

Chain layouts follow the R defaults (code defaults, ``config/methods.yaml``):

* riBART: 75 trees, 4 chains, ``n.burn = 1500``, ``n.samples = 1500``, ``n.thin = 5``. dbarts divides
  both by ``n.thin`` and runs ``n.thin`` tree sweeps per stored draw, so each chain runs 3000
  sweeps and keeps 300 draws: here ``num_burnin = 1500``, ``num_mcmc = 300``, ``keep_every = 5``.
* mixedBART: 200 trees, 1 chain, ``nskip = 100``, ``ndpost = 1000``, ``keepevery = 1``.
* stan4bart: 75 trees (dbarts default), 4 chains, ``warmup = 1000``, ``iter = 2000``.

Where this differs from the R originals, one by one:

* The trees are sampled by stochtree, not dbarts/BART3: stochtree requires ``min_samples_leaf``
  (default 5) observations per leaf, which the R samplers do not; cut-points are at most 100 per
  feature (``cutpoint_grid_size``), like dbarts' ``n.cuts`` and BART's ``numcut`` defaults. No
  depth cap (``max_depth = -1``), as in R.
* Leaf prior N(0, ((max y - min y) / (2 k))^2 / m), fixed (as dbarts and BART).
* riBART: per stored draw dbarts draws b once, runs ``n.thin`` tree sweeps (sigma^2 inside each)
  and ``n.thin`` slice steps of s_b; here every sweep draws b, s_b and sigma^2 once (the same
  stationary distribution; b is refreshed more often).
* mixedBART: for ``rfx_prior = "iw"``, mxBART's C++ passes its inverse-gamma-converted (df / 2,
  df s / 2) into inverse-Wishart formulas; we use the scaled-inverse-chi^2(df, s) prior its R code
  describes. The data-based scale A is floored at 0.1 sd(y) / qt(0.975, df) (lme4 can return a
  zero variance, with which mxBART's half-t collapses to a point mass at 0).
* stan4bart: HMC is replaced by slice sampling of the same conditionals; stan4bart's BART part
  and its Stan part exchange the fit once per iteration, as here.
* riBART / mixedBART sigma^2 priors use the least-squares (dbarts) and REML (mxBART) sigest.

Library: stochtree 0.4.5 low-level API (``Dataset``, ``Residual``, ``ForestSampler``,
``ForestContainer``, ``RNG``).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import chi2, t as student_t

from clusterhte.data.trial import TrialData
from clusterhte.methods.base import CateResult, Estimator, MethodError, OutcomePrediction
from clusterhte.methods.bootstrap import n_workers, parallel_map

__all__ = ["RiBART", "MixedBART", "Stan4BART", "RandomInterceptBART", "random_intercept_reml",
           "slice_sample_positive", "split_rhat_ess", "halfcauchy_sd_step", "hiw_variance_step", "iw_variance_step",
           "decov_step"]


# ------------------------------------------------------------------ shared helpers (also used by bcf.py)
def check_int(method: str, name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` or a :class:`MethodError` naming the hyperparameter."""
    if isinstance(value, bool) or not isinstance(value, (Integral, Real)) or not np.isfinite(value) \
            or float(value) != int(value):
        raise MethodError(f"method '{method}': hyperparameter '{name}' must be an integer, got {value!r}")
    if int(value) < minimum:
        raise MethodError(f"method '{method}': hyperparameter '{name}' must be >= {minimum}, got {value!r}")
    return int(value)


def check_float(method: str, name: str, value, low: float | None = None, high: float | None = None,
                open_low: bool = True, open_high: bool = True) -> float:
    """``value`` as a finite float inside the given bounds, or a :class:`MethodError`."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise MethodError(f"method '{method}': hyperparameter '{name}' must be a finite number, got {value!r}")
    v = float(value)
    bad = ((low is not None and (v <= low if open_low else v < low))
           or (high is not None and (v >= high if open_high else v > high)))
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        br = ("(" if open_low else "[") + f"{lo}, {hi}" + (")" if open_high else "]")
        raise MethodError(f"method '{method}': hyperparameter '{name}' must be in {br}, got {value!r}")
    return v


def check_sampler(est, rfx: bool = True, gfr_per_chain: bool = False) -> dict:
    """Checked values of the chain-layout hyperparameters every stochtree sampler here shares
    (and, with ``rfx``, stochtree's own random-effect prior used by MBCF), keyed by name."""
    m = est.name or type(est).__name__
    p = {
        "num_burnin": check_int(m, "num_burnin", est.num_burnin, 0),
        "num_mcmc": check_int(m, "num_mcmc", est.num_mcmc, 2),
        "num_chains": check_int(m, "num_chains", est.num_chains, 1),
        "keep_every": check_int(m, "keep_every", est.keep_every, 1),
        "num_gfr": check_int(m, "num_gfr", est.num_gfr, 0),
        "min_samples_leaf": check_int(m, "min_samples_leaf", est.min_samples_leaf, 1),
        "n_threads": check_int(m, "n_threads", est.n_threads, -1),
    }
    if hasattr(est, "sigdf"):
        p["sigdf"] = check_float(m, "sigdf", est.sigdf, 0.0)
        p["sigquant"] = check_float(m, "sigquant", est.sigquant, 0.0, 1.0)
    if rfx:
        p["rfx_variance_prior_shape"] = check_float(m, "rfx_variance_prior_shape",
                                                    est.rfx_variance_prior_shape, 0.0)
        p["rfx_variance_prior_scale"] = check_float(m, "rfx_variance_prior_scale",
                                                    est.rfx_variance_prior_scale, 0.0)
    if p["n_threads"] == 0:
        raise MethodError(f"method '{m}': hyperparameter 'n_threads' must be >= 1 (or -1 for all cores)")
    if not gfr_per_chain and 0 < p["num_gfr"] < p["num_chains"]:
        raise MethodError(
            f"method '{m}': hyperparameter 'num_gfr' ({p['num_gfr']}) must be 0 or >= num_chains "
            f"({p['num_chains']}): each chain starts from its own grow-from-root ensemble")
    return p


def random_seed(random_state) -> int | None:
    """The integer seed handed to stochtree's C++ generator (None: seeded from the OS)."""
    if random_state is None:
        return None
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, (Integral, np.integer)):
        raise MethodError(f"random_state must be an integer or None, got {random_state!r}")
    return int(random_state) & 0x7FFFFFFF


def features(data: TrialData, columns: tuple[str, ...]) -> np.ndarray:
    """Float, C-contiguous, writeable covariate matrix (stochtree rejects read-only pandas views)."""
    missing = [c for c in columns if c not in data.frame.columns]
    if missing:
        raise MethodError(f"{data.name}: covariate column(s) {missing} used in training are missing; "
                          f"columns are {list(data.frame.columns)}")
    X = data.frame[list(columns)].to_numpy(dtype=float, copy=True) if columns else np.empty((data.n, 0))
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.nonzero(bad)
        raise MethodError(f"{data.name}: covariate '{columns[c[0]]}' has missing or infinite values "
                          f"at row {int(r[0])} (0-based) and {int(bad.sum()) - 1} more cell(s)")
    return np.ascontiguousarray(X)


def least_squares_sigest(y: np.ndarray, design: np.ndarray) -> float:
    """Residual SD of the least-squares fit of y on [1, design] (sd(y) when saturated): dbarts' and
    BART's default ``sigest``."""
    n = y.shape[0]
    Z = np.column_stack([np.ones(n), design])
    if n > Z.shape[1] + 1:
        coef, *_ = np.linalg.lstsq(Z, y, rcond=None)
        resid = y - Z @ coef
        return float(np.sqrt(resid @ resid / (n - np.linalg.matrix_rank(Z))))
    return float(np.std(y, ddof=1))


def sigma_prior(y: np.ndarray, design: np.ndarray, sigdf: float, sigquant: float) -> tuple[float, float]:
    """BART's residual-variance prior as inverse-gamma (shape, scale) on the scale y / sd(y).

    BART / dbarts: sigma^2 ~ nu * lambda / chi^2_nu with lambda chosen so that
    P(sigma < sigest) = sigquant, sigest = residual SD of the least-squares fit of y on ``design``
    (an intercept is added; sd(y) when the fit is saturated). That is IG(nu / 2, nu * lambda / 2).
    """
    s2 = (least_squares_sigest(y, design) / float(np.std(y))) ** 2
    lam = s2 * chi2.ppf(1.0 - sigquant, sigdf) / sigdf
    return sigdf / 2.0, sigdf * lam / 2.0


def quantile_interval(draws: np.ndarray, level: float = 0.95) -> CateResult:
    """Posterior mean and equal-tailed interval of (n_rows, n_draws) CATE draws."""
    return CateResult.from_draws(draws, level=level)


def rfx_variance_draws(model) -> np.ndarray | None:
    """Posterior draws of the random-intercept variance alpha^2 * s_xi^2 of a stochtree model.

    stochtree's redundant parameterisation b_i = alpha * xi_i, xi_i ~ N(0, s_xi^2) (Gelman et al.
    2008) makes alpha^2 * s_xi^2 the variance of the cluster intercepts; stochtree stores it on the
    standardized scale, hence the factor sd(y)^2.
    """
    rfx = getattr(model, "rfx_container", None)
    if rfx is None:
        return None
    par = rfx.extract_parameter_samples()
    alpha = np.asarray(par["alpha_samples"], dtype=float).reshape(-1)
    s2 = np.asarray(par["sigma_samples"], dtype=float).reshape(-1)
    if alpha.shape != s2.shape:
        return None
    return alpha ** 2 * s2 * float(model.y_std) ** 2


# ------------------------------------------------------------------ mxBART's lmer step
def random_intercept_reml(y: np.ndarray, X: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """REML estimates (s_b^2, sigma^2) of y = [1, X] beta + b_g + e, b_g ~ N(0, s_b^2): the fit
    ``lme4::lmer(y ~ X + (1 | g))`` that mxBART uses to set its prior scales.

    Profile REML in lambda = s_b^2 / sigma^2: with theta_j = 1 - 1 / sqrt(1 + n_j lambda), the
    transform z*_ij = z_ij - theta_j mean_j(z) whitens the random-intercept covariance, so
    -2 l_R(lambda) = sum_j log(1 + n_j lambda) + log|X*'X*| + (n - p) log RSS*(lambda) + const,
    minimised over log lambda (the boundary lambda = 0 included). Aliased columns of [1, X] are
    dropped first (pivoted QR), as lme4 does.
    """
    from scipy.linalg import qr

    y = np.asarray(y, dtype=float)
    g = np.asarray(groups, dtype=np.int64)
    n = y.shape[0]
    Z = np.column_stack([np.ones(n), np.asarray(X, dtype=float).reshape(n, -1)])
    _, r, piv = qr(Z, mode="economic", pivoting=True)
    d = np.abs(np.diag(r))
    rank = int(np.sum(d > 1e-7 * d[0]))
    Z = Z[:, np.sort(piv[:rank])]
    p = rank
    if n - p < 2:
        raise MethodError(f"random-intercept REML needs more rows ({n}) than fixed effects ({p}) + 1")
    nj = np.bincount(g).astype(float)
    keep = nj > 0
    nj_g = nj[g]
    ybar = (np.bincount(g, weights=y, minlength=nj.size) / np.where(keep, nj, 1.0))[g]
    Zbar = np.column_stack([np.bincount(g, weights=Z[:, k], minlength=nj.size) for k in range(p)])
    Zbar = (Zbar / np.where(keep, nj, 1.0)[:, None])[g]
    nk = nj[keep]

    def parts(lam: float):
        th = (1.0 - 1.0 / np.sqrt(1.0 + nj_g * lam))
        ys = y - th * ybar
        Zs = Z - th[:, None] * Zbar
        q, rr = np.linalg.qr(Zs)
        resid = ys - q @ (q.T @ ys)
        rss = float(resid @ resid)
        crit = (np.sum(np.log1p(nk * lam)) + 2.0 * np.sum(np.log(np.abs(np.diag(rr))))
                + (n - p) * np.log(rss))
        return crit, rss

    opt = minimize_scalar(lambda u: parts(np.exp(u))[0], bounds=(-12.0, 8.0), method="bounded",
                          options={"xatol": 1e-7})
    lam = float(np.exp(opt.x))
    c0, _ = parts(0.0)
    if c0 <= opt.fun:
        lam = 0.0
    _, rss = parts(lam)
    sigma2 = rss / (n - p)
    return lam * sigma2, sigma2


# ------------------------------------------------------------------ random-effect prior steps
def slice_sample_positive(log_density, x0: float, rng: np.random.Generator, width: float = 1.0,
                          max_steps: int = 50) -> float:
    """One slice-sampling update (Neal 2003: stepping out, then shrinkage) of a positive parameter.

    ``log_density(x)`` is the log density (up to a constant) at a float x. The update runs on
    u = log x (Jacobian added), so it leaves ``log_density`` invariant. Scalar code (``math``): the
    sampler calls it once or twice per sweep, where numpy's per-call overhead would dominate.
    """
    def lt(u: float) -> float:
        if u > 700.0:
            return -math.inf
        x = math.exp(u)
        if x <= 0.0:
            return -math.inf
        v = log_density(x)
        return -math.inf if v != v else v + u

    u0 = math.log(x0)
    level = lt(u0) - rng.exponential()
    left = u0 - width * rng.random()
    right = left + width
    jl = int(max_steps * rng.random())
    jr = max_steps - 1 - jl
    while jl > 0 and lt(left) > level:
        left -= width
        jl -= 1
    while jr > 0 and lt(right) > level:
        right += width
        jr -= 1
    for _ in range(200):
        prop = left + (right - left) * rng.random()
        if lt(prop) > level:
            return math.exp(prop)
        if prop < u0:
            left = prop
        else:
            right = prop
    return x0


def halfcauchy_sd_step(s: float, ssq: float, J: int, A: float, rng: np.random.Generator) -> float:
    """dbarts ``rbart_vi``: update of the random-intercept SD s given J intercepts with sum of
    squares ``ssq`` under s ~ half-Cauchy(0, A): slice sampling of
    log p(s | b) = -J log s - ssq / (2 s^2) - log(1 + (s / A)^2)."""
    h = 0.5 * ssq
    return slice_sample_positive(lambda x: -J * math.log(x) - h / (x * x) - math.log1p((x / A) ** 2),
                                 s, rng)


def hiw_variance_step(s2: float, ssq: float, J: int, df: float, A: float, rng: np.random.Generator) -> float:
    """mxBART ``draw_varianceComponents`` (``prior = 1``), one random effect: the Huang-Wand
    hierarchical inverse-Wishart s^2 | a ~ IG(df / 2, df / a), a ~ IG(1 / 2, 1 / A^2), whose margin is
    s ~ half-t_df(0, A). Two conjugate Gibbs steps: g = 1 / a ~ Gamma((df + 1) / 2, rate = df / s^2 +
    1 / A^2), then s^2 ~ IG((J + df) / 2, ssq / 2 + df g)."""
    g = rng.gamma(0.5 * (df + 1.0)) / (df / s2 + 1.0 / (A * A))
    return (0.5 * ssq + df * g) / rng.gamma(0.5 * (J + df))


def iw_variance_step(ssq: float, J: int, df: float, s: float, rng: np.random.Generator) -> float:
    """mxBART ``prior = 2``, one random effect: s^2 ~ scaled-inverse-chi^2(df, s) = IG(df / 2,
    df s / 2), conjugate: s^2 | b ~ IG((J + df) / 2, (ssq + df s) / 2)."""
    return (0.5 * ssq + 0.5 * df * s) / rng.gamma(0.5 * (J + df))


def decov_step(t: float, sigma: float, ssq: float, J: int, rss: float, n: int, shape: float,
               scale: float, rate: float, rng: np.random.Generator) -> tuple[float, float]:
    """stan4bart / rstanarm ``decov`` for one varying intercept, with ``prior_aux = exponential``.

    Parameters: b_j ~ N(0, (sigma t)^2), t ~ Gamma(shape, scale) (rstanarm: tau ~ Gamma(shape, 1)
    times ``scale``), sigma ~ Exponential(rate). Slice updates of t | b, sigma
    (-J log t - ssq / (2 sigma^2 t^2) + (shape - 1) log t - t / scale) and then of sigma | t, b, residual
    (-(n + J) log sigma - (rss + ssq / t^2) / (2 sigma^2) - rate sigma).
    """
    c = 0.5 * ssq / (sigma * sigma)
    a = shape - 1.0 - J
    t = slice_sample_positive(lambda x: a * math.log(x) - c / (x * x) - x / scale, t, rng)
    h = 0.5 * (rss + ssq / (t * t))
    m = n + J
    sigma = slice_sample_positive(lambda x: -m * math.log(x) - h / (x * x) - rate * x, sigma, rng)
    return t, sigma


def bart_sigma2_step(rss: float, n: int, shape: float, scale: float, rng: np.random.Generator) -> float:
    """sigma^2 ~ IG(shape, scale) (BART's nu lambda / chi^2_nu): sigma^2 | . ~ IG(shape + n / 2,
    scale + rss / 2)."""
    return (scale + 0.5 * rss) / rng.gamma(shape + 0.5 * n)


class _HalfCauchy:
    """riBART's prior: s_b ~ half-Cauchy(0, A); BART sigma^2 prior IG(sig_shape, sig_scale)."""

    def __init__(self, A: float, sig_shape: float, sig_scale: float):
        self.A, self.sig_shape, self.sig_scale = A, sig_shape, sig_scale
        self.description = f"s_b ~ half-Cauchy(0, {A:.4g} sd(y))"

    def init(self, sigma2: float) -> dict:
        return {"s2b": 0.04, "sigma2": sigma2}

    def update(self, st: dict, ssq: float, J: int, rss: float, n: int, rng) -> None:
        s = halfcauchy_sd_step(math.sqrt(st["s2b"]), ssq, J, self.A, rng)
        st["s2b"] = s ** 2
        st["sigma2"] = bart_sigma2_step(rss, n, self.sig_shape, self.sig_scale, rng)


class _MxBART:
    """mixedBART's prior: hierarchical inverse-Wishart (half-t) or inverse-Wishart (IG)."""

    def __init__(self, kind: str, df: float, scale: float, sig_shape: float, sig_scale: float):
        self.kind, self.df, self.scale = kind, df, scale
        self.sig_shape, self.sig_scale = sig_shape, sig_scale
        self.description = (f"s_b ~ half-t_{df:g}(0, {scale:.4g} sd(y)) (hierarchical inverse-Wishart)"
                            if kind == "hiw" else
                            f"s_b^2 ~ scaled-inv-chi2({df:g}, {scale:.4g} var(y)) (inverse-Wishart)")

    def init(self, sigma2: float) -> dict:
        return {"s2b": 0.04, "sigma2": sigma2}

    def update(self, st: dict, ssq: float, J: int, rss: float, n: int, rng) -> None:
        if self.kind == "hiw":
            st["s2b"] = hiw_variance_step(st["s2b"], ssq, J, self.df, self.scale, rng)
        else:
            st["s2b"] = iw_variance_step(ssq, J, self.df, self.scale, rng)
        st["sigma2"] = bart_sigma2_step(rss, n, self.sig_shape, self.sig_scale, rng)


class _Decov:
    """stan4bart's prior: s_b = sigma t, t ~ Gamma(shape, scale); sigma ~ Exponential(rate)."""

    def __init__(self, shape: float, scale: float, rate: float):
        self.shape, self.scale, self.rate = shape, scale, rate
        self.description = (f"s_b = sigma t, t ~ Gamma(shape {shape:g}, scale {scale:g}) (rstanarm decov); "
                            f"sigma ~ Exponential(rate {rate:g} / sd(y))")

    def init(self, sigma2: float) -> dict:
        return {"t": 0.2 / math.sqrt(sigma2), "sigma2": sigma2, "s2b": 0.04}

    def update(self, st: dict, ssq: float, J: int, rss: float, n: int, rng) -> None:
        t, sig = decov_step(st["t"], math.sqrt(st["sigma2"]), ssq, J, rss, n, self.shape, self.scale,
                            self.rate, rng)
        st["t"], st["sigma2"], st["s2b"] = t, sig ** 2, (sig * t) ** 2


def run_chain(X: np.ndarray, y: np.ndarray, groups: np.ndarray, prior, *, num_trees: int,
              alpha: float, beta: float, min_samples_leaf: int, leaf_scale: float, sigma2_init: float,
              num_gfr: int, num_burnin: int, num_mcmc: int, keep_every: int, n_threads: int,
              seed: int, rng: np.random.Generator) -> dict:
    """One chain of the random-intercept BART Gibbs sampler on standardized y (module docstring).

    Returns the kept forests (a stochtree ``ForestContainer``) and the kept draws of the cluster
    intercepts b (n_kept x J), s_b^2 and sigma^2.
    """
    from stochtree import (Dataset, Forest, ForestContainer, ForestModelConfig, ForestSampler,
                           GlobalModelConfig, RNG, Residual)

    n, p = X.shape
    J = int(groups.max()) + 1
    nj = np.bincount(groups, minlength=J).astype(float)
    data = Dataset()
    data.add_covariates(X)
    resid = Residual(y.copy())
    gcfg = GlobalModelConfig(global_error_variance=sigma2_init)
    fcfg = ForestModelConfig(num_trees=num_trees, num_features=p, num_observations=n,
                             feature_types=np.zeros(p, dtype=int),
                             variable_weights=np.full(p, 1.0 / p), alpha=alpha, beta=beta,
                             min_samples_leaf=min_samples_leaf, max_depth=-1, leaf_model_type=0,
                             leaf_model_scale=leaf_scale, cutpoint_grid_size=100)
    sampler = ForestSampler(data, gcfg, fcfg)
    container = ForestContainer(num_trees, 1, True, False)
    forest = Forest(num_trees, 1, True, False)
    sampler.prepare_for_sampler(data, resid, forest, 0, np.array([0.0]))
    cpp_rng = RNG(seed)

    st = prior.init(sigma2_init)
    b = np.zeros(J)
    kept_b, kept_s2b, kept_sig2 = [], [], []
    total = num_gfr + num_burnin + num_mcmc * keep_every
    for it in range(total):
        gfr = it < num_gfr
        i_mc = it - num_gfr - num_burnin
        keep = i_mc >= 0 and (i_mc + 1) % keep_every == 0
        gcfg.update_global_error_variance(float(st["sigma2"]))
        sampler.sample_one_iteration(container, forest, data, resid, cpp_rng, gcfg, fcfg,
                                     keep_forest=keep, gfr=gfr, num_threads=n_threads)
        # cluster intercepts from their Gaussian full conditional given r = y - f
        r = np.asarray(resid.get_residual(), dtype=float).ravel() + b[groups]
        sigma2, s2b = float(st["sigma2"]), float(st["s2b"])
        prec = nj / sigma2 + 1.0 / s2b
        mean = np.bincount(groups, weights=r, minlength=J) / sigma2 / prec
        b = mean + rng.standard_normal(J) / np.sqrt(prec)
        e = r - b[groups]
        resid.update_data(e)
        prior.update(st, float(b @ b), J, float(e @ e), n, rng)
        if keep:
            kept_b.append(b)
            kept_s2b.append(float(st["s2b"]))
            kept_sig2.append(float(st["sigma2"]))
    return {"forests": container, "b": np.array(kept_b), "s2b": np.array(kept_s2b),
            "sigma2": np.array(kept_sig2)}


def split_rhat_ess(chains: np.ndarray) -> tuple[float, float]:
    """Split-chain potential scale reduction R-hat and effective sample size of a scalar quantity.

    ``chains``: (n_chains, n_draws). Each chain is split in half (Gelman et al., BDA3 §11.4);
    R-hat = sqrt(((n - 1) / n W + B / n) / W); the ESS sums the autocorrelations of the pooled
    split chains (from the variogram, BDA3 eq. 11.7) up to Geyer's initial positive sequence.
    """
    x = np.asarray(chains, dtype=float)
    if x.ndim != 2 or x.shape[1] < 4:
        raise ValueError(f"chains must be (n_chains, n_draws >= 4), got shape {x.shape}")
    h = x.shape[1] // 2
    x = np.vstack([x[:, :h], x[:, h:2 * h]])
    m, n = x.shape
    means = x.mean(axis=1)
    W = float(np.mean(x.var(axis=1, ddof=1)))
    B = float(n * means.var(ddof=1))
    var_plus = (n - 1) / n * W + B / n
    if not W > 0:
        return float("nan"), float("nan")
    rhat = float(np.sqrt(var_plus / W))
    xc = x - means[:, None]
    f = np.fft.rfft(xc, n=2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), axis=1)[:, :n] / n           # per-chain autocovariances
    rho = 1.0 - (W - acov.mean(axis=0)) / var_plus                    # BDA3 (11.7) via W - mean acov
    rho[0] = 1.0
    pairs = rho[: 2 * ((n - 1) // 2)].reshape(-1, 2).sum(axis=1)      # Geyer: rho_{2t} + rho_{2t+1}
    pos = np.argmax(pairs <= 0) if np.any(pairs <= 0) else pairs.size
    tau = -1.0 + 2.0 * float(np.sum(pairs[:pos]))
    return rhat, float(m * n / max(tau, 1.0 / np.log10(m * n)))


# ------------------------------------------------------------------ CATE draws from the treatment trees
def treatment_trees(container, n_features: int, draw_offset: int = 0):
    """The trees of a stochtree ``ForestContainer`` that split on the treatment (the last of
    ``n_features`` columns), as flat node arrays for :func:`_tree_contrasts`.

    A tree without a treatment split predicts the same leaf for ``(x, 1)`` and ``(x, 0)``, so it adds
    exactly 0 to ``f(x, 1) - f(x, 0)``; only these trees (some 15-25 % of them) are needed for the
    CATE draws. Returns ``(draw, start, feature, threshold, left, right, value)`` with one entry of
    ``draw`` / ``start`` per tree (its draw index plus ``draw_offset``, its root) and nodes
    numbered locally (``left`` / ``right`` are local indices, -1 at a leaf), or None when a tree has a
    split that is not numeric.
    """
    cc = container.forest_container_cpp
    counts = np.asarray(cc.GetGranularSplitCounts(int(n_features)))
    pick = np.argwhere(counts[:, :, n_features - 1] > 0)
    draw, start, feat, thr, left, right, value = [], [], [], [], [], [], []
    for s, t in pick.tolist():
        ids = [int(k) for k in cc.Nodes(s, t)]
        local = {k: i for i, k in enumerate(ids)}
        base = len(feat)
        draw.append(s + draw_offset)
        start.append(base + local[0])                 # node 0 is the root
        for k in ids:
            if cc.IsLeafNode(s, t, k):
                feat.append(-1)
                thr.append(0.0)
                left.append(-1)
                right.append(-1)
                value.append(float(np.asarray(cc.NodeLeafValues(s, t, k)).ravel()[0]))
            elif cc.IsNumericSplitNode(s, t, k):
                feat.append(int(cc.SplitIndex(s, t, k)))
                thr.append(float(cc.SplitThreshold(s, t, k)))
                left.append(base + local[int(cc.LeftChildNode(s, t, k))])
                right.append(base + local[int(cc.RightChildNode(s, t, k))])
                value.append(0.0)
            else:
                return None
    return (np.asarray(draw, np.int64), np.asarray(start, np.int64), np.asarray(feat, np.int64),
            np.asarray(thr, np.float64), np.asarray(left, np.int64), np.asarray(right, np.int64),
            np.asarray(value, np.float64))


try:
    import numba

    @numba.njit(cache=True)
    def _tree_contrasts(X, a_col, n_draws, draw, start, feat, thr, left, right, value):  # pragma: no cover - numba
        """(rows, draws): sum over the given trees of leaf(x, A = 1) - leaf(x, A = 0), trees added in
        order to their draw's column. Numeric splits send ``x <= threshold`` left (stochtree)."""
        n = X.shape[0]
        out = np.zeros((n, n_draws))
        for k in range(draw.shape[0]):
            s = draw[k]
            root = start[k]
            for i in range(n):
                node = root                      # A = 1
                while feat[node] >= 0:
                    f = feat[node]
                    x = 1.0 if f == a_col else X[i, f]
                    node = left[node] if x <= thr[node] else right[node]
                v1 = value[node]
                node = root                      # A = 0
                while feat[node] >= 0:
                    f = feat[node]
                    x = 0.0 if f == a_col else X[i, f]
                    node = left[node] if x <= thr[node] else right[node]
                out[i, s] += v1 - value[node]
        return out
except ImportError:  # pragma: no cover - numba is a dependency
    _tree_contrasts = None


# ------------------------------------------------------------------ the shared estimator
class RandomInterceptBART(Estimator):
    """BART S-learner on features [X, V, A] with an additive random intercept by cluster.

    Shared implementation of :class:`RiBART`, :class:`MixedBART` and :class:`Stan4BART`, which
    differ in their random-intercept (and residual-variance) priors and their defaults; see the
    module docstring for the sampler, the estimand and every difference from the R originals.

    Shared hyperparameters
    ----------------------
    num_trees : number of trees m (dbarts ``n.trees``, BART ``ntree``).
    alpha, beta : tree prior P(split at depth d) = alpha (1 + d)^-beta (``base``, ``power``).
    k : leaf prior scale; leaf means ~ N(0, ((max y - min y) / (2 k))^2 / m).
    num_burnin : burn-in sweeps per chain.
    num_mcmc : retained draws per chain; each chain runs ``num_gfr + num_burnin + num_mcmc *
        keep_every`` sweeps.
    num_chains : independent chains (draws pooled, in chain order). With ``n_threads > 1`` the
        chains run ``n_threads`` at a time in forked worker processes (stochtree's sampler holds
        the GIL); every chain's seed depends on its number only, so the draws are the same for
        every ``n_threads``. A worker sends back the trees that split on the treatment as arrays
        (all the CATE draws use); the whole forests, needed only by :meth:`predict_outcome`, are
        then re-run in the calling process the first time they are needed.
    keep_every : thinning.
    num_gfr : grow-from-root warm-start sweeps at the start of every chain (0 = MCMC from the root,
        as in R).
    min_samples_leaf : smallest leaf (stochtree; 5 by default).
    n_threads : chains run at once (see ``num_chains``). Each chain's sampler runs one stochtree
        thread: stochtree's own threads changed the draws (max CATE difference 0.85 at 2 threads
        against 1) and made a 600-row riBART fit 15 times slower (64 s against 4.3 s of wall time,
        paper settings, ``benchmarks/crt_replicate.py``).
    """

    name = ""
    label = ""
    designs = ("crt",)
    has_intervals = True
    library = "stochtree"

    # -------------------------------------------------------------- checks
    def _checked(self) -> dict:
        m = self.name or type(self).__name__
        return {
            "num_trees": check_int(m, "num_trees", self.num_trees, 1),
            "alpha": check_float(m, "alpha", self.alpha, 0.0, 1.0),
            "beta": check_float(m, "beta", self.beta, 0.0, None, open_low=False),
            "k": check_float(m, "k", self.k, 0.0),
            **check_sampler(self, rfx=False, gfr_per_chain=True),
        }

    def _prior(self, y: np.ndarray, design: np.ndarray, groups: np.ndarray, p: dict):  # pragma: no cover
        raise NotImplementedError

    # -------------------------------------------------------------- fit / predict
    def _design(self, data: TrialData, treatment: np.ndarray) -> np.ndarray:
        return np.column_stack([features(data, self.covariates_), treatment])

    def _fit(self, train: TrialData) -> None:
        p = self._checked()
        self.covariates_ = tuple(train.individual_covariates) + tuple(train.cluster_covariates)
        y = train.outcome.astype(float, copy=True)
        A = train.treatment.astype(float, copy=True)
        Xd = self._design(train, A)
        groups = np.ascontiguousarray(train.cluster_codes.astype(np.int64))
        sd_y = float(np.std(y))
        if not sd_y > 0:
            raise MethodError(f"method '{self.name}': column 'outcome' of {train.name} is constant")
        self.y_mean_, self.y_sd_ = float(np.mean(y)), sd_y
        ys = (y - self.y_mean_) / sd_y
        m = p["num_trees"]
        leaf = ((np.ptp(y) / sd_y) / (2.0 * p["k"])) ** 2 / m
        prior, sigma2_init = self._prior(y, Xd, groups, p)
        seed = random_seed(self.random_state)
        self._chain_inputs = {
            "X": Xd, "y": ys, "groups": groups, "prior": prior,
            "seeds": np.random.SeedSequence(seed).generate_state(2 * p["num_chains"]),
            "kw": dict(num_trees=m, alpha=p["alpha"], beta=p["beta"], min_samples_leaf=p["min_samples_leaf"],
                       leaf_scale=leaf, sigma2_init=sigma2_init, num_gfr=p["num_gfr"], num_burnin=p["num_burnin"],
                       num_mcmc=p["num_mcmc"], keep_every=p["keep_every"], n_threads=1)}
        parallel = p["num_chains"] > 1 and n_workers(p["n_threads"], p["num_chains"]) > 1

        def chain(c: int) -> dict:
            out = self._run_chain(c)
            if parallel:
                # from a worker process only the trees that split on the treatment come back, as
                # arrays (all the CATE draws need; stochtree's JSON of the whole forests took twice
                # as long as the chain); the forests themselves are re-run here if ever needed
                forests = out.pop("forests")
                out.update(forests=None, trees=treatment_trees(forests, Xd.shape[1]),
                           n_draws=forests.num_samples())
            return out

        # the chains' seeds depend on the chain number only; stochtree's sampler holds the GIL, so
        # parallel chains run in forked processes; one stochtree thread per chain always
        chains = parallel_map(chain, range(p["num_chains"]), p["n_threads"] if parallel else 1, processes=True)
        self.chains_ = chains
        self.prior_ = prior
        self.n_clusters_ = int(groups.max()) + 1
        self.sigma2_leaf_ = float(leaf * sd_y ** 2)
        self.rfx_variance_draws_ = np.concatenate([c["s2b"] for c in chains]) * sd_y ** 2
        self.sigma2_draws_ = np.concatenate([c["sigma2"] for c in chains]) * sd_y ** 2
        self.ranef_draws_ = np.vstack([c["b"] for c in chains]) * sd_y       # (draws, clusters)

    def _run_chain(self, c: int) -> dict:
        """Chain ``c`` of the fit (:func:`run_chain`; its seeds depend on ``c`` only)."""
        a = self._chain_inputs
        return run_chain(a["X"], a["y"], a["groups"], a["prior"], **a["kw"], seed=int(a["seeds"][2 * c] & 0x7FFFFFFF),
                         rng=np.random.default_rng(a["seeds"][2 * c + 1]))

    def _chain_forests(self, c: int):
        """The kept forests of chain ``c``; a chain that ran in a worker process is run again here
        (same seeds, so the same forests) the first time they are needed."""
        ch = self.chains_[c]
        if ch["forests"] is None:
            ch["forests"] = self._run_chain(c)["forests"]
        return ch["forests"]

    def _forest_draws(self, X: np.ndarray) -> np.ndarray:
        """(rows, draws) posterior draws of f on the outcome scale, chains concatenated."""
        from stochtree import Dataset

        data = Dataset()
        data.add_covariates(np.ascontiguousarray(X, dtype=float))
        f = np.hstack([np.asarray(self._chain_forests(c).predict(data), dtype=float).reshape(X.shape[0], -1)
                       for c in range(len(self.chains_))])
        return f * self.y_sd_ + self.y_mean_

    def _treatment_trees(self):
        """The trees with a treatment split, all chains (draws numbered as in :meth:`_forest_draws`),
        extracted once and kept; None if any tree has a non-numeric split."""
        if getattr(self, "treatment_trees_", False) is False:
            p = len(self.covariates_) + 1
            parts, offset, nodes = [], 0, 0
            for c in self.chains_:
                if c["forests"] is None:         # extracted in the worker process that ran the chain
                    t, n_draws = c["trees"], c["n_draws"]
                else:
                    t, n_draws = treatment_trees(c["forests"], p), c["forests"].num_samples()
                if t is None:
                    parts = None
                    break
                draw, start, feat, thr, left, right, value = t      # node numbers after the earlier chains'
                parts.append((draw + offset, start + nodes, feat, thr, np.where(left >= 0, left + nodes, -1),
                              np.where(right >= 0, right + nodes, -1), value))
                offset += n_draws
                nodes += feat.size
            self.treatment_trees_ = (None if parts is None or _tree_contrasts is None else
                                     (offset, tuple(np.concatenate(z) for z in zip(*parts))))
        return self.treatment_trees_

    def cate_draws(self, test: TrialData) -> np.ndarray:
        """(n_rows, n_draws) posterior draws of f(x, v, 1) - f(x, v, 0), random effect 0.

        Only the trees that split on the treatment are evaluated (:func:`treatment_trees`): every
        other tree contributes ``leaf - leaf = 0``. The draws equal those of the whole forests
        ``f(x, v, 1) - f(x, v, 0)`` up to rounding (1e-12 here, ``tests/test_bart.py``), at a fifth
        of the cost of predicting every tree for both arms.
        """
        n = test.n
        X1 = self._design(test, np.ones(n))
        trees = self._treatment_trees()
        if trees is None:
            X0 = X1.copy()
            X0[:, -1] = 0.0
            f = self._forest_draws(np.vstack([X1, X0]))
            return f[:n] - f[n:]
        n_draws, arrays = trees
        return _tree_contrasts(np.ascontiguousarray(X1), X1.shape[1] - 1, n_draws, *arrays) * self.y_sd_

    def chain_ate_draws(self, test: TrialData) -> np.ndarray:
        """(chains, draws per chain) posterior draws of the average CATE over ``test``'s rows
        (for R-hat / effective sample size)."""
        d = self.cate_draws(test).mean(axis=0)
        return d.reshape(len(self.chains_), -1)

    def predict_outcome(self, train: TrialData, n_replicates: int = 200) -> OutcomePrediction:
        """Posterior means of f (marginal) and of f + b (conditional) at the observed treatment,
        and ``n_replicates`` posterior predictive draws of the outcome (f + b + N(0, sigma^2))."""
        Xd = self._design(train, train.treatment.astype(float))
        codes = train.cluster_codes.astype(np.int64)
        if codes.max() >= self.n_clusters_:
            raise MethodError(f"method '{self.name}': {train.name} has clusters not seen in training")
        f = self._forest_draws(Xd)
        yhat = f + self.ranef_draws_[:, codes].T
        rng = np.random.default_rng(random_seed(self.random_state))
        pick = rng.choice(yhat.shape[1], size=min(n_replicates, yhat.shape[1]), replace=False)
        reps = yhat[:, pick].T + rng.normal(size=(pick.size, train.n)) * np.sqrt(self.sigma2_draws_[pick])[:, None]
        return OutcomePrediction(f.mean(axis=1), yhat.mean(axis=1), reps)

    def _predict(self, test: TrialData) -> CateResult:
        draws = self.cate_draws(test)
        if not np.all(np.isfinite(draws)):
            raise MethodError(f"method '{self.name}': non-finite CATE draws on {test.name}")
        res = quantile_interval(draws)
        res.info.update({"library": "stochtree", "n_draws": int(draws.shape[1]),
                         "rfx_prior": self.prior_.description,
                         "sigma2_posterior_mean": float(np.mean(self.sigma2_draws_)),
                         "rfx_variance_posterior_mean": float(np.mean(self.rfx_variance_draws_))})
        return res


# ------------------------------------------------------------------ the three methods
class RiBART(RandomInterceptBART):
    """riBART: random-intercept BART after ``dbarts::rbart_vi`` (Tan et al. 2016); spec §3.1.

    Prior of the random-intercept SD: **half-Cauchy(0, 2.5 sd(y))**, dbarts' default ``prior =
    cauchy`` (``rbart.priors$cauchy = dcauchy(x, 0, rel.scale * 2.5)``, ``rel.scale = sd(y)``),
    updated by slice sampling as in dbarts. Residual variance: sigma^2 ~ nu lambda / chi^2_nu with
    P(sigma < sigest) = ``sigquant`` (sigest: least-squares residual SD), dbarts' ``chisq(3, 0.9)``.

    Defaults are ``rbart_vi``'s: ``n.trees = 75``, ``k = 2``, ``power = 2``, ``base = 0.95``,
    ``n.chains = 4``, ``n.burn = 1500``, ``n.samples = 1500``, ``n.thin = 5`` (= 1500 burn-in
    sweeps, 300 kept draws 5 sweeps apart per chain).

    Differences from dbarts: trees by stochtree (``min_samples_leaf``); b, s_b and sigma^2 are
    drawn once per tree sweep (dbarts: b once and ``n.thin`` slice steps of s_b per ``n.thin``
    sweeps); chains run in processes of our own (``n_threads`` at a time) rather than dbarts'
    threads. ``rfx_sd_prior_scale`` is the half-Cauchy scale in units of sd(y).
    """

    name = "ribart"
    label = "riBART"

    def __init__(self, num_trees: int = 75, alpha: float = 0.95, beta: float = 2.0, k: float = 2.0,
                 sigdf: float = 3.0, sigquant: float = 0.9, rfx_sd_prior_scale: float = 2.5,
                 num_burnin: int = 1500, num_mcmc: int = 300, num_chains: int = 4,
                 keep_every: int = 5, num_gfr: int = 0, min_samples_leaf: int = 5,
                 n_threads: int = 1, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _prior(self, y, design, groups, p):
        A = check_float(self.name, "rfx_sd_prior_scale", self.rfx_sd_prior_scale, 0.0)
        shape, scale = sigma_prior(y, design, p["sigdf"], p["sigquant"])
        return _HalfCauchy(A, shape, scale), (least_squares_sigest(y, design) / np.std(y)) ** 2


class MixedBART(RandomInterceptBART):
    """mixedBART: BART with random effects after ``mxBART::mxbart`` (rsparapa/bnptools); spec §3.2.

    Prior of the random intercept, mxBART's default ``mxps = list(prior = 1, df = 3)``: the
    **hierarchical inverse-Wishart** (Huang & Wand 2013) s_b^2 | a ~ IG(df / 2, df / a),
    a ~ IG(1 / 2, 1 / A^2) — for one random intercept s_b ~ half-t_3(0, A) — with mxBART's
    data-based scale A = sdu / qt(0.975, df), sdu = REML random-intercept SD of y on the design
    (``lme4::lmer`` in mxBART). ``rfx_prior = "iw"`` is mxBART's ``prior = 2``, the inverse-Wishart
    (one effect: scaled-inverse-chi^2(df, s), i.e. inverse-gamma) with default s = sdu^2
    qchisq(0.95, df) / df. ``rfx_prior_scale`` (units of sd(y) for "hiw", of var(y) for "iw")
    overrides the data-based scale, as ``mxps$scale`` does. Residual variance: BART's chi^2 prior
    with sigest = REML residual SD and lambda = sigest^2 qchisq(sigquant, df) / df (mxbart.R as
    written).

    Defaults are ``mxbart``'s: ``ntree = 200``, ``k = 2``, ``power = 2``, ``base = 0.95``,
    ``sigdf = 3``, ``sigquant = 0.9``, ``nskip = 100``, ``ndpost = 1000``, ``keepevery = 1``, one
    chain. (The CRT code of the same research line used ``ntree = 50``, ``nskip = ndpost = 5000``.)

    Differences from mxBART: trees by stochtree (``min_samples_leaf``); the data-based scale is
    floored at 0.1 sd(y) (before division by the t quantile) so that a zero REML variance does not
    make the prior a point mass at 0; "iw" uses the scaled-inverse-chi^2 that mxbart.R documents
    (its C++ plugs already-converted inverse-gamma parameters into the inverse-Wishart draw).
    """

    name = "mixedbart"
    label = "mixedBART"

    def __init__(self, num_trees: int = 200, alpha: float = 0.95, beta: float = 2.0, k: float = 2.0,
                 sigdf: float = 3.0, sigquant: float = 0.9, rfx_prior: str = "hiw",
                 rfx_prior_df: float = 3.0, rfx_prior_scale: float | None = None,
                 num_burnin: int = 100, num_mcmc: int = 1000, num_chains: int = 1,
                 keep_every: int = 1, num_gfr: int = 0, min_samples_leaf: int = 5,
                 n_threads: int = 1, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _prior(self, y, design, groups, p):
        m = self.name
        if self.rfx_prior not in ("hiw", "iw"):
            raise MethodError(f"method '{m}': hyperparameter 'rfx_prior' must be 'hiw' (mxBART prior = 1) "
                              f"or 'iw' (prior = 2), got {self.rfx_prior!r}")
        df = check_float(m, "rfx_prior_df", self.rfx_prior_df, 0.0)
        sd_y = float(np.std(y))
        s2u, sig2 = random_intercept_reml(y, design, groups)
        if self.rfx_prior_scale is None:
            sdu = max(np.sqrt(s2u), 0.1 * sd_y) / sd_y
            scale = (sdu / student_t.ppf(0.975, df) if self.rfx_prior == "hiw"
                     else sdu ** 2 * chi2.ppf(0.95, df) / df)
        else:
            scale = check_float(m, "rfx_prior_scale", self.rfx_prior_scale, 0.0)
        self.reml_ = (float(s2u), float(sig2))
        sig2s = sig2 / sd_y ** 2
        lam = sig2s * chi2.ppf(p["sigquant"], p["sigdf"]) / p["sigdf"]
        return (_MxBART(self.rfx_prior, df, float(scale), p["sigdf"] / 2.0, p["sigdf"] * lam / 2.0),
                float(sig2s))


class Stan4BART(RandomInterceptBART):
    """stan4bart: BART + Stan multilevel model after ``stan4bart::stan4bart`` (Dorie et al. 2022); spec §3.3.

    Prior of the varying intercept: rstanarm's **decov** (``decov(regularization = 1,
    concentration = 1, shape = 1, scale = 1)``), which for one varying intercept is
    s_b = sigma * scale * t, t ~ Gamma(shape, 1) — a **Gamma(shape = 1, scale = 1) prior on the
    random-intercept SD in units of the residual SD sigma** (stan4bart's Stan model,
    ``make_theta_L``). Residual SD: sigma ~ Exponential(rate = 1 / sd(y)) (rstanarm
    ``exponential(autoscale = TRUE)``, stan4bart's default ``prior_aux``); ``sigma_prior_rate`` is
    that rate in units of 1 / sd(y). t and sigma are updated by slice sampling.

    Defaults are ``stan4bart``'s: ``chains = 4``, ``warmup = 1000``, ``iter = 2000`` (1000 kept per
    chain), BART part with dbarts' defaults (75 trees, ``k = 2``, ``power = 2``, ``base = 0.95``).

    Differences from stan4bart: Stan's HMC for (b, t, sigma) is replaced by Gibbs/slice updates of
    the same conditional posteriors; trees by stochtree (``min_samples_leaf``); chains sequential.
    """

    name = "stan4bart"
    label = "stan4bart"

    def __init__(self, num_trees: int = 75, alpha: float = 0.95, beta: float = 2.0, k: float = 2.0,
                 decov_shape: float = 1.0, decov_scale: float = 1.0, sigma_prior_rate: float = 1.0,
                 num_burnin: int = 1000, num_mcmc: int = 1000, num_chains: int = 4,
                 keep_every: int = 1, num_gfr: int = 0, min_samples_leaf: int = 5,
                 n_threads: int = 1, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _prior(self, y, design, groups, p):
        m = self.name
        shape = check_float(m, "decov_shape", self.decov_shape, 0.0)
        scale = check_float(m, "decov_scale", self.decov_scale, 0.0)
        rate = check_float(m, "sigma_prior_rate", self.sigma_prior_rate, 0.0)
        return _Decov(shape, scale, rate), (least_squares_sigest(y, design) / np.std(y)) ** 2
