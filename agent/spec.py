"""Container specs: what a user asks for, validated before anything is created.

Two ways in, one result (ContainerSpec):

- `from_json(body, config)`: the API's JSON body
      {"name": "web",                      required, [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}
       "argv": ["sh", "-c", "..."],        required (unless "bundle" gives process.args)
       "env": {"K": "V"} | ["K=V"],
       "workdir": "/",                     absolute
       "user": "1000[:1000]",              numeric uid[:gid]
       "hostname": "web",
       "rootfs": "/abs/dir",               absent or "" = the host's root
       "bundle": "/abs/oci-bundle",        OCI bundle (config.json); other keys override it
       "volumes": ["SRC:DST[:ro]"] | [{"src", "dst", "ro"}],
       "devices": ["/dev/X[:/dev/Y][:rwm]"] | [{"src", "dst", "access"}],
       "network": "host" | "none" | "bridge" | NAME,   default: bridge for rootfs/image containers
       "ip", "ports", "egress_allow", "egress_rate", "ingress_rate", "dns", "add_hosts":
                                           a bridge network's settings (agent/network/netspec.py)
       "limits": {"memory_max": "512M", ...}   keyword arguments of runtime Limits.parse
       "restart": "no" | "on-failure[:N]" | "always",
       "labels": {"k": "v"} | ["k=v"],
       "log_max_bytes": "10M" | 10485760,
       "rm": false,                        remove once it exited for good
       "start": true,                      false = create only
       "cap_add": ["NET_RAW"],             Docker's names, with or without CAP_, or ALL
       "cap_drop": ["ALL"]}
       "userns": "auto" | "host" | {"uid": [[inside, host, count], ...], "gid": [...]}}
                                           default: "auto" with a rootfs or bundle (a
                                           user namespace with 65536 ids the agent
                                           allocates), "host" for the host's root
- `from_bundle(path, config)`: an OCI bundle dir as `runc spec` writes it.

Every problem raises agent.errors.UserError with one line naming the field.
This module is the entry: it checks the request's keys and hands each group
to its part in agent/specparts/ (process, identity, mounts, devices,
resources, security, bundle; the network keys to agent/network/netspec.py),
then builds the ContainerSpec (agent/specparts/model.py). The names other
modules import are re-exported here.
"""
from __future__ import annotations

from typing import Any

from agent.errors import UserError
from agent.labels import unrenderable
from agent.model import image_ref
from agent.network import netspec
from agent.rules import NAME_RE, RESTART_RE  # one rule each, shared with agentctl and the API
from agent.specparts import defaults, process
from agent.specparts.bundle import read_bundle
from agent.specparts.devices import DEVICE_SYNTAX, parse_devices, split_device
from agent.specparts.fields import flag, quote, refuse_unrenderable
from agent.specparts.identity import check_name, parse_labels
from agent.specparts.model import ContainerSpec
from agent.specparts.mounts import parse_tmpfs, parse_volume, rootfs_path
from agent.specparts.process import parse_env, parse_user
from agent.specparts.resources import log_size, parse_limits
from agent.specparts.security import HOST_NETWORK_DROPS, parse_cap_changes, parse_userns
from agent.specparts.values import Device, RestartPolicy, Volume, parse_restart
from runtime import terminal

__all__ = [  # what other modules import from here
    "ContainerSpec", "Device", "RestartPolicy", "Volume", "UserError", "NAME_RE", "RESTART_RE", "JSON_KEYS",
    "DEVICE_SYNTAX", "HOST_NETWORK_DROPS", "from_json", "from_bundle", "read_bundle", "check_name",
    "parse_labels", "parse_env", "parse_user", "parse_restart", "parse_limits", "parse_userns",
    "parse_cap_changes", "parse_volume", "parse_tmpfs", "split_device",
]

