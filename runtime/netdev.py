"""Links of container networks through netlink (pyroute2): bridges, veth
pairs (the container's end moved into its network namespace, renamed
eth0), addresses, routes, tbf rate limits; the sysctls routing needs.
Container networks are IPv4: every link made here has IPv6 disabled
(no_ipv6), so nothing passes the IPv4 filter rules by way of IPv6.

Every link made here carries an alias (IFLA_IFALIAS) given by the caller,
so whoever made it finds it again (`links_with_alias`) without parsing
names or `ip` output."""
from __future__ import annotations

import errno
import os

from . import netns


class NetdevError(Exception):
    pass


def _ipr():
    from pyroute2 import IPRoute
    return IPRoute()


def _index(ipr, name: str) -> int | None:
    """One RTM_GETLINK by name (not a dump of every link)."""
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        return ipr.link("get", ifname=name)[0]["index"]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise


def _sysctl(path: str, value: str) -> bool:
    """Write `value` unless it is there already; True when it was changed."""
    with open(path) as f:
        if f.read().strip() == value:
            return False
    with open(path, "w") as f:
        f.write(value)
    return True


def no_ipv6(ifname: str) -> None:
    """No IPv6 on a link of ours (disable_ipv6, in the calling thread's
    network namespace), before it goes up: no link-local address, so no
    IPv6 packet of a container reaches the host through its bridge (the
    agent's filter rules are IPv4) nor another container, and the host
    takes no router advertisement from a tenant. A host without IPv6 has no
    such file: nothing to do."""
    path = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
    if os.path.exists(path):
        _sysctl(path, "1")


def enable_forwarding() -> bool:
    """net.ipv4.ip_forward=1; True when it was off (the caller logs it)."""
    return _sysctl("/proc/sys/net/ipv4/ip_forward", "1")


def ensure_bridge(name: str, gateway: str, prefixlen: int, alias: str) -> bool:
    """The bridge up with the gateway address; True when it was made now.
    route_localnet on it: a connection to 127.0.0.1 DNATed to a container
    may leave through it (masqueraded)."""
    with _ipr() as ipr:
        idx = _index(ipr, name)
        made = idx is None
        if made:
            ipr.link("add", ifname=name, kind="bridge")
            idx = _index(ipr, name)
            ipr.link("set", index=idx, ifalias=alias)
        no_ipv6(name)
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
        if gateway not in have:
            ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")
    _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
    return made


def _tbf(ipr, idx: int, bits: int) -> None:
    burst = max(bits // 8 // 50, 16 * 1024)
    ipr.tc("add", "tbf", index=idx, handle="1:", rate=f"{bits}bit", burst=burst, latency=50)


def add_veth(host: str, peer: str, bridge: str, netns_path: str, ip: str, prefixlen: int, gateway: str,
             mac: str, alias: str, egress_bits: int = 0, ingress_bits: int = 0) -> None:
    """A veth pair: `host` enslaved to `bridge`, `peer` moved into the
    namespace bound on `netns_path` as eth0 with `ip`, `mac` and a default
    route via `gateway`. egress (what the container sends) is shaped on
    eth0, ingress on the host end. On failure nothing is left."""
    with _ipr() as ipr:
        br = _index(ipr, bridge)
        if br is None:
            raise NetdevError(f"bridge {bridge} is missing")
        if _index(ipr, host) is not None:
            ipr.link("del", index=_index(ipr, host))
        ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer})
        try:
            h = _index(ipr, host)
            ipr.link("set", index=h, ifalias=alias)
            no_ipv6(host)
            ipr.link("set", index=h, master=br, state="up")
            if ingress_bits:
                _tbf(ipr, h, ingress_bits)
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link("set", index=_index(ipr, peer), net_ns_fd=fd)
            finally:
                os.close(fd)
        except BaseException:
            delete_link(host)
            raise

    try:
        netns.run_in(netns_path, lambda: configure_eth0(peer, ip, prefixlen, gateway, mac, egress_bits))
    except BaseException:
        delete_link(host)
        raise


def configure_eth0(name: str, ip: str, prefixlen: int, gateway: str, mac: str, egress_bits: int = 0) -> None:
    """In the calling thread's network namespace: the link `name` (or eth0)
    renamed eth0, with `mac`, `ip`, no IPv6, up, a default route via
    `gateway` and egress shaped to `egress_bits`."""
    with _ipr() as ipr:
        c = _index(ipr, name)
        if c is None:
            c = _index(ipr, "eth0")
        ipr.link("set", index=c, ifname="eth0", address=mac)
        no_ipv6("eth0")
        ipr.addr("add", index=c, address=ip, prefixlen=prefixlen)
        ipr.link("set", index=c, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=gateway)
        if egress_bits:
            _tbf(ipr, c, egress_bits)


def move_eth0(from_path: str, to_path: str) -> None:
    """Move eth0 from the network namespace bound on `from_path` into the
    one of the nsfs file `to_path` (e.g. /proc/PID/ns/net). The kernel
    drops its addresses, routes and qdiscs on the way: configure_eth0 again."""
    fd = os.open(to_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        def move():
            with _ipr() as ipr:
                c = _index(ipr, "eth0")
                if c is None:
                    raise NetdevError(f"no eth0 in the network namespace {from_path}")
                ipr.link("set", index=c, net_ns_fd=fd)
        netns.run_in(from_path, move)
    finally:
        os.close(fd)


def delete_link(name: str) -> bool:
    """True when it existed."""
    with _ipr() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return False
        try:
            ipr.link("del", index=idx)
        except Exception as e:  # gone meanwhile (its peer's namespace went)
            if getattr(e, "code", None) != errno.ENODEV:
                raise
        return True


def links_with_alias(prefix: str) -> list[tuple[str, str, str]]:
    """(name, kind, alias) of every link whose alias starts with `prefix`."""
    out = []
    with _ipr() as ipr:
        for link in ipr.get_links():
            a = link.get_attr("IFLA_IFALIAS")
            if a and a.startswith(prefix):
                info = link.get_attr("IFLA_LINKINFO")
                kind = info.get_attr("IFLA_INFO_KIND") if info else ""
                out.append((link.get_attr("IFLA_IFNAME"), kind, a))
    return out


def host_ipv4_networks() -> list[tuple[str, str]]:
    """(interface, CIDR) of every IPv4 address of this network namespace."""
    out = []
    with _ipr() as ipr:
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in ipr.get_links()}
        for a in ipr.get_addr(family=2):
            out.append((names.get(a["index"], "?"), f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
    return out


def link_exists(name: str) -> bool:
    with _ipr() as ipr:
        return _index(ipr, name) is not None
