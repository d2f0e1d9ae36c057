/*
 * netemu-init: the small static helper behind every netemu host.
 *
 *   netemu-init run  [options] -- [CMD...]   start a host: new namespaces, overlay root, PID 1
 *   netemu-init exec [options] PID -- CMD... run CMD inside host PID: its namespaces and cgroups
 *                                            (--cgroup P, --env K=V, --cwd DIR, --tty)
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
 * CMD, when given, is started only when PID 1 receives SIGUSR1 (sent once the host's links
 * are up). PID 1 reaps every orphan, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR2 to CMD, and
 * exits on SIGTERM/SIGINT when no CMD runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#define MAX_LIST 256

static void copy_winsize(int master);
static void attach_terminal(int master);
static int relay(pid_t pid, int sfd, int master);

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
    do_mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k");
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
        snprintf(path, sizeof path, "%s/dev/%s", root, nodes[i]);
        snprintf(src, sizeof src, "/dev/%s", nodes[i]);
        make_file(path);
        do_mount(src, path, NULL, MS_BIND, NULL);
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

static void setup_binds(const char *root, struct list *binds)
{
    char path[4096];
    for (int i = 0; i < binds->n; i++) {
        char *spec = strdup(binds->items[i]);
        char *src = strtok(spec, ":");
        char *dst = strtok(NULL, ":");
        char *mode = strtok(NULL, ":");
        struct stat st;
        if (!src || !dst)
            DIE("bad bind %s", binds->items[i]);
        if (stat(src, &st) < 0)
            DIE("bind source %s: %s", src, strerror(errno));
        snprintf(path, sizeof path, "%s%s", root, dst);
        if (S_ISDIR(st.st_mode))
            make_dir(path, 0755);
        else
            make_file(path);
        do_mount(src, path, NULL, MS_BIND | MS_REC, NULL);
        if (mode && strcmp(mode, "ro") == 0)
            do_mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
        free(spec);
    }
}

/* The overlay root, fresh /proc, /sys, /dev, /run, then pivot_root so that nothing of the
 * machine's mount tree stays reachable. */
