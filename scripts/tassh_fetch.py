"""Put the TASSH data file in data/raw/tassh/ (local copy or pinned download), sha256-verified."""
from clusterhte import smk
from clusterhte.data import fetch, tassh

with smk.logged(snakemake) as log:
    fetch.ensure_file(snakemake.output[0], tassh.SHA256, url=snakemake.params.url or tassh.URL,
                      local_copies=snakemake.params.local_copies)
    print(f"{snakemake.output[0]}: sha256 {tassh.SHA256} verified", file=log)
