"""The ``clusterhte`` command: list methods, fit one method on a trial file, audit an output.

Examples::

    clusterhte methods
    clusterhte fit --data tests/data/example_crt.csv --design crt --outcome y --treatment arm \
        --cluster site --covariates age,female,score --cluster-covariates urban --method lmm \
        --out cates.parquet
    clusterhte validate --data tests/data/example_crt.csv --design crt --outcome y --treatment arm \
        --cluster site --covariates age,female,score --cluster-covariates urban --methods lmm,gamm \
        --out validation/
    clusterhte audit results/tables/otr_summary.parquet

Exit codes: 0 success, 1 audit found a changed, missing or unchecked input or no provenance, 2 bad
input or usage (one-line message).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

EXIT_USAGE = 2


def _cmd_methods(args) -> int:
    from clusterhte import methods

    rows = []
    for name, info in methods.REGISTRY.items():
        try:
            cls = methods.get(name)
            rows.append((name, cls.label or name, info.design, "yes" if cls.has_intervals else "no", cls.library))
        except ImportError as e:  # a method whose library is not installed
            rows.append((name, name, info.design, "?", f"unavailable: {e}"))
    head = ("method", "label", "design", "intervals", "library")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_audit(args) -> int:
    from clusterhte import io
    from clusterhte.audit import audit, clean

    try:
        rep = audit(args.file, base=args.base, allow=args.allow)
    except io.InputFileError as e:
        print(f"clusterhte audit: {clean(e)}", file=sys.stderr)
        return EXIT_USAGE
    if rep.no_provenance:
        print(f"clusterhte audit: {clean(args.file)} has no provenance (a raw input, a file not written "
              "by clusterhte, or an output rewritten by another program); nothing can be verified",
              file=sys.stderr)
        return 1
    print("\n".join(rep.lines))
    print(f"\n{rep.files} file(s) in the chain.")
    if rep.ok:
        print("All inputs match the hashes recorded when each output was made.")
        return 0
    for f in rep.changed:
        print(f"CHANGED: {f} differs from the version its output was made from", file=sys.stderr)
    for f in rep.missing:
        print(f"MISSING: {f} no longer exists", file=sys.stderr)
    for f in rep.unchecked:
        print(f"NOT CHECKED: {f} is not a regular file inside the workflow directory or a declared data "
              "location (add its folder with --allow)", file=sys.stderr)
    return 1


def _parse_param(text: str) -> tuple[str, object]:
    import yaml

    from clusterhte.methods import MethodError

    if "=" not in text:
        raise MethodError(f"--param expects name=value, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MethodError(f"--param {text!r}: the value is not valid YAML ({first}); "
                          "write e.g. name=5, name=0.1, name=true or name=[a, b]") from None


# --------------------------------------------------------------------- settings (item: one source)
SETTINGS_FILES = {"quick": "config.yaml", "paper": "paper.yaml"}


def config_dir(given: str | None = None) -> Path:
    """Where config/methods.yaml and the run configs live: ``given``, else ./config when it holds
    methods.yaml (the workflow directory), else the repository's config folder."""
    if given:
        return Path(given)
    here = Path("config")
    if (here / "methods.yaml").is_file():
        return here
    return Path(__file__).resolve().parents[2] / "config"


def fit_settings(method: str, settings: str = "quick", cdir: str | Path | None = None) -> dict:
    """Hyperparameters of ``method`` exactly as the workflow's trial sheet uses them.

    ``config/methods.yaml`` updated by the ``trials.method_overrides`` of the run config that
    ``settings`` names: ``quick`` -> config/config.yaml (the default ``make run``), ``paper`` ->
    config/paper.yaml. The same function (:func:`clusterhte.config.method_params`) gives the
    sheet's values, so ``clusterhte fit`` and the sheet fit the same model.
    """
    from clusterhte import config as chconfig
    from clusterhte.methods import MethodError

    if settings not in SETTINGS_FILES:
        raise MethodError(f"--settings must be one of {sorted(SETTINGS_FILES)}, got {settings!r}")
    d = config_dir(None if cdir is None else str(cdir))
    try:
        mcfg = chconfig.load_yaml(d / "methods.yaml")
        run = chconfig.load_yaml(d / SETTINGS_FILES[settings])
    except chconfig.ConfigError as e:
        raise MethodError(f"--settings {settings}: {e}") from None
    return chconfig.method_params(mcfg, run.get("trials") or {}, method)


