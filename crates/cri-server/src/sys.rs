//! The few raw system calls nix does not wrap. Every unsafe block in criusd lives here.
#![allow(unsafe_code)]

use std::io;

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
pub fn set_loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in ifr into ifr;
    // ifr is a valid, initialised ifreq that outlives the call.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFFLAGS the flags member is the initialised one.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads ifr, which is valid and initialised.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Forks the calling (single-threaded) process. Returns the child's pid in the parent
/// and `None` in the child.
pub fn fork_single_threaded() -> io::Result<Option<nix::unistd::Pid>> {
    // SAFETY: only called from the `criusd infra` helper before any thread exists, so
    // the child inherits no lock held by another thread; it then only makes plain
    // system calls (setsid, open, dup2, sigaction, waitpid, pause).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Some(child)),
        Ok(nix::unistd::ForkResult::Child) => Ok(None),
        Err(e) => Err(io::Error::from(e)),
    }
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// Lets SIGCHLD interrupt `pause()` (PID 1 ignores signals it has no handler for).
pub fn catch_sigchld() -> io::Result<()> {
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigchld),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGCHLD, &action) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Takes `name` out of the process environment, so that no child inherits it.
///
/// The caller guarantees the process has one thread: criusd's `main` does this before
/// logging or the async runtime start any.
pub fn remove_env_before_threads(name: &str) {
    // SAFETY: with a single thread nothing can read the environment concurrently.
    unsafe { std::env::remove_var(name) }
}
