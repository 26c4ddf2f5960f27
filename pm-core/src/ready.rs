//! Ready checks: what "started" means beyond "has not exited".
//!
//! Each check is cheap and is retried by pm-start with a short backoff; `notify` is the
//! exception, answered by the service's own datagram (sd_notify `READY=1`).

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};
use regex_lite::Regex;

use crate::error::{Error, Result};
use crate::lineage::Lineage;
use crate::pidfile;
use crate::process::{self, Expect, Verdict};
use crate::sys;

/// One `--ready` check.
#[derive(Debug, Clone)]
pub enum Check {
    /// The PID file names a live process (written after this start).
    Pidfile,
    /// A TCP connection is accepted.
    Tcp(String),
    /// A unix stream socket accepts.
    Unix(PathBuf),
    /// The path exists.
    File(PathBuf),
    /// `sh -c COMMAND` exits 0.
    Exec(String),
    /// A line written to the log after this start matches.
    Log(Regex),
    /// sd_notify `READY=1` on `NOTIFY_SOCKET`.
    Notify,
}

fn bad(value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        what: "ready check",
        value: value.into(),
        reason: reason.into(),
    }
}

impl Check {
    /// Parses `pidfile`, `tcp:[HOST:]PORT`, `unix:PATH`, `file:PATH`, `exec:COMMAND`,
    /// `log:REGEX`, `notify`.
    pub fn parse(s: &str) -> Result<Check> {
        if s.contains('\0') {
            // It could never pass: a path or command cannot hold one.
            return Err(bad(s, "cannot hold a NUL byte"));
        }
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        let need = |what: &str| -> Result<&str> {
            if arg.is_empty() {
                Err(bad(s, format!("{kind}: needs {what}")))
            } else {
                Ok(arg)
            }
        };
        match kind {
            "pidfile" if arg.is_empty() => Ok(Check::Pidfile),
            "notify" if arg.is_empty() => Ok(Check::Notify),
            "tcp" => {
                let a = need("a port")?;
                let target = if a.bytes().all(|b| b.is_ascii_digit()) {
                    format!("127.0.0.1:{a}")
                } else {
                    a.to_string()
                };
                let port = target.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
                match port.parse::<u16>() {
                    Ok(p) if p > 0 => Ok(Check::Tcp(target)),
                    _ => Err(bad(s, "tcp: needs [HOST:]PORT with a port from 1 to 65535")),
                }
            }
            "unix" => {
                let path = absolute(need("a socket path")?);
                // sun_path holds 108 bytes with its NUL: a longer path can never connect.
                if path.as_os_str().len() >= 108 {
                    return Err(bad(
                        s,
                        format!(
                            "{}: longer than the 107 bytes a unix socket address holds",
                            path.display()
                        ),
                    ));
                }
                Ok(Check::Unix(path))
            }
            "file" => Ok(Check::File(absolute(need("a path")?))),
            "exec" => Ok(Check::Exec(need("a command")?.to_string())),
            "log" => Regex::new(need("a regular expression")?)
                .map(Check::Log)
                .map_err(|e| bad(s, e.to_string())),
            _ => Err(bad(
                s,
                "expected pidfile, tcp:[HOST:]PORT, unix:PATH, file:PATH, exec:COMMAND, log:REGEX or notify",
            )),
        }
    }
}

fn absolute(p: &str) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| PathBuf::from(p))
}

/// A PID file as it was before the service started, so a stale one is not taken as news.
#[derive(Debug, Clone, PartialEq)]
pub struct PidfileBaseline(Option<(std::time::SystemTime, u64)>);

impl PidfileBaseline {
    pub fn take(path: &Path) -> PidfileBaseline {
        use std::os::unix::fs::MetadataExt;
        PidfileBaseline(
            fs::metadata(path)
                .ok()
                .and_then(|m| m.modified().ok().map(|t| (t, m.ino()))),
        )
    }
}

