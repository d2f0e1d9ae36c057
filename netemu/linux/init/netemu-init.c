/*
 * netemu-init: the small static helper behind every netemu host.
 *
 *   netemu-init run  [options] -- [CMD...]   start a host: new namespaces, overlay root, PID 1
 *   netemu-init exec [options] PID -- CMD... run CMD inside host PID: its namespaces and cgroups
 *                                            (--cgroup P, --env K=V, --cwd DIR, --tty), as its
 *                                            root when it has a user namespace of its own
 *
 * It is a static C program so that a host costs one small process (no interpreter),
 * and so that an image with no libc or shell still gets a working PID 1.
 * In the spirit of bubblewrap: every syscall is checked and every failure says which
 * call failed on what path, so the Python side can show the reason to the user.
 *
 * run options:
 *   --cgroup PATH        a cgroup.procs file to join before anything is forked (repeatable)
 *   --lower DIR          overlay lower layer, top first (repeatable); "/" is the machine's root
 *   --upper DIR --work DIR --merged DIR   the private writable layer and the mount point
 *   --hostname NAME
 *   --net new|PATH|host  a fresh network namespace, an existing one (joined), or the machine's
 *   --status-fd N        where the outcome is written: "ok PID\n" or "error MESSAGE\n"
 *   --env K=V            environment of CMD (repeatable)
 *   --cwd DIR            working directory of CMD, inside the host (an image's WorkingDir)
 *   --hide DIR           a machine directory to cover with an empty tmpfs inside the host
 *   --bind SRC:DST[:ro]  bind mount (repeatable)
 *   --userns BASE:COUNT  a user namespace of its own: root inside is uid/gid BASE outside, COUNT
 *                        ids mapped (see "User namespaces" below)
 *   --device SRC:DST     a device node of the machine bound into the host (repeatable)
 *   --read-only          the overlay root is mounted read-only (Docker's --read-only)
 *   --privileged         the machine's /dev, writable /sys, nothing masked, `nodev` nowhere
 *   --mask PATH          a path inside the host hidden (/dev/null over a file, an empty read-only
 *                        tmpfs over a directory); --ro-path PATH made read-only; --rw-path PATH
 *                        made writable again below a read-only one (all repeatable, in order)
 *   --caps HEX --seccomp HEX   confinement (see "Confinement" below); also options of exec
 * CMD, when given, is started only when PID 1 receives SIGUSR1 (sent once the host's links
 * are up). PID 1 reaps every orphan, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR2 to CMD, and
 * exits on SIGTERM/SIGINT when no CMD runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/statfs.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/types.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#define MAX_LIST 256

static void copy_winsize(int master);
static void remount_bind(const char *path, unsigned long rdonly);
static void attach_terminal(int master);
/* Whether descriptor `fd` may be handed to a host's command as it is: an anonymous pipe (or
 * nothing at all). A FIFO of a filesystem is a file of the machine: it does not. */
static int passes_through(int fd)
{
    struct stat st;
    struct statfs sfs;

    if (fstat(fd, &st) < 0)
        return 1;
    return S_ISFIFO(st.st_mode) && fstatfs(fd, &sfs) == 0 && sfs.f_type == 0x50495045; /* PIPEFS_MAGIC */
}

/* One stream the exec helper copies while the command runs; at end of input `to` is closed
 * (eof < 0) or sent the byte `eof` (a terminal's ^D). */
struct channel {
    int from, to, eof;
};

static int relay(pid_t pid, int sfd, struct channel *ch, int nch);

static int status_fd = -1;

static void report_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (status_fd >= 0) {
        dprintf(status_fd, "error %s\n", msg);
    } else {
        fprintf(stderr, "netemu-init: %s\n", msg);
    }
}

#define DIE(...)                     \
    do {                             \
        report_error(__VA_ARGS__);   \
        _exit(126);                  \
    } while (0)

struct list {
    char *items[MAX_LIST];
    int n;
};

static void list_add(struct list *l, char *s)
{
    if (l->n >= MAX_LIST)
        DIE("too many list arguments (max %d)", MAX_LIST);
    l->items[l->n++] = s;
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        DIE("open %s: %s", path, strerror(errno));
    if (write(fd, text, strlen(text)) < 0)
        DIE("write %s: %s", path, strerror(errno));
    close(fd);
}

static void join_cgroups(struct list *cgroups)
{
    char pid[32];
    snprintf(pid, sizeof pid, "%d\n", getpid());
    for (int i = 0; i < cgroups->n; i++)
        write_file(cgroups->items[i], pid);
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data)
{
    if (mount(src, dst, type, flags, data) < 0)
        DIE("mount %s on %s (%s): %s", src ? src : "none", dst, type ? type : "bind",
            strerror(errno));
}

static void make_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        DIE("mkdir %s: %s", path, strerror(errno));
}

static void make_file(const char *path)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        DIE("create %s: %s", path, strerror(errno));
    close(fd);
}

static void make_symlink(const char *target, const char *path)
{
    if (symlink(target, path) < 0 && errno != EEXIST)
        DIE("symlink %s: %s", path, strerror(errno));
}

/* A minimal /dev: tmpfs with the usual nodes bind-mounted from the machine (works in a user
 * namespace too, where mknod is refused), a private devpts and a /dev/shm. */
