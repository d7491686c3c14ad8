"""MBCF: multilevel Bayesian causal forest for CATEs in cluster-randomized trials (spec §3.4).

Estimand (spec ``crt_cate.md`` §2): tau(x, v) = E[Y(1) - Y(0) | X = x, V = v] in a two-arm parallel
CRT, the cluster random intercept integrated out.

Model::

    Y_ij = mu(X_ij, V_i) + tau(X_ij, V_i) * A_i + b_i + e_ij,   b_i ~ N(0, s_b^2),  e_ij ~ N(0, sigma^2)

with separate BART priors on the prognostic function mu (many trees, standard prior) and on the
treatment effect tau (few trees, strong shrinkage: base .25, power 3). Both forests split on
[X, V]. The known propensity 0.5 of a 1:1 CRT is constant and is *not* used as a covariate
(stochtree ``propensity_covariate="none"``; multibart drops a constant ``pihat`` with a warning).
The CATE draws are the treatment-effect term (stochtree ``terms="cate"``), which never contains
the random intercept, so a row's CATE does not depend on its cluster label (new clusters are fine).
Point = posterior mean, 95% interval = 2.5%/97.5% posterior quantiles.

R original: ``multibart::bcf_binary`` (J. Murray; OSF tarball) with ``randeff_design =
dummies(cluster)``, ``randeff_variance_component_design = matrix(1, n_clusters, 1)``,
``nburn = 1000``, ``nsim = 1000``, ``nthin = 1``. Python: :class:`stochtree.BCFModel` 0.4.5.

Defaults follow multibart where stochtree allows:

* control (prognostic) forest: ``ntree_control = 250``, base .95, power 2, leaf prior SD
  ``sd_control / sqrt(ntree)`` with ``sd_control = 2 sd(y)`` (``sd_control = 2.0`` here, in units of
  sd(y));
* moderate (treatment) forest: ``ntree_moderate = 50``, ``base_moderate = 0.25``,
  ``power_moderate = 3``, leaf prior SD ``sd_moderate / sqrt(ntree)`` with ``sd_moderate = sd(y)``
  (``sd_moderate = 1.0``);
* residual variance prior sigma^2 ~ nu lambda / chi^2_nu, nu = 3, P(sigma < sigest) = 0.9 (sigest =
  residual SD of the linear fit), mapped exactly to stochtree's inverse-gamma(nu / 2, nu lambda / 2);
* 1000 burn-in, 1000 kept draws, no thinning, one chain, no grow-from-root warm start.

Differences from multibart, stated one by one:

* ``use_muscale = TRUE`` (a half-Cauchy scale on the control forest) is replaced by stochtree's
  inverse-gamma update of the control leaf variance (``sample_sigma2_leaf_control = True``, IG(3,
  0.5 / ntree) on the standardized scale), started at ``sd_control^2 / ntree``.
* ``use_tauscale = TRUE`` is stochtree's ``adaptive_coding = True``: the treatment forest enters as
  ``(b_0 (1 - A) + b_1 A) tau(x)`` with normal priors on b_0, b_1 (the same device as bcf's
  tau scale); the CATE draws are ``(b_1 - b_0) tau(x)``.
* Random effects: multibart gives the random-effect SD a half-t prior (``randeff_scales = 1``,
  ``randeff_df = 3``); stochtree uses a working-parameter expansion b_i = alpha xi_i, alpha ~ N(0, 1),
  xi_i ~ N(0, s_xi^2), s_xi^2 ~ inverse-gamma(``rfx_variance_prior_shape``,
  ``rfx_variance_prior_scale``) on the standardized outcome scale.
* stochtree can add a parametric treatment intercept tau_0 (its default); multibart has none, so
  ``sample_intercept = False`` here.
* stochtree requires ``min_samples_leaf`` (5) observations per leaf and caps the depth of the
  treatment trees at 5 and of the control trees at 10; multibart has no such limits.
"""

from __future__ import annotations

import numpy as np

from clusterhte.data.trial import TrialData
from clusterhte.methods.bart import (check_float, check_int, check_sampler, features, quantile_interval,
                                     random_seed, rfx_variance_draws, sigma_prior)
from clusterhte.methods.base import CateResult, Estimator, MethodError

__all__ = ["MBCF"]