/// Reads a PID file written since `baseline` and naming a live process that started
/// no later than the write and no earlier than `born_after` (the launcher's start time:
/// the daemon is its descendant). `None` until then.
pub fn fresh_pid(
    path: &Path,
    baseline: &PidfileBaseline,
    born_after: u64,
) -> Option<(i32, Expect)> {
    if PidfileBaseline::take(path) == *baseline {
        return None;
    }
    let pf = pidfile::read(path).ok()??;
    let expect = pf.expect();
    match process::Gate::born_after(born_after).check(pf.pid, &expect) {
        Ok(Verdict::Ours(_)) => Some((pf.pid, expect)),
        _ => None,
    }
}

/// Longest unfinished line kept for `log:` matching.
const PARTIAL_MAX: usize = 64 * 1024;

/// Follows the log from the offset it had when the service started.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    partial: String,
}

/// A line without the logger's `--log-timestamps` prefix (`2026-11-26T14:50:35.860Z `),
/// so `log:^READY` means the same with and without it.
fn unstamped(line: &str) -> &str {
    let b = line.as_bytes();
    let stamped = b.len() >= 25
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && b[24] == b' '
        && b[..4].iter().all(u8::is_ascii_digit);
    if stamped {
        &line[25..]
    } else {
        line
    }
}

impl LogFollower {
    pub fn new(path: &Path) -> LogFollower {
        let offset = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogFollower {
            path: path.to_path_buf(),
            offset,
            partial: String::new(),
        }
    }

    /// True once a line written since the start matches `re`.
    pub fn matches(&mut self, re: &Regex) -> bool {
        // The log may have been swapped for a FIFO or a symlink meanwhile: such a thing is
        // never opened (nor waited on), the check just does not pass.
        let Ok(crate::untrusted::Opened::File(mut f, meta)) =
            crate::untrusted::open_read(&self.path)
        else {
            return false;
        };
        let len = meta.len();
        if len < self.offset {
            self.offset = 0; // truncated (copytruncate rotation)
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        if f.take(1 << 20).read_to_end(&mut buf).is_err() {
            return false;
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut found = false;
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            found |= re.is_match(unstamped(line.trim_end_matches('\n')));
        }
        // A line is matched once it is complete; an endless one is matched on its last
        // 64 KiB only, so a service writing without newlines cannot grow pm-start.
        if self.partial.len() > PARTIAL_MAX {
            let mut cut = self.partial.len() - PARTIAL_MAX;
            while !self.partial.is_char_boundary(cut) {
                cut += 1;
            }
            self.partial.drain(..cut);
        }
        found || (!self.partial.is_empty() && re.is_match(&self.partial))
    }
}

/// The sd_notify socket pm-start listens on while the service starts.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    /// The private directory made for a service that runs as another user.
    dir: Option<PathBuf>,
    pub ready: bool,
    pub main_pid: Option<i32>,
    pub status: Option<String>,
}

impl NotifySocket {
    /// Binds at `path` (replacing a stale socket). With `owner` (a service running as
    /// another user, who cannot traverse the caller's 0700 state directory), the socket
    /// goes in a fresh directory of its own under the temp dir instead, made 0700 by
    /// mkdtemp and given to that user: reachable by the service, by nobody else.
    pub fn bind(
        path: &Path,
        owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    ) -> Result<NotifySocket> {
        let Some((uid, gid)) = owner else {
            return Self::bind_at(path, None, None);
        };
        let template = std::env::temp_dir().join("pm-notify.XXXXXX");
        let dir = nix::unistd::mkdtemp(&template)
            .map_err(|e| Error::io(&template, crate::error::errno(e)))?;
        // The directory stays the caller's (0711: others may pass, not list or change it),
        // so nobody can swap what pm removes afterwards; the socket itself is the user's.
        let sock = fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io(&dir, e))
            .and_then(|()| Self::bind_at(&dir.join("notify"), Some((uid, gid)), Some(dir.clone())));
        if sock.is_err() {
            let _ = fs::remove_dir(&dir);
        }
        sock
    }

    fn bind_at(
        path: &Path,
        owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
        dir: Option<PathBuf>,
    ) -> Result<NotifySocket> {
        if path.as_os_str().len() >= 108 {
            return Err(Error::io(
                path,
                io::Error::other("path too long for a unix socket (use a shorter --state-dir)"),
            ));
        }
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        let sock = UnixDatagram::bind(path).map_err(|e| Error::io(path, e))?;
        sock.set_nonblocking(true).map_err(|e| Error::io(path, e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(|e| Error::io(path, e))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path, e))?;
        Ok(NotifySocket {
            sock,
            path: path.to_path_buf(),
            dir,
            ready: false,
            main_pid: None,
            status: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads every pending datagram; true when `READY=1` has been seen.
    pub fn drain(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("READY", "1")) => self.ready = true,
                    Some(("MAINPID", p)) => {
                        self.main_pid = p.trim().parse().ok().filter(|p| *p > 1)
                    }
                    Some(("STATUS", s)) => self.status = Some(s.to_string()),
                    _ => {}
                }
            }
        }
        self.ready
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        // unlink(2) and rmdir(2) never follow a symlink the service may have planted.
        let _ = fs::remove_file(&self.path);
        if let Some(d) = &self.dir {
            let _ = fs::remove_dir(d);
        }
    }
}