# --------------------------------------------------------------------- pre-fit checks (reusable)
class UsageError(ValueError):
    """A command-line argument that cannot work (output path, settings); exit code 2."""


def check_output_path(out: str | os.PathLike, data: str | os.PathLike | None = None,
                      suffixes: tuple[str, ...] = (".parquet", ".csv"), directory: bool = False) -> Path:
    """Refuse an output path that would destroy the input or cannot be written, before any work.

    - the output resolves to the input file (same path, ``./`` spelling, symlink or hard link);
    - an existing directory, or a parent that is a file, or a folder where no file can be made
      (e.g. /proc, read-only);
    - a suffix other than ``suffixes`` (``suffixes=()`` skips this check, e.g. for a directory).
    ``directory=True``: ``out`` is an output folder (may exist, must then be a writable folder).
    Nothing is created: the writability probe makes and removes a temporary file in the nearest
    existing parent folder.
    """
    out = Path(out)
    if suffixes and not str(out).endswith(suffixes):
        raise UsageError(f"--out must end in {' or '.join(suffixes)}, got {str(out)!r}")
    if data is not None:
        d = Path(data)
        same = False
        try:
            same = out.exists() and d.exists() and os.path.samefile(out, d)
        except OSError:
            pass
        if same or out.resolve() == d.resolve():
            raise UsageError(f"--out {out} is the input file {d}; refusing to overwrite your data. "
                             "Choose another output file name")
    if directory:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a folder")
    elif out.is_dir():
        raise UsageError(f"--out {out} is an existing directory; give a file name")
    if out.exists() and not os.access(out, os.W_OK):
        raise UsageError(f"--out {out} exists and is not writable")
    parent = out if directory and out.is_dir() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out {out} cannot be created: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".clusterhte-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"--out {out} cannot be written: no file can be created in {parent} "
                         f"({e.strerror or e})") from None
    return out


from clusterhte.config import check_hyperparameters  # noqa: E402  (reused by other subcommands)


def add_fit_arguments(s: argparse.ArgumentParser, out_help: str = "output file (.parquet with provenance, or .csv)",
                      method: bool = True):
    """The arguments of ``clusterhte fit`` (data, roles, method, settings, seed, output);
    ``method=False`` leaves out ``--method`` (for a subcommand that takes several)."""
    s.add_argument("--data", required=True, help="the trial file (.csv, .tsv, .parquet, .dta); only read")
    s.add_argument("--design", required=True, choices=["crt", "multisite"],
                   help="crt: treatment assigned by cluster; multisite: individuals randomised within sites")
    s.add_argument("--outcome", required=True, help="outcome column")
    s.add_argument("--treatment", required=True, help="treatment column, coded 0/1")
    s.add_argument("--cluster", required=True, help="cluster (site) column")
    s.add_argument("--covariates", default="", help="individual-level covariates, comma-separated")
    s.add_argument("--cluster-covariates", default="", help="cluster-level covariates, comma-separated")
    s.add_argument("--moderators", default="", help="effect moderators (OTR methods), comma-separated")
    s.add_argument("--id", default=None, help="optional row id column, copied to the output (must be unique)")
    if method:
        s.add_argument("--method", required=True, help="estimator name (see `clusterhte methods`)")
    s.add_argument("--settings", default="quick", choices=sorted(SETTINGS_FILES),
                   help="hyperparameters: config/methods.yaml with the trials.method_overrides of "
                        "config/config.yaml (quick, the default, as `make run` and the trial sheet) "
                        "or of config/paper.yaml (paper)")
    s.add_argument("--config-dir", default=None,
                   help="folder holding methods.yaml, config.yaml and paper.yaml (default: ./config "
                        "when it has methods.yaml, else the repository's config/)")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="hyperparameter override on top of --settings (repeatable; value in YAML)")
    s.add_argument("--seed", type=int, default=20231, help="root seed (default: the workflow's, 20231)")
    s.add_argument("--threads", type=int, default=1, help="threads for methods that can use them")
    s.add_argument("--smaller-is-better", action="store_true",
                   help="recommend treatment where the CATE is below 0 (e.g. a blood-pressure change)")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s.add_argument("--out", required=True, help=out_help)


