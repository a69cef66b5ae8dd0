"""Container networks, as the supervisor uses them.

    resolve(spec)          at create: the network exists, an address is
                           allocated (or the asked one checked), published
                           ports checked against other containers and the
                           host's sockets (the holder named)
    attach(cid, spec)      after the row is stored: the bridge (made on
                           first use), a network namespace bound on
                           state_dir/network/ns/<id> (a user-namespace
                           container's made inside its user namespace,
                           bound on network/userns/<id>), the veth pair, the
                           nftables table rebuilt, /etc/hosts of the
                           network's containers rewritten
    spawn_fields(...)      at every start: the namespace (made again if
                           it went, e.g. after a reboot), the /etc files,
                           the launcher's spawn-spec keys (netns, mounts)
    detach(cid, spec)      at remove and undone create: all of it undone;
                           a bridge without containers and the table
                           without rules are deleted
    boot(specs)            at agentd start: whatever of ours (links by
                           alias, bound namespaces, /etc files) belongs to
                           no stored container is removed, the table rebuilt

The kernel objects are named from a tag of the state dir (names.py), so two
agents on one host never touch each other's.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import threading
from dataclasses import replace

import structlog

from agent import selfmetrics
from agent.errors import Conflict, HostLimitation, NotFound, UserError
from agent.network import etcfiles, holders, ipam, names, netspec, nftrules
from agent.network.registry import Registry
from runtime import netdev, netns

log = structlog.get_logger("agentd.network")

selfmetrics.declare("network_cleanup_total", "counter",
                    "Network objects of this agent removed because no container owned them, by kind.", ("kind",))


class NetworkService:
    def __init__(self, config):
        sec = config.network
        state_dir = config.agent.state_dir
        self.tag = names.tag(state_dir)
        self.default_mode = sec.default
        self.table = sec.nft_table or names.table(self.tag)
        self.registry = Registry(state_dir, self.tag, sec.bridge or names.default_bridge(self.tag),
                                 sec.subnet or names.default_subnet(self.tag))
        self.ns_dir = os.path.join(state_dir, "network", "ns")
        # the user namespace owning a user-namespace container's network namespace
        self.userns_dir = os.path.join(state_dir, "network", "userns")
        for d in (self.ns_dir, self.userns_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        # outside the state dir: the launcher refuses any mount source in it
        self.files_dir = sec.files_dir or f"/run/cgroup-agent-net-{self.tag}"
        self.alias_prefix = names.alias(self.tag, "", "").rsplit(":", 2)[0] + ":"
        self.members: dict[str, object] = {}   # container id -> ContainerSpec (with .net)
        self._lock = threading.RLock()
        self._applied: str | None = None   # the batch nft last accepted (None: unknown, apply)

    # ------------------------------------------------------------ create

    def is_bridged(self, spec) -> bool:
        return spec.network not in ("host", "none")

    def resolve(self, spec):
        """`spec` with its address allocated (stored with the container's row)."""
        if not self.is_bridged(spec):
            return spec
        with self._lock:
            try:
                net = self.registry.get(spec.network)
            except NotFound as e:   # a field of the request: 400, not 404
                raise UserError(str(e)) from None
            taken = {m.net["ip"]: m.name for m in self.members.values() if m.network == spec.network}
            ip = ipam.allocate(net.subnet, taken, (spec.net or {}).get("ip", ""))
            for p in netspec.ports_from((spec.net or {}).get("ports")):
                for m in self.members.values():
                    for q in netspec.ports_from(m.net.get("ports")):
                        if p.clashes(q):
                            raise Conflict(f"ports: host port {p.host_port}/{p.proto} is already published by "
                                           f"container {m.name!r}")
                who = holders.holder(p.proto, p.host_port, p.host_ip)
                if who:
                    raise Conflict(f"ports: host port {p.host_port}/{p.proto} is in use by {who}; "
                                   "choose a free host port")
            return replace(spec, net={**(spec.net or {}), "ip": ip})

    def attach(self, cid: str, spec) -> None:
        if not self.is_bridged(spec):
            return
        with self._lock:
            self.members[cid] = spec
            try:
                self._plumb(cid, spec)
                self._apply_rules()
                self._write_hosts(spec.network)
            except BaseException:
                self.detach(cid, spec)
                raise
            log.info("network.attached", name=spec.name, network=spec.network, ip=spec.net["ip"],
                     veth=names.host_veth(self.tag, cid))

    def _plumb(self, cid: str, spec) -> None:
        net = self.registry.get(spec.network)
        plen = ipaddress.IPv4Network(net.subnet).prefixlen
        try:
            if netdev.ensure_bridge(net.bridge, net.gateway, plen, names.alias(self.tag, "bridge", net.name)):
                log.info("network.bridge_created", network=net.name, bridge=net.bridge, subnet=net.subnet)
            if netdev.enable_forwarding():
                log.warning("network.ip_forward_enabled", sysctl="net.ipv4.ip_forward", value=1,
                            reason="bridge containers reach other networks through NAT")
            path = self.netns_path(cid)
            if not netns.is_bound(path):
                self._remove_ns(cid)
                netns.create(path, self._owner(cid, spec))
            netdev.add_veth(names.host_veth(self.tag, cid), names.peer_veth(self.tag, cid), net.bridge, path,
                            spec.net["ip"], plen, net.gateway, names.mac_of(spec.net["ip"]),
                            names.alias(self.tag, "veth", cid), spec.net.get("egress_rate") or 0,
                            spec.net.get("ingress_rate") or 0)
        except (OSError, netdev.NetdevError) as e:
            raise HostLimitation(f"network: cannot set up {spec.network!r} for {spec.name!r}: {e}") from None
        except Exception as e:  # pyroute2's NetlinkError
            raise HostLimitation(f"network: cannot set up {spec.network!r} for {spec.name!r}: "
                                 f"{type(e).__name__}: {e}".splitlines()[0]) from None

    def netns_path(self, cid: str) -> str:
        return os.path.join(self.ns_dir, cid)

    def userns_path(self, cid: str) -> str:
        return os.path.join(self.userns_dir, cid)

    def _owner(self, cid: str, spec) -> tuple[str, dict] | None:
        """A user-namespace container's network namespace is made inside its
        user namespace (bound beside it), which then owns it: CRIU dumps a
        container in a user namespace only when that namespace owns all of
        its namespaces. The host's root configures it all the same."""
        return (self.userns_path(cid), spec.userns) if isinstance(spec.userns, dict) else None

    def _remove_ns(self, cid: str) -> None:
        netns.remove(self.netns_path(cid))
        netns.remove(self.userns_path(cid))

    def owns_netns(self, cid: str) -> bool:
        """Whether container `cid`'s network namespace is owned by its bound user namespace."""
        return netns.owned_by(self.netns_path(cid), self.userns_path(cid))

    def eth0_config(self, cid: str) -> dict:
        """What configures a bridged container's eth0 (netdev.configure_eth0's
        arguments), for a restore that moves it into a new namespace."""
        with self._lock:
            spec = self.members[cid]
            net = self.registry.get(spec.network)
            return {"ip": spec.net["ip"], "prefixlen": ipaddress.IPv4Network(net.subnet).prefixlen,
                    "gateway": net.gateway, "mac": names.mac_of(spec.net["ip"]),
                    "egress_bits": spec.net.get("egress_rate") or 0}

    def adopt(self, cid: str, pid: int) -> None:
        """A restored container's namespaces (CRIU made them, its eth0 moved
        in by the restore) bound in place of the ones made at its create."""
        with self._lock:
            netns.rebind(self.netns_path(cid), f"/proc/{pid}/ns/net")
            netns.rebind(self.userns_path(cid), f"/proc/{pid}/ns/user")

    # ------------------------------------------------------------ start

    def spawn_fields(self, cid: str, spec, out: dict) -> None:
        """Add the launcher's keys to the spawn spec `out` (a bridged container)."""
        if not self.is_bridged(spec):
            return
        with self._lock:
            self.members[cid] = spec
            owner = self._owner(cid, spec)
            if not (netns.is_bound(self.netns_path(cid))
                    and netdev.link_exists(names.host_veth(self.tag, cid))
                    and (owner is None or self.owns_netns(cid))):
                log.warning("network.replumbed", name=spec.name, id=cid)
                self._remove_ns(cid)
                self._plumb(cid, spec)
                self._apply_rules()
            files = self._write_files(cid, spec)
            self._write_hosts(spec.network)
        out["network"] = "none"
        out["netns"] = self.netns_path(cid)
        if owner is not None:
            out["userns_path"] = self.userns_path(cid)
        out["mounts"] = list(out.get("mounts") or []) + [
            {"src": files[dst], "dst": dst, "ro": True, "noexec": True} for dst in sorted(files)]

    def _files(self, cid: str) -> str:
        return os.path.join(self.files_dir, cid)

    def _write_files(self, cid: str, spec) -> dict:
        d = self._files(cid)
        os.makedirs(d, mode=0o755, exist_ok=True)
        out = {dst: os.path.join(d, name) for dst, name in etcfiles.MOUNTED.items()}
        etcfiles.write_in_place(out["/etc/resolv.conf"], etcfiles.resolv(spec.net.get("dns") or []))
        etcfiles.write_in_place(out["/etc/hostname"], (spec.hostname or spec.name) + "\n")
        self._write_hosts_of(cid, spec)
        return out

    def _write_hosts_of(self, cid: str, spec) -> None:
        peers = [(m.net["ip"], m.hostname, m.name) for m in self.members.values() if m.network == spec.network]
        path = os.path.join(self._files(cid), "hosts")
        etcfiles.write_in_place(path, etcfiles.hosts(spec.network, peers, spec.net.get("add_hosts") or []))

    def _write_hosts(self, network: str) -> None:
        for cid, m in list(self.members.items()):
            if m.network == network and os.path.isdir(self._files(cid)):
                try:
                    self._write_hosts_of(cid, m)
                except OSError as e:
                    log.warning("network.hosts_write_failed", name=m.name, error=str(e))

    # ------------------------------------------------------------ remove

    def detach(self, cid: str, spec) -> None:
        if not self.is_bridged(spec):
            return
        with self._lock:
            self.members.pop(cid, None)
            self._unplumb(cid)
            try:
                self._apply_rules()
            except HostLimitation as e:
                log.error("network.rules_failed", error=str(e))
            self._drop_idle_bridges()
            self._write_hosts(spec.network)
            log.info("network.detached", name=spec.name, id=cid)

    def _unplumb(self, cid: str) -> None:
        try:
            self._remove_ns(cid)
        except OSError as e:
            log.error("network.netns_remove_failed", id=cid, error=str(e))
        try:
            netdev.delete_link(names.host_veth(self.tag, cid))
        except Exception as e:  # noqa: BLE001 - logged, the sweep tries again
            log.error("network.veth_remove_failed", id=cid, error=str(e))
        shutil.rmtree(self._files(cid), ignore_errors=True)

    def _drop_idle_bridges(self) -> None:
        busy = {self.registry.get(m.network).bridge for m in self.members.values() if self._known(m.network)}
        for name, kind, alias in netdev.links_with_alias(self.alias_prefix):
            if kind == "bridge" and name not in busy:
                netdev.delete_link(name)
                log.info("network.bridge_removed", bridge=name)

    def _known(self, network: str) -> bool:
        try:
            self.registry.get(network)
            return True
        except UserError:
            return False

    # ------------------------------------------------------------ nftables

    def _apply_rules(self) -> None:
        nets, members = {}, []
        for cid, m in sorted(self.members.items()):
            net = self.registry.get(m.network)
            nets[net.name] = nftrules.Net(net.name, net.bridge, net.subnet)
            members.append(nftrules.Member(m.name, m.net["ip"], net.bridge, netspec.ports_from(m.net.get("ports")),
                                           tuple(m.net.get("egress_allow") or ())))
        text = nftrules.dumps(nftrules.render(self.table, list(nets.values()), members))
        if text == self._applied:   # a container without ports or egress rules changes nothing
            return
        self._applied = None
        try:
            r = subprocess.run(["nft", "-j", "-f", "-"], input=text, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise HostLimitation("network: nft is not installed (Debian package nftables); "
                                 "bridge networks need it") from None
        if r.returncode != 0:
            raise HostLimitation(f"network: nft refused the ruleset of table {self.table}: "
                                 f"{(r.stderr.strip().splitlines() or ['?'])[0]}")
        self._applied = text

    # ------------------------------------------------------------ networks

    def create_network(self, name, subnet) -> dict:
        with self._lock:
            n = self.registry.create(name, subnet or "", netdev.host_ipv4_networks())
            log.info("network.created", network=n.name, subnet=n.subnet, bridge=n.bridge)
            return self.network_view(n)

    def remove_network(self, name) -> dict:
        with self._lock:
            users = sorted(m.name for m in self.members.values() if m.network == name)
            if users:
                raise Conflict(f"network: {name!r} is used by container {users[0]!r}; remove its containers first")
            n = self.registry.remove(name)
            netdev.delete_link(n.bridge)
            log.info("network.removed", network=n.name)
            return self.network_view(n)

    def network_view(self, n) -> dict:
        members = sorted((m.name, m.net["ip"]) for m in self.members.values() if m.network == n.name)
        return {"name": n.name, "subnet": n.subnet, "gateway": n.gateway, "bridge": n.bridge,
                "builtin": n.name == "bridge", "containers": [{"name": a, "ip": b} for a, b in members]}

    def networks(self) -> list[dict]:
        with self._lock:
            return [self.network_view(n) for n in self.registry.all()]

    def network(self, name) -> dict:
        with self._lock:
            return self.network_view(self.registry.get(netspec.check_network_name(name)))

    # ------------------------------------------------------------ boot

    def boot(self, specs: dict) -> None:
        """`specs`: {container id: ContainerSpec} of every stored container.
        A failure here (no pyroute2, no netlink) is logged, never fatal:
        host and none containers go on working, bridged ones fail to start
        with the reason."""
        try:
            self._boot(specs)
        except Exception as e:  # noqa: BLE001 - the daemon keeps going
            selfmetrics.inc("network_cleanup_total", kind="failed")
            log.error("network.boot_failed", error=f"{type(e).__name__}: {e}")

    def _boot(self, specs: dict) -> None:
        with self._lock:
            self.members = {cid: s for cid, s in specs.items() if self.is_bridged(s) and s.net
                            and self._known(s.network)}
            for name, kind, alias in netdev.links_with_alias(self.alias_prefix):
                parsed = names.parse_alias(alias, self.tag)
                if parsed and parsed[0] == "veth" and parsed[1] not in self.members:
                    netdev.delete_link(name)
                    selfmetrics.inc("network_cleanup_total", kind="veth")
                    log.warning("network.swept", kind="veth", link=name, id=parsed[1])
            for kind, d in (("netns", self.ns_dir), ("userns", self.userns_dir)):
                for entry in os.listdir(d):
                    if entry not in self.members:
                        netns.remove(os.path.join(d, entry))
                        selfmetrics.inc("network_cleanup_total", kind=kind)
                        log.warning("network.swept", kind=kind, id=entry)
            if os.path.isdir(self.files_dir):
                for entry in os.listdir(self.files_dir):
                    if entry not in self.members:
                        shutil.rmtree(os.path.join(self.files_dir, entry), ignore_errors=True)
            self._applied = None   # whatever the kernel holds now is rebuilt
            try:
                self._apply_rules()
            except HostLimitation as e:
                log.error("network.rules_failed", error=str(e))
            self._drop_idle_bridges()