/// What a `tcp:`/`unix:` probe found. A socket that accepts is not enough: another
/// process may hold the port or the path (and the service then dies of EADDRINUSE), so
/// the listener must belong to a process of this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// It accepts, and a process of the service listens.
    Ours,
    /// It does not accept, or someone else listens.
    No,
    /// It accepts, but who listens cannot be told (the reason says why).
    Unverifiable(String),
}

/// One attempt at a TCP check: connect, then find the listening socket's inode
/// (`/proc/net/tcp{,6}`) among the open files of the service's processes.
pub fn tcp_ready(target: &str, timeout: Duration, lineage: &Lineage) -> Evidence {
    let addrs: Vec<SocketAddr> = match target.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return Evidence::No,
    };
    let Some(addr) = addrs
        .iter()
        .find(|a| TcpStream::connect_timeout(a, timeout.max(Duration::from_millis(1))).is_ok())
    else {
        return Evidence::No;
    };
    // IPv4 first: the common case is decided without reading /proc/net/tcp6 too.
    let mut seen_any = false;
    let mut verdict = Evidence::No;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Some(listeners) = tcp_listeners(file, addr) else {
            continue;
        };
        seen_any = true;
        if listeners.is_empty() {
            continue;
        }
        verdict = owned_by(&listeners, lineage);
        if verdict == Evidence::Ours {
            break;
        }
    }
    if !seen_any {
        return Evidence::Unverifiable("/proc/net/tcp cannot be read".into());
    }
    verdict
}

/// Reads a /proc table in large reads: each read(2) of a seq_file re-walks the kernel's
/// table, so std's small first reads would cost a walk each.
fn read_proc_table(path: &str) -> Option<String> {
    use std::io::Read;
    let mut f = fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if buf.len() > 64 << 20 {
            break;
        }
    }
    String::from_utf8(buf).ok()
}

/// One attempt at a unix socket check: connect without blocking (a listener whose backlog
/// is full would otherwise hold pm-start past its deadline), then ask the kernel who
/// listens: SO_PEERCRED names the process that called listen(); if that one is gone (it
/// forked and exited), the listening socket's inode from /proc/net/unix is looked for among
/// the service's open files.
pub fn unix_ready(path: &Path, lineage: &Lineage) -> Evidence {
    use nix::sys::socket::{
        connect, getsockopt, socket, sockopt::PeerCredentials, AddressFamily, SockFlag, SockType,
        UnixAddr,
    };
    let Ok(addr) = UnixAddr::new(path) else {
        return Evidence::No;
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let Ok(sock) = socket(AddressFamily::Unix, SockType::Stream, flags, None) else {
        return Evidence::No;
    };
    if connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr).is_err() {
        return Evidence::No; // not there, refused, or EAGAIN: a full backlog is not ready
    }
    let Ok(cred) = getsockopt(&sock, PeerCredentials) else {
        return Evidence::Unverifiable("SO_PEERCRED failed".into());
    };
    let pid = cred.pid();
    if lineage.contains(pid) {
        return Evidence::Ours;
    }
    if process::is_alive(pid) {
        return Evidence::No;
    }
    match unix_listeners(path) {
        Some(inodes) if !inodes.is_empty() => owned_by(&inodes, lineage),
        _ => Evidence::Unverifiable(format!(
            "the process that listened (pid {pid}) is gone and /proc/net/unix does not list {}",
            path.display()
        )),
    }
}

