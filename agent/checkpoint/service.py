"""agentd's side of checkpoint and restore (CRIU runs in the launcher).

checkpoint(NAME, leave_running, export): refusals first (refusals.py, then
whether CRIU runs on this kernel), so a refused checkpoint changes nothing;
then the launcher dumps the tree into a fresh .tmp dir (CRIU freezes the
cgroup with cgroup.freeze, kills the tree after the dump unless
leave_running, then thaws), the record is written and the dir renamed into
place. Without leave_running the container then ends in state
`checkpointed` (its exit is not restarted); its cgroup stays until it is
removed, and removal takes the ledger's final reading as for any container.

restore(NAME): a container that still holds the name must be checkpointed
or exited, and is removed first (its final ledger reading: the old instance
is billed once). A new container (new id, new cgroup, the same spec and
limits, label restored_from=<old id>) is created and its process tree
restored into its cgroup by the launcher, which adopts it (exits reaped,
logs appended to the same files' new instance). The restored instance is
billed from zero on its new cgroup. A failed restore removes the new
container and keeps the checkpoint.
"""
from __future__ import annotations

import os
import shutil
import time

import structlog

from agent import selfmetrics
from agent.checkpoint import layout, metrics, placement, refusals, remap, upper
from agent.checkpoint.criu import version_tuple
from agent.errors import Conflict, HostLimitation, NotFound, UserError
from agent.network import etcfiles

log = structlog.get_logger("agentd.checkpoint")

RESTORED_FROM = "restored_from"
# what agent/network/service.py binds into a bridged container (its files per container id)
RESULTS = metrics.RESULTS


class Refused(HostLimitation):
    """CRIU cannot do it here or for this container (422, one line)."""


