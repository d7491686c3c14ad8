"""Write the synthetic stand-in for the restricted Colombia CCT file (same codebook columns)."""
from clusterhte import smk
from clusterhte.simulate import cct_synthetic

with smk.logged(snakemake):
    cct_synthetic.write_synthetic_dta(snakemake.output[0], seed=snakemake.params.seed)
