"""agentd: the cgroup-agent daemon.

    agentd [--config FILE] [--check] [--state-dir DIR] [--cgroup-root PATH]
           [--socket PATH] [--metrics-listen HOST:PORT]

Start-up: config -> logging -> the state dir's lock (a second agentd on the
same state dir exits 1 naming the holder's pid) and its permissions
tightened (agent/daemon/statedir.py) -> cgroup layout under the root R (R/agentd with
agentd itself, R/launcher, R/containers with every controller the host
offers) -> state store -> launcher (started, or reconnected after a restart)
-> supervisor (live restore) -> collector, ledger, control API, /metrics.

The cgroup root: `--cgroup-root` / agent.cgroup_root when given (absolute
on cgroupfs, or a path below the cgroup2 mount). Otherwise the agent's own
cgroup when it was delegated to it (systemd `Delegate=yes` marks a delegated
cgroup with the trusted.delegate xattr; a previous agentd run inside it
left us in R/agentd). A cgroup that was not delegated (in particular the
root of the hierarchy, as on this hybrid host where /proc/self/cgroup says
"0::/") is never taken over: then R = <cgroup2 mount>/cgroup-agent.

Signals: SIGTERM/SIGINT stop accepting requests, flush and exit; containers
keep running (live restore) unless agent.stop_containers_on_exit. SIGHUP
reloads the config: what can change live is applied, the rest is logged as
needing a restart.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import replace

import structlog

from agent.api.router import ApiServer
from agent.daemon import logsetup, sdnotify, statedir, systemd_scope
from agent.budgets import Budgets
from agent.budgets import check_config as check_budgets
from agent.collector import Collector
from agent.config import ConfigError, diff_keys, load_config
from agent.images.service import ImageService
from agent.launcher import LauncherClient
from agent.ledger import Ledger
from agent.network.service import NetworkService
from agent.store import Store
from agent.supervisor import Supervisor, layout_cgroups
from exporters.focus import focus_rows
from exporters.metrics_server import MetricsServer
from exporters.postgres import FleetSpend, PostgresSink
from runtime import cgroupfs
from runtime.inotify import Watcher

log = structlog.get_logger("agentd")

AUTO_ROOT_NAME = "cgroup-agent"
LIVE_KEYS = {"agent.log_level", "agent.socket_group", "agent.read_group", "agent.admin_group",
             "agent.stop_containers_on_exit", "agent.stop_timeout", "security.allow_sensitive_binds",
             "logs.max_bytes", "budgets.entries"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentd", description="cgroup-agent daemon: runs containers under cgroup v2 limits and accounts for their usage")
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: embedded defaults)")
    p.add_argument("--check", action="store_true", help="validate the config and exit (0 valid, 2 invalid)")
    p.add_argument("--state-dir", metavar="DIR")
    p.add_argument("--cgroup-root", metavar="PATH")
    p.add_argument("--socket", metavar="PATH")
    p.add_argument("--metrics-listen", metavar="HOST:PORT")
    return p


def _overrides(args) -> dict:
    return {"agent.state_dir": args.state_dir, "agent.cgroup_root": args.cgroup_root,
            "agent.socket": args.socket, "agent.metrics_listen": args.metrics_listen}


# ------------------------------------------------------------------ cgroup root


def _delegated(path: str) -> bool:
    for attr in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(path, attr).strip(b"\0") in (b"1", b""):
                return True
        except OSError:
            continue
    return False


def resolve_cgroup_root(configured: str) -> tuple[str, str]:
    """-> (absolute cgroupfs path of R, why this one)."""
    mount = cgroupfs.find_mount()
    if configured:
        if configured == mount or configured.startswith(mount.rstrip("/") + "/"):
            return configured, "configured"
        return os.path.join(mount, configured.lstrip("/")), "configured (below the cgroup2 mount)"
    own = cgroupfs.own_cgroup()
    own_path = os.path.join(mount, own.lstrip("/")).rstrip("/") or mount
    if own not in ("/", ""):
        if os.path.basename(own_path) == "agentd" and os.path.isdir(os.path.join(os.path.dirname(own_path), "containers")):
            return os.path.dirname(own_path), "own cgroup (left by a previous agentd run)"
        if _delegated(own_path):
            return own_path, "own delegated cgroup"
        return os.path.join(mount, AUTO_ROOT_NAME), f"own cgroup {own} is not delegated"
    return os.path.join(mount, AUTO_ROOT_NAME), "own cgroup is the hierarchy root (not delegated)"


# ------------------------------------------------------------------ the daemon


class Daemon:
    def __init__(self, config, overrides: dict):
        self.config = config
        self.overrides = overrides
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.term_event = threading.Event()
        self.parts: dict[str, object] = {}

    def _optional(self, what: str, build):
        """Build an optional part; agentd keeps running without it (logged)."""
        try:
            part = build()
        except Exception as e:  # a missing or broken piece must not stop the agent
            log.error("part.unavailable", part=what, error=f"{type(e).__name__}: {e}".splitlines()[0])
            return None
        self.parts[what] = part
        return part

    def setup(self) -> None:
        cfg = self.config
        os.makedirs(cfg.agent.state_dir, mode=0o750, exist_ok=True)
        # one agentd per state dir, before anything is opened or adopted
        self.state_lock = statedir.lock(cfg.agent.state_dir)
        statedir.tighten(cfg.agent.state_dir)
        for db in ("state.db", "ledger.db"):
            statedir.create_private(os.path.join(cfg.agent.state_dir, db))
        in_scope = systemd_scope.payload_root(cfg.agent.cgroup_root)   # under systemd: a delegated scope
        root, why = in_scope or resolve_cgroup_root(cfg.agent.cgroup_root)
        cfg = self.config = replace(cfg, agent=replace(cfg.agent, cgroup_root=root))
        layout = layout_cgroups(root, move_self=in_scope is None)
        log.info("cgroup.layout", root=root, chosen=why, agentd=layout.agentd.path, launcher=layout.launcher.path,
                 containers=layout.containers.path, controllers=sorted(layout.enabled))
        for name, reason in sorted(layout.missing.items()):
            log.warning("cgroup.controller_missing", controller=name, reason=reason,
                        effect=f"limits needing {name} are refused")
        store = self.parts["store"] = Store(os.path.join(cfg.agent.state_dir, "state.db"),
                                              events_max=cfg.agent.events_max)
        # generous: a cold Python start on a loaded or emulated machine can take many seconds
        launcher = self.parts["launcher"] = LauncherClient.connect_or_start(cfg.agent.state_dir, layout.launcher.path,
                                                                            timeout=30)
        watcher = self._optional("watcher", self._watcher)
        images = self._optional("images", lambda: self._images(cfg))
        sup = self.supervisor = Supervisor(cfg, store, launcher, watcher, layout)
        sup.images = images
        sup.net = NetworkService(cfg)
        if images is not None:
            images.in_use = sup.images_in_use
        self.parts["supervisor"] = sup
        # the ledger's final-reading hook is in place before live restore, which
        # may remove (--rm) containers that exited while agentd was down
        ledger = self._optional("ledger", lambda: self._ledger(cfg))
        if ledger is not None:
            sup.before_remove.append(ledger.final)
        sup.boot()
        log.info("supervisor.ready", containers=len(sup.containers()),
                 running=len(sup.containers(all=False)))

        collector = self._optional("collector", lambda: self._collector(cfg, sup))
        if collector is not None:
            sup.final_sample = collector.sample_now   # a removal's last reading has the network's counters
        if collector is not None and ledger is not None:
            collector.subscribe(ledger.observe)
        if ledger is not None and cfg.sink_postgres is not None:
            try:   # the sink ships from the ledger's cursor; the ledger knows no exporter
                sink = PostgresSink(cfg, ledger.cursor)
                sink.start()
                self.parts["sink"] = sink
            except Exception as e:
                log.error("ledger.sink_unavailable", error=str(e))

        budgets = None
        if ledger is not None:     # spend limits acting on containers (agent/budgets.py)
            fleet = None
            if cfg.sink_postgres is not None:    # fleet budgets read the other hosts' spend from its table
                fleet = self._optional("fleet", lambda: FleetSpend(cfg))
            budgets = self.parts["budgets"] = Budgets(cfg.agent.state_dir, ledger, sup, cfg.budgets.entries,
                                                      fleet=fleet, host=cfg.agent.host)
            if collector is not None:
                collector.subscribe(budgets.observe)     # after the ledger: it sees this pass's cost

        api = self.parts["api"] = ApiServer(cfg, sup, collector, ledger, images)
        api.budgets = budgets
        api.start()
        if cfg.agent.metrics_listen:
            metrics = self._optional("metrics", lambda: self._metrics(cfg, collector, sup))
            if metrics is not None:
                try:
                    metrics.start()
                except Exception as e:
                    self.parts.pop("metrics", None)
                    log.error("metrics.unavailable", listen=cfg.agent.metrics_listen, error=str(e))
        if collector is not None:
            try:
                collector.start()
            except Exception as e:
                log.error("collector.start_failed", error=str(e))

    @staticmethod
    def _watcher():
        return Watcher()

    @staticmethod
    def _collector(cfg, sup):
        return Collector(cfg, sup.containers)

    @staticmethod
    def _images(cfg):
        return ImageService(cfg.agent.state_dir, certs_dir=cfg.images.certs_dir)

    @staticmethod
    def _ledger(cfg):
        return Ledger(cfg, os.path.join(cfg.agent.state_dir, "ledger.db"), focus_rows=focus_rows)

    @staticmethod
    def _metrics(cfg, collector, sup):
        if collector is None:
            raise RuntimeError("no collector, nothing to export")
        return MetricsServer(cfg, collector, sup)

    # -------------------------------------------------------------- signals

    def install_signals(self) -> None:
        # stop_event only wakes the main loop; what to do is in term_event and
        # reload_event, so a SIGTERM during a reload is never lost.
        signal.signal(signal.SIGTERM, lambda *_: (self.term_event.set(), self.stop_event.set()))
        signal.signal(signal.SIGINT, lambda *_: (self.term_event.set(), self.stop_event.set()))
        signal.signal(signal.SIGHUP, lambda *_: (self.reload_event.set(), self.stop_event.set()))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def reload(self) -> None:
        sdnotify.reloading()
        try:
            new = load_config(self.config.source or None, self.overrides)
        except ConfigError as e:
            log.error("config.reload_failed", error=str(e), kept="previous config")
            sdnotify.ready()
            return
        new = replace(new, agent=replace(new.agent, cgroup_root=self.config.agent.cgroup_root))
        changed = diff_keys(self.config, new)
        live = [k for k in changed if k in LIVE_KEYS]
        fixed = [k for k in changed if k not in LIVE_KEYS]
        if fixed:
            log.warning("config.reload_needs_restart", keys=fixed, note="kept the running values")
            keep = self.config
            agent_live = {k.split(".", 1)[1]: getattr(new.agent, k.split(".", 1)[1]) for k in live if k.startswith("agent.")}
            new = replace(keep, agent=replace(keep.agent, **agent_live), security=new.security, logs=new.logs,
                          budgets=new.budgets)
        self.config = new
        logsetup.configure(new.agent.log_level)
        for name in ("supervisor", "api", "collector", "ledger", "metrics", "budgets"):
            part = self.parts.get(name)
            if part is None:
                continue
            if name == "supervisor":
                part.config = new
            elif hasattr(part, "reload"):
                try:
                    part.reload(new)
                except Exception as e:
                    log.error("config.reload_part_failed", part=name, error=str(e))
        log.info("config.reloaded", changed=live, source=new.source or "embedded defaults")
        sdnotify.ready()

    # -------------------------------------------------------------- run

    def run(self) -> int:
        self.install_signals()
        try:
            self.setup()
        except Exception as e:
            log.error("agentd.start_failed", error=f"{e}".splitlines()[0] if str(e) else type(e).__name__)
            self.shutdown()
            return 1
        sdnotify.ready(f"serving on {self.config.agent.socket}")
        watchdog = None
        try:
            watchdog = sdnotify.Watchdog()
            watchdog.start()
        except Exception:
            watchdog = None
        log.info("agentd.ready", socket=self.config.agent.socket, state_dir=self.config.agent.state_dir,
                 cgroup_root=self.config.agent.cgroup_root, pid=os.getpid())
        while not self.term_event.is_set():
            self.stop_event.wait(1.0)
            self.stop_event.clear()
            if self.reload_event.is_set() and not self.term_event.is_set():
                self.reload_event.clear()
                try:
                    self.reload()
                except Exception as e:
                    log.exception("config.reload_crashed", error=str(e))
        sdnotify.stopping()
        log.info("agentd.stopping", stop_containers=self.config.agent.stop_containers_on_exit)
        if watchdog is not None:
            try:
                watchdog.stop()
            except Exception:
                pass
        self.shutdown()
        log.info("agentd.stopped")
        return 0

    def shutdown(self) -> None:
        """Stop accepting, flush, close; containers stay unless stop_containers_on_exit."""
        def attempt(what, fn):
            try:
                fn()
            except Exception as e:
                log.error("shutdown.step_failed", step=what, error=str(e))
        p = self.parts
        stop_containers = self.config.agent.stop_containers_on_exit
        steps = (  # in this order: stop taking requests first, release the launcher last
            ("api", lambda: p["api"].stop()),
            ("metrics", lambda: p["metrics"].stop()),
            ("collector", lambda: p["collector"].stop()),
            ("supervisor", lambda: p["supervisor"].close(stop_containers=stop_containers)),
            ("sink", lambda: p["sink"].stop()),
            ("ledger", lambda: p["ledger"].close()),
            ("store", lambda: p["store"].close()),
            ("watcher", lambda: p["watcher"].close()),
            ("launcher", lambda: p["launcher"].close()),
        )
        for name, step in steps:
            if name in p:
                attempt(name, step)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agent.config import ConfigError, load_config
    overrides = _overrides(args)
    try:
        config = load_config(args.config, overrides)
        check_budgets(config)
    except ConfigError as e:
        sys.stderr.write(f"agentd: {e}\n")
        return 2
    if args.check:
        sys.stdout.write(f"agentd: config ok ({config.source or 'embedded defaults'})\n")
        return 0
    logsetup.configure(config.agent.log_level)
    if os.geteuid() != 0:
        log.error("agentd.not_root", error="agentd must run as root: it creates cgroups and namespaces")
        return 1
    return Daemon(config, overrides).run()