/// Inodes of the listening unix sockets bound at `path` (as /proc/net/unix prints the
/// path the listener gave to bind(2)).
fn unix_listeners(path: &Path) -> Option<Vec<u64>> {
    const ACCEPTCON: u32 = 0x0001_0000;
    let text = read_proc_table("/proc/net/unix")?;
    let want = path.to_string_lossy();
    Some(
        text.lines()
            .skip(1)
            .filter_map(|l| {
                // Num RefCount Protocol Flags Type St Inode Path
                let f: Vec<&str> = l.split_whitespace().collect();
                let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
                (flags & ACCEPTCON != 0 && *f.get(7)? == want).then(|| f.get(6)?.parse().ok())?
            })
            .collect(),
    )
}

/// Inodes of the TCP sockets in `file` (/proc/net/tcp or tcp6) listening on `addr`'s
/// port, on its address or on the wildcard. `None` when the file cannot be read.
fn tcp_listeners(file: &str, addr: &SocketAddr) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    {
        let text = read_proc_table(file)?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if *st != "0A" {
                continue; // not LISTEN
            }
            let Some((ip, port)) = local.split_once(':') else {
                continue;
            };
            if u16::from_str_radix(port, 16).ok() != Some(addr.port()) {
                continue;
            }
            let wildcard = ip.bytes().all(|b| b == b'0');
            if wildcard || hex_ip(ip) == Some(addr.ip()) {
                if let Ok(i) = inode.parse() {
                    out.push(i);
                }
            }
        }
    }
    Some(out)
}

/// An address as /proc/net/tcp{,6} prints it: 32-bit words in host byte order.
fn hex_ip(hex: &str) -> Option<std::net::IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            Some(v6.to_ipv4_mapped().map_or(v6.into(), Into::into))
        }
        _ => None,
    }
}

/// Does a process of the service hold one of these socket inodes?
fn owned_by(inodes: &[u64], lineage: &Lineage) -> Evidence {
    let mut unreadable = None;
    for pid in lineage.members() {
        let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            unreadable.get_or_insert(pid);
            continue;
        };
        for e in dir.filter_map(|e| e.ok()) {
            let Ok(target) = fs::read_link(e.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            let inode = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                return Evidence::Ours;
            }
        }
    }
    match unreadable {
        Some(pid) => Evidence::Unverifiable(format!("the open files of pid {pid} cannot be read")),
        None => Evidence::No,
    }
}

/// An `exec:` check that runs beside the wait loop instead of blocking it, so a service
/// that dies while the check runs is noticed at once.
///
/// Each attempt runs `/bin/sh -c COMMAND` in a process group of its own, under a small
/// shell wrapper that holds the read end of a lifeline pipe: if pm-start dies, even by
/// SIGKILL, the pipe reads EOF and the wrapper kills the whole group, so no probe (nor a
/// child it forked) outlives the start that ran it.
#[derive(Debug)]
pub struct ExecProbe {
    command: String,
    cwd: PathBuf,
    /// The service's `--user`: the probe runs as the service does, never as root in a
    /// directory the service's user controls.
    user: Option<crate::spawn::Credentials>,
    running: Option<Attempt>,
    /// When the last attempt started: a shell per attempt is not free, so attempts are
    /// at least [`EXEC_SPACING`] apart however often the wait loop asks.
    last: Option<Instant>,
}

/// Shortest time between two starts of an `exec:` check's command.
pub const EXEC_SPACING: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Attempt {
    child: std::process::Child,
    handle: process::Handle,
    /// Closing it (pm-start's exit) makes the wrapper kill the group.
    _lifeline: std::os::fd::OwnedFd,
}

/// `$1` is the check's command; fd 3 is the lifeline.
const PROBE_WRAPPER: &str =
    "{ read -r _ <&3; kill -KILL 0; } & w=$!; eval \"$1\" 3<&-; st=$?; kill $w 2>/dev/null; exit $st";

