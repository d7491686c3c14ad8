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

Exit codes: 0 success, 1 audit found a changed input, 2 bad input or usage (one-line message).
"""

from __future__ import annotations

import argparse
import sys

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
    from clusterhte.audit import audit

    try:
        rep = audit(args.file, base=args.base)
    except io.InputFileError as e:
        print(f"clusterhte audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(rep.lines))
    print(f"\n{rep.files} file(s) in the chain.")
    if rep.ok:
        print("All inputs match the hashes recorded when each output was made.")
        return 0
    for f in rep.changed:
        print(f"CHANGED: {f} differs from the version its output was made from", file=sys.stderr)
    for f in rep.missing:
        print(f"MISSING: {f} no longer exists", file=sys.stderr)
    return 1


def _parse_param(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise ValueError(f"--param expects key=value, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def _cmd_fit(args) -> int:
    from clusterhte import io, methods
    from clusterhte.data.trial import TrialDataError
    from clusterhte.data.user import load_trial, split_list
    from clusterhte.stages import apply

    try:
        params = dict(_parse_param(t) for t in args.param)
        method = args.method.lower()
        if method not in methods.REGISTRY:
            raise methods.MethodError(f"unknown method {args.method!r}; known: {', '.join(methods.REGISTRY)}")
        want = "crt" if args.design == "crt" else "multisite"
        if methods.REGISTRY[method].design != want:
            raise methods.MethodError(f"method '{method}' is for {methods.REGISTRY[method].design} trials, "
                                      f"not --design {args.design}; see `clusterhte methods`")
        est = methods.make(method, params)  # checks hyperparameter names and types up front
        trial = load_trial(args.data, args.design, outcome=args.outcome, treatment=args.treatment,
                           cluster=args.cluster, individual_covariates=split_list(args.covariates),
                           cluster_covariates=split_list(args.cluster_covariates),
                           moderators=split_list(args.moderators), id_column=args.id)
        out = args.out
        if not str(out).endswith((".parquet", ".csv")):
            raise ValueError(f"--out must end in .parquet or .csv, got {out!r}")
    except (TrialDataError, methods.MethodError, ValueError, io.InputFileError) as e:
        print(f"clusterhte fit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"clusterhte fit: {est!r} on {trial.n} rows in {trial.cluster_codes.max() + 1} clusters "
          f"({args.data})", file=sys.stderr, flush=True)
    try:
        fits, _, _ = apply.fit(trial, method, params, args.seed, larger_is_better=not args.smaller_is_better,
                         log=sys.stderr, threads=args.threads)
    except RuntimeError as e:
        print(f"clusterhte fit: error: {e}", file=sys.stderr)
        return 1
    if "id" in trial.frame.columns:
        fits.insert(0, "id", trial.frame["id"].to_numpy())
    prov = io.provenance(rule="clusterhte fit", inputs=[str(args.data)],
                         config={"method": method, "hyperparameters": params, "design": args.design,
                                 "roles": trial.roles()}, seed=args.seed)
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
    """Cross-fitted validation of several methods on one trial: the tables of the workflow."""
    import os

    from clusterhte import io, methods
    from clusterhte.data.trial import TrialDataError
    from clusterhte.data.user import load_trial, split_list
    from clusterhte.evaluate import validation as V

    try:
        want = "crt" if args.design == "crt" else "multisite"
        names = [m.lower() for m in split_list(args.methods)] or [
            n for n, i in methods.REGISTRY.items() if i.design == want]
        for m in names:
            if m not in methods.REGISTRY:
                raise methods.MethodError(f"unknown method {m!r}; known: {', '.join(methods.REGISTRY)}")
            if methods.REGISTRY[m].design != want:
                raise methods.MethodError(f"method '{m}' is for {methods.REGISTRY[m].design} trials, "
                                          f"not --design {args.design}; see `clusterhte methods`")
        given = dict(_parse_param(t) for t in args.param)
        params = {m: {k: v for k, v in given.items() if k in methods.get(m).param_names()} for m in names}
        unused = sorted(set(given) - {k for p in params.values() for k in p})
        if unused:
            raise methods.MethodError(f"--param {unused} is not a hyperparameter of {names}")
        for m in names:
            methods.make(m, params[m])  # checks hyperparameter types up front
        if args.folds < 2 or args.boot < 10 or args.groups < 2:
            raise ValueError("--folds must be >= 2, --groups >= 2 and --boot >= 10")
        trial = load_trial(args.data, args.design, outcome=args.outcome, treatment=args.treatment,
                           cluster=args.cluster, individual_covariates=split_list(args.covariates),
                           cluster_covariates=split_list(args.cluster_covariates),
                           moderators=split_list(args.moderators), id_column=args.id)
        V.propensity(trial)
        V.validation_folds(trial, args.seed, args.folds)
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError(f"--out must be a directory, {args.out!r} is a file")
    except (TrialDataError, methods.MethodError, ValueError, io.InputFileError) as e:
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
                "Output columns: row, cluster, cate, lower, upper, decision, seconds, ate, ate_lower, "
                "ate_upper\n(and id with --id). Hyperparameters default to config/methods.yaml's values; "
                "override with\n--param name=value (repeatable)."))
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
    s.add_argument("--method", required=True, help="estimator name (see `clusterhte methods`)")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter override")
    s.add_argument("--seed", type=int, default=20231, help="root seed (default: the workflow's, 20231)")
    s.add_argument("--threads", type=int, default=1, help="threads for methods that can use them")
    s.add_argument("--smaller-is-better", action="store_true",
                   help="recommend treatment where the CATE is below 0 (e.g. a blood-pressure change)")
    s.add_argument("--out", required=True, help="output file (.parquet with provenance, or .csv)")
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
    for a in s._actions:  # the trial arguments of `fit`, copied (not shared)
        if a.dest in ("help", "method", "param", "out"):
            continue
        kw = {"help": a.help, "default": a.default, "required": a.required}
        if isinstance(a, argparse._StoreTrueAction):
            kw["action"] = "store_true"
            kw.pop("required")
        else:
            kw.update(type=a.type, choices=a.choices, metavar=a.metavar)
        v.add_argument(*a.option_strings, **kw)
    v.add_argument("--methods", default="", help="estimators, comma-separated (default: every method of the design)")
    v.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="hyperparameter override, applied to every listed method that has it")
    v.add_argument("--folds", type=int, default=5, help="cluster folds (fewer when an arm has fewer clusters)")
    v.add_argument("--groups", type=int, default=5, help="GATES quantile groups")
    v.add_argument("--boot", type=int, default=200, help="cluster-bootstrap replicates (RATE, model selection)")
    v.add_argument("--out", required=True, help="output directory for the CSV tables")
    v.set_defaults(func=_cmd_validate)
    s = sub.add_parser("audit", help="print the provenance chain of a workflow output and re-check input hashes",
                       epilog="Exit code 0: every input unchanged; 1: an input changed or is missing; 2: bad usage.")
    s.add_argument("file", help="a Parquet file written by the workflow")
    s.add_argument("--base", default=None, help="directory the workflow ran in (default: current directory)")
    s.set_defaults(func=_cmd_audit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