static void setup_dev(const char *root)
{
    static const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    char path[4096], src[64];

    snprintf(path, sizeof path, "%s/dev", root);
    make_dir(path, 0755);
    /* nodev: a node the host makes here opens nothing; the binds below carry their own mount. */
    do_mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=755,size=65536k");
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
        snprintf(path, sizeof path, "%s/dev/%s", root, nodes[i]);
        snprintf(src, sizeof src, "/dev/%s", nodes[i]);
        make_file(path);
        do_mount(src, path, NULL, MS_BIND, NULL);
        remount_bind(path, MS_RDONLY); /* the machine's node: chmod or chown inside must not reach it */
    }
    snprintf(path, sizeof path, "%s/dev/pts", root);
    make_dir(path, 0755);
    do_mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620");
    snprintf(path, sizeof path, "%s/dev/ptmx", root);
    make_symlink("pts/ptmx", path);
    snprintf(path, sizeof path, "%s/dev/shm", root);
    make_dir(path, 01777);
    do_mount("shm", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k");
    static const char *links[][2] = {{"/proc/self/fd", "fd"},
                                     {"/proc/self/fd/0", "stdin"},
                                     {"/proc/self/fd/1", "stdout"},
                                     {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
        snprintf(path, sizeof path, "%s/dev/%s", root, links[i][1]);
        make_symlink(links[i][0], path);
    }
}

/* A privileged host's /dev: the machine's devices, with a devpts of its own (as Docker's). */
static void setup_machine_dev(void)
{
    make_dir("dev", 0755);
    do_mount("/dev", "dev", NULL, MS_BIND | MS_REC, NULL);
    do_mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    do_mount("dev/pts/ptmx", "dev/ptmx", NULL, MS_BIND, NULL);
}

/* Make a bind mount read-only or writable, keeping its other flags: in a user namespace the
 * kernel refuses to clear flags that came locked from the machine (nosuid, nodev, noexec, atime). */
static void remount_bind(const char *path, unsigned long rdonly)
{
    static const struct {
        unsigned long st, ms;
    } keep[] = {{ST_NOSUID, MS_NOSUID}, {ST_NODEV, MS_NODEV}, {ST_NOEXEC, MS_NOEXEC},
                {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME}};
    unsigned long flags = MS_BIND | MS_REMOUNT | rdonly;
    struct statvfs sv;

    if (statvfs(path, &sv) < 0)
        DIE("statvfs %s: %s", path, strerror(errno));
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        if (sv.f_flag & keep[i].st)
            flags |= keep[i].ms;
    do_mount(NULL, path, NULL, flags, NULL);
}

/* ---- Confinement (--caps HEX, --seccomp HEX) -------------------------------------------
 *
 * Applied last, by PID 1 once its mounts are made and by `exec` just before the command runs:
 *   1. every capability outside the mask leaves the bounding set (needs CAP_SETPCAP, still held),
 *      so no descendant can get it back, not even through a setuid or file-capability binary;
 *   2. the seccomp filter (a classic BPF program netemu builds: see netemu/linux/seccomp.py) is
 *      installed while CAP_SYS_ADMIN is still held, so no_new_privs is not needed and setuid
 *      programs inside keep working, as in Docker;
 *   3. permitted and effective become the mask, inheritable and ambient empty.
 * A process that is already confined (no CAP_SETPCAP) cannot widen any of it. */
struct confinement {
    int has_caps;
    unsigned long long caps;
    unsigned char *filter;
    size_t filter_len;
};

static unsigned char *parse_hex(const char *text, size_t *len)
{
    size_t n = strlen(text);
    unsigned char *out;

    if (n == 0 || n % 2)
        DIE("bad hex value (%zu digits)", n);
    out = malloc(n / 2);
    if (!out)
        DIE("out of memory");
    for (size_t i = 0; i < n / 2; i++) {
        unsigned int byte;
        if (sscanf(text + 2 * i, "%2x", &byte) != 1)
            DIE("bad hex digit at %zu", 2 * i);
        out[i] = (unsigned char)byte;
    }
    *len = n / 2;
    return out;
}

/* Whether `a` (an option) was one of confinement's; it then takes `v`. */
static int parse_confinement(const char *a, const char *v, struct confinement *c)
{
    if (!strcmp(a, "--caps")) {
        char *end;
        errno = 0;
        c->caps = strtoull(v, &end, 16);
        if (errno || *end || !*v)
            DIE("bad --caps %s: a hexadecimal capability mask", v);
        c->has_caps = 1;
        return 1;
    }
    if (!strcmp(a, "--seccomp")) {
        c->filter = parse_hex(v, &c->filter_len);
        if (c->filter_len % sizeof(struct sock_filter) || c->filter_len / sizeof(struct sock_filter) > BPF_MAXINSNS)
            DIE("bad --seccomp: not a whole BPF program (%zu bytes)", c->filter_len);
        return 1;
    }
    return 0;
}

static int last_cap(void)
{
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC), last = 40;
    char buf[16] = "";

    if (fd >= 0) {
        if (read(fd, buf, sizeof buf - 1) > 0)
            last = atoi(buf);
        close(fd);
    }
    return last > 0 && last < 64 ? last : 40;
}

