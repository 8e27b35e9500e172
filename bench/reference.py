"""Run a private Postfix or Dovecot on loopback and drive it with bench.run's load generators, for reference figures.

.venv/bin/python -m bench.reference postfix --messages 5000 --sessions 20 --size 1024
.venv/bin/python -m bench.reference postfix --delivery lmtp        # Postfix → Dovecot LMTP → maildir + index
.venv/bin/python -m bench.reference dovecot --sessions 20 --messages 250 --size 10240
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from bench.pop3load import PASSWORD, download
from bench.run import DOMAIN, load_average, pop3_body, raise_file_limit, save_result, smtp_source_command
from bench.stack import cpu_seconds, free_port, process_tree
from services.store.passwords import DEFAULT_MEMORY_KIB, DEFAULT_PARALLELISM, DEFAULT_TIME_COST

# Mail is owned by an unprivileged user that exists on every Debian system, as a vmail user would be.
MAIL_USER = "nobody"


@dataclass(frozen=True)
class Usage:
    """CPU seconds of one process: its own, and that of the children it has reaped (ended workers)."""

    name: str
    started: int
    own: float
    reaped: float


def identity(pid: int) -> tuple[str, int]:
    """A process's name and start time (clock ticks after boot): a pid alone may be reused."""
    name = Path(f"/proc/{pid}/comm").read_text().strip()
    return name, int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def usage(*roots: int) -> dict[int, Usage]:
    out = {}
    for pid in (member for root in roots for member in process_tree(root)):
        try:
            name, started = identity(pid)
            own = cpu_seconds(pid)
            out[pid] = Usage(name, started, own, cpu_seconds(pid, reaped=True) - own)
        except OSError:
            continue
    return out


def sample_until(roots: list[int], interval: float, done: Event, out: Connection) -> None:
    """The sampler process: the last usage seen of every process of the trees, sent back once `done` is set."""
    last: dict[tuple[int, int], Usage] = {}
    while not done.wait(interval):
        for pid, process in usage(*roots).items():
            last[pid, process.started] = process
    out.send(last)


class Meter:
    """CPU of process trees (named: "postfix", "dovecot") from start() to stop(): the total of each tree exactly,
    its split over the programs nearly.

    The total is exact because an ended worker's time is added to its parent's reaped time. Which program a worker
    was is only known from the samples taken while it lived, every `interval` seconds; what it used after its last
    sample is counted in the total but not attributed. The samples are taken in a process of their own: a thread
    would wait for the GIL behind the benchmark's own client (the POP3 downloader) and sample far less often.
    """

    def __init__(self, roots: Mapping[str, int], interval: float = 0.2) -> None:
        self.roots = dict(roots)
        self.interval = interval
        self.before: dict[int, Usage] = {}
        self.after: dict[int, Usage] = {}
        self.trees_before: dict[str, float] = {}
        self.trees_after: dict[str, float] = {}
        self.last: dict[tuple[int, int], Usage] = {}
        self.tree_of: dict[int, str] = {}
        context = multiprocessing.get_context("fork")
        self._done = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        target, args = sample_until, (list(self.roots.values()), interval, self._done, sender)
        self._sampler = context.Process(target=target, args=args, daemon=True)

    def _trees(self) -> dict[str, float]:
        """Each tree's CPU so far, its ended workers' included; remembers which tree each process is in."""
        totals = {}
        for label, root in self.roots.items():
            members = usage(root)
            self.tree_of.update(dict.fromkeys(members, label))
            totals[label] = sum(u.own + u.reaped for u in members.values())
        return totals

    def start(self) -> None:
        self.trees_before = self._trees()
        self.before = usage(*self.roots.values())
        self._remember(self.before)
        self._sampler.start()

    def stop(self) -> None:
        self._done.set()
        if self._results.poll(30):
            self.last.update(self._results.recv())
        self._sampler.join(30)
        self.trees_after = self._trees()
        self.after = usage(*self.roots.values())
        self._remember(self.after)

    def _remember(self, sample: dict[int, Usage]) -> None:
        for pid, process in sample.items():
            self.last[pid, process.started] = process

    def report(self, messages: int) -> dict[str, Any]:
        by_tree = {label: self.trees_after[label] - self.trees_before[label] for label in self.roots}
        total = sum(by_tree.values())
        by_name: dict[str, float] = {}
        for (pid, started), last in self.last.items():
            first = self.before.get(pid)
            used = last.own - (first.own if first is not None and first.started == started else 0.0)
            # Postfix's LMTP client and Dovecot's LMTP server are both "lmtp": name the tree when there are two.
            name = f"{self.tree_of.get(pid, '?')}/{last.name}" if len(self.roots) > 1 else last.name
            by_name[name] = by_name.get(name, 0.0) + used
        # Never below zero but by the rounding of clock ticks.
        by_name["(unattributed: after a worker's last sample)"] = max(0.0, total - sum(by_name.values()))
        per_msg = {name: round(seconds * 1000 / messages, 3) for name, seconds in by_name.items()}
        return {
            "cpu_ms_per_msg": round(total * 1000 / messages, 3),
            "cpu_ms_per_msg_by_server": {label: round(s * 1000 / messages, 3) for label, s in by_tree.items()},
            "cpu_ms_per_msg_by_program": dict(sorted(per_msg.items(), key=lambda item: -item[1])),
        }


