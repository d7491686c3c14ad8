"""Put the TASSH data file in data/raw/tassh/ (local copy or pinned download), sha256-verified, and
record whether it is there; unreachable (offline, no shared copy) -> the study is skipped."""
import json

from clusterhte import smk
from clusterhte.data import fetch, tassh
from clusterhte.io import atomic_path

with smk.logged(snakemake) as log:
    p = snakemake.params
    try:
        fetch.ensure_file(p.dest, tassh.SHA256, url=p.url or tassh.URL, local_copies=p.local_copies)
        status = {"available": True, "path": p.dest, "sha256": tassh.SHA256,
                  "message": f"{p.dest}: sha256 {tassh.SHA256} verified"}
    except fetch.DataUnavailableError as e:  # a wrong sha256 still stops the workflow
        status = {"available": False, "path": p.dest, "sha256": tassh.SHA256, "message": str(e)}
    print(("" if status["available"] else "TASSH skipped: ") + status["message"], file=log)
    with atomic_path(snakemake.output[0]) as tmp:
        tmp.write_text(json.dumps(status, indent=1, sort_keys=True) + "\n")