JSON_KEYS = {"name", "argv", "env", "workdir", "user", "hostname", "rootfs", "bundle", "volumes",
             "network", "limits", "restart", "labels", "log_max_bytes", "rm", "start", "cap_add", "cap_drop",
             "image", "pull", "entrypoint", "userns", "devices", "read_only", "tmpfs", "stdin",
             "ip", "ports", "egress_allow", "egress_rate", "ingress_rate", "dns", "add_hosts", "tty", "console_size"}


def _image_body(body: dict, images) -> tuple[dict, str, str]:
    """An image container's body with the image's config applied; (body, reference, digest)."""
    from agent.images import reference, runconfig

    if images is None:
        raise UserError("image: images are not enabled on this agentd (see its log)")
    for other in ("rootfs", "bundle"):
        if body.get(other):
            raise UserError(f"image: cannot be combined with {other}; give one of image, rootfs, bundle")
    ref = reference.parse(body.pop("image"))
    policy = body.pop("pull", None) or "missing"
    digest = images.ensure(str(ref), policy)
    config, lower = images.store.config(digest), images.lower_dirs(digest)
    body = runconfig.apply(body, config, lower, str(ref))
    labels = {}
    for k, v in (body.get("labels") or {}).items():
        try:  # an image label that is no valid label here is left out, not fatal
            labels.update(parse_labels({k: v}))
        except UserError:
            continue
    body["labels"] = labels
    return body, str(ref), digest


def _bundle_body(body: dict, config) -> tuple[dict, Any]:
    """A bundle's body (agent/specparts/bundle.py) with the request's other
    keys over it: env and labels merged, volumes added; (body, its Limits)."""
    base, bundle_limits = read_bundle(body.pop("bundle"), config)
    for key, value in body.items():
        if key == "argv" and not value:
            continue
        if key in ("env", "labels") and value:
            merged = parse_env(base.get(key)) if key == "env" else {}
            merged.update(parse_env(value) if key == "env" else parse_labels(value))
            base[key] = merged
        elif key == "volumes" and value:
            base["volumes"] = list(base.get("volumes", [])) + list(value)
        elif value is not None:
            base[key] = value
    return base, bundle_limits


def parse_console_size(value, tty: bool) -> tuple:
    """A request's console_size [rows, cols] (run -t, exec -t): the size its
    terminal starts with; () when not given. UserError names what is accepted."""
    if value is None:
        return ()
    if not tty:
        raise UserError("console_size: only with tty (the size of its terminal)")
    try:
        return terminal.check_size(value, "console_size")
    except ValueError as e:
        raise UserError(str(e)) from None


