"""The image store survives a SIGKILL at any instant of a pull: no blob is
visible under its name unless complete and verified, no image references a
missing blob or layer, and the next pull completes (real registry, real
kill of a real pulling process, 30 random kill points)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from registry_fixtures import ImageBuilder, Registry

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry not installed")

PULL = """
import sys
from agent.images.store import ImageStore
from agent.images import registry
registry.pull(ImageStore(sys.argv[1]), sys.argv[2])
"""


def check_store(root: str) -> int:
    """Reopen (as agentd does at start) and check every invariant; returns the image count."""
    from agent.images.store import ImageStore, sha256_digest
    store = ImageStore(root)
    assert os.listdir(store.tmp) == [], "temporary files survived a restart"
    for name in os.listdir(store.blobs):
        with open(os.path.join(store.blobs, name), "rb") as f:
            assert sha256_digest(f.read()) == "sha256:" + name, f"blob {name} is not what its name says"
    for img in store.images():
        assert store.has_blob(img["id"]) and store.has_blob(img["config"])
        for layer in img["layers"]:
            assert store.has_blob(layer["digest"]) and store.has_layer(layer["diff_id"])
    return len(store.images())


def test_sigkill_at_random_points_of_a_pull_leaves_a_consistent_store(tmp_path):
    reg = Registry(str(tmp_path / "reg") if os.makedirs(tmp_path / "reg") is None else "")
    try:
        b = ImageBuilder(str(tmp_path), "three").busybox().layer()
        for i in range(2):
            with open(os.path.join(b.root, f"payload{i}"), "wb") as f:
                f.write(os.urandom(3 << 20))
            b.layer()
        b.config("--config.cmd", "true")
        ref = reg.push(b.layout, "1", "three")
        rng = random.Random(1234)
        completed = 0
        for attempt in range(30):
            root = str(tmp_path / f"store{attempt % 3}")   # some attempts resume an earlier store
            p = subprocess.Popen([sys.executable, "-c", PULL, root, ref], stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.0, 1.5))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
            completed += p.returncode == 0
            check_store(root)
        # after all that, each store still completes a pull
        for i in range(3):
            root = str(tmp_path / f"store{i}")
            subprocess.run([sys.executable, "-c", PULL, root, ref], check=True, capture_output=True)
            assert check_store(root) == 1
        print(f"pulls that finished before their kill: {completed}/30")
        assert completed < 30, "no kill landed inside a pull: the test proved nothing"
    finally:
        reg.stop()