def alive(members: dict[int, Usage]) -> list[int]:
    left = []
    for pid, member in members.items():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if identity(pid) == (member.name, member.started) and state != "Z":
                left.append(pid)
        except OSError:
            continue
    return left


def stop_tree(proc: subprocess.Popen[bytes], timeout: float = 30) -> list[int]:
    """SIGTERM the master (it ends its children), wait for every process of its tree; returns those killed."""
    members = usage(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while (left := alive(members)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def wait_until_gone(root: int, names: set[str], timeout: float) -> None:
    """Wait (bounded) until the per-connection workers have exited, so their CPU is in the measured window."""
    deadline = time.monotonic() + timeout
    while any(u.name in names for u in usage(root).values()) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_for_banner(address: int | Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Until the server greets (220 or +OK) on a loopback port or a unix socket."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if isinstance(address, Path):
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(5)
                sock.connect(str(address))
            else:
                sock = socket.create_connection(("127.0.0.1", address), timeout=5)
            with sock:
                if sock.recv(512)[:3] in (b"220", b"+OK"):
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer on {address}; see {log}")
        time.sleep(0.1)


@contextmanager
def server(name: str, command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server's master in the foreground as our child (so stopping it is ours to do), its tree stopped at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        killed = stop_tree(proc)
        if killed:
            print(f"killed {name} processes that outlived their master: {killed}", file=sys.stderr)


@contextmanager
def scratch(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="postroom-reference-"))
    # The servers' unprivileged users (postfix, dovecot, dovenull, nobody) must reach their directories in here.
    root.chmod(0o755)
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid)


def postconf(name: str) -> str:
    return subprocess.run(["postconf", "-dh", name], capture_output=True, text=True, check=True).stdout.strip()


def mail_root(root: Path) -> Path:
    """Where both servers keep the mail: <root>/mail/<domain>/<user>/ is a user's maildir (Postfix's virtual(8) and
    Dovecot alike), owned by MAIL_USER."""
    mail = root / "mail"
    if not mail.exists():
        mail.mkdir()
        owner = pwd.getpwnam(MAIL_USER)
        os.chown(mail, owner.pw_uid, owner.pw_gid)
    return mail


def maildir(root: Path, address: str) -> Path:
    local, domain = address.split("@")
    return mail_root(root) / domain / local


def postfix_config(root: Path, port: int, mailboxes: list[str], maillog: bool, transport: str | None) -> Path:
    """main.cf and master.cf of a private instance: no chroot, no DNS, one virtual domain of maildirs, delivered by
    virtual(8), or by `transport` (Dovecot's LMTP: lmtp:unix:<socket> or lmtp:inet:<host>:<port>)."""
    conf = root / "conf"
    conf.mkdir()
    mail = mail_root(root)
    owner = pwd.getpwnam(MAIL_USER)
    (conf / "vmailbox").write_text("".join(f"{box} {DOMAIN}/{box.split('@')[0]}/\n" for box in mailboxes))
    main = {
        "compatibility_level": "3.6",
        "queue_directory": root / "queue",
        "data_directory": root / "data",
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "reference.postroom.test",
        "mydomain": "postroom.test",
        "myorigin": "$myhostname",
        "mydestination": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "relayhost": "",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "local_transport": "error:no local delivery",
        "smtp_dns_support_level": "disabled",
        "smtpd_peername_lookup": "no",
        "biff": "no",
        "append_dot_mydomain": "no",
        "virtual_mailbox_domains": DOMAIN,
        "virtual_mailbox_base": mail,
        "virtual_mailbox_maps": f"texthash:{conf / 'vmailbox'}",
        "virtual_uid_maps": f"static:{owner.pw_uid}",
        "virtual_gid_maps": f"static:{owner.pw_gid}",
        # Without a log file Postfix writes to syslog; there is no syslog daemon here, so that is no logging.
        "maillog_file": root / "maillog" if maillog else "",
        "maillog_file_prefixes": root,
    }
    if transport:
        main["virtual_transport"] = transport
    (conf / "main.cf").write_text("".join(f"{key} = {value}\n" for key, value in main.items()))
    # Debian's master.cf, with every service out of the chroot and smtpd on the loopback port only.
    services = [
        f"127.0.0.1:{port} inet n - n - - smtpd",
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "proxywrite unix - - n - 1 proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "local unix - n n - - local",
        "virtual unix - n n - - virtual",
        "lmtp unix - - n - - lmtp",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    (conf / "master.cf").write_text("\n".join(services) + "\n")
    # Creates the queue's subdirectories and the data directory with the owners and modes Postfix wants.
    (root / "queue").mkdir(mode=0o755)
    if subprocess.run(["postfix", "-c", str(conf), "check"], check=False).returncode != 0:
        # The postfix command writes its errors to a terminal or to the mail log only.
        raise RuntimeError(f"postfix check failed; see {root / 'maillog'} (with --maillog --keep)")
    return conf


def count_files(directories: list[Path]) -> int:
    total = 0
    for directory in directories:
        try:
            with os.scandir(directory) as entries:
                total += sum(1 for entry in entries if entry.is_file())
        except FileNotFoundError:
            continue
    return total


def dovecot_version(dovecot: str) -> str:
    return subprocess.run([dovecot, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def run_postfix(args: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("smtp-source") or not shutil.which("postfix"):
        sys.exit("Postfix is missing: apt-get install --no-install-recommends postfix (it is not started)")
    mailboxes = [f"sink@{DOMAIN}"] + [f"box{i}@{DOMAIN}" for i in range(1, args.mailboxes)]
    lmtp = args.delivery == "lmtp"
    with scratch(args.keep) as root, ExitStack() as running:
        roots: dict[str, int] = {}
        procs: list[subprocess.Popen[bytes]] = []
        transport = None
        details: dict[str, Any] = {}
        if lmtp:
            dovecot = ensure_dovecot()
            # Dovecot's LMTP as production runs it behind Postfix: passwd-file users, maildir with its index.
            lmtp_port = free_port() if args.lmtp_socket == "inet" else None
            config = dovecot_config(root, mailboxes, password_entry("plain"), lmtp=lmtp_port or True)
            log = root / "dovecot.log"
            proc = running.enter_context(server("Dovecot", [dovecot, "-F", "-c", str(config)], root / "dovecot.out"))
            socket_path = root / "run" / "lmtp"
            wait_for_banner(lmtp_port or socket_path, proc, log)
            transport = f"lmtp:inet:127.0.0.1:{lmtp_port}" if lmtp_port else f"lmtp:unix:{socket_path}"
            roots["dovecot"] = proc.pid
            procs.append(proc)
            details = {"dovecot_version": dovecot_version(dovecot), "lmtp": transport}
        port = free_port()
        conf = postfix_config(root, port, mailboxes, args.maillog, transport)
        master = [str(Path(postconf("daemon_directory")) / "master"), "-c", str(conf)]
        proc = running.enter_context(server("Postfix", master, root / "master.log"))
        roots = {"postfix": proc.pid, **roots}
        procs.append(proc)
        wait_for_banner(port, proc, root / "master.log")
        maildirs = [maildir(root, box) / sub for box in mailboxes for sub in ("new", "cur")]
        queue = [root / "queue" / name for name in ("maildrop", "incoming", "active", "deferred", "hold")]
        load_before = load_average()
        meter = Meter(roots)
        meter.start()
        started = time.monotonic()
        # The same command bench.run smtp uses, against Postfix's port.
        command = smtp_source_command(args.sessions, args.size, args.messages, mailboxes[0], port)
        subprocess.run(command, check=True, timeout=args.timeout)
        accepted_at = time.monotonic()
        deadline = accepted_at + args.timeout
        while count_files(maildirs) < args.messages:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"not every message reached the maildir in time; see {root} (--keep)")
            time.sleep(0.05)
        stored_at = time.monotonic()
        meter.stop()
        load_after = load_average()
        # Nothing lost or duplicated: exactly one file per message, and once the queue is empty (bounded
        # wait: qmgr removes a queue file after the delivery) no further delivery can add one.
        while any(count_files([d]) for d in queue) and time.monotonic() < deadline:
            time.sleep(0.05)
        check = {"in_maildir": count_files(maildirs), "left_in_queue": sum(count_files([d]) for d in queue)}
        if check["in_maildir"] != args.messages or check["left_in_queue"]:
            raise RuntimeError(f"lost or duplicated messages: sent {args.messages}, {check}")
        if lmtp:
            check["dovecot_index"] = (maildir(root, mailboxes[0]) / "dovecot.index.log").exists()
        return {
            "reference": "postfix",
            "delivery": args.delivery,
            "version": postconf("mail_version"),
            **details,
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "maillog": args.maillog,
            "command": " ".join(command),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "check": check,
            "accept_msg_per_s": round(args.messages / (accepted_at - started), 1),
            "into_mailbox_msg_per_s": round(args.messages / (stored_at - started), 1),
            **meter.report(args.messages),
        }


def ensure_dovecot() -> str:
    """Install Debian's dovecot-pop3d if it is missing, without letting the package start the system's Dovecot."""
    found = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin")
    if found:
        return found
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        # invoke-rc.d asks this script whether it may start a daemon; 101 = "no".
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "dovecot-pop3d", "dovecot-lmtpd"]
    try:
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(install, env=env, check=True)
    finally:
        if ours:
            policy.unlink()
    return shutil.which("dovecot", path="/usr/sbin:/usr/bin") or "/usr/sbin/dovecot"


def password_entry(scheme: str, password: str = PASSWORD) -> str:
    """The passwd-file password of every reference user: argon2id at Postroom's default cost (what its pop3 checks
    at each login, so both sides pay the same for the logins), or PLAIN (no hashing at all)."""
    if scheme == "plain":
        return "{PLAIN}" + password
    hasher = PasswordHasher(DEFAULT_TIME_COST, DEFAULT_MEMORY_KIB, DEFAULT_PARALLELISM)
    return "{ARGON2ID}" + hasher.hash(password)


def fill_maildir(root: Path, address: str, messages: int, body: Callable[[int], bytes]) -> None:
    """A user's maildir with `messages` messages, message n being body(n) as POP3 sends it (CRLF lines).

    The files hold LF lines, as an MTA writes them; Dovecot sends them with CRLF. S= and W= in the name (file size,
    size with CRLF) are what a delivery agent puts there, so sizes need no reading of the file."""
    box = maildir(root, address)
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    stamp = int(time.time())
    for n in range(messages):
        wire = body(n)
        stored = wire.replace(b"\r\n", b"\n")
        name = f"{stamp}.M{n}P{os.getpid()}.reference,S={len(stored)},W={len(wire)}:2,S"
        (box / "cur" / name).write_bytes(stored)
    owner = pwd.getpwnam(MAIL_USER)
    chown_tree(box.parent, owner.pw_uid, owner.pw_gid)


def dovecot_config(
    root: Path, users: list[str], password: str, pop3: int | None = None, lmtp: int | bool = False
) -> Path:
    """dovecot.conf of a private instance, virtual users only: passdb and userdb from one passwd-file (no PAM, no
    system users), maildirs under mail_root() with Dovecot's index files in them (its default) and
    maildir_very_dirty_syncs (only Dovecot changes cur/). `pop3`: a POP3
    listener on that loopback port. `lmtp`: LMTP on <root>/run/lmtp for the postfix user (True), or on that
    loopback port too (a port number)."""
    owner = pwd.getpwnam(MAIL_USER)
    mail = mail_root(root)
    (root / "users").write_text(
        "".join(f"{user}:{password}:{owner.pw_uid}:{owner.pw_gid}::{maildir(root, user)}::\n" for user in users)
    )
    protocols = [name for name, on in (("pop3", pop3), ("lmtp", lmtp)) if on]
    services = ""
    if pop3:
        services += f"""service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
}}
"""
    if lmtp:
        inet = ""
        if lmtp is not True:
            inet = f"  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp}\n  }}\n"
        # As production runs it for Postfix: a socket only the postfix user may use.
        services += f"""service lmtp {{
  unix_listener lmtp {{
    user = postfix
    group = postfix
    mode = 0600
  }}
{inet}}}
"""
    config = root / "dovecot.conf"
    # Dovecot alone changes cur/ (the bench fills the maildirs before Dovecot starts; LMTP delivers through Dovecot),
    # the case maildir_very_dirty_syncs is for, as production set-ups with big folders run it (mailcow's default
    # since 2023-05). Without it, a session that did not scan cur/ knows only the flagless base names the uidlist
    # file keeps: its first open of a message misses and rescans all of cur/ (0.14-0.36 s at 100,000 messages).
    config.write_text(
        f"""base_dir = {root / "run"}
state_dir = {root / "state"}
instance_name = postroom-reference
protocols = {" ".join(protocols)}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = {root / "dovecot.log"}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {owner.pw_uid}
mail_location = maildir:{mail}/%d/%n
maildir_very_dirty_syncs = yes
postmaster_address = postmaster@{DOMAIN}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root / "users"}
}}
userdb {{
  driver = passwd-file
  args = {root / "users"}
}}
{services}"""
    )
    return config


def run_dovecot(args: argparse.Namespace) -> dict[str, Any]:
    dovecot = ensure_dovecot()
    users = [f"reader{i}@{DOMAIN}" for i in range(args.sessions)]
    body = pop3_body(args.size)
    total = args.messages * args.sessions

    with scratch(args.keep) as root:
        port = free_port()
        for user in users:
            fill_maildir(root, user, args.messages, lambda _: body)
        config = dovecot_config(root, users, password_entry(args.scheme), pop3=port)
        log = root / "dovecot.log"
        with server("Dovecot", [dovecot, "-F", "-c", str(config)], root / "master.log") as proc:
            wait_for_banner(port, proc, log)
            # Let the connection of the banner check end before the first sample.
            wait_until_gone(proc.pid, {"pop3-login", "pop3"}, 10)
            passes = []
            for number in range(1, args.passes + 1):
                load_before = load_average()
                meter = Meter({"dovecot": proc.pid})
                meter.start()
                # Every message is checked to come back whole (its size in octets) by the load generator.
                loaded = download(port, users, args.messages, args.batch, len(body), args.clients)
                # Each session's pop3 and pop3-login processes end after QUIT: count their last CPU in.
                wait_until_gone(proc.pid, {"pop3-login", "pop3"}, 10)
                meter.stop()
                if loaded.octets != total * len(body):
                    raise RuntimeError(f"downloaded {loaded.octets} octets, expected {total * len(body)}")
                passes.append(
                    {
                        # The first pass also builds Dovecot's index and uidlist files; later ones read them.
                        "pass": number,
                        "loadavg_before": load_before,
                        "loadavg_after": load_average(),
                        "msg_per_s": round(total / loaded.seconds, 1),
                        **meter.report(total),
                        **loaded.report(total),
                    }
                )
            return {
                "reference": "dovecot",
                "version": dovecot_version(dovecot),
                "sessions": args.sessions,
                "messages": total,
                "size": args.size,
                "batch": args.batch,
                "password_scheme": args.scheme,
                "passes": passes,
            }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs, mail)")
    sub = parser.add_subparsers(dest="reference", required=True)
    postfix = sub.add_parser("postfix", help="smtp-source → smtpd → queue → virtual or Dovecot LMTP → maildir")
    postfix.add_argument("--messages", type=int, default=5000)
    postfix.add_argument("--sessions", type=int, default=20)
    postfix.add_argument("--size", type=int, default=1024)
    postfix.add_argument("--mailboxes", type=int, default=20, help="virtual mailboxes (the load goes to the first)")
    postfix.add_argument(
        "--delivery",
        choices=("virtual", "lmtp"),
        default="virtual",
        help="virtual: Postfix's virtual(8) writes the maildir (its fastest); lmtp: Postfix hands each message to a "
        "private Dovecot's LMTP, which writes the maildir and its index (the production set-up)",
    )
    postfix.add_argument(
        "--lmtp-socket", choices=("unix", "inet"), default="unix", help="how Postfix reaches Dovecot's LMTP"
    )
    postfix.add_argument(
        "--maillog",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log every message to a file through postlogd, as a production Postfix logs (default: on)",
    )
    dovecot = sub.add_parser("dovecot", help="pipelined POP3 download from maildirs")
    dovecot.add_argument("--sessions", type=int, default=20)
    dovecot.add_argument("--messages", type=int, default=250, help="per session")
    dovecot.add_argument("--size", type=int, default=10240)
    dovecot.add_argument("--batch", type=int, default=50, help="RETR commands pipelined at once")
    dovecot.add_argument("--clients", type=int, default=4, help="load generator processes sharing the sessions")
    dovecot.add_argument("--passes", type=int, default=2, help="downloads in a row (the first builds the index)")
    dovecot.add_argument(
        "--scheme",
        choices=("argon2id", "plain"),
        default="argon2id",
        help="how the users' passwords are stored: argon2id at Postroom's default cost (default), or PLAIN",
    )
    return parser


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root: Postfix and Dovecot switch to their own users")


def run(args: argparse.Namespace) -> dict[str, Any]:
    runner = run_postfix if args.reference == "postfix" else run_dovecot
    return runner(args)


def main() -> None:
    args = build_parser().parse_args()
    require_root()
    raise_file_limit()
    result = run(args)
    name = f"reference-{args.reference}" + ("-lmtp" if getattr(args, "delivery", "") == "lmtp" else "")
    save_result(name, result)


if __name__ == "__main__":
    main()