class MBCF(Estimator):
    """Multilevel Bayesian causal forest (paper label MBCF) with a cluster random intercept.

    Parameters
    ----------
    num_trees_control, alpha_control, beta_control : prognostic forest size and tree prior
        (multibart ``ntree_control``, ``base_control``, ``power_control``).
    sd_control : prior SD of the prognostic function in units of sd(y) (multibart ``sd_control /
        sd(y)``).
    sample_sigma2_leaf_control : update the prognostic leaf variance (stand-in for ``use_muscale``).
    num_trees_moderate, alpha_moderate, beta_moderate : treatment forest size and tree prior
        (multibart ``ntree_moderate``, ``base_moderate``, ``power_moderate``).
    sd_moderate : prior SD of the treatment effect in units of sd(y) (multibart ``sd_moderate /
        sd(y)``).
    adaptive_coding : b_0 / b_1 treatment coding (stand-in for ``use_tauscale``).
    sample_intercept : add stochtree's parametric treatment intercept tau_0 (not in multibart).
    sigdf, sigquant : residual-variance prior (multibart/bcf ``nu = 3``, ``sigq = 0.9``).
    num_burnin, num_mcmc, num_chains, keep_every : MCMC layout (multibart ``nburn``, ``nsim``, one
        chain, ``nthin``); each chain runs ``num_burnin + num_mcmc * keep_every`` iterations.
    num_gfr : grow-from-root warm-start iterations (0 = MCMC from the root, as multibart).
    min_samples_leaf : smallest leaf in both forests (stochtree).
    rfx_variance_prior_shape, rfx_variance_prior_scale : inverse-gamma prior of the random-effect
        group-parameter variance (stochtree parameterisation, standardized outcome scale).
    n_threads : accepted for the workflow's thread count, not used: stochtree runs one thread (its
        threads changed the draws and slowed a 600-row fit down, see
        :class:`~clusterhte.methods.bart.RandomInterceptBART`), and the chains run one after
        another in stochtree's loop. Running them in worker processes was slower: a chain's
        model has to come back as stochtree JSON, which for 1000 draws cost more than the chain
        (2 chains at the paper settings: 37 s one after another, 57 s in 2 processes, even
        without the prognostic forest; ``benchmarks/crt_replicate.py --methods mbcf --chains 2
        --threads 2``). The estimates are the same for every ``n_threads``.
    """

    name = "mbcf"
    label = "MBCF"
    designs = ("crt",)
    has_intervals = True
    library = "stochtree"

    def __init__(self, num_trees_control: int = 250, alpha_control: float = 0.95,
                 beta_control: float = 2.0, sd_control: float = 2.0,
                 sample_sigma2_leaf_control: bool = True, num_trees_moderate: int = 50,
                 alpha_moderate: float = 0.25, beta_moderate: float = 3.0, sd_moderate: float = 1.0,
                 adaptive_coding: bool = True, sample_intercept: bool = False, sigdf: float = 3.0,
                 sigquant: float = 0.9, num_burnin: int = 1000, num_mcmc: int = 1000,
                 num_chains: int = 1, keep_every: int = 1, num_gfr: int = 0,
                 min_samples_leaf: int = 5, rfx_variance_prior_shape: float = 1.0,
                 rfx_variance_prior_scale: float = 1.0, n_threads: int = 1,
                 random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _checked(self) -> dict:
        m = self.name
        p = {
            "num_trees_control": check_int(m, "num_trees_control", self.num_trees_control, 1),
            "alpha_control": check_float(m, "alpha_control", self.alpha_control, 0.0, 1.0),
            "beta_control": check_float(m, "beta_control", self.beta_control, 0.0, None, open_low=False),
            "sd_control": check_float(m, "sd_control", self.sd_control, 0.0),
            "num_trees_moderate": check_int(m, "num_trees_moderate", self.num_trees_moderate, 1),
            "alpha_moderate": check_float(m, "alpha_moderate", self.alpha_moderate, 0.0, 1.0),
            "beta_moderate": check_float(m, "beta_moderate", self.beta_moderate, 0.0, None, open_low=False),
            "sd_moderate": check_float(m, "sd_moderate", self.sd_moderate, 0.0),
            **check_sampler(self),
        }
        for b in ("sample_sigma2_leaf_control", "adaptive_coding", "sample_intercept"):
            v = getattr(self, b)
            if not isinstance(v, (bool, np.bool_)):
                raise MethodError(f"method '{m}': hyperparameter '{b}' must be true/false, got {v!r}")
            p[b] = bool(v)
        return p

    def _fit(self, train: TrialData) -> None:
        from stochtree import BCFModel

        p = self._checked()
        self.covariates_ = tuple(train.individual_covariates) + tuple(train.cluster_covariates)
        if not self.covariates_:
            raise MethodError(f"method '{self.name}': {train.name} has no covariates; the forests "
                              "of a causal forest need at least one covariate column")
        X = features(train, self.covariates_)
        y = train.outcome.astype(float, copy=True)
        A = train.treatment.astype(float, copy=True)
        groups = np.ascontiguousarray(train.cluster_codes.astype(np.int32))
        sd_y = float(np.std(y))
        if not sd_y > 0:
            raise MethodError(f"method '{self.name}': column 'outcome' of {train.name} is constant")
        shape, scale = sigma_prior(y, np.column_stack([X, A]), p["sigdf"], p["sigquant"])

        general = {"propensity_covariate": "none", "adaptive_coding": p["adaptive_coding"],
                   "num_chains": p["num_chains"], "keep_every": p["keep_every"],
                   "num_threads": 1, "sigma2_global_shape": shape,
                   "sigma2_global_scale": scale, "standardize": True}
        seed = random_seed(self.random_state)
        if seed is not None:
            general["random_seed"] = seed
        mc, mt = p["num_trees_control"], p["num_trees_moderate"]
        prognostic = {"num_trees": mc, "alpha": p["alpha_control"], "beta": p["beta_control"],
                      "min_samples_leaf": p["min_samples_leaf"],
                      "sigma2_leaf_init": float(p["sd_control"] ** 2 / mc),
                      "sample_sigma2_leaf": p["sample_sigma2_leaf_control"]}
        moderate = {"num_trees": mt, "alpha": p["alpha_moderate"], "beta": p["beta_moderate"],
                    "min_samples_leaf": p["min_samples_leaf"],
                    "sigma2_leaf_init": float(p["sd_moderate"] ** 2 / mt),
                    "sample_sigma2_leaf": False, "sample_intercept": p["sample_intercept"]}
        rfx = {"model_spec": "intercept_only",
               "variance_prior_shape": p["rfx_variance_prior_shape"],
               "variance_prior_scale": p["rfx_variance_prior_scale"]}
        model = BCFModel()
        model.sample(X_train=X, Z_train=np.ascontiguousarray(A), y_train=y,
                     propensity_train=np.full(train.n, 0.5), rfx_group_ids_train=groups,
                     num_gfr=p["num_gfr"], num_burnin=p["num_burnin"], num_mcmc=p["num_mcmc"],
                     general_params=general, prognostic_forest_params=prognostic,
                     treatment_effect_forest_params=moderate, random_effects_params=rfx)
        self.model_ = model
        self.n_clusters_ = int(groups.max()) + 1

    def cate_draws(self, test: TrialData) -> np.ndarray:
        """(n_rows, n_draws) posterior draws of tau(x, v) (the random intercept is not in this term)."""
        n = test.n
        X = features(test, self.covariates_)
        # stochtree demands group ids whenever the model has random effects, even for the CATE
        # term, which does not use them: pass the first training cluster for every row.
        ids = np.zeros(n, dtype=np.int32)
        tau = self.model_.predict(X, np.ones(n), propensity=np.full(n, 0.5), rfx_group_ids=ids,
                                  type="posterior", terms="cate")
        return np.asarray(tau, dtype=float).reshape(n, -1)

    def _predict(self, test: TrialData) -> CateResult:
        draws = self.cate_draws(test)
        if not np.all(np.isfinite(draws)):
            raise MethodError(f"method '{self.name}': non-finite CATE draws on {test.name}")
        res = quantile_interval(draws)
        res.info.update({"library": "stochtree", "n_draws": int(draws.shape[1]),
                         "sigma2_posterior_mean": float(np.mean(self.model_.global_var_samples))})
        rfx_var = rfx_variance_draws(self.model_)
        if rfx_var is not None:
            res.info["rfx_variance_posterior_mean"] = float(np.mean(rfx_var))
        return res
