"""The TASSH fetch step in the workflow: a wrong sha256 stops the workflow with both hashes; a
missing file (no local copy, download impossible) skips the study with one line naming where to put
the file and where to get it. No network: the download URL is a file:// path that does not exist."""

import hashlib
import json

from clusterhte.data import tassh
from workflow_utils import snakemake, workdir

TARGET = "results/data/tassh_source.json"
RAW = "data/raw/tassh/bp_ghana.rda"


def config(shared, url):
    return {"seed": 1, "reps_per_chunk": 1, "shared_dir": str(shared),
            "tassh": {"methods": ["lmm"], "url": url}}


def test_wrong_sha256_stops_the_workflow(tmp_path):
    shared = tmp_path / "shared"
    (shared / "data" / "tassh").mkdir(parents=True)
    (shared / "data" / "tassh" / "bp_ghana.rda").write_bytes(b"a corrupted copy")
    wd = workdir(tmp_path / "wd", config(shared, (tmp_path / "nowhere.rda").as_uri()))
    r = snakemake(wd, TARGET)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert tassh.SHA256 in out and hashlib.sha256(b"a corrupted copy").hexdigest() in out
    assert not (wd / TARGET).exists() and not (wd / RAW).exists()
    log = (wd / "results/logs/tassh_fetch.log").read_text()  # the log holds the error
    assert hashlib.sha256(b"a corrupted copy").hexdigest() in log


def test_missing_file_says_where_to_put_it_and_where_to_get_it(tmp_path):
    url = (tmp_path / "nowhere.rda").as_uri()
    wd = workdir(tmp_path / "wd", config(tmp_path / "empty", url))
    r = snakemake(wd, TARGET)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    status = json.loads((wd / TARGET).read_text())
    assert status["available"] is False
    assert RAW in status["message"] and url in status["message"]
    assert any(l.startswith("TASSH skipped:") and RAW in l and url in l for l in out.splitlines())
    assert not (wd / RAW).exists()
