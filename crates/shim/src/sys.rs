//! The crate's only `unsafe`: thin, checked wrappers over libc calls that std lacks;
//! and [`spawn_small`], how the shim starts its worker threads.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Starts a new session (detaches from the caller's terminal and process group).
pub(crate) fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no pointers and only changes this process's session.
    check(unsafe { libc::setsid() }).map(|_| ())
}

/// Makes this process the reaper of orphaned descendants (runc's container init).
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument, no pointers.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(|_| ())
}

/// One malloc arena: a shim has a handful of threads and small heaps; per-thread
/// arenas only cost resident memory.
pub(crate) fn limit_malloc_arenas() {
    // SAFETY: mallopt only adjusts allocator tunables; M_ARENA_MAX is valid on glibc.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Blocking `waitpid(-1)`: returns the pid and raw wait status of any exited child.
pub(crate) fn wait_any() -> io::Result<(i32, i32)> {
    let mut status: libc::c_int = 0;
    // SAFETY: status is a valid, writable c_int for the duration of the call.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, 0) })?;
    Ok((pid, status))
}

/// Sends `sig` to `pid`.
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such pid"));
    }
    // SAFETY: kill takes plain integers; pid > 0 so it never targets a process group.
    check(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// Sends `sig` to `pid`, a child of this process not yet reaped, through a pidfd, so
/// that a pid reused after the reaper took the child is never signalled:
/// `Ok(false)` when the child is gone (or `pid` is no child of ours).
pub(crate) fn signal_child(pid: i32, sig: i32) -> io::Result<bool> {
    if pid <= 0 {
        return Ok(false);
    }
    // SAFETY: pidfd_open takes a pid and flags; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return gone_if(libc::ESRCH);
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: fd was just returned by pidfd_open and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Still our child (running, or a zombie nobody reaped yet)? WNOWAIT leaves a
    // zombie to the reaper; a process that is not our child gives ECHILD.
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: info is a valid, writable siginfo_t for the duration of the call.
    let ret = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if ret < 0 {
        return gone_if(libc::ECHILD);
    }
    // SAFETY: pidfd_send_signal takes the pidfd, a signal number, no siginfo, no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return gone_if(libc::ESRCH);
    }
    Ok(true)
}

/// The last OS error as [`signal_child`]'s answer: `errno` means the child is gone.
fn gone_if(errno: libc::c_int) -> io::Result<bool> {
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(errno) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// True when a process with this pid exists (it may be a zombie).
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds points to two writable c_ints, as pipe2 requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    Ok((r, w))
}

/// Converts a raw wait status into the exit code a shell would report
/// (128 + signal for a process killed by a signal).
pub(crate) fn exit_code(status: i32) -> u32 {
    if libc::WIFEXITED(status) {
        u32::try_from(libc::WEXITSTATUS(status)).unwrap_or(255)
    } else if libc::WIFSIGNALED(status) {
        128 + u32::try_from(libc::WTERMSIG(status)).unwrap_or(0)
    } else {
        255
    }
}

/// fsync of a directory, so a rename inside it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Sets the window size of a pty master.
pub(crate) fn set_winsize(fd: RawFd, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct from the valid pointer given.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }).map(|_| ())
}

/// Receives one file descriptor sent with SCM_RIGHTS on a connected unix socket
/// (runc's `--console-socket` protocol: the pty master).
pub(crate) fn recv_fd(sock: &impl AsRawFd) -> io::Result<OwnedFd> {
    let mut data = [0u8; 512];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one fd, aligned as cmsghdr requires.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: msg points at live buffers (iov, cbuf) of the sizes it states.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: msg was filled in by recvmsg; CMSG_FIRSTHDR only reads its control fields.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(io::Error::other("no file descriptor received"));
    }
    // SAFETY: cmsg is non-null and points inside cbuf, as returned by CMSG_FIRSTHDR.
    let (level, ty) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
    if level != libc::SOL_SOCKET || ty != libc::SCM_RIGHTS {
        return Err(io::Error::other("unexpected control message"));
    }
    // SAFETY: an SCM_RIGHTS message carries at least one int fd in its data area.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
    // SAFETY: the kernel installed this fd in our table for us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a FIFO (or any path) with `flags` plus O_CLOEXEC. With O_NONBLOCK the open
/// never waits for the other end (and O_WRONLY fails with ENXIO when there is no reader);
/// the fd then stays non-blocking unless the caller clears it with [`set_blocking`].
pub(crate) fn open_fifo(path: &Path, flags: libc::c_int) -> io::Result<File> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: open succeeded, so fd is a fresh descriptor that we now own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Clears O_NONBLOCK on fd.
pub(crate) fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer argument.
    let fl = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: F_SETFL takes an integer flag argument.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) }).map(|_| ())
}

/// Starts a named thread with a 128 KiB stack. The shim's workers (output copiers, exit
/// watchers, ExecSync's capture) do little, and an idle shim keeps several: small stacks
/// keep its resident memory small.
pub(crate) fn spawn_small(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(128 * 1024)
        .spawn(f)
        .map(|_| ())
}

/// Exits immediately without running destructors or atexit handlers (used by the
/// daemonised child after fork-like setup failures and at shutdown).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and takes an integer.
    unsafe { libc::_exit(code) }
}

/// A close-on-exec duplicate of `fd`.
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes a plain fd and a minimum number.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: new was just returned by fcntl and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Waits at most `timeout_ms` for the peer of the connected socket `fd` to hang up.
pub(crate) fn wait_hangup(fd: &OwnedFd, timeout_ms: i32) {
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    }];
    let _ = poll(&mut fds, timeout_ms);
}

/// dup2(old, new).
pub(crate) fn dup2(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes plain fds; replacing `new` is what the caller asks for.
    check(unsafe { libc::dup2(old, new) }).map(|_| ())
}

/// poll(2) on `fds` for at most `timeout_ms` (negative: no limit), retrying on EINTR.
/// Returns how many entries have events (0 on timeout).
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    let n = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many fds"))?;
    loop {
        // SAFETY: fds is a valid, writable array of exactly n pollfd structs.
        match check(unsafe { libc::poll(fds.as_mut_ptr(), n, timeout_ms) }) {
            Ok(ready) => return Ok(usize::try_from(ready).unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A pollable wake-up flag between threads: an eventfd (one fd, where a self-pipe
/// needs two). `signal` never blocks; the flag stays readable until `clear`.
pub(crate) struct EventFd(File);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes plain integers and returns a new descriptor or -1.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: eventfd succeeded, so fd is a fresh descriptor that we now own.
        Ok(EventFd(unsafe { File::from_raw_fd(fd) }))
    }

    /// Makes the fd readable (adds 1 to the counter; cannot block short of 2^64 - 2
    /// signals without a clear).
    pub(crate) fn signal(&self) {
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    /// Resets the counter, so the fd polls as not readable until the next `signal`.
    pub(crate) fn clear(&self) {
        let mut b = [0u8; 8];
        let _ = (&self.0).read(&mut b);
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_child_reaches_an_unreaped_child_only() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .expect("spawning sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        assert!(signal_child(pid, libc::SIGTERM).expect("signalling"));
        let status = child.wait().expect("waiting");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        // Reaped: the pid is no child of ours any more, whatever holds it now.
        assert!(!signal_child(pid, libc::SIGTERM).expect("no error"));
        // PID 1 is never our child.
        assert!(!signal_child(1, 0).expect("no error"));
    }
}
