"""Build script for triofd's cffi bindings (ABI out-of-line mode).

Run ``python src/triofd/_ffi_build.py`` after editing the cdef; it rewrites ``_generated_ffi.py``,
which is committed.  ABI mode needs no compiler at install time, so the README's two commands work
on a fresh machine; the price is that struct layouts and constants are written here by hand, so
``tests/triofd/test_layouts.py`` checks every one of them against the running kernel.

Only the system calls the stdlib lacks on Python 3.11 are declared here (``os.eventfd``,
``os.pidfd_open``, ``os.splice``, ``os.memfd_create`` and ``signal.pthread_sigmask`` are used
directly).  Event buffers are parsed with ``struct``, never through cffi casts (faster on CPython).
"""

from __future__ import annotations

from pathlib import Path

import cffi

CDEF = """
/* --- inotify / fanotify --- */
int inotify_init1(int flags);
int inotify_add_watch(int fd, const char *pathname, uint32_t mask);
int inotify_rm_watch(int fd, int wd);
int fanotify_init(unsigned int flags, unsigned int event_f_flags);
int fanotify_mark(int fanotify_fd, unsigned int flags, uint64_t mask, int dirfd,
                  const char *pathname);

/* --- timerfd --- */
struct timespec { long tv_sec; long tv_nsec; };
struct itimerspec { struct timespec it_interval; struct timespec it_value; };
int timerfd_create(int clockid, int flags);
int timerfd_settime(int fd, int flags, const struct itimerspec *new_value,
                    struct itimerspec *old_value);
int timerfd_gettime(int fd, struct itimerspec *curr_value);

/* --- signalfd (the mask is a kernel sigset: 64 bits on every Linux arch we run on) --- */
typedef struct { unsigned long val[16]; } sigset_t;
int sigemptyset(sigset_t *set);
int sigaddset(sigset_t *set, int signum);
int signalfd(int fd, const sigset_t *mask, int flags);

/* --- pidfd (glibc >= 2.36 wrappers) --- */
int pidfd_send_signal(int pidfd, int sig, void *info, unsigned int flags);
int pidfd_getfd(int pidfd, int targetfd, unsigned int flags);

/* --- splice family --- */
struct iovec { void *iov_base; size_t iov_len; };
ssize_t tee(int fd_in, int fd_out, size_t len, unsigned int flags);
ssize_t vmsplice(int fd, const struct iovec *iov, size_t nr_segs, unsigned int flags);
ssize_t splice(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len,
               unsigned int flags);

/* --- system --- */
int mount(const char *source, const char *target, const char *filesystemtype,
          unsigned long mountflags, const void *data);
int umount2(const char *target, int flags);
int unshare(int flags);
int setns(int fd, int nstype);
int sethostname(const char *name, size_t len);
int gethostname(char *name, size_t len);
long syscall(long number, ...);
"""

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("triofd._generated_ffi", None)

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    ffibuilder.compile(tmpdir=str(here.parent))