impl ExecProbe {
    pub fn new(command: &str, cwd: &Path, user: Option<&crate::spawn::Credentials>) -> ExecProbe {
        ExecProbe {
            command: command.to_string(),
            cwd: cwd.to_path_buf(),
            user: user.cloned(),
            running: None,
            last: None,
        }
    }

    /// Starts an attempt if none runs; `Some(passed)` once an attempt has finished.
    pub fn poll(&mut self) -> Option<bool> {
        if let Some(Attempt { child, .. }) = &mut self.running {
            return match child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => {
                    self.running = None;
                    Some(status.success())
                }
                Err(_) => {
                    self.running = None;
                    Some(false)
                }
            };
        }
        if self.last.is_some_and(|t| t.elapsed() < EXEC_SPACING) {
            return None;
        }
        self.last = Some(Instant::now());
        let Ok((life_r, life_w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
            return Some(false);
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&life_r);
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", PROBE_WRAPPER, "pm-probe", &self.command])
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let creds = self.user.as_ref().map(|c| (c.groups.clone(), c.gid, c.uid));
        sys::probe_pre_exec(&mut cmd, raw, creds);
        let child = cmd.spawn();
        drop(life_r);
        match child {
            Ok(child) => match process::Handle::of_child(child.id() as i32) {
                Ok(handle) => {
                    self.running = Some(Attempt {
                        child,
                        handle,
                        _lifeline: life_w,
                    });
                    None
                }
                Err(_) => Some(false),
            },
            Err(_) => Some(false),
        }
    }

    /// The running attempt's pidfd, to wake the wait loop when it finishes.
    pub fn pidfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.running.as_ref().and_then(|a| a.handle.pidfd())
    }

    /// The running attempt's process group (its PID).
    pub fn pgid(&self) -> Option<i32> {
        self.running.as_ref().map(|a| a.handle.pid)
    }
}

impl Drop for ExecProbe {
    fn drop(&mut self) {
        if let Some(mut a) = self.running.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(a.handle.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = a.child.wait();
        }
    }
}