def fit_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or usage (one line, exit 2)."""
    from clusterhte import io, methods
    from clusterhte.data.trial import TrialDataError
    return (TrialDataError, methods.MethodError, UsageError, io.InputFileError)


def resolve_method(args, name: str | None = None) -> str:
    """The method ``name`` (default ``args.method``) checked against the registry and ``--design``."""
    from clusterhte import methods

    method = (name or args.method).lower()
    if method not in methods.REGISTRY:
        raise methods.MethodError(f"unknown method {name or args.method!r}; known: {', '.join(methods.REGISTRY)}")
    want = "crt" if args.design == "crt" else "multisite"
    if methods.REGISTRY[method].design != want:
        raise methods.MethodError(f"method '{method}' is for {methods.REGISTRY[method].design} trials, "
                                  f"not --design {args.design}; see `clusterhte methods`")
    return method


def method_parameters(args, method: str) -> dict:
    """--settings values updated by --param (sorted keys, as in the workflow)."""
    params = fit_settings(method, args.settings, args.config_dir)
    params.update(dict(_parse_param(t) for t in args.param))
    return dict(sorted(params.items()))


def load_fit_trial(args, warn=None):
    """Read and validate ``--data`` with the roles of ``args``; ``warn(msg)`` receives warnings
    (e.g. a constant outcome)."""
    import warnings

    from clusterhte.data.user import load_trial, split_list

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trial = load_trial(args.data, args.design, outcome=args.outcome, treatment=args.treatment,
                           cluster=args.cluster, individual_covariates=split_list(args.covariates),
                           cluster_covariates=split_list(args.cluster_covariates),
                           moderators=split_list(args.moderators), id_column=args.id)
    for w in caught:
        (warn or (lambda m: print(f"clusterhte: warning: {m}", file=sys.stderr)))(str(w.message))
    return trial


def prepare_fit(args, method: str | None = None, out_suffixes=(".parquet", ".csv"), prog: str = "fit",
                out_directory: bool = False):
    """Every check of ``clusterhte fit`` that needs no fitting, in order; returns
    (trial, method, params, estimator). Raises one of :func:`fit_errors`.

    Output path (not the input, writable), method and design, settings and --param values,
    hyperparameter names/types/NaN, the trial file, then the hyperparameter values against the
    trial. ``out_suffixes=()`` for an output directory (checked as a path that can be created).
    """
    check_output_path(args.out, args.data, suffixes=out_suffixes, directory=out_directory)
    method = resolve_method(args, method)
    params = method_parameters(args, method)
    check_hyperparameters(method, params)  # names, types, NaN/inf: before reading the file
    trial = load_fit_trial(args, warn=lambda m: print(f"clusterhte {prog}: warning: {m}", file=sys.stderr))
    est = check_hyperparameters(method, params, trial)
    return trial, method, params, est


# --------------------------------------------------------------------- progress on stderr
def _fmt_secs(t: float) -> str:
    t = max(0, int(round(t)))
    return f"{t // 3600}h{t % 3600 // 60:02d}m" if t >= 3600 else (f"{t // 60}m{t % 60:02d}s" if t >= 60 else f"{t}s")


# refit loops that can be counted from outside the estimator: (module, function, hyperparameter
# giving the number of calls, what one call is)
REFIT_COUNTERS = (("clusterhte.methods.bootstrap", "resample_clusters", "n_bootstrap", "bootstrap refit"),
                  ("clusterhte.methods.causal_forest", "cluster_half_sample", "n_half_samples", "half-sample"),
                  ("clusterhte.methods.bart", "run_chain", "num_chains", "MCMC chain"))


class Heartbeat:
    """Progress of one long fit on ``stream``: each counted refit (cluster-bootstrap refits,
    causal-forest half-samples, the chains of the BART family) with the time left estimated from the mean time per refit so far,
    and a line every ``interval`` seconds while nothing else is reported (MCMC chains, the main fit).

    The refits are counted by wrapping, for the duration of the fit, the module-level helper each
    estimator calls once per refit (:data:`REFIT_COUNTERS`); nothing in the estimators changes and
    the numbers they compute are the same. ``stream=None`` disables everything.
    """

    def __init__(self, label: str, method: str = "", params: dict | None = None, stream=sys.stderr,
                 interval: float = 30.0, min_gap: float = 2.0):
        self.label, self.method, self.params = label, method, dict(params or {})
        self.stream, self.interval, self.min_gap = stream, interval, min_gap
        self._restore = []
        self._last = 0.0

    def _print(self, msg: str) -> None:
        import time
        self._last = time.monotonic()
        print(f"{self.label}: {msg}", file=self.stream, flush=True)

    def _counter(self, fn, total: int, what: str):
        import time
        state = {"done": 0, "t0": None}

        def wrapped(*a, **k):
            now = time.monotonic()
            if state["t0"] is None:
                state["t0"] = now
            elif state["done"] < total:
                state["done"] += 1
                d = state["done"]
                per = (now - state["t0"]) / d
                if now - self._last >= self.min_gap or d == total - 1:
                    self._print(f"{what} {d}/{total} done, {_fmt_secs(now - self.start)} elapsed, "
                                f"about {_fmt_secs(per * (total - d))} left")
            return fn(*a, **k)
        return wrapped

    def __enter__(self):
        import importlib
        import threading
        import time

        self.start = time.monotonic()
        if self.stream is None:
            return self
        if self.method:
            from clusterhte import methods
            try:
                methods.get(self.method)  # import the estimator's module so its helpers can be counted
            except (ImportError, methods.MethodError):
                pass
        for mod_name, fn_name, param, what in REFIT_COUNTERS:
            total = self.params.get(param)
            if not isinstance(total, int) or isinstance(total, bool) or total < 1:
                continue
            try:
                mod = importlib.import_module(mod_name)
            except ImportError:
                continue
            fn = getattr(mod, fn_name, None)
            if fn is None:
                continue
            wrapped = self._counter(fn, total, what)
            # the defining module and every estimator module that imported the helper by name
            for m in [m for k, m in list(sys.modules.items()) if k.startswith("clusterhte.methods")]:
                if getattr(m, fn_name, None) is fn:
                    setattr(m, fn_name, wrapped)
                    self._restore.append((m, fn_name, fn))
        self._stop = threading.Event()

        def beat():
            while not self._stop.wait(self.interval):
                if time.monotonic() - self._last >= self.interval:
                    self._print(f"still fitting, {_fmt_secs(time.monotonic() - self.start)} elapsed")
        self._thread = threading.Thread(target=beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import time
        if self.stream is None:
            return False
        self._stop.set()
        for mod, name, fn in self._restore:
            setattr(mod, name, fn)
        self._print(f"fit finished in {_fmt_secs(time.monotonic() - self.start)}")
        return False


def _cmd_fit(args) -> int:
    from clusterhte import io
    from clusterhte.stages import apply

    try:
        trial, method, params, est = prepare_fit(args)
    except fit_errors() as e:
        print(f"clusterhte fit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    out = args.out
    print(f"clusterhte fit: {est!r} on {trial.n} rows in {trial.cluster_codes.max() + 1} clusters "
          f"({args.data}; --settings {args.settings})", file=sys.stderr, flush=True)
    try:
        with Heartbeat(f"clusterhte fit: {method}", method=method, params=params,
                       stream=None if args.quiet else sys.stderr):
            fits, _, _ = apply.fit(trial, method, params, args.seed,
                                   larger_is_better=not args.smaller_is_better,
                                   log=sys.stderr, threads=args.threads)
    except fit_errors() as e:
        print(f"clusterhte fit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as e:
        print(f"clusterhte fit: error: {e}", file=sys.stderr)
        return 1
    if "id" in trial.frame.columns:
        fits.insert(0, "id", trial.frame["id"].to_numpy())
    prov = io.provenance(rule="clusterhte fit", inputs=[str(args.data)],
                         config={"method": method, "hyperparameters": params, "design": args.design,
                                 "settings": args.settings, "roles": trial.roles()}, seed=args.seed)
    if str(out).endswith(".csv"):
        with io.atomic_path(out) as tmp:
            fits.to_csv(tmp, index=False)
    else:
        io.write_parquet(fits, out, prov=prov)
    ate = fits["ate"].iloc[0]
    print(f"clusterhte fit: wrote {len(fits)} CATEs to {out}; ATE {ate:.4g} "
          f"[{fits['ate_lower'].iloc[0]:.4g}, {fits['ate_upper'].iloc[0]:.4g}]", file=sys.stderr)
    return 0


def _cmd_validate(args) -> int:
    """Cross-fitted validation of several methods on one trial: the tables of the workflow.

    Every check of ``fit`` runs first (output folder, methods and design, --settings and --param
    values, the trial file, hyperparameters against the trial), with the same one-line errors."""
    import os

    from clusterhte import io, methods
    from clusterhte.data.user import split_list
    from clusterhte.evaluate import validation as V

    try:
        check_output_path(args.out, args.data, suffixes=(), directory=True)
        want = "crt" if args.design == "crt" else "multisite"
        names = [resolve_method(args, m) for m in split_list(args.methods)] or [
            n for n, i in methods.REGISTRY.items() if i.design == want]
        given = dict(_parse_param(t) for t in args.param)
        params = {}
        for m in names:
            own = set(methods.get(m).param_names())
            params[m] = dict(sorted({**fit_settings(m, args.settings, args.config_dir),
                                     **{k: v for k, v in given.items() if k in own}}.items()))
            check_hyperparameters(m, params[m])
        unused = sorted(set(given) - {k for m in names for k in methods.get(m).param_names()})
        if unused:
            raise methods.MethodError(f"--param {unused} is not a hyperparameter of {names}")
        if args.folds < 2 or args.boot < 10 or args.groups < 2:
            raise UsageError("--folds must be >= 2, --groups >= 2 and --boot >= 10")
        trial = load_fit_trial(args, warn=lambda m: print(f"clusterhte validate: warning: {m}", file=sys.stderr))
        for m in names:
            check_hyperparameters(m, params[m], trial)
        try:
            V.propensity(trial)
            V.validation_folds(trial, args.seed, args.folds)
        except ValueError as e:
            raise UsageError(f"{args.data}: {e}") from None
    except fit_errors() as e:
        print(f"clusterhte validate: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    larger = not args.smaller_is_better
    oof = {}
    for m in names:
        print(f"clusterhte validate: cross-fitting {m} on {trial.n} rows in "
              f"{trial.cluster_codes.max() + 1} clusters", file=sys.stderr, flush=True)
        try:
            oof[m] = V.cross_fit(trial, m, params[m], args.seed, k=args.folds, larger_is_better=larger,
                                 threads=args.threads, log=sys.stderr)
        except Exception as e:  # noqa: BLE001 - one method failing is reported, not fatal
            print(f"clusterhte validate: method '{m}' failed: {type(e).__name__}: {e}", file=sys.stderr)
    if not oof:
        print("clusterhte validate: error: every method failed", file=sys.stderr)
        return 1
    tables = V.assess(trial, oof, args.seed, larger_is_better=larger, n_groups=args.groups,
                      n_boot=args.boot)
    os.makedirs(args.out, exist_ok=True)
    for name, t in tables.items():
        with io.atomic_path(os.path.join(args.out, f"{name}.csv")) as tmp:
            t.to_csv(tmp, index=False)
    print(V.verdict_text(tables["verdict"]), file=sys.stderr)
    print(f"clusterhte validate: wrote {len(tables)} tables to {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clusterhte",
        description="Treatment-effect heterogeneity in clustered randomized trials.",
        epilog="Example: clusterhte audit results/tables/otr_summary.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("methods", help="table of estimators: design, intervals, library")
    s.set_defaults(func=_cmd_methods)
    s = sub.add_parser(
        "fit", help="fit one method on a trial file (CSV, TSV, Parquet or Stata) and write its CATEs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("Example:\n  clusterhte fit --data tests/data/example_crt.csv --design crt --outcome y \\\n"
                "      --treatment arm --cluster site --covariates age,female,score \\\n"
                "      --cluster-covariates urban --method gpboost --out cates.parquet\n\n"
                "Output columns: row, cluster, cate, lower, upper, score, decision, seconds, ate, "
                "ate_lower,\nate_upper (and id with --id); cate, lower, upper and ate* on the Delta "
                "scale for every\nmethod, score the method's raw benefit score. Hyperparameters: config/methods.yaml updated by the "
                "run config's\ntrials.method_overrides (--settings quick: config/config.yaml, as "
                "`make run` and the trial\nsheet; --settings paper: config/paper.yaml); --param "
                "name=value (repeatable) on top.\nProgress with an estimate of the time left goes "
                "to stderr (--quiet: none)."))
    add_fit_arguments(s)
    s.set_defaults(func=_cmd_fit)
    v = sub.add_parser(
        "validate",
        help="is the heterogeneity real? cross-fitted calibration, BLP, GATES, RATE, model selection, policy value",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("Example:\n  clusterhte validate --data tests/data/example_crt.csv --design crt --outcome y \\\n"
                "      --treatment arm --cluster site --covariates age,female,score \\\n"
                "      --cluster-covariates urban --methods lmm,gamm --out validation/\n\n"
                "Writes calibration.csv, blp.csv, gates.csv, rate.csv, toc.csv, model_selection.csv,\n"
                "policy_value.csv, verdict.csv and oof_cates.csv (the workflow's table names)."))
    add_fit_arguments(v, out_help="output directory for the CSV tables", method=False)
    v.add_argument("--methods", default="", help="estimators, comma-separated (default: every method of the design)")
    v.add_argument("--folds", type=int, default=5, help="cluster folds (fewer when an arm has fewer clusters)")
    v.add_argument("--groups", type=int, default=5, help="GATES quantile groups")
    v.add_argument("--boot", type=int, default=200, help="cluster-bootstrap replicates (RATE, model selection)")
    v.set_defaults(func=_cmd_validate)
    s = sub.add_parser("audit", help="print the provenance chain of a workflow output and re-check input hashes",
                       epilog="Exit code 0: every input unchanged; 1: an input changed, is missing or could "
                              "not be checked, or the file has no provenance; 2: bad usage.")
    s.add_argument("file", help="a Parquet file written by the workflow")
    s.add_argument("--base", default=None, help="directory the workflow ran in (default: current directory)")
    s.add_argument("--allow", action="append", default=[], metavar="DIR",
                   help="another folder whose files may be re-hashed (besides the workflow directory, "
                        "its shared_dir and the trial sheet's folders); repeatable")
    s.set_defaults(func=_cmd_audit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
