# Stage: data. Raw files -> verified copies -> cleaned analysis tables results/data/{dataset}.parquet
# (TrialData with roles in the metadata) and CONSORT-style exclusion tables.

if "tassh" in config:

    checkpoint tassh_fetch:
        # The only rule allowed to use the network: copies the file from the shared folder when it
        # is there, else downloads it from the pinned URL; the sha256 is verified in every case.
        # Its output records whether the file is in place; when no copy can be reached (offline,
        # no ../shared) the TASSH study is skipped and every other study still runs. A copy with a
        # wrong sha256 is an error.
        output:
            TASSH_STATUS,
        params:
            dest=TASSH_RAW,
            local_copies=[str(SHARED / "data" / "tassh" / "bp_ghana.rda")],
            url=TASSH.get("url"),
        log:
            "results/logs/tassh_fetch.log",
        script:
            "../../scripts/tassh_fetch.py"

    def tassh_raw(wildcards):
        checkpoints.tassh_fetch.get()  # the file is in place once the fetch step has run
        return TASSH_RAW

    rule tassh_clean:
        input:
            tassh_raw,
        output:
            data="results/data/tassh.parquet",
            exclusions="results/tables/tassh_exclusions.parquet",
            exclusions_csv="results/tables/tassh_exclusions.csv",
        log:
            "results/logs/tassh_clean.log",
        script:
            "../../scripts/tassh_clean.py"


if "cct" in config:

    if CCT_NAME == "cct_synthetic":

        rule cct_synthetic:
            # Stand-in for the restricted trial file: same codebook columns, made-up values.
            output:
                "results/data/raw/cct_synthetic.dta",
            params:
                seed=CCT.get("synthetic_seed", SEED),
            log:
                "results/logs/cct_synthetic.log",
            script:
                "../../scripts/cct_synthetic.py"

    rule cct_clean:
        input:
            str(CCT_REAL) if CCT_NAME == "cct" else "results/data/raw/cct_synthetic.dta",
        output:
            data=f"results/data/{CCT_NAME}.parquet",
            exclusions=f"results/tables/{CCT_NAME}_exclusions.parquet",
            exclusions_csv=f"results/tables/{CCT_NAME}_exclusions.csv",
        params:
            name=CCT_NAME,
            reference_row_order=CCT.get("reference_row_order", False),
        log:
            f"results/logs/{CCT_NAME}_clean.log",
        script:
            "../../scripts/cct_clean.py"


if TRIALS:

    rule trial_clean:
        # A user's trial from the sheet: read, validate, write the analysis table.
        input:
            lambda w: TRIALS[w.dataset]["path"],
        output:
            "results/data/{dataset}.parquet",
        params:
            row=lambda w: {k: v for k, v in TRIALS[w.dataset].items() if k not in ("methods", "method_overrides")},
        wildcard_constraints:
            dataset="|".join(TRIALS),
        log:
            "results/logs/trial_clean/{dataset}.log",
        script:
            "../../scripts/trial_clean.py"
