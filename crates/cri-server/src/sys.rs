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
    // SAFETY: only called from the `criusd infra` and `criusd pinns` helpers, which
    // never start a thread, so the child inherits no lock held by another thread; it
    // then only makes plain system calls (setsid, open, dup2, sigaction, waitpid,
    // pause; unshare, read, write, sethostname, ioctl) before it exits.
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

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn c_path(p: &std::path::Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
}

/// Whether the kernel has mount_setattr(2) (Linux 5.12).
pub fn has_mount_setattr() -> bool {
    // SAFETY: an invalid fd and a null attribute pointer with size 0: the kernel only
    // validates the arguments (EBADF or EINVAL when the call exists, ENOSYS when not).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1 as libc::c_int,
            c"".as_ptr(),
            0 as libc::c_uint,
            std::ptr::null::<MountAttr>(),
            0usize,
        )
    };
    !(r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

/// Mounts at `target` (an existing directory) a clone of the mount tree at `source`,
/// with every mount of the clone read-only and private: a recursive read-only bind
/// mount (open_tree(OPEN_TREE_CLONE | AT_RECURSIVE), mount_setattr(AT_RECURSIVE,
/// MOUNT_ATTR_RDONLY), move_mount). The source's mounts are not changed.
pub fn bind_read_only_recursive(
    source: &std::path::Path,
    target: &std::path::Path,
) -> io::Result<()> {
    clone_tree(source, target, MOUNT_ATTR_RDONLY, None)
}

/// Mounts at `target` (an existing directory or file) an idmapped clone of the mount
/// tree at `source`: ids on disk appear through the maps of the user namespace
/// `userns` (an open /proc/<pid>/ns/user or a pinned one), so a file owned by 0 on
/// disk is owned by the namespace's root. With `read_only` every mount of the clone
/// is read-only too. Each file system under `source` must support idmapped mounts
/// (ext4, xfs, btrfs, tmpfs, ...; not overlayfs itself).
pub fn bind_idmapped(
    source: &std::path::Path,
    target: &std::path::Path,
    userns: std::os::fd::BorrowedFd<'_>,
    read_only: bool,
) -> io::Result<()> {
    let ro = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
    clone_tree(source, target, ro | MOUNT_ATTR_IDMAP, Some(userns))
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// open_tree(OPEN_TREE_CLONE | AT_RECURSIVE) of `source`, mount_setattr(AT_RECURSIVE)
/// with `attr_set` (and the user namespace of an idmap) and private propagation, then
/// move_mount onto `target`.
fn clone_tree(
    source: &std::path::Path,
    target: &std::path::Path,
    attr_set: u64,
    userns: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Result<()> {
    let (src, dst) = (c_path(source)?, c_path(target)?);
    // SAFETY: open_tree(2) with a valid NUL-terminated path and constant flags; the
    // returned fd is checked and then owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd)
        .map_err(|_| io::Error::other("open_tree returned an fd out of range"))?;
    // SAFETY: fd was just returned by open_tree(2) and is owned by nothing else.
    let tree = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&tree);
    let userns_fd = match userns {
        Some(fd) => u64::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map_err(|_| io::Error::other("a negative user namespace fd"))?,
        None => 0,
    };
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd,
    };
    // SAFETY: mount_setattr(2) on the detached tree's fd (AT_EMPTY_PATH with an empty
    // path), with a valid mount_attr that outlives the call and its exact size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            raw,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: move_mount(2) of the detached tree (its fd, empty path) onto a valid
    // NUL-terminated target path. Dropping `tree` afterwards only closes the fd: an
    // attached tree stays.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            raw,
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd`'s child get `fd` as its file descriptor 3 (and not close it at exec);
/// the parent's copy closes once the command is dropped.
pub fn pass_fd_as_3(cmd: &mut std::process::Command, fd: std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    let keep = std::sync::Arc::new(fd);
    let hold = keep.clone();
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // dup2(2) and fcntl(2), which are async-signal-safe; `raw` stays open there
    // because `hold` (moved into the closure, which the command owns) keeps it open
    // in the parent until the command is dropped.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &hold;
            if raw == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    drop(keep);
}
