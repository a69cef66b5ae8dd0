#!/usr/bin/env python3
"""Image pull and launch, against peers measured in the same run.

    python3 bench/images.py [-n 5] [--layer-mib 8]      (as root)

A real registry (docker-registry on 127.0.0.1) serves an image of busybox
plus three layers of random data (incompressible: gzip does real work).
Interleaved rounds, medians and the ratio of medians:
  pull   ours: agent.images.registry.pull into an empty store (fetch, verify,
         unpack each layer with its whiteouts), in a fresh process
         peer: `skopeo copy docker://... oci:DIR:1` + `umoci unpack` (the
         same work with the tools the tests build images with)
  launch ours: POST /v1/containers {image, argv [busybox true]} on a real agentd
         (request -> execve, the overlay made in the container's mount ns)
         peer: the same agentd launching the same rootfs as an OCI bundle
         (`umoci unpack` output), i.e. the cost of the overlay itself
         image_hostns: the image launch with "userns": "host"; image /
         image_hostns is what the default user namespace costs an image
         container (the namespace, an idmapped clone per layer and of the
         upper dir, the overlay made as the container's root)
Writes bench/out/images.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "host"))

from registry_fixtures import ImageBuilder, Registry  # noqa: E402

PULL = ("import sys; from agent.images.store import ImageStore; from agent.images import registry; "
        "registry.pull(ImageStore(sys.argv[1]), sys.argv[2])")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--layer-mib", type=int, default=8, help="size of each random layer (default 8)")
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="cga-bench-images-")
    os.makedirs(os.path.join(top, "reg"))
    reg = Registry(os.path.join(top, "reg"))
    agentd = None
    cg = None
    try:
        b = ImageBuilder(top, "img").busybox().layer()
        for i in range(3):
            with open(os.path.join(b.root, f"data{i}"), "wb") as f:
                f.write(os.urandom(args.layer_mib << 20))
            b.layer()
        b.config("--config.cmd", "/bin/busybox", "--config.cmd", "true")
        ref = reg.push(b.layout, "1", "bench")
        env = dict(os.environ, PYTHONPATH=REPO)
        ours, peer = [], []
        for i in range(args.n):
            store = os.path.join(top, f"store{i}")
            ours.append(timed(lambda: subprocess.run([sys.executable, "-c", PULL, store, ref], check=True, env=env)))
            layout, bundle = os.path.join(top, f"oci{i}"), os.path.join(top, f"bundle{i}")
            peer.append(timed(lambda: (
                subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:1"],
                               check=True, capture_output=True),
                subprocess.run(["umoci", "unpack", "--image", f"{layout}:1", bundle], check=True,
                               capture_output=True))))
            shutil.rmtree(store)
            if i:
                shutil.rmtree(layout)
                shutil.rmtree(bundle)
        # launch: image vs the same rootfs as a bundle, through one real agentd
        from agent.cli.client import Client
        from runtime.cgroupfs import find_mount
        cg = os.path.join(find_mount(), f"cga-bench-{uuid.uuid4().hex[:8]}")
        os.mkdir(cg)
        sock = os.path.join(top, "agent.sock")
        conf = os.path.join(top, "agentd.toml")
        with open(conf, "w") as f:
            f.write(f'[agent]\nstate_dir = "{top}/state"\ncgroup_root = "{cg}"\nsocket = "{sock}"\n'
                    'metrics_listen = ""\n')
        agentd = subprocess.Popen([sys.executable, "-m", "agent.daemon", "--config", conf], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                Client(sock, timeout=5).call("GET", "/v1/health")
                break
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        c = Client(sock, timeout=60)
        subprocess.run([sys.executable, "-m", "agent.cli", "--socket", sock, "pull", ref], check=True, env=env,
                       capture_output=True)
        bundle = os.path.join(top, "bundle0")
        img_t, bun_t, host_t = [], [], []
        for i in range(args.n * 4):
            for kind, body, out in (("image", {"image": ref, "pull": "never"}, img_t),
                                    ("bundle", {"bundle": bundle}, bun_t),
                                    ("image-hostns", {"image": ref, "pull": "never", "userns": "host"}, host_t)):
                name = f"{kind}-{i}"
                body = dict(body, name=name, argv=["/bin/busybox", "true"])
                out.append(timed(lambda: c.call("POST", "/v1/containers", body=body)))
                c.call("DELETE", f"/v1/containers/{name}", {"force": "1"})
        res = {
            "layers": 4, "layer_mib": args.layer_mib, "rounds": args.n,
            "pull_ours_s": statistics.median(ours), "pull_skopeo_umoci_s": statistics.median(peer),
            "launch_image_ms": statistics.median(img_t) * 1000, "launch_bundle_ms": statistics.median(bun_t) * 1000,
            "launch_image_hostns_ms": statistics.median(host_t) * 1000,
        }
        res["userns_ratio"] = res["launch_image_ms"] / res["launch_image_hostns_ms"]
        res["pull_ratio"] = res["pull_ours_s"] / res["pull_skopeo_umoci_s"]
        res["launch_ratio"] = res["launch_image_ms"] / res["launch_bundle_ms"]
        print(f"pull+unpack  ours {res['pull_ours_s']:.2f} s   skopeo+umoci {res['pull_skopeo_umoci_s']:.2f} s   "
              f"ratio {res['pull_ratio']:.2f}")
        print(f"launch       image {res['launch_image_ms']:.1f} ms   bundle {res['launch_bundle_ms']:.1f} ms   "
              f"ratio {res['launch_ratio']:.2f}")
        print(f"launch       image {res['launch_image_ms']:.1f} ms   image --userns host "
              f"{res['launch_image_hostns_ms']:.1f} ms   ratio {res['userns_ratio']:.2f}")
        os.makedirs(os.path.join(REPO, "bench", "out"), exist_ok=True)
        with open(os.path.join(REPO, "bench", "out", "images.json"), "w") as f:
            json.dump(res, f, indent=2)
        return 0
    finally:
        if agentd is not None:
            agentd.terminate()
            agentd.wait(30)
        reg.stop()
        if cg:
            subprocess.run(["sh", "-c", f"for d in $(find {cg} -depth -type d); do "
                                        f"echo 1 > $d/cgroup.kill 2>/dev/null; rmdir $d 2>/dev/null; done"])
            time.sleep(0.5)
            subprocess.run(["sh", "-c", f"pkill -f 'agent.launcher --state-dir {top}'"])
            subprocess.run(["sh", "-c", f"for d in $(find {cg} -depth -type d); do rmdir $d; done"])
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