/// Runs `sh -c command` to completion or `deadline`; true when it exits 0.
pub fn exec_succeeds(command: &str, cwd: &Path, deadline: Instant) -> bool {
    let mut probe = ExecProbe::new(command, cwd, None);
    loop {
        if let Some(passed) = probe.poll() {
            return passed;
        }
        let now = Instant::now();
        if now >= deadline {
            return false; // dropping the probe kills the attempt
        }
        match probe.pidfd() {
            Some(fd) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
                let _ = poll(&mut fds, process::timeout(deadline - now));
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert!(matches!(Check::parse("pidfile").unwrap(), Check::Pidfile));
        assert!(matches!(Check::parse("notify").unwrap(), Check::Notify));
        match Check::parse("tcp:8080").unwrap() {
            Check::Tcp(t) => assert_eq!(t, "127.0.0.1:8080"),
            c => panic!("{c:?}"),
        }
        match Check::parse("tcp:localhost:5432").unwrap() {
            Check::Tcp(t) => assert_eq!(t, "localhost:5432"),
            c => panic!("{c:?}"),
        }
        match Check::parse("tcp:[::1]:80").unwrap() {
            Check::Tcp(t) => assert_eq!(t, "[::1]:80"),
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            Check::parse("unix:/run/x.sock").unwrap(),
            Check::Unix(_)
        ));
        // 107 bytes fit in sun_path with the NUL; 108 never connect.
        let long = |n: usize| format!("unix:/{}", "x".repeat(n - 1));
        assert!(Check::parse(&long(107)).is_ok());
        let e = Check::parse(&long(108)).unwrap_err().to_string();
        assert!(e.contains("107 bytes"), "{e}");
        assert!(Check::parse("file:/tmp/a\0b").is_err());
        assert!(matches!(
            Check::parse("file:/tmp/x").unwrap(),
            Check::File(_)
        ));
        match Check::parse("exec:pg_isready -h 127.0.0.1").unwrap() {
            Check::Exec(c) => assert_eq!(c, "pg_isready -h 127.0.0.1"),
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            Check::parse("log:ready to accept").unwrap(),
            Check::Log(_)
        ));
        match Check::parse("file:rel").unwrap() {
            Check::File(p) => assert!(p.is_absolute()),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn rejects_bad_checks_with_a_reason() {
        for bad in [
            "tcp:",
            "tcp:0",
            "tcp:99999",
            "tcp:host:x",
            "unix:",
            "exec:",
            "log:(",
            "bogus",
            "pidfile:x",
            "file:",
        ] {
            assert!(Check::parse(bad).is_err(), "{bad}");
        }
        let e = Check::parse("log:(").unwrap_err().to_string();
        assert!(e.contains("log:("), "{e}");
    }

    #[test]
    fn log_follower_sees_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        fs::write(&p, "server ready (old run)\n").unwrap();
        let mut f = LogFollower::new(&p);
        let re = Regex::new("ready").unwrap();
        assert!(!f.matches(&re));
        use std::io::Write;
        let mut w = fs::OpenOptions::new().append(true).open(&p).unwrap();
        write!(w, "starting\nserver re").unwrap();
        assert!(!f.matches(&re));
        writeln!(w, "ady now").unwrap();
        assert!(f.matches(&re));
    }

    #[test]
    fn notify_socket_reads_ready_and_mainpid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("svc.notify");
        let mut s = NotifySocket::bind(&p, None).unwrap();
        assert!(!s.drain());
        let c = UnixDatagram::unbound().unwrap();
        c.send_to(b"STATUS=warming up\nMAINPID=4242", &p).unwrap();
        assert!(!s.drain());
        c.send_to(b"READY=1", &p).unwrap();
        assert!(s.drain());
        assert_eq!(s.main_pid, Some(4242));
        assert_eq!(s.status.as_deref(), Some("warming up"));
        drop(s);
        assert!(!p.exists());
    }

    #[test]
    fn tcp_and_exec_checks_probe_for_real() {
        // This test process listens: it is the service, seen from a lineage rooted at
        // its parent; a lineage of some other start does not own the port.
        let me = std::process::id() as i32;
        let ours = Lineage {
            starter: nix::unistd::getppid().as_raw(),
            launcher: me,
            born_after: 0,
            probe_groups: vec![],
            cgroup: None,
        };
        let mut other = Command::new("sleep").arg("100").spawn().unwrap();
        let theirs = Lineage {
            starter: other.id() as i32,
            launcher: other.id() as i32,
            born_after: 0,
            probe_groups: vec![],
            cgroup: None,
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let target = format!("127.0.0.1:{port}");
        let t = Duration::from_millis(200);
        assert_eq!(tcp_ready(&target, t, &ours), Evidence::Ours);
        assert_eq!(tcp_ready(&target, t, &theirs), Evidence::No);
        other.kill().unwrap();
        other.wait().unwrap();
        drop(l);
        assert_eq!(tcp_ready(&target, t, &ours), Evidence::No);
        let cwd = Path::new("/");
        let far = Instant::now() + Duration::from_secs(10);
        assert!(exec_succeeds("test -d /proc", cwd, far));
        assert!(!exec_succeeds("exit 3", cwd, far));
        let t = Instant::now();
        assert!(!exec_succeeds(
            "sleep 100",
            cwd,
            Instant::now() + Duration::from_millis(100)
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn fresh_pid_ignores_a_stale_pidfile() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.pid");
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        pidfile::write(&p, child.id() as i32).unwrap();
        let base = PidfileBaseline::take(&p);
        assert!(
            fresh_pid(&p, &base, 0).is_none(),
            "unchanged file counted as fresh"
        );
        std::thread::sleep(Duration::from_millis(20));
        pidfile::write(&p, child.id() as i32).unwrap();
        assert_eq!(
            fresh_pid(&p, &base, 0).map(|(pid, _)| pid),
            Some(child.id() as i32)
        );
        // A process older than the launcher cannot be its daemon.
        let st = process::Stat::read(child.id() as i32).unwrap().unwrap();
        assert!(fresh_pid(&p, &base, st.start_time + 1).is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