class CheckpointService:
    def __init__(self, config, supervisor):
        self.config = config
        self.sup = supervisor
        self.state_dir = config.agent.state_dir
        layout.clean_tmp(self.state_dir)
        self._gauge()

    # -- helpers ------------------------------------------------------------

    def _criu(self) -> dict:
        return self.sup.launcher.criu_status()

    def _refuse(self, counter: str, message: str):
        selfmetrics.inc(counter, result="refused")
        log.warning(f"{counter[:-7]}.refused", reason=message)
        raise Refused(message)

    def _gauge(self) -> None:
        try:
            selfmetrics.set_gauge("checkpoint_images_bytes", layout.size_of(layout.root(self.state_dir)))
        except OSError:
            pass

    # -- checkpoint -----------------------------------------------------------

    def checkpoint(self, name: str, leave_running: bool = False, export: str | None = None,
                   tcp_established: bool = False) -> dict:
        info = self.sup.get(name)
        spec = self.sup.spec_of(name)
        if info.state != "running":
            raise Conflict(f"checkpoint {info.name}: container is {info.state}; only a running container "
                           "can be checkpointed")
        final = layout.path(self.state_dir, info.name)
        if os.path.exists(final):
            raise Conflict(f"checkpoint {info.name}: a checkpoint of that name exists; remove it with "
                           f"`agentctl checkpoint rm {info.name}` or restore it")
        if export is not None and not os.path.isabs(export):
            raise UserError(f"export: {export!r} is not an absolute path")
        why = refusals.spec_refusal(spec, bool(leave_running))
        if why:
            self._refuse("checkpoints_total", why)
        st = self._criu()
        if not st.get("ok"):
            self._refuse("checkpoints_total", f"checkpoint {info.name}: {st.get('reason')}")
        from runtime.cgroupfs import Cgroup
        cg = Cgroup(info.cgroup)
        why = (refusals.process_refusal(info.name, cg.procs(), tcp_established)
               or self._netns_refusal(info, spec))
        if why:
            self._refuse("checkpoints_total", why)
        netns, ext_mounts, empty_netns = self._externals(info.id, spec)
        started = time.monotonic()
        tmp = layout.new_tmp(self.state_dir, info.name)
        self.sup.hold(name)
        try:
            answer = self.sup.launcher.checkpoint(info.id, dir=tmp, cgroup=info.cgroup,
                                                  leave_running=bool(leave_running), netns=netns,
                                                  externals=ext_mounts, tcp_established=bool(tcp_established),
                                                  empty_netns=empty_netns)
        except Exception as e:
            e = layout.keep_failed_log(tmp, info.name, e)
            shutil.rmtree(tmp, ignore_errors=True)
            if self.sup.get(name).state == "running":
                self.sup.hold(name, False)      # CRIU left it running: its restart policy applies again
            selfmetrics.inc("checkpoints_total", result="failed")
            log.error("checkpoint.failed", name=info.name, error=str(e))
            raise UserError(f"checkpoint {info.name}: {e}".splitlines()[0]) from None
        from runtime.stats import read_cpu_stat
        usage = getattr(read_cpu_stat(cg), "usage_usec", None)   # the ledger's position at the dump
        if leave_running:
            self.sup.hold(name, False)
        else:
            self.sup.wait(name, timeout=60)
            self.sup.mark(name, "checkpointed")
        image = bool(spec.image_id)
        if image:               # its writable layer, as the dump left it (its processes are gone)
            try:
                upper.copy(os.path.join(self.sup.rootfs_dir, info.id, "upper"), os.path.join(tmp, layout.UPPER))
            except upper.UpperError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                self.sup.mark(name, "exited")
                selfmetrics.inc("checkpoints_total", result="failed")
                log.error("checkpoint.failed", name=info.name, error=str(e))
                raise UserError(f"checkpoint {info.name}: its writable layer could not be saved ({e}); the "
                                f"container stopped: `agentctl start {info.name}` runs it afresh") from None
        duration = time.monotonic() - started
        size = layout.size_of(tmp)
        record = {"name": info.name, "container_id": info.id, "created_at": time.time(), "spec": spec.to_dict(),
                  "limits": info.limits.to_json(), "labels": dict(info.labels), "cgroup": info.cgroup,
                  "cpu_usage_usec_at_dump": usage, "criu_version": st.get("version"),
                  "kernel": os.uname().release, "pipes": answer.get("pipes"),
                  "leave_running": bool(leave_running), "image_bytes": size, "duration_seconds": round(duration, 3),
                  "externals": ext_mounts, "netns_external": bool(netns),
                  "tcp_established": bool(tcp_established), "upper": image, "netns_empty": empty_netns,
                  "idmapped": refusals.idmapped(getattr(info, "userns", None))}
        layout.write_record(tmp, record)
        os.rename(tmp, final)
        selfmetrics.inc("checkpoints_total", result="ok")
        selfmetrics.observe("checkpoint_duration_seconds", duration)
        selfmetrics.observe("checkpoint_image_bytes", size)
        selfmetrics.set_gauge("checkpoint_last_duration_seconds", duration)
        selfmetrics.set_gauge("checkpoint_last_image_bytes", size)
        self._gauge()
        log.info("container.checkpointed", name=info.name, id=info.id, bytes=size, seconds=round(duration, 3),
                 leave_running=bool(leave_running))
        out = {"name": info.name, "container_id": info.id, "image_bytes": size, "path": final,
               "leave_running": bool(leave_running), "tcp_established": bool(tcp_established)}
        if export:
            from agent.checkpoint import archive
            out["export"] = archive.export(final, export)
        return out

    def _externals(self, cid: str, spec) -> tuple[str | None, dict, bool]:
        """The bound network namespace of a bridged container and the mounts
        agentd gives it (its volumes, a bridged container's /etc files), left
        external by the dump (externals.py, volumes.py); and whether the
        network namespace is dumped empty instead (its user namespace owns
        it, so CRIU restores it inside the user namespace it restores:
        nethook.py)."""
        from agent.checkpoint.volumes import VOLUME_PREFIX
        mounts = {v.dst: f"{VOLUME_PREFIX}{i}" for i, v in enumerate(spec.volumes)}
        net = getattr(self.sup, "net", None)
        if net is None or not net.is_bridged(spec):
            return None, mounts, False
        mounts = {**mounts, **{dst: f"m{i}" for i, dst in enumerate(etcfiles.MOUNTED)}}
        if isinstance(spec.userns, dict):
            return None, mounts, True
        return net.netns_path(cid), mounts, False

    def _netns_refusal(self, info, spec) -> str | None:
        """A user-namespace container on a bridge whose network namespace its
        user namespace does not own (made by an agentd before that was so)."""
        net = getattr(self.sup, "net", None)
        if net is None or not net.is_bridged(spec) or not isinstance(spec.userns, dict) or net.owns_netns(info.id):
            return None
        return (f"checkpoint {info.name}: its network namespace is not owned by its user namespace (it was made "
                f"by an older agentd), and CRIU dumps a container in a user namespace only when that namespace "
                f"owns all of its namespaces; `agentctl restart {info.name}` gives it one, then checkpoint it")

    def _cpu_refusal(self, d: str) -> str | None:
        """This host's CPU lacks what the checkpoint's was dumped on (its processes may use it)."""
        answer = self.sup.launcher.cpuinfo_check(d)
        if answer.get("ok"):
            return None
        return (f"this host's CPU lacks features of the CPU the checkpoint was made on, which its processes may "
                f"use ({answer.get('reason')}); restore it on a host with the same CPU features")

    def _image_refusal(self, spec: dict) -> str | None:
        """An image container's image must be in this host's store (its layers are not in the checkpoint)."""
        image_id = spec.get("image_id")
        if not image_id:
            return None
        ref = spec.get("image_ref") or image_id
        images = getattr(self.sup, "images", None)
        if images is None:
            return f"it is an image container ({ref}) and images are not enabled on this agentd"
        try:
            images.lower_dirs(image_id)
        except KeyError:
            return (f"its image {ref} ({image_id}) is not on this host (the checkpoint holds only its writable "
                    f"layer); `agentctl pull {ref}` (or `agentctl image load` its archive) and restore again")
        return None

    # -- ls / rm --------------------------------------------------------------

    def list(self) -> list[dict]:
        return layout.listing(self.state_dir)

    def remove(self, name: str) -> dict:
        d = layout.path(self.state_dir, name)
        if layout.read_record(d) is None:
            raise NotFound(f"checkpoint: no checkpoint named {name!r}; see `agentctl checkpoint ls`")
        shutil.rmtree(d)
        self._gauge()
        log.info("checkpoint.removed", name=name)
        return {"removed": name}

    # -- restore --------------------------------------------------------------

    def restore(self, name: str) -> dict:
        d = layout.path(self.state_dir, name)
        rec = layout.read_record(d)
        if rec is None:
            raise NotFound(f"restore: no checkpoint named {name!r}; see `agentctl checkpoint ls`")
        st = self._criu()
        if not st.get("ok"):
            self._refuse("restores_total", f"restore {name}: {st.get('reason')}")
        why = compatibility_refusal(rec, st)
        if why:
            self._refuse("restores_total", f"restore {name}: {why}")
        try:
            old = self.sup.get(name)
        except NotFound:
            old = None
        if old is not None:
            if old.state not in ("checkpointed", "exited", "created"):
                raise Conflict(f"restore {name}: container {name!r} is {old.state}; stop or remove it first")
            self.sup.remove(name)          # the old instance's final ledger reading
        why = self._image_refusal(rec.get("spec") or {})
        if why:
            self._refuse("restores_total", f"restore {name}: {why}")
        started = time.monotonic()
        from agent.spec import ContainerSpec
        spec_d = dict(rec["spec"], name=name, start=False)
        spec_d["labels"] = dict(spec_d.get("labels") or {}, **{RESTORED_FROM: rec["container_id"]})
        try:
            spec_d, addr = placement.address(getattr(self.sup, "net", None), spec_d)
        except UserError as e:
            self._refuse("restores_total", f"restore {name}: {e}")
        remapped = False
        try:
            info = self.sup.create(ContainerSpec.from_dict(spec_d))
        except Conflict as e:
            why = placement.userns_refusal(spec_d, e)
            if why is None:
                raise
            held = set(rec.get("idmapped") or [])
            if "/" not in held or any(v.get("dst") not in held for v in spec_d.get("volumes") or []):
                self._refuse("restores_total", f"restore {name}: {why}")
            # its root and volumes idmapped: its files are on disk as it sees them, so it
            # moves to a free block here (remap.py rewrites the images for it)
            remapped = True
            info = self.sup.create(ContainerSpec.from_dict(dict(spec_d, userns="auto")))
        launcher = self.sup.launcher

        net = getattr(self.sup, "net", None)
        empty_netns = rec.get("netns_empty") is True

        def spawn(cid, spawn_spec):
            overlay = spawn_spec.get("overlay")
            if rec.get("upper"):        # the writable layer it was dumped with, copied into the new one
                if not overlay:
                    raise UserError("the checkpoint holds an image container's layer, the new container has none")
                upper.copy(os.path.join(d, layout.UPPER), overlay["upper"])
            more = {}
            if remapped:                # the images onto the block allocated here, and the record with
                remap.rewrite(os.path.join(d, layout.IMAGES), spawn_spec["userns"])   # them: they agree
                layout.write_record(d, dict(rec, spec=dict(rec["spec"], userns=spawn_spec["userns"])))
            idmapped = [dst for dst in rec.get("idmapped") or [] if dst not in etcfiles.MOUNTED]
            if idmapped:                # made again by the launcher (CRIU keeps no idmap)
                more["idmapped"] = idmapped
            if empty_netns:             # CRIU makes it empty; the hook moves eth0 in (nethook.py)
                if net is None or not spawn_spec.get("netns"):
                    raise UserError("the checkpoint's network namespace was dumped empty and the new container "
                                    "has no network namespace to take its eth0 from")
                more["net_hook"] = {"eth0": net.eth0_config(cid)}
            pid = launcher.restore(cid, dir=d, pipes=rec.get("pipes") or [],
                                   externals=rec.get("externals") or {},
                                   tcp_established=rec.get("tcp_established") is True,
                                   spec={k: spawn_spec.get(k) for k in
                                         ("cgroup", "rootfs", "overlay", "stdout", "stderr", "log_max_bytes",
                                          "netns", "mounts", "protected", "allow_sensitive_binds", "userns")},
                                   **more)
            if empty_netns:
                net.adopt(cid, pid)     # its namespaces, as CRIU made them, bound in place of the create's
            # what inspect shows, and what its next checkpoint records
            return {"pid": pid, **({"idmap": {dst: "idmapped" for dst in idmapped}} if idmapped else {})}

        try:
            info = self.sup.start_with(info.id, spawn)
        except Exception as e:
            selfmetrics.inc("restores_total", result="failed")
            log.error("restore.failed", name=name, error=str(e))
            try:
                self.sup.remove(info.id, force=True)
            except Exception as err:  # noqa: BLE001 - report the restore's error
                log.error("restore.cleanup_failed", name=name, error=str(err))
            raise UserError(f"restore {name}: {e}".splitlines()[0]) from None
        duration = time.monotonic() - started
        selfmetrics.inc("restores_total", result="ok")
        selfmetrics.observe("restore_duration_seconds", duration)
        out = {"name": name, "id": info.id, "pid": info.pid, RESTORED_FROM: rec["container_id"],
               "cgroup": info.cgroup}
        if isinstance(spec_d.get("userns"), dict):
            block = self.sup.spec_of(info.id).userns["uid"][0][1]
            out["userns"] = {"uid_base": block, "checkpoint_uid_base": spec_d["userns"]["uid"][0][1],
                             "remapped": remapped}
        if addr is not None:
            ip = (self.sup.spec_of(info.id).net or {}).get("ip")
            out["network"] = {"ip": ip, "checkpoint_ip": addr["ip"], "same_ip": ip == addr["ip"]}
        log.info("container.restored", name=name, id=info.id, restored_from=rec["container_id"], pid=info.pid,
                 **({"ip": out["network"]["ip"], "same_ip": out["network"]["same_ip"]} if addr else {}))
        return out

    def import_(self, path: str, name: str | None = None) -> dict:
        from agent.checkpoint import archive
        if not os.path.isabs(path):
            raise UserError(f"import: {path!r} is not an absolute path")
        st = self._criu()
        if not st.get("ok"):
            self._refuse("restores_total", f"import: {st.get('reason')}")
        tmp = layout.new_tmp(self.state_dir, name or "import")
        try:
            rec = archive.unpack(path, tmp)
            why = compatibility_refusal(rec, st) or self._cpu_refusal(tmp)
            if why:
                self._refuse("restores_total", f"import {path}: {why}")
            name = name or rec.get("name")
            final = layout.path(self.state_dir, name)
            if os.path.exists(final):
                raise Conflict(f"import: a checkpoint named {name!r} exists here; give another with --name")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._gauge()
        return self.restore(name)


def compatibility_refusal(rec: dict, status: dict) -> str | None:
    """Why a checkpoint made by `rec['criu_version']` cannot be restored by this
    host's CRIU (an older CRIU may not read newer images), or None."""
    made, here = rec.get("criu_version"), status.get("version")
    if not made or not here:
        return f"unknown CRIU version (checkpoint: {made}, this host: {here}); cannot check compatibility"
    try:
        if version_tuple(made)[:2] > version_tuple(here)[:2]:
            return (f"checkpoint made by CRIU {made}, this host has CRIU {here}; "
                    f"restore needs CRIU {'.'.join(made.split('.')[:2])} or newer")
    except ValueError:
        return f"unreadable CRIU version {made!r} in the checkpoint"
    if rec.get("spec") is None or not rec.get("container_id"):
        return "the checkpoint record lacks its spec or container id"
    return None
