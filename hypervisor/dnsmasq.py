"""One dnsmasq per VPC namespace: its files (rendered from the VPC's state) and its process.

DHCP with one fixed lease per interface (the dhcp-hosts file; SIGHUP re-reads it), router and DNS
server = the subnet's gateway; names from an addn-hosts file; `no-resolv` and no upstream: it
never forwards a query anywhere. Every name it serves is given by the emulator (a port's
hostname, a public address's hostname, the VPC's DNS domains); it computes none.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import host
from .host import run
from .names import gateway, subnet_bridge_name

DHCP_LEASE = "1h"


# ------------------------------------------------------------------------------ files

def dhcp_hosts(ports: Mapping[str, Mapping[str, str]], names: bool = True) -> list[str]:
    """`MAC,IP[,NAME]` lines, NAME the first label of the port's hostname (sent as the DHCP host
    name option; none if the port has no hostname). names False (a VPC whose resolver does not
    answer its instances' names): no NAME, since dnsmasq answers every name it hands out (the
    guests take their hostname from the metadata service anyway)."""
    lines = []
    for _iid, p in sorted(ports.items(), key=lambda kv: kv[1]["ip"]):
        short = (p.get("hostname") or "").split(".")[0] if names else ""
        lines.append(f"{p['mac']},{p['ip']}" + (f",{short}" if short else "") + "\n")
    return lines


def hosts(ports: Mapping[str, Mapping[str, str]], nat: Mapping[str, str], public_names: Mapping[str, str],
          dns_domain: str) -> str:
    """The addn-hosts file: each port's hostname (and its first label, and that label in the VPC's
    domain), and each mapped public address's hostname resolving to the private address inside
    the VPC, as Amazon's resolver does."""
    lines = []
    for _iid, p in sorted(ports.items(), key=lambda kv: kv[1]["ip"]):
        name = p.get("hostname") or ""
        if not name:
            continue
        short = name.split(".")[0]
        names = [name] if "." in name else []
        if dns_domain and f"{short}.{dns_domain}" not in names:
            names.append(f"{short}.{dns_domain}")
        names.append(short)
        lines.append(f"{p['ip']} {' '.join(names)}\n")
    for pub, priv in sorted(nat.items()):
        if public_names.get(pub):
            lines.append(f"{priv} {public_names[pub]}\n")
    return "".join(lines)


def config(d: Path, subnets: Iterable[tuple[str, str]], dns_domain: str, public_dns_domain: str,
           dhcp_domain: str = "", dns: bool = True) -> str:
    """dnsmasq.conf for a VPC whose files live in `d` (absolute). `dhcp_domain`: the domain name
    DHCP hands out (the VPC's DHCP option set's domain-name) when it is not `dns_domain`. `dns`
    False: no DNS server at all (the VPC's enableDnsSupport false), DHCP only; DHCP still names
    the VPC router as the DNS server, as AWS's DHCP options still name AmazonProvidedDNS."""
    lines = [
        "# written by ec2emu; rewritten on every change",
        f"pid-file={d / 'dnsmasq.pid'}",
        # Root, so that SIGHUP can re-read files under a state dir only root can traverse.
        "user=root", "group=root",
        "no-resolv", "no-hosts", "no-poll",
        "bind-interfaces", "except-interface=lo",
    ]
    if not dns:
        lines.append("port=0")
    if dns_domain:
        lines += [f"domain={dns_domain}", f"local=/{dns_domain}/"]
    if dhcp_domain and dhcp_domain != dns_domain:
        # Option 15 as the option set says (guests make it their resolver's search list); the
        # names dnsmasq answers stay the region's, as Amazon's resolver's do.
        lines.append(f"dhcp-option=option:domain-name,{dhcp_domain}")
    if public_dns_domain:
        # Public DNS names of the region resolve inside (hosts file); others: NXDOMAIN.
        lines.append(f"local=/{public_dns_domain}/")
    lines += [
        "domain-needed", "bogus-priv",
        "dhcp-authoritative", "leasefile-ro", "dhcp-ignore=tag:!known",
        f"dhcp-hostsfile={d / 'dhcp-hosts'}",
        f"addn-hosts={d / 'hosts'}",
        f"log-facility={d / 'dnsmasq.log'}", "log-dhcp",
    ]
    for subnet_id, cidr in sorted(subnets):
        br = subnet_bridge_name(subnet_id)
        net = ipaddress.ip_network(cidr)
        gw, _ = gateway(cidr)
        lines += [f"interface={br}",
                  f"dhcp-range=set:{br},{net.network_address},static,{net.netmask},{DHCP_LEASE}",
                  f"dhcp-option=tag:{br},option:router,{gw}",
                  f"dhcp-option=tag:{br},option:dns-server,{gw}"]
    return "\n".join(lines) + "\n"


def internet_config(d: Path, address: str, public_dns_domains: Iterable[str]) -> str:
    """dnsmasq.conf of the namespace playing the internet: DNS only, on `address`, answering
    the public DNS names of every VPC that gives them (hosts file `d/hosts`, written by
    network.py) with their public addresses, as the internet's DNS does; never forwarding."""
    lines = ["# written by ec2emu; rewritten on every change",
             f"pid-file={d / 'dnsmasq.pid'}", "user=root", "group=root",
             "no-resolv", "no-hosts", "no-poll", "bind-interfaces", f"listen-address={address}",
             f"addn-hosts={d / 'hosts'}", f"log-facility={d / 'dnsmasq.log'}"]
    lines += [f"local=/{domain}/" for domain in sorted(set(public_dns_domains))]  # others: NXDOMAIN
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ processes

def _proc_alive(pid: int) -> bool:
    """True if pid runs (a zombie does not count: our daemons are reparented and maybe not reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _proc_comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _kill(pid: int, wait: float = 3.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not _proc_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_strays(ns: str) -> None:
    """Stop any dnsmasq in one of our namespaces (e.g. after a lost pid file)."""
    if not host.netns_exists(ns):
        return
    for pid in run(["ip", "netns", "pids", ns], check=False).split():
        if _proc_comm(int(pid)) == "dnsmasq":
            _kill(int(pid))


class Dnsmasq:
    """The dnsmasq of namespace `ns`, configured by `<d>/dnsmasq.conf`."""

    def __init__(self, d: Path, ns: str):
        self.d, self.ns = d.resolve(), ns

    def pid(self) -> int | None:
        """Its pid, if one runs from our pid file inside that very namespace."""
        try:
            pid = int((self.d / "dnsmasq.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        ns_inode = host.netns_inode(self.ns)
        if (_proc_alive(pid) and _proc_comm(pid) == "dnsmasq"
                and ns_inode is not None and host.pid_netns_inode(pid) == ns_inode):
            return pid
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def reload(self) -> None:
        """SIGHUP: re-read the hosts files (not the config)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            _kill(pid)
        (self.d / "dnsmasq.pid").unlink(missing_ok=True)
        stop_strays(self.ns)

    def start(self) -> None:
        """(Re)start it; a restart also forgets leases (a reused address must go to its new MAC)."""
        self.stop()
        # dnsmasq daemonizes; its output goes to a file, not a pipe the daemon could keep open.
        run(["ip", "netns", "exec", self.ns, "dnsmasq", f"--conf-file={self.d / 'dnsmasq.conf'}"],
            timeout=30, output=self.d / "dnsmasq.stderr")