static void confine(const struct confinement *c, int last)
{
    if (c->has_caps)
        for (int cap = 0; cap <= last; cap++)
            if (!(c->caps >> cap & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
                DIE("drop capability %d from the bounding set: %s", cap, strerror(errno));
    if (c->filter) {
        struct sock_fprog prog = {.len = (unsigned short)(c->filter_len / sizeof(struct sock_filter)),
                                  .filter = (struct sock_filter *)c->filter};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
            DIE("install the seccomp filter: %s", strerror(errno));
    }
    if (c->has_caps) {
        struct __user_cap_header_struct head = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
        struct __user_cap_data_struct data[2] = {{0}};
        for (int i = 0; i < 2; i++)
            data[i].permitted = data[i].effective = (unsigned int)(c->caps >> (32 * i));
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
            DIE("clear the ambient capabilities: %s", strerror(errno));
        if (syscall(SYS_capset, &head, data) < 0)
            DIE("set capabilities: %s", strerror(errno));
    }
}

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define NE_CLOSE_RANGE_CLOEXEC 4

/* Only stdin, stdout and stderr reach a host's command: whatever else the caller of `netemu
 * exec` had open (a file, a socket, a terminal) stays out of the host. */
static void close_inherited(void)
{
    if (syscall(SYS_close_range, 3, ~0U, NE_CLOSE_RANGE_CLOEXEC) == 0)
        return;
    for (int fd = 3; fd < 1024; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* execvpe(3) looks the command up in the caller's PATH; a host's commands are looked up in the
 * host's own PATH (the one in `envp`), inside the host. Returns only on failure, with errno. */
static void exec_in_host(char **argv, char **envp)
{
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    char full[4096];
    int err = ENOENT;

    if (strchr(argv[0], '/')) {
        execve(argv[0], argv, envp);
        return;
    }
    for (char **e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    for (const char *dir = path;; dir++) {
        const char *end = strchrnul(dir, ':');
        int n = snprintf(full, sizeof full, "%.*s%s%s", (int)(end - dir), dir, end > dir ? "/" : "", argv[0]);
        if (n > 0 && (size_t)n < sizeof full) {
            execve(full, argv, envp);
            if (errno != ENOENT && errno != ENOTDIR)
                err = errno; /* EACCES and the like win over "not found", as in execvp */
        }
        if (!*end)
            break;
        dir = end;
    }
    errno = err;
}

/* Everything `run` is told on its command line. */
struct run_opts {
    struct list cgroups, lowers, envs, hides, binds, devices, masks;
    const char *upper, *work, *merged, *hostname, *net, *cwd, *userns;
    int read_only, privileged;
    struct confinement confine;
    char **cmd;
};

/* ---- The new mount API (open_tree 5.2, mount_setattr and idmapped mounts 5.12) ------------ */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

/* The new mount API's constants under names of our own: older C libraries lack them. */
#define NE_OPEN_TREE_CLONE 1
#define NE_MOVE_MOUNT_F_EMPTY_PATH 0x4
#define NE_FSOPEN_CLOEXEC 1
#define NE_FSMOUNT_CLOEXEC 1
#define NE_FSCONFIG_SET_STRING 1
#define NE_FSCONFIG_SET_FD 5
#define NE_FSCONFIG_CMD_CREATE 6
#define NE_MOUNT_ATTR_RDONLY 0x1ULL
#define NE_MOUNT_ATTR_NOSUID 0x2ULL
#define NE_MOUNT_ATTR_NODEV 0x4ULL
#define NE_MOUNT_ATTR_NOEXEC 0x8ULL
#define NE_MOUNT_ATTR_IDMAP 0x00100000ULL
#define NE_AT_RECURSIVE 0x8000

struct ne_mount_attr {
    unsigned long long attr_set, attr_clr, propagation, userns_fd;
};

/* A bind mount to make: a detached clone of its source, attached inside the host by PID 1. */
struct bind_mount {
    int fd;
    const char *dst;
    int is_dir;
};

/* Bind sources are cloned by the launcher, still the machine's root and in the machine's mount
 * namespace: root inside a userns host may not even be allowed to reach them. Each clone takes
 * the source's submounts too, all made private (a clone of a shared mount would otherwise
 * propagate mounts between the host and the machine), and ":ro" makes all of them read-only.
 * Unless the host is privileged, every bind is `nodev` (a device node the host makes in a
 * writable bind must not open a machine device), but for ":dev", a device node of `devices:`. */
static void open_binds(struct list *specs, struct bind_mount *out, int privileged)
{
    unsigned long long nodev = privileged ? 0 : NE_MOUNT_ATTR_NODEV;
    struct ne_mount_attr rw = {.attr_set = nodev, .propagation = MS_PRIVATE};
    struct ne_mount_attr ro = {.attr_set = NE_MOUNT_ATTR_RDONLY | nodev, .propagation = MS_PRIVATE};
    /* Read-only too: I/O to a device works on a read-only mount, but chmod and chown of the
     * machine's node do not. */
    struct ne_mount_attr dev = {.attr_set = NE_MOUNT_ATTR_NOSUID | NE_MOUNT_ATTR_NOEXEC | NE_MOUNT_ATTR_RDONLY,
                                .propagation = MS_PRIVATE};

    for (int i = 0; i < specs->n; i++) {
        char *spec = strdup(specs->items[i]);
        char *src = spec ? strtok(spec, ":") : NULL;
        char *dst = src ? strtok(NULL, ":") : NULL;
        char *mode = dst ? strtok(NULL, ":") : NULL;
        struct stat st;

        if (!src || !dst)
            DIE("bad bind %s", specs->items[i]);
        if (stat(src, &st) < 0)
            DIE("bind source %s: %s", src, strerror(errno));
        out[i].fd = (int)syscall(SYS_open_tree, AT_FDCWD, src,
                                 NE_OPEN_TREE_CLONE | NE_AT_RECURSIVE | O_CLOEXEC);
        if (out[i].fd < 0)
            DIE("open_tree %s: %s", src, strerror(errno));
        struct ne_mount_attr *attr = !mode || strcmp(mode, "rw") == 0 ? &rw : strcmp(mode, "ro") == 0 ? &ro : &dev;
        if (mode && strcmp(mode, "dev") == 0 && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
            DIE("device %s is not a device node", src);
        if (syscall(SYS_mount_setattr, out[i].fd, "", AT_EMPTY_PATH | NE_AT_RECURSIVE, attr, sizeof *attr) < 0)
            DIE("bind of %s (mount_setattr): %s", src, strerror(errno));
        out[i].dst = dst;
        out[i].is_dir = S_ISDIR(st.st_mode);
    }
}

/* mkdir -p of an absolute path inside the host (we are past pivot_root: every symlink on the
 * way resolves inside the host's own root). */
static void make_parents(const char *path)
{
    char buf[4096];

    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        DIE("path too long: %.100s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        make_dir(buf, 0755);
        *p = '/';
    }
}

/* Attached once the host's root is "/" (after pivot_root), so a target's path, symlinks of the
 * image included, is resolved inside the host and never lands on the machine. */
static void attach_binds(struct bind_mount *binds, int n)
{
    for (int i = 0; i < n; i++) {
        const char *path = binds[i].dst;
        make_parents(path);
        if (binds[i].is_dir)
            make_dir(path, 0755);
        else
            make_file(path);
        if (syscall(SYS_move_mount, binds[i].fd, "", AT_FDCWD, path, NE_MOVE_MOUNT_F_EMPTY_PATH) < 0)
            DIE("bind mount on %s (move_mount): %s", binds[i].dst, strerror(errno));
        close(binds[i].fd);
    }
}

/* ---- User namespaces (--userns BASE:COUNT) ----------------------------------------------
 *
 * The host gets a user namespace of its own, made first so that it owns every other namespace
 * of the host; root inside is uid and gid BASE on the machine. The order is runc's (a process
 * outside writes the maps), the overlay is made the way podman makes an idmapped rootfs:
 *   1. a short-lived child unshares CLONE_NEWUSER; we, still the machine's root, write its
 *      uid_map and gid_map ("0 BASE COUNT") and keep a descriptor of the namespace;
 *   2. we make the overlay as a detached mount (fsopen, fsconfig, fsmount): every lower layer is
 *      a detached clone of its directory (open_tree) idmapped to that namespace (mount_setattr
 *      MOUNT_ATTR_IDMAP), so files owned by the machine's root are root's inside; the writable
 *      layer is plain, netemu chowned it to BASE. The overlay does its own work (copy-up,
 *      whiteouts, trusted.* xattrs) with our credentials, as for every other host, and nothing
 *      is attached to any mount table yet;
 *   3. we join the namespace (setns) and become its root, then unshare the others: they belong
 *      to it, so root inside configures its own network, and netemu, the machine's root, still
 *      enters them from outside;
 *   4. PID 1 attaches the overlay in its own mount namespace (move_mount) and mounts /proc, /sys,
 *      /dev, /run as for any host. The kernel lets a user namespace mount proc and sysfs only
 *      where the machine's /proc and /sys are fully visible, and sysfs only for a network
 *      namespace that the user namespace owns (see mount_sys).
 * Root inside may not be allowed to walk the machine's paths (a 0700 directory of root's), so
 * whatever lies outside the host is reached before step 3, as the machine's root: the bind
 * sources are cloned (open_binds), and the launcher moves into the mount point, where unshare
 * keeps it and PID 1 attaches the overlay on ".".
 */
struct idrange {
    unsigned long long base, count;
};

static void parse_idrange(const char *text, struct idrange *ids)
{
    char *end;

    errno = 0;
    ids->base = strtoull(text, &end, 10);
    if (errno == 0 && *end == ':')
        ids->count = strtoull(end + 1, &end, 10);
    if (errno || *end || ids->base == 0 || ids->count == 0 || ids->base + ids->count > 0xFFFFFFFFULL)
        DIE("bad --userns %s: BASE:COUNT, a range of ids on the machine other than root's", text);
}

static void write_id_map(pid_t pid, const char *file, const struct idrange *ids)
{
    char path[64], map[64];

    snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
    snprintf(map, sizeof map, "0 %llu %llu\n", ids->base, ids->count);
    write_file(path, map);
}

/* A user namespace mapping ids 0..COUNT-1 inside to BASE.. outside, held by a descriptor. Only a
 * process outside may map ids other than its own, so a child unshares it and waits while we
 * write its maps, then exits (EOF on `done`, also when we die). */
static int make_userns(const struct idrange *ids)
{
    int ready[2], done[2], err = 0, fd;
    char path[64], byte;

    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0)
        DIE("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        DIE("fork: %s", strerror(errno));
    if (pid == 0) {
        close(ready[0]);
        close(done[1]);
        err = unshare(CLONE_NEWUSER) < 0 ? errno : 0;
        if (write(ready[1], &err, sizeof err) != (ssize_t)sizeof err)
            _exit(1);
        while (read(done[0], &byte, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(ready[1]);
    close(done[0]);
    if (read(ready[0], &err, sizeof err) != (ssize_t)sizeof err)
        DIE("the user namespace helper died before reporting");
    if (err)
        DIE("unshare user namespace: %s%s", strerror(err),
            err == ENOSPC ? " (user.max_user_namespaces reached)" : "");
    write_id_map(pid, "uid_map", ids);
    write_id_map(pid, "gid_map", ids);
    snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        DIE("open %s: %s", path, strerror(errno));
    close(done[1]);
    close(ready[0]);
    if (waitpid(pid, NULL, 0) < 0)
        DIE("wait for the user namespace helper: %s", strerror(errno));
    return fd;
}

/* A detached clone of the mount at `path` (that directory only, no submounts), its ids
 * translated through user namespace `userns_fd`: on-disk id N reads as N inside it. */
static int idmapped_clone(const char *path, int userns_fd)
{
    struct ne_mount_attr attr = {.attr_set = NE_MOUNT_ATTR_IDMAP, .userns_fd = (unsigned)userns_fd};
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, NE_OPEN_TREE_CLONE | O_CLOEXEC);

    if (fd < 0)
        DIE("open_tree %s: %s", path, strerror(errno));
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        DIE("idmapped mount of %s (mount_setattr): %s%s", path, strerror(errno),
            errno == EINVAL ? " (does its filesystem support idmapped mounts?)" : "");
    return fd;
}

/* A refused fsconfig: the kernel tells why in the context's log, so pass its messages on. */
static void fs_die(int fsfd, const char *what, const char *value)
{
    int err = errno;
    char log[600] = "", line[512];
    ssize_t n;

    while ((n = read(fsfd, line, sizeof line - 1)) > 0) {
        line[n] = 0;
        snprintf(log, sizeof log, " [%s]", line);
    }
    DIE("mount overlay: %s %s: %s%s%s", what, value, strerror(err), log,
        err == EINVAL ? " (idmapped detached layers need Linux 6.15 or later)" : "");
}

static void fs_set_string(int fsfd, const char *key, const char *value)
{
    if (syscall(SYS_fsconfig, fsfd, NE_FSCONFIG_SET_STRING, key, value, 0) < 0)
        fs_die(fsfd, key, value);
}

/* The host's overlay as a detached mount, made with our (the machine root's) credentials over
 * idmapped lower layers; PID 1 attaches it later from inside the user namespace. */
static int make_overlay(struct list *lowers, const char *upper, const char *work, int userns_fd,
                        unsigned int attrs)
{
    int fsfd, mfd, layers[MAX_LIST];

    if (lowers->n == 0)
        DIE("no lower layer given");
    fsfd = (int)syscall(SYS_fsopen, "overlay", NE_FSOPEN_CLOEXEC);
    if (fsfd < 0)
        DIE("mount overlay (fsopen): %s", strerror(errno));
    /* The clones stay open until the overlay exists: closing one unmounts it. */
    for (int i = 0; i < lowers->n; i++) {
        layers[i] = idmapped_clone(lowers->items[i], userns_fd);
        if (syscall(SYS_fsconfig, fsfd, NE_FSCONFIG_SET_FD, "lowerdir+", NULL, layers[i]) < 0)
            fs_die(fsfd, "lowerdir+", lowers->items[i]);
    }
    fs_set_string(fsfd, "source", "overlay"); /* as mount(2) names the others */
    fs_set_string(fsfd, "upperdir", upper);
    fs_set_string(fsfd, "workdir", work);
    if (syscall(SYS_fsconfig, fsfd, NE_FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        fs_die(fsfd, "create with upper", upper);
    mfd = (int)syscall(SYS_fsmount, fsfd, NE_FSMOUNT_CLOEXEC, attrs);
    if (mfd < 0)
        DIE("mount overlay (fsmount): %s", strerror(errno));
    for (int i = 0; i < lowers->n; i++)
        close(layers[i]);
    close(fsfd);
    return mfd;
}

/* Root of the user namespace we are in: its uid and gid 0, no supplementary groups of the
 * machine's. A change of uid makes a process non-dumpable, which would hand its /proc files to
 * the machine's root, out of reach of root inside: undo that. */
static void become_root(void)
{
    if (setgroups(0, NULL) < 0)
        DIE("setgroups in the user namespace: %s", strerror(errno));
    if (setresgid(0, 0, 0) < 0)
        DIE("setresgid 0 in the user namespace: %s", strerror(errno));
    if (setresuid(0, 0, 0) < 0)
        DIE("setresuid 0 in the user namespace: %s", strerror(errno));
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
        DIE("prctl PR_SET_DUMPABLE: %s", strerror(errno));
}

static void enter_userns(int userns_fd)
{
    if (setns(userns_fd, CLONE_NEWUSER) < 0)
        DIE("setns user namespace: %s", strerror(errno));
    become_root();
}

/* The launcher left us in the mount point (`merged`, reached as the machine's root): attach the
 * overlay there and step into it, so that no path up to it is walked from inside. */
static void attach_overlay(int ovl_fd, const char *merged)
{
    if (syscall(SYS_move_mount, ovl_fd, "", AT_FDCWD, ".", NE_MOVE_MOUNT_F_EMPTY_PATH) < 0)
        DIE("attach the overlay on %s (move_mount): %s", merged, strerror(errno));
    if (fchdir(ovl_fd) < 0)
        DIE("enter the overlay on %s: %s", merged, strerror(errno));
    close(ovl_fd);
}

static void mount_overlay(struct list *lowers, const char *upper, const char *work,
                          const char *merged, unsigned long flags)
{
    char opts[8192];
    size_t off;

    if (lowers->n == 0)
        DIE("no lower layer given");
    off = (size_t)snprintf(opts, sizeof opts, "lowerdir=");
    for (int i = 0; i < lowers->n && off < sizeof opts; i++)
        off += (size_t)snprintf(opts + off, sizeof opts - off, "%s%s", i ? ":" : "",
                                lowers->items[i]);
    if (off >= sizeof opts ||
        (size_t)snprintf(opts + off, sizeof opts - off, ",upperdir=%s,workdir=%s", upper, work) >= sizeof opts - off)
        DIE("overlay options longer than %zu bytes", sizeof opts);
    do_mount("overlay", merged, "overlay", flags, opts);
}

/* A fresh read-only sysfs of the host's network namespace. In a user namespace the kernel gives
 * sysfs only for a network namespace that user namespace owns: a userns host on the machine's
 * network or on another host's (network: host or container:) sees that one's /sys, bound
 * read-only. */
static void mount_sys(const char *path, int userns_foreign_net, int privileged)
{
    if (mount("sysfs", path, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | (privileged ? 0 : MS_RDONLY), NULL) == 0)
        return;
    if (!(userns_foreign_net && errno == EPERM))
        DIE("mount sysfs on %s: %s", path, strerror(errno));
    do_mount("/sys", path, NULL, MS_BIND | MS_REC, NULL);
    if (!privileged)
        remount_bind(path, MS_RDONLY);
}

/* The overlay root (mounted here, or made before the user namespace and attached here), fresh
 * /proc, /sys, /dev, /run, the binds, then pivot_root so that nothing of the machine's mount tree
 * stays reachable. Once in the overlay every path is relative to it ("."). */
/* The kernel paths of --mask, --ro-path and --rw-path, once the host's root is "/". Each entry
 * is "m:PATH", "r:PATH" or "w:PATH"; a path the kernel does not have is skipped. */
static void restrict_paths(struct list *masks)
{
    for (int i = 0; i < masks->n; i++) {
        const char *path = masks->items[i] + 2;
        struct stat st;

        if (lstat(path, &st) < 0)
            continue;
        switch (masks->items[i][0]) {
        case 'm':
            if (S_ISDIR(st.st_mode))
                do_mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=500");
            else /* a bind of the host's /dev/null, itself read-only: this one is too */
                do_mount("/dev/null", path, NULL, MS_BIND, NULL);
            break;
        case 'r':
            do_mount(path, path, NULL, MS_BIND | MS_REC, NULL);
            remount_bind(path, MS_RDONLY);
            break;
        default: /* a bind inherits the read-only flag of the mount it comes from: clear it */
            do_mount(path, path, NULL, MS_BIND, NULL);
            remount_bind(path, 0);
            break;
        }
    }
}

static void pivot_into_cwd(const char *merged)
{
    /* pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only
     * the host's own tree (the runc trick, no put_old directory needed). */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        DIE("pivot_root %s: %s", merged, strerror(errno));
    if (umount2(".", MNT_DETACH) < 0)
        DIE("detach old root: %s", strerror(errno));
    if (chdir("/") < 0)
        DIE("chdir /: %s", strerror(errno));
}

/* The overlay root (mounted here, or made before the user namespace and attached here), fresh
 * /proc, /sys, /dev, /run, then pivot_root so that nothing of the machine's mount tree stays
 * reachable. Until then every path is relative to the overlay ("."), and only names netemu-init
 * makes itself are used; what the topology names (binds, hidden and masked paths) is mounted
 * after pivot_root, where the host's own symlinks cannot lead out of it. */
static void setup_rootfs(struct run_opts *o, int ovl_fd, struct bind_mount *binds)
{
    unsigned long root_flags = (o->privileged ? 0 : MS_NODEV) | (o->read_only ? MS_RDONLY : 0);

    /* Private first: nothing mounted below may propagate back to the machine. */
    do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    if (ovl_fd >= 0) {
        attach_overlay(ovl_fd, o->merged);
    } else {
        mount_overlay(&o->lowers, o->upper, o->work, o->merged, root_flags);
        if (chdir(o->merged) < 0)
            DIE("chdir %s: %s", o->merged, strerror(errno));
    }
    make_dir("proc", 0555);
    do_mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    make_dir("sys", 0555);
    mount_sys("sys", o->userns && strcmp(o->net, "new") != 0, o->privileged);
    if (o->privileged)
        setup_machine_dev();
    else
        setup_dev(".");
    make_dir("run", 0755);
    do_mount("tmpfs", "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=65536k");
    pivot_into_cwd(o->merged);

    for (int i = 0; i < o->hides.n; i++)
        if (access(o->hides.items[i], F_OK) == 0)
            do_mount("tmpfs", o->hides.items[i], "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m");
    attach_binds(binds, o->binds.n);
    restrict_paths(&o->masks);
}

static void loopback_up(void)
{
    struct ifreq ifr;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        DIE("socket: %s", strerror(errno));
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
        DIE("SIOCGIFFLAGS lo: %s", strerror(errno));
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
        DIE("SIOCSIFFLAGS lo: %s", strerror(errno));
    close(fd);
}

static pid_t start_cmd(char **argv, char **envp, const char *cwd, sigset_t *oldmask)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("netemu-init: fork");
        return -1;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, oldmask, NULL);
        setsid();
        if (cwd && chdir(cwd) < 0) {
            fprintf(stderr, "netemu-init: chdir %s: %s\n", cwd, strerror(errno));
            _exit(126);
        }
        exec_in_host(argv, envp);
        fprintf(stderr, "netemu-init: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* PID 1: reap everything, start CMD on SIGUSR1, forward termination signals to it. */
static int pid1_loop(char **cmd, char **envp, const char *cwd)
{
    sigset_t all, old;
    pid_t child = 0;
    int started = 0;

    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&all, &si);
        if (sig < 0)
            continue;
        switch (sig) {
        case SIGCHLD:
            for (;;) {
                int status;
                pid_t p = waitpid(-1, &status, WNOHANG);
                if (p <= 0)
                    break;
                if (p == child) {
                    fprintf(stderr, "netemu-init: command exited with status %d\n",
                            WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
                    child = 0;
                }
            }
            break;
        case SIGUSR1:
            if (cmd && cmd[0] && !started) {
                child = start_cmd(cmd, envp, cwd, &old);
                started = 1;
            }
            break;
        case SIGTERM:
        case SIGINT:
        case SIGHUP:
        case SIGQUIT:
        case SIGUSR2:
            if (child > 0)
                kill(child, sig);
            else if (sig == SIGTERM || sig == SIGINT)
                return 0;
            break;
        default:
            break;
        }
    }
}

/* `value` with `tag` before (prefix) or after it, in new memory. */
static char *tagged(const char *value, const char *tag, int prefix)
{
    char *out;
    if (asprintf(&out, "%s%s", prefix ? tag : value, prefix ? value : tag) < 0)
        DIE("out of memory");
    return out;
}

static void parse_run(int argc, char **argv, struct run_opts *o)
{
    o->net = "new";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            o->cmd = &argv[i + 1];
            break;
        }
        if (!strcmp(a, "--read-only")) {
            o->read_only = 1;
            continue;
        }
        if (!strcmp(a, "--privileged")) {
            o->privileged = 1;
            continue;
        }
        if (i + 1 >= argc)
            DIE("option %s needs a value", a);
        char *v = argv[++i];
        if (parse_confinement(a, v, &o->confine)) continue;
        else if (!strcmp(a, "--cgroup")) list_add(&o->cgroups, v);
        else if (!strcmp(a, "--device")) list_add(&o->binds, tagged(v, ":dev", 0));
        else if (!strcmp(a, "--mask")) list_add(&o->masks, tagged(v, "m:", 1));
        else if (!strcmp(a, "--ro-path")) list_add(&o->masks, tagged(v, "r:", 1));
        else if (!strcmp(a, "--rw-path")) list_add(&o->masks, tagged(v, "w:", 1));
        else if (!strcmp(a, "--lower")) list_add(&o->lowers, v);
        else if (!strcmp(a, "--env")) list_add(&o->envs, v);
        else if (!strcmp(a, "--hide")) list_add(&o->hides, v);
        else if (!strcmp(a, "--bind")) list_add(&o->binds, v);
        else if (!strcmp(a, "--upper")) o->upper = v;
        else if (!strcmp(a, "--work")) o->work = v;
        else if (!strcmp(a, "--merged")) o->merged = v;
        else if (!strcmp(a, "--hostname")) o->hostname = v;
        else if (!strcmp(a, "--net")) o->net = v;
        else if (!strcmp(a, "--cwd")) o->cwd = v;
        else if (!strcmp(a, "--userns")) o->userns = v;
        else if (!strcmp(a, "--status-fd")) status_fd = atoi(v);
        else DIE("unknown option %s", a);
    }
    if (!o->upper || !o->work || !o->merged)
        DIE("--upper, --work and --merged are required");
}

static void join_netns(const char *net)
{
    int fd = open(net, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        DIE("open network namespace %s: %s", net, strerror(errno));
    if (setns(fd, CLONE_NEWNET) < 0)
        DIE("setns %s: %s", net, strerror(errno));
    close(fd);
}

/* The launcher's side once PID 1 is forked: pass its report on, naming PID 1 by its number on
 * the machine (only this side knows it). */
static int report_start(pid_t pid, int ready_fd)
{
    char buf[1200];
    ssize_t n = read(ready_fd, buf, sizeof buf - 1);

    if (n <= 0) {
        report_error("host init exited during set-up");
        return 1;
    }
    buf[n] = 0;
    int ok = strncmp(buf, "ok", 2) == 0;
    if (ok && status_fd >= 0)
        dprintf(status_fd, "ok %d\n", pid);
    else if (ok)
        printf("%d\n", pid);
    else if (status_fd >= 0)
        dprintf(status_fd, "%s", buf);
    else
        fputs(buf, stderr);
    return ok ? 0 : 1;
}

static int cmd_run(int argc, char **argv)
{
    static struct bind_mount binds[MAX_LIST];
    struct run_opts o = {0};
    int pipefd[2], ovl_fd = -1, userns_fd = -1;

    parse_run(argc, argv, &o);
    join_cgroups(&o.cgroups);
    open_binds(&o.binds, binds, o.privileged);
    if (o.userns) {
        struct idrange ids;
        parse_idrange(o.userns, &ids);
        userns_fd = make_userns(&ids);
        ovl_fd = make_overlay(&o.lowers, o.upper, o.work, userns_fd,
                              (o.privileged ? 0 : NE_MOUNT_ATTR_NODEV) | (o.read_only ? NE_MOUNT_ATTR_RDONLY : 0));
        /* Reach the mount point while still the machine's root; unshare keeps us there. */
        if (chdir(o.merged) < 0)
            DIE("chdir %s: %s", o.merged, strerror(errno));
    }

    int flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID;
    if (strcmp(o.net, "new") == 0)
        flags |= CLONE_NEWNET;
    else if (strcmp(o.net, "host") != 0)
        join_netns(o.net); /* as the machine's root, before entering the user namespace */
    if (userns_fd >= 0) {
        enter_userns(userns_fd); /* first, so that it owns the namespaces made below */
        close(userns_fd);
    }
    if (unshare(flags) < 0)
        DIE("unshare namespaces: %s", strerror(errno));
    if (unshare(CLONE_NEWCGROUP) < 0 && errno != EINVAL)
        DIE("unshare cgroup namespace: %s", strerror(errno));

    /* The child reports "ready" through this pipe so the caller learns of any failure in
     * the mount set-up synchronously, with the reason. */
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        DIE("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        DIE("fork: %s", strerror(errno));
    if (pid > 0) {
        close(pipefd[1]);
        return report_start(pid, pipefd[0]);
    }

    /* PID 1 of the new PID namespace. */
    close(pipefd[0]);
    int outer_status = status_fd;
    status_fd = pipefd[1];
    if (outer_status >= 0)
        close(outer_status);
    setup_rootfs(&o, ovl_fd, binds);
    if (o.hostname && sethostname(o.hostname, strlen(o.hostname)) < 0)
        DIE("sethostname %s: %s", o.hostname, strerror(errno));
    if (strcmp(o.net, "new") == 0)
        loopback_up();

    char **envp = calloc((size_t)o.envs.n + 1, sizeof *envp);
    if (!envp)
        DIE("out of memory");
    for (int i = 0; i < o.envs.n; i++)
        envp[i] = o.envs.items[i];
    confine(&o.confine, last_cap());
    /* Not dumpable: /proc/1 then belongs to the machine's root, so root inside cannot open
     * /proc/1/exe (this binary, a file of the machine) nor read PID 1's memory. The command's
     * execve makes it dumpable again. */
    if (!o.privileged && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        DIE("prctl PR_SET_DUMPABLE: %s", strerror(errno));
    dprintf(status_fd, "ok\n");
    close(status_fd);
    status_fd = -1;
    return pid1_loop(o.cmd, envp, o.cwd);
}

/* exec: join the cgroups and every namespace of host PID, then run CMD as a child so that
 * the PID namespace applies; the exit status of CMD is ours. */
static int cmd_exec(int argc, char **argv)
{
    static const char *ns_names[] = {"user", "ipc", "uts", "net", "pid", "cgroup", "mnt"};
    struct list cgroups = {0}, envs = {0};
    struct confinement confinement = {0};
    const char *cwd = "/";
    char **cmd = NULL, path[256];
    int target = 0, i, fds[7], rootfd, tty = 0, joined_user = 0;

    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            cmd = &argv[i + 1];
            break;
        }
        if (a[0] != '-') {
            target = atoi(a);
            continue;
        }
        if (!strcmp(a, "--tty")) {
            tty = 1;
            continue;
        }
        if (i + 1 >= argc)
            DIE("option %s needs a value", a);
        char *v = argv[++i];
        if (parse_confinement(a, v, &confinement)) continue;
        else if (!strcmp(a, "--cgroup")) list_add(&cgroups, v);
        else if (!strcmp(a, "--env")) list_add(&envs, v);
        else if (!strcmp(a, "--cwd")) cwd = v;
        else DIE("unknown option %s", a);
    }
    if (target <= 0 || !cmd || !cmd[0])
        DIE("usage: netemu-init exec [--cgroup P]... [--env K=V]... PID -- CMD...");

    /* Open everything first: once in the host's mount namespace, /proc is the host's own. */
    for (i = 0; i < 7; i++) {
        snprintf(path, sizeof path, "/proc/%d/ns/%s", target, ns_names[i]);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0)
            DIE("open %s: %s (is the host running?)", path, strerror(errno));
    }
    snprintf(path, sizeof path, "/proc/%d/root", target);
    rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        DIE("open %s: %s", path, strerror(errno));

    join_cgroups(&cgroups);
    /* Which namespaces we share already, read before any setns: in the host's mount namespace
     * /proc/self is no longer ours. Joining one's own user namespace is refused: skip those. */
    int same[7], refused[7] = {0};
    for (i = 0; i < 7; i++) {
        struct stat mine, theirs;
        snprintf(path, sizeof path, "/proc/self/ns/%s", ns_names[i]);
        same[i] = stat(path, &mine) == 0 && fstat(fds[i], &theirs) == 0 && mine.st_ino == theirs.st_ino;
    }
    /* As nsenter does: every namespace but the user one while still the machine's root (a
     * userns host on network: container:X sits in a network namespace its own user namespace
     * does not own), then the user namespace, then what the machine's root was refused. */
    for (i = 1; i < 7; i++)
        if (!same[i] && setns(fds[i], 0) < 0)
            refused[i] = errno;
    if (!same[0]) {
        if (setns(fds[0], 0) < 0)
            DIE("setns user of %d: %s", target, strerror(errno));
        joined_user = 1;
    }
    for (i = 1; i < 7; i++)
        if (refused[i] && setns(fds[i], 0) < 0)
            DIE("setns %s of %d: %s (first attempt: %s)", ns_names[i], target, strerror(errno),
                strerror(refused[i]));
    if (joined_user)
        become_root(); /* the host's root, not the machine's uid 0 that it cannot map */
    if (fchdir(rootfd) < 0 || chroot(".") < 0)
        DIE("enter root of %d: %s", target, strerror(errno));
    if (chdir(cwd) < 0)
        DIE("chdir %s: %s", cwd, strerror(errno));

    char **envp = calloc((size_t)envs.n + 1, sizeof *envp);
    for (i = 0; i < envs.n; i++)
        envp[i] = envs.items[i];

    sigset_t fwd, old;
    sigemptyset(&fwd);
    int fwd_sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};
    for (i = 0; i < (int)(sizeof fwd_sigs / sizeof *fwd_sigs); i++)
        sigaddset(&fwd, fwd_sigs[i]);
    sigprocmask(SIG_BLOCK, &fwd, &old);
    int sfd = signalfd(-1, &fwd, SFD_CLOEXEC);
    if (sfd < 0)
        DIE("signalfd: %s", strerror(errno));

    /* With --tty the terminal is made inside the host (its own devpts), as docker exec -t does,
     * so the shell owns a controlling terminal of the host and job control works. Without it,
     * nothing of the caller's but an anonymous pipe enters the host: each of stdin, stdout and
     * stderr that is a terminal, a file, a device or a socket is replaced by a pipe we copy, and
     * the command starts a session of its own, with no controlling terminal. Otherwise root
     * inside could read the caller's keystrokes or push its own into the caller's shell
     * (TIOCSTI), or chmod and fill the machine's file that the caller redirected output to
     * (a setuid binary for any local user). */
    struct channel ch[3];
    int nch = 0, child_fd[3] = {-1, -1, -1};
    if (tty) {
        int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
            DIE("open a pseudo-terminal in the host: %s", strerror(errno));
        copy_winsize(master);
        ch[nch++] = (struct channel){master, STDOUT_FILENO, -1};
        ch[nch++] = (struct channel){STDIN_FILENO, master, 4};
    } else {
        for (int fd = 0; fd < 3; fd++) {
            int p[2];
            if (passes_through(fd))
                continue;
            if (pipe2(p, O_CLOEXEC) < 0)
                DIE("pipe: %s", strerror(errno));
            child_fd[fd] = fd == 0 ? p[0] : p[1];
            ch[nch++] = fd == 0 ? (struct channel){STDIN_FILENO, p[1], -1} : (struct channel){p[0], fd, -1};
        }
    }
    pid_t pid = fork();
    if (pid < 0)
        DIE("fork: %s", strerror(errno));
    int last = last_cap(); /* read now: once confined, /proc/sys may be another's */
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        if (tty) {
            attach_terminal(ch[0].from);
        } else {
            for (int fd = 0; fd < 3; fd++)
                if (child_fd[fd] >= 0 && dup2(child_fd[fd], fd) < 0)
                    _exit(126);
            setsid();
        }
        /* Not dumpable until execve: once confined, this process holds no more capabilities than
         * root inside, which could otherwise open its /proc/PID/exe (this binary, a file of the
         * machine) in the moment before the command replaces it. execve makes the command
         * dumpable again. */
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
            DIE("prctl PR_SET_DUMPABLE: %s", strerror(errno));
        confine(&confinement, last);
        close_inherited();
        exec_in_host(cmd, envp);
        fprintf(stderr, "netemu exec: %s: %s\n", cmd[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    for (int fd = 0; fd < 3; fd++)
        if (child_fd[fd] >= 0)
            close(child_fd[fd]); /* the child's ends: EOF reaches us once it (and its heirs) close them */
    signal(SIGPIPE, SIG_IGN); /* a command that closed its stdin must not kill the relay */
    struct termios saved;
    int raw = tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (raw) {
        struct termios t = saved;
        cfmakeraw(&t);
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    int status = relay(pid, sfd, ch, nch);
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return status;
}

static void copy_winsize(int master)
{
    struct winsize ws;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
        ioctl(master, TIOCSWINSZ, &ws);
}

static void attach_terminal(int master)
{
    char *name = ptsname(master);
    if (!name || setsid() < 0)
        _exit(126);
    int slave = open(name, O_RDWR);
    if (slave < 0 || ioctl(slave, TIOCSCTTY, 0) < 0)
        _exit(126);
    dup2(slave, 0);
    dup2(slave, 1);
    dup2(slave, 2);
    if (slave > 2)
        close(slave);
}

static int write_all(int fd, const char *buf, ssize_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, (size_t)n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= w;
    }
    return 0;
}

static void drain(struct channel *ch)
{
    char buf[8192];
    ssize_t n;

    fcntl(ch->from, F_SETFL, fcntl(ch->from, F_GETFL) | O_NONBLOCK); /* a background process may hold it */
    while ((n = read(ch->from, buf, sizeof buf)) > 0)
        write_all(ch->to, buf, n);
}

/* Forward signals to the command and copy the channels until it exits, then drain what it
 * wrote last (the channels towards our own stdout and stderr). */
static int relay(pid_t pid, int sfd, struct channel *ch, int nch)
{
    struct pollfd fds[4] = {{sfd, POLLIN, 0}};
    char buf[8192];
    int status = 0, done = 0;

    for (int i = 0; i < nch; i++)
        fds[i + 1] = (struct pollfd){ch[i].from, POLLIN, 0};
    while (!done) {
        if (poll(fds, (nfds_t)nch + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo == SIGCHLD) {
                    if (waitpid(pid, &status, WNOHANG) == pid)
                        done = 1;
                } else if (si.ssi_signo == SIGWINCH) {
                    for (int i = 0; i < nch; i++)
                        if (ch[i].eof == 4)
                            copy_winsize(ch[i].to);
                } else {
                    kill(pid, (int)si.ssi_signo);
                }
            }
        }
        for (int i = 0; i < nch; i++) {
            if (!(fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(ch[i].from, buf, sizeof buf);
            if (n > 0) {
                write_all(ch[i].to, buf, n);
                continue;
            }
            fds[i + 1].fd = -1; /* EOF, or EIO once every slave of a terminal is closed */
            if (ch[i].eof >= 0) {
                char byte = (char)ch[i].eof;
                write_all(ch[i].to, &byte, 1);
            } else if (ch[i].to > STDERR_FILENO) {
                close(ch[i].to);
            }
        }
    }
    for (int i = 0; i < nch; i++)
        if (ch[i].to <= STDERR_FILENO && fds[i + 1].fd >= 0)
            drain(&ch[i]);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

/* `exec` runs from a sealed copy of itself in memory, as runc does: its command starts from a
 * fork of it, and a command that is a script starting "#!/proc/self/exe" would otherwise run
 * this binary again inside the host, where root could hold on to it (/proc/PID/exe) and write
 * the machine's netemu-init once no process runs it any more. A sealed memfd cannot be written
 * by anyone. */
static void run_sealed(char **argv)
{
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC), copy;
    struct stat st;

    if (self < 0)
        DIE("open /proc/self/exe: %s", strerror(errno));
    int seals = fcntl(self, F_GET_SEALS); /* EINVAL for a file of a filesystem */
    if (seals != -1 && (seals & F_SEAL_WRITE)) {
        close(self);
        return;
    }
    copy = memfd_create("netemu-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (copy < 0 || fstat(self, &st) < 0)
        DIE("memfd_create: %s", strerror(errno));
    for (off_t done = 0; done < st.st_size;) {
        ssize_t n = sendfile(copy, self, NULL, (size_t)(st.st_size - done));
        if (n <= 0)
            DIE("copy netemu-init into memory: %s", n < 0 ? strerror(errno) : "short read");
        done += n;
    }
    if (fcntl(copy, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
        DIE("seal the copy of netemu-init: %s", strerror(errno));
    close(self);
    fexecve(copy, argv, environ);
    DIE("run the sealed copy of netemu-init: %s", strerror(errno));
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "exec") == 0) {
        run_sealed(argv);
        return cmd_exec(argc - 2, argv + 2);
    }
    fprintf(stderr, "usage: netemu-init run|exec ...\n");
    return 2;
}