def from_json(body: Any, config=None, images=None) -> ContainerSpec:
    """Validate an API request body (see the module docstring).

    images (agent.images.service.ImageService) resolves an "image" field."""
    if not isinstance(body, dict):
        raise UserError("body: must be a JSON object")
    for k in body:
        if k not in JSON_KEYS:
            raise UserError(f"{k if k.isprintable() and not unrenderable(k) else quote(k)}: unknown field; "
                            f"use one of {', '.join(sorted(JSON_KEYS))}")
    body = dict(body)
    bundle_limits = None
    image = ""
    img_ref = img_id = ""
    if body.get("image"):
        user_labels = parse_labels(body.get("labels"))  # the request's own labels must be valid
        body, img_ref, img_id = _image_body(body, images)
        body["labels"].update(user_labels)
        image = img_ref
    else:
        for k in ("image", "pull", "entrypoint"):
            if body.pop(k, None) not in (None, ""):
                raise UserError(f"{k}: only for image containers (give image)")
    if body.get("bundle"):
        body, bundle_limits = _bundle_body(body, config)
        image = body["image"]
    else:
        body.pop("bundle", None)

    name = check_name(body.get("name"))
    if "argv" not in body or body["argv"] is None:
        raise UserError("argv: missing; give the command to run, e.g. [\"sh\", \"-c\", \"echo hi\"]")
    argv = process.argv("argv", body["argv"])
    env = parse_env(body.get("env"))
    workdir = process.workdir(body.get("workdir") or defaults.WORKDIR)
    uid, gid = parse_user(body.get("user"))
    hostname = body.get("hostname")
    hostname = defaults.hostname(name) if hostname in (None, "") else process.hostname(hostname)
    rootfs = ""
    raw_root = body.get("rootfs")
    if raw_root not in (None, ""):
        rootfs = rootfs_path("rootfs", raw_root, config)
        image = image or raw_root
    image = image_ref(image, rootfs)
    volumes_in = body.get("volumes") or []
    if not isinstance(volumes_in, list):
        raise UserError("volumes: must be a list of SRC:DST[:ro]")
    volumes = tuple(parse_volume(i, v, config, rootfs) for i, v in enumerate(volumes_in))
    devices = parse_devices(body.get("devices"), rootfs)
    network = netspec.choose_mode(body, bool(rootfs or img_id),
                                  config.network.default if config is not None else defaults.NETWORK)
    net = netspec.parse(body, network)
    limits = parse_limits(body.get("limits"))
    if bundle_limits is not None:
        limits = bundle_limits.merge(limits)
    restart = parse_restart(body.get("restart"))
    labels = parse_labels(body.get("labels"))
    default_log = config.logs.max_bytes if config is not None else defaults.LOG_MAX_BYTES
    log_max = default_log if body.get("log_max_bytes") in (None, "") else log_size("log_max_bytes", body["log_max_bytes"])
    auto_remove = flag("rm", body.get("rm"), False)
    start = flag("start", body.get("start"), True)
    if auto_remove and restart.mode == "always":
        raise UserError("rm: cannot be combined with restart=always (it would never be removed)")
    cap_add, cap_drop = parse_cap_changes(body.get("cap_add"), body.get("cap_drop"))
    oci = body.get("_oci") or {}
    if oci:
        from agent import bundle_fields
        bundle_fields.check_with(oci, network=network, rootfs=rootfs)
    userns = parse_userns(body.get("userns"), rootfs or img_id, uid, gid)
    read_only = flag("read_only", body.get("read_only"), False)
    if read_only and not (rootfs or img_id):
        raise UserError("read_only: needs a rootfs, a bundle or an image (the host's root is never made read-only)")
    tmpfs = parse_tmpfs(body.get("tmpfs"), bool(rootfs or img_id))
    tty = flag("tty", body.get("tty"), False)
    if tty and not (rootfs or img_id):
        raise UserError("tty: needs a rootfs, a bundle or an image (the terminal is made in the container's own "
                        "/dev/pts; a host-root container has the host's /dev)")
    console_size = parse_console_size(body.get("console_size"), tty)
    clash = {t.dst for t in tmpfs} & {v.dst.rstrip("/") or "/" for v in volumes}
    if clash:
        raise UserError(f"tmpfs: {sorted(clash)[0]} is also a volume's destination; give one of the two")
    spec = ContainerSpec(name=name, argv=argv, env=env, workdir=workdir, uid=uid, gid=gid, hostname=hostname,
                         rootfs=rootfs, image=image, volumes=volumes, network=network, limits=limits,
                         restart=restart, labels=labels, log_max_bytes=log_max, auto_remove=auto_remove,
                         start=start, cap_add=cap_add, cap_drop=cap_drop, oci=oci,
                         image_ref=img_ref, image_id=img_id, userns=userns,
                         devices=devices, read_only=read_only, tmpfs=tmpfs,
                         exposed_ports=tuple(body.get("_exposed_ports") or ()),
                         stdin=flag("stdin", body.get("stdin"), False), net=net, tty=tty,
                         console_size=console_size)
    # every string the launcher gets, whatever part read it (bundle fields, image config)
    refuse_unrenderable("", {**spec.to_dict(), **spec.spawn_security()})
    return spec


def from_bundle(path: str, config=None, **overrides) -> ContainerSpec:
    """An OCI bundle as a spec; `overrides` are from_json keys (name is required)."""
    return from_json({**overrides, "bundle": path}, config)