static void setup_rootfs(struct list *lowers, const char *upper, const char *work,
                         const char *merged, struct list *hides, struct list *binds)
{
    char opts[8192], path[4096];
    size_t off;

    /* Private first: nothing mounted below may propagate back to the machine. */
    do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    if (lowers->n == 0)
        DIE("no lower layer given");
    off = (size_t)snprintf(opts, sizeof opts, "lowerdir=");
    for (int i = 0; i < lowers->n; i++)
        off += (size_t)snprintf(opts + off, sizeof opts - off, "%s%s", i ? ":" : "",
                                lowers->items[i]);
    snprintf(opts + off, sizeof opts - off, ",upperdir=%s,workdir=%s", upper, work);
    do_mount("overlay", merged, "overlay", 0, opts);

    for (int i = 0; i < hides->n; i++) {
        snprintf(path, sizeof path, "%s%s", merged, hides->items[i]);
        if (access(path, F_OK) == 0)
            do_mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m");
    }
    snprintf(path, sizeof path, "%s/proc", merged);
    make_dir(path, 0555);
    do_mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    snprintf(path, sizeof path, "%s/sys", merged);
    make_dir(path, 0555);
    do_mount("sysfs", path, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
    setup_dev(merged);
    snprintf(path, sizeof path, "%s/run", merged);
    make_dir(path, 0755);
    do_mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=65536k");
    setup_binds(merged, binds);

    /* pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only
     * the host's own tree (the runc trick, no put_old directory needed). */
    if (chdir(merged) < 0)
        DIE("chdir %s: %s", merged, strerror(errno));
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        DIE("pivot_root %s: %s", merged, strerror(errno));
    if (umount2(".", MNT_DETACH) < 0)
        DIE("detach old root: %s", strerror(errno));
    if (chdir("/") < 0)
        DIE("chdir /: %s", strerror(errno));
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
        execvpe(argv[0], argv, envp);
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

static int cmd_run(int argc, char **argv)
{
    struct list cgroups = {0}, lowers = {0}, envs = {0}, hides = {0}, binds = {0};
    const char *upper = NULL, *work = NULL, *merged = NULL, *hostname = NULL, *net = "new", *cwd = NULL;
    char **cmd = NULL;
    int i, pipefd[2];

    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            cmd = &argv[i + 1];
            break;
        }
        if (i + 1 >= argc)
            DIE("option %s needs a value", a);
        char *v = argv[++i];
        if (!strcmp(a, "--cgroup")) list_add(&cgroups, v);
        else if (!strcmp(a, "--lower")) list_add(&lowers, v);
        else if (!strcmp(a, "--env")) list_add(&envs, v);
        else if (!strcmp(a, "--hide")) list_add(&hides, v);
        else if (!strcmp(a, "--bind")) list_add(&binds, v);
        else if (!strcmp(a, "--upper")) upper = v;
        else if (!strcmp(a, "--work")) work = v;
        else if (!strcmp(a, "--merged")) merged = v;
        else if (!strcmp(a, "--hostname")) hostname = v;
        else if (!strcmp(a, "--net")) net = v;
        else if (!strcmp(a, "--cwd")) cwd = v;
        else if (!strcmp(a, "--status-fd")) status_fd = atoi(v);
        else DIE("unknown option %s", a);
    }
    if (!upper || !work || !merged)
        DIE("--upper, --work and --merged are required");

    join_cgroups(&cgroups);

    int flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID;
    if (strcmp(net, "new") == 0) {
        flags |= CLONE_NEWNET;
    } else if (strcmp(net, "host") != 0) {
        int fd = open(net, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            DIE("open network namespace %s: %s", net, strerror(errno));
        if (setns(fd, CLONE_NEWNET) < 0)
            DIE("setns %s: %s", net, strerror(errno));
        close(fd);
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
        char buf[1200];
        ssize_t n;
        close(pipefd[1]);
        n = read(pipefd[0], buf, sizeof buf - 1);
        if (n > 0) {
            buf[n] = 0;
            int ok = strncmp(buf, "ok", 2) == 0;
            /* Only this side knows the host PID 1 by its number on the machine. */
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
        report_error("host init exited during set-up");
        return 1;
    }

    /* PID 1 of the new PID namespace. */
    close(pipefd[0]);
    int outer_status = status_fd;
    status_fd = pipefd[1];
    if (outer_status >= 0)
        close(outer_status);
    setup_rootfs(&lowers, upper, work, merged, &hides, &binds);
    if (hostname && sethostname(hostname, strlen(hostname)) < 0)
        DIE("sethostname %s: %s", hostname, strerror(errno));
    if (strcmp(net, "new") == 0)
        loopback_up();

    char **envp = calloc((size_t)envs.n + 1, sizeof *envp);
    for (i = 0; i < envs.n; i++)
        envp[i] = envs.items[i];
    dprintf(status_fd, "ok\n");
    close(status_fd);
    status_fd = -1;
    return pid1_loop(cmd, envp, cwd);
}

/* exec: join the cgroups and every namespace of host PID, then run CMD as a child so that
 * the PID namespace applies; the exit status of CMD is ours. */
static int cmd_exec(int argc, char **argv)
{
    static const char *ns_names[] = {"user", "ipc", "uts", "net", "pid", "cgroup", "mnt"};
    struct list cgroups = {0}, envs = {0};
    const char *cwd = "/";
    char **cmd = NULL, path[256];
    int target = 0, i, fds[7], rootfd, tty = 0;

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
        if (!strcmp(a, "--cgroup")) list_add(&cgroups, v);
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
    for (i = 0; i < 7; i++) {
        struct stat mine, theirs;
        snprintf(path, sizeof path, "/proc/self/ns/%s", ns_names[i]);
        /* Joining the namespace we are already in is refused for user namespaces; skip it. */
        if (stat(path, &mine) == 0 && fstat(fds[i], &theirs) == 0 && mine.st_ino == theirs.st_ino)
            continue;
        if (setns(fds[i], 0) < 0)
            DIE("setns %s of %d: %s", ns_names[i], target, strerror(errno));
    }
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
     * so the shell owns a controlling terminal of the host and job control works. */
    int master = -1;
    if (tty) {
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
            DIE("open a pseudo-terminal in the host: %s", strerror(errno));
        copy_winsize(master);
    }
    pid_t pid = fork();
    if (pid < 0)
        DIE("fork: %s", strerror(errno));
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        if (tty)
            attach_terminal(master);
        execvpe(cmd[0], cmd, envp);
        fprintf(stderr, "netemu exec: %s: %s\n", cmd[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    struct termios saved;
    int raw = tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (raw) {
        struct termios t = saved;
        cfmakeraw(&t);
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    int status = relay(pid, sfd, master);
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

/* Forward signals to the command and, with a terminal, copy bytes both ways until it exits. */
static int relay(pid_t pid, int sfd, int master)
{
    struct pollfd fds[3] = {{sfd, POLLIN, 0}, {master, POLLIN, 0}, {master >= 0 ? STDIN_FILENO : -1, POLLIN, 0}};
    char buf[8192];
    int status = 0, done = 0;

    while (!done) {
        if (poll(fds, 3, -1) < 0) {
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
                } else if (si.ssi_signo == SIGWINCH && master >= 0) {
                    copy_winsize(master);
                } else {
                    kill(pid, (int)si.ssi_signo);
                }
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(master, buf, sizeof buf);
            if (n > 0)
                write_all(STDOUT_FILENO, buf, n);
            else
                fds[1].fd = -1; /* EIO: every slave is closed */
        }
        if (fds[2].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
            if (n > 0) {
                write_all(master, buf, n);
            } else {
                write_all(master, "\x04", 1); /* end of input: the terminal's EOF */
                fds[2].fd = -1;
            }
        }
    }
    /* The command is gone: drain what it wrote last. */
    if (master >= 0) {
        ssize_t n;
        while ((n = read(master, buf, sizeof buf)) > 0)
            write_all(STDOUT_FILENO, buf, n);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "exec") == 0)
        return cmd_exec(argc - 2, argv + 2);
    fprintf(stderr, "usage: netemu-init run|exec ...\n");
    return 2;
}
