"""``twistd workerd`` without ``--local`` off EC2: a clear message, and it stops."""

import os
import subprocess
import sys

from tests.e2e.harness import TWISTD
from tests.processes import free_port


def test_workerd_off_ec2_without_local_says_so_and_stops(tmp_path):
    config = tmp_path / "nomconf_tap.py"
    port = free_port()  # nothing listens there: connection refused at once
    config.write_text(f"DATA_DIR = {str(tmp_path / 'data')!r}\nEC2_METADATA_URL = 'http://127.0.0.1:{port}'\n")
    proc = subprocess.run([sys.executable, "-c", TWISTD, "--pidfile=", "-n", "--logfile=-", "workerd",
                           "--config", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = proc.stdout + proc.stderr
    assert "cannot read the instance metadata" in out, out[-3000:]
    assert f"http://127.0.0.1:{port}" in out and "--local" in out
    assert "Traceback" not in out, out[-3000:]
    assert out.count("retrying in") == 4   # IDENTITY_ATTEMPTS = 5


def test_metadata_url_option_overrides_the_setting():
    from nommer.workerd.tap import Options
    options = Options()
    options.parseOptions(["--metadata-url", "http://127.0.0.1:9/"])
    assert options["metadata-url"] == "http://127.0.0.1:9/" and not options["local"]
