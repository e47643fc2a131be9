"""The object store on S3, as workers on several machines share it: an S3-compatible server (moto's
server mode) on 127.0.0.1, started by this test; NEURALREG_STORE=s3://<bucket>/<location>. One process
ingests the tiny simulated experiment (responses as <npy@main> objects), a worker process trains the
predictive models from them (weights <hash@main>, predictions <npy@main>), a second worker computes
the similarity matrices from those predictions, and a reader process loads both kinds of object back.
Nothing reaches the local file store."""
import importlib.util
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import new_prefix, run_python, spawn

pytestmark = pytest.mark.slow      # real worker processes training models: minutes, not seconds

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "neuralreg-test"

READ_BACK = """
import io, json, sys
import numpy as np, torch
from neuralreg_schema import pipeline, settings
m = pipeline.activate(sys.argv[1])
dj = settings.configure()
spec = dj.config.get_store_spec(settings.STORE)
model = m["predictive"].PredictiveModel
rows = model.to_dicts(order_by="animal_id, session, scan_idx")
shapes = [list(np.asarray(r["predictions"]).shape) for r in rows]
state = torch.load(io.BytesIO(rows[0]["weights"]), weights_only=True)
print(json.dumps({"protocol": spec["protocol"], "bucket": spec["bucket"], "models": len(rows), "shapes": shapes,
                  "tensors": len(state), "similarity": len(m["similarity"].SimilarityMatrix()),
                  "errors": sum(len(t.jobs.errors) for t in (model, m["similarity"].SimilarityMatrix))}))
"""

DROP = """
import sys
from neuralreg_schema import pipeline
pipeline.drop_all(sys.argv[1])
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3-compatible server on 127.0.0.1 (its own process), with an empty bucket."""
    for module in ("moto", "s3fs", "flask"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[test]' (moto[server], the s3 extra)")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = spawn(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                 text=False)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, "moto's server exited at start"
                time.sleep(0.2)
        else:
            pytest.fail("moto's server did not answer within 60 s")
        endpoint = f"http://127.0.0.1:{port}"
        import boto3
        import s3fs
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint,
                                                                                "region_name": "us-east-1"})
        yield endpoint, fs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _env(endpoint, location, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NEURALREG_STORE", "NEURALREG_PREFIX", "DJ_STORES")}
    env.update(NEURALREG_STORE=f"s3://{BUCKET}/{location}", NEURALREG_S3_ENDPOINT=endpoint,
               NEURALREG_S3_ACCESS_KEY="testing", NEURALREG_S3_SECRET_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", OMP_NUM_THREADS="1",
               # no ~/.aws of this machine's user
               AWS_CONFIG_FILE=str(tmp_path / "aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-creds"))
    return env


def _run(args, env, timeout=600):
    out = run_python(args, env=env, timeout=timeout)
    assert out.returncode == 0, (args[:3], out.stdout[-3000:], out.stderr[-3000:])
    return out.stdout


def test_workers_share_arrays_through_s3(s3_server, tmp_path, modules):
    # `modules`: the test database is up and the session's schemas exist (this test uses its own prefix)
    endpoint, fs = s3_server
    prefix = new_prefix("s3")
    location = f"study-{prefix}"
    env = _env(endpoint, location, tmp_path)
    try:
        _run(["-m", "neuralreg_schema.cli", "--prefix", prefix, "ingest", "simulated", "--profile", "tiny",
              "--seed", "13"], env)
        written = fs.find(f"{BUCKET}/{location}")
        assert written and all(p.endswith(".npy") for p in written), written     # the scans' responses
        _run(["-m", "neuralreg_schema.cli", "--prefix", prefix, "plan-similarity", "--model", "tiny", "--no-vgg"],
             env)
        # worker 1 reads the responses another process wrote; worker 2 reads worker 1's predictions
        _run(["-m", "populate.worker", "--prefix", prefix, "--tables", "Neuron", "PredictiveModel"], env)
        _run(["-m", "populate.worker", "--prefix", prefix, "--tables", "SimilarityMatrix"], env)
        found = json.loads(_run(["-c", READ_BACK, prefix], env).strip().splitlines()[-1])
        assert found["protocol"] == "s3" and found["bucket"] == BUCKET
        assert found["models"] == 2 and found["errors"] == 0 and found["tensors"] > 0
        assert all(len(shape) == 2 and shape[0] > 0 for shape in found["shapes"]), found
        assert found["similarity"] == 10, found
        objects = fs.find(f"{BUCKET}/{location}")
        assert any("/_hash/" in p for p in objects), "model weights (<hash@main>) are not in the bucket"
        assert any("predictive_model" in p and p.endswith(".npy") for p in objects), objects
        assert not (ROOT / "store" / "main" / "_schema" / f"{prefix}_experiment").exists()
    finally:
        run_python(["-c", DROP, prefix], env=env)      # under the S3 store's settings (fresh_prefix: the session's)
