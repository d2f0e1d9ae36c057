/*
 * netemu-init: the small static helper behind every netemu host.
 *
 *   netemu-init run  [OPTION...] [-- CMD...]   start a host: new namespaces, overlay root, PID 1
 *   netemu-init exec [OPTION...] PID -- CMD... run CMD inside host PID: its namespaces, cgroups
 *                                              and confinement, as its root when it has a user
 *                                              namespace of its own
 *   netemu-init check-args run|exec ARGS...    read ARGS as that subcommand would, print what was
 *                                              read as JSON and exit: nothing reaches the kernel
 *
 * It is a static C program so that a host costs one small process (no interpreter),
 * and so that an image with no libc or shell still gets a working PID 1.
 * In the spirit of bubblewrap: every syscall is checked and every failure says which
 * call failed on what path, so the Python side can show the reason to the user.
 *
 * The options (their names, values, which subcommand takes them, what they mean) and the status
 * line written on --status-fd are defined once, in the table of netemu/linux/initargs.py; it is
 * compiled in as options.h (cc -include options.h, written by initbin; `python -m
 * netemu.linux.initargs` prints it), and one parser reads both subcommands against it.
 *
 * run: CMD, when given, is started only when PID 1 receives SIGUSR1 (sent once the host's links
 * are up). PID 1 reaps every orphan, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR2 to CMD, and
 * exits on SIGTERM/SIGINT when no CMD runs. --mask, --ro-path and --rw-path apply in the order
 * given, as do --bind and --device. --net, --ipc and --pid each take "new" (a namespace of the
 * host's own, the default), "host" (the machine's, kept) or the path of another host's namespace
 * (/proc/PID/ns/KIND), joined; with --pid not "new" the host's "PID 1" is an ordinary process of
 * that PID namespace, a subreaper for the host's own processes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
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

#ifndef NETEMU_INIT_OPTIONS_H
#error "compile with -include options.h: python -m netemu.linux.initargs > options.h"
#endif

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

/* ---- Reporting ------------------------------------------------------------------------
 *
 * `run` reports its outcome on --status-fd in one status line (initargs.py's STATUS_*):
 * "ok PID", or "error STAGE ERRNO MESSAGE", where STAGE is what was being done, ERRNO the errno
 * of the call that failed (0: none) and MESSAGE, for the user, names that call. Without a status
 * descriptor (exec, check-args, PID 1 once running) the message goes to stderr. */
#define STATUS_MAX 1280

static int status_fd = -1;
static const char *stage = NE_STAGE_ARGS;

/* The one writer of status lines: formatted whole, made one line, written in one write(2) (a
 * pipe's reader never gets half of it). A message too long for it is cut, not lost. */
static void status_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void status_line(int fd, const char *fmt, ...)
{
    char line[STATUS_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    for (int i = 0; i < n; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[n++] = '\n';
    while (write(fd, line, (size_t)n) < 0 && errno == EINTR)
        ;
}

static void vreport_error(int err, const char *fmt, va_list ap)
{
    char msg[1024];

    int n = vsnprintf(msg, sizeof msg, fmt, ap);

    if (n < 0)
        strcpy(msg, "(a message that could not be formatted)");
    else if ((size_t)n >= sizeof msg) /* cut, and said so: the reason is still there */
        memcpy(msg + sizeof msg - 4, "...", 4);
    if (status_fd >= 0)
        status_line(status_fd, NE_STATUS_ERROR " %s %d %s", stage, err, msg);
    else
        fprintf(stderr, "netemu-init: %s\n", msg);
}

static void report_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_error(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport_error(err, fmt, ap);
    va_end(ap);
}

static void fail(int err, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport_error(err, fmt, ap);
    va_end(ap);
    _exit(126);
}

/* DIE: a failure with no errno; DIE_ERR: with a saved one; DIE_SYS: the call just made failed,
 * the message ends with what errno says. */
#define DIE(...) fail(0, __VA_ARGS__)
#define DIE_ERR(err, ...) fail(err, __VA_ARGS__)
#define DIE_SYS(fmt, ...) fail(errno, fmt ": %s", ##__VA_ARGS__, strerror(errno))

/* ---- Fixed buffers, checked ------------------------------------------------------------ */

/* vsnprintf at `*off` of `buf`, moving `*off` past it; 0 when it does not fit (the buffer then
 * holds a cut text, for a message only). */
static int vput(char *buf, size_t size, size_t *off, const char *fmt, va_list ap)
{
    int n;

    if (*off >= size)
        return 0;
    n = vsnprintf(buf + *off, size - *off, fmt, ap);
    if (n < 0 || (size_t)n >= size - *off)
        return 0;
    *off += (size_t)n;
    return 1;
}

static int put(char *buf, size_t size, size_t *off, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int put(char *buf, size_t size, size_t *off, const char *fmt, ...)
{
    va_list ap;
    int ok;

    va_start(ap, fmt);
    ok = vput(buf, size, off, fmt, ap);
    va_end(ap);
    return ok;
}

/* Into a fixed buffer whole, or DIE: a path cut short would name another file. */
static void format_into(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void format_into(char *buf, size_t size, const char *fmt, ...)
{
    size_t off = 0;
    va_list ap;
    int ok;

    va_start(ap, fmt);
    ok = vput(buf, size, &off, fmt, ap);
    va_end(ap);
    if (!ok)
        DIE("longer than %zu bytes: %.100s...", size - 1, buf);
}

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

/* ---- The command line, read against the table of options.h ---------------------------- */

/* One option as given, in the order given (a flag's value is NULL). */
struct given {
    enum ne_opt id;
    char *value;
};

struct args {
    const struct ne_command *command;
    struct given items[NE_OPT_COUNT * NE_MAX_REPEAT]; /* cannot overflow: each is counted */
    int n, count[NE_OPT_COUNT];
    const char *operand;
    char **cmd; /* what follows "--", or NULL */
};

/* The leading decimal digits of `text` (one at least) as a number up to `max`. Unlike strtoull:
 * no sign, no spaces, no base prefix and no wrap-around. */
static int parse_decimal(const char *text, const char **end, unsigned long long max,
                         unsigned long long *out)
{
    unsigned long long n = 0;
    const char *p = text;

    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned int digit = (unsigned int)(*p - '0');
        if (n > (max - digit) / 10)
            return 0;
        n = n * 10 + digit;
    }
    *end = p;
    *out = n;
    return p > text;
}

/* A whole text that is a decimal number up to INT_MAX, or -1. */
static int parse_int(const char *text)
{
    unsigned long long n;
    const char *end;

    return parse_decimal(text, &end, INT_MAX, &n) && !*end ? (int)n : -1;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* What the table says of every value: there, not too long, of its kind. */
static void check_value(const struct ne_option *opt, const char *value)
{
    size_t len = strlen(value);

    if (len == 0)
        DIE("option %s needs a value, not an empty one", opt->name);
    if (len > opt->max_len)
        DIE("value of %s longer than %zu bytes (%zu)", opt->name, opt->max_len, len);
    if (opt->value == NE_VALUE_NUMBER && parse_int(value) < 0)
        DIE("bad %s %.64s: a decimal number", opt->name, value);
    if (opt->value == NE_VALUE_HEX)
        for (const char *p = value; *p; p++)
            if (hex_digit(*p) < 0)
                DIE("bad %s %.64s: hexadecimal digits", opt->name, value);
}

static int find_option(const char *name)
{
    for (int id = 0; id < NE_OPT_COUNT; id++)
        if (strcmp(ne_options[id].name, name) == 0)
            return id;
    return -1;
}

/* The option at argv[0] and its value; how many arguments that took. */
static int take_option(struct args *a, int argc, char **argv)
{
    int id = find_option(argv[0]);
    char *value = NULL;

    if (id < 0)
        DIE("unknown option %.64s", argv[0]);
    const struct ne_option *opt = &ne_options[id];
    if (!(opt->commands & a->command->id))
        DIE("option %s is not one of %s's", opt->name, a->command->name);
    if (a->count[id] && !opt->repeat)
        DIE("option %s given twice", opt->name);
    if (a->count[id] >= NE_MAX_REPEAT)
        DIE("too many %s options (max %d)", opt->name, NE_MAX_REPEAT);
    if (opt->value != NE_VALUE_FLAG) {
        if (argc < 2)
            DIE("option %s needs a value", opt->name);
        value = argv[1];
        check_value(opt, value);
    }
    if (id == NE_OPT_STATUS_FD)
        status_fd = parse_int(value); /* at once: a mistake further on is reported there */
    a->items[a->n++] = (struct given){(enum ne_opt)id, value};
    a->count[id]++;
    return value ? 2 : 1;
}

static void check_complete(const struct args *a)
{
    const struct ne_command *c = a->command;

    for (int id = 0; id < NE_OPT_COUNT; id++)
        if ((ne_options[id].required & c->id) && !a->count[id])
            DIE("option %s is required", ne_options[id].name);
    if (c->operand && !a->operand)
        DIE("%s needs %s: netemu-init %s [OPTION...] %s -- CMD...", c->name, c->operand, c->name, c->operand);
    if (c->needs_cmd && (!a->cmd || !a->cmd[0]))
        DIE("%s needs a command after --", c->name);
}

/* One parser for every subcommand: options as the table has them, the subcommand's operand if
 * it has one, then "--" and the command. */
static void parse_args(int argc, char **argv, const struct ne_command *command, struct args *a)
{
    a->command = command;
    for (int i = 0; i < argc;) {
        if (strcmp(argv[i], "--") == 0) {
            a->cmd = &argv[i + 1];
            break;
        }
        if (argv[i][0] == '-') {
            i += take_option(a, argc - i, &argv[i]);
            continue;
        }
        if (!command->operand || a->operand)
            DIE("unexpected argument %.64s", argv[i]);
        a->operand = argv[i++];
    }
    check_complete(a);
}

static const struct ne_command *find_command(const char *name)
{
    for (int i = 0; i < NE_COMMAND_COUNT; i++)
        if (strcmp(ne_commands[i].name, name) == 0)
            return &ne_commands[i];
    return NULL;
}

/* The value of single option `id`, or `fallback` when it was not given. */
static const char *value_of(const struct args *a, enum ne_opt id, const char *fallback)
{
    for (int i = 0; i < a->n; i++)
        if (a->items[i].id == id)
            return a->items[i].value;
    return fallback;
}

static int is_given(const struct args *a, enum ne_opt id)
{
    return a->count[id] > 0;
}

/* Every value of repeatable option `id`, in order. */
static void values_of(const struct args *a, enum ne_opt id, struct list *out)
{
    for (int i = 0; i < a->n; i++)
        if (a->items[i].id == id)
            list_add(out, a->items[i].value);
}

static void print_json(const char *s)
{
    if (!s) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* check-args: what was read, as JSON: {"command": NAME, "options": [[OPTION, VALUE or null]...],
 * "operand": TEXT or null, "cmd": [ARG...] or null}. */
static void print_args(const struct args *a)
{
    fputs("{\"command\": ", stdout);
    print_json(a->command->name);
    fputs(", \"options\": [", stdout);
    for (int i = 0; i < a->n; i++) {
        fputs(i ? ", [" : "[", stdout);
        print_json(ne_options[a->items[i].id].name);
        fputs(", ", stdout);
        print_json(a->items[i].value);
        putchar(']');
    }
    fputs("], \"operand\": ", stdout);
    print_json(a->operand);
    fputs(", \"cmd\": ", stdout);
    if (a->cmd) {
        putchar('[');
        for (char **arg = a->cmd; *arg; arg++) {
            fputs(arg == a->cmd ? "" : ", ", stdout);
            print_json(*arg);
        }
        putchar(']');
    } else {
        fputs("null", stdout);
    }
    fputs("}\n", stdout);
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        DIE_SYS("open %s", path);
    if (write(fd, text, strlen(text)) < 0)
        DIE_SYS("write %s", path);
    close(fd);
}

static void join_cgroups(struct list *cgroups)
{
    char pid[32];

    format_into(pid, sizeof pid, "%d\n", getpid());
    for (int i = 0; i < cgroups->n; i++)
        write_file(cgroups->items[i], pid);
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data)
{
    if (mount(src, dst, type, flags, data) < 0)
        DIE_SYS("mount %s on %s (%s)", src ? src : "none", dst, type ? type : "bind");
}

static void make_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        DIE_SYS("mkdir %s", path);
}

static void make_file(const char *path)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        DIE_SYS("create %s", path);
    close(fd);
}

static void make_symlink(const char *target, const char *path)
{
    if (symlink(target, path) < 0 && errno != EEXIST)
        DIE_SYS("symlink %s", path);
}

/* A minimal /dev: tmpfs with the usual nodes bind-mounted from the machine (works in a user
 * namespace too, where mknod is refused), a private devpts and a /dev/shm. */
static void setup_dev(const char *root)
{
    static const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    char path[4096], src[64];

    format_into(path, sizeof path, "%s/dev", root);
    make_dir(path, 0755);
    /* nodev: a node the host makes here opens nothing; the binds below carry their own mount. */
    do_mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=755,size=65536k");
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
        format_into(path, sizeof path, "%s/dev/%s", root, nodes[i]);
        format_into(src, sizeof src, "/dev/%s", nodes[i]);
        make_file(path);
        do_mount(src, path, NULL, MS_BIND, NULL);
        remount_bind(path, MS_RDONLY); /* the machine's node: chmod or chown inside must not reach it */
    }
    format_into(path, sizeof path, "%s/dev/pts", root);
    make_dir(path, 0755);
    do_mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620");
    format_into(path, sizeof path, "%s/dev/ptmx", root);
    make_symlink("pts/ptmx", path);
    format_into(path, sizeof path, "%s/dev/shm", root);
    make_dir(path, 01777);
    do_mount("shm", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k");
    static const char *links[][2] = {{"/proc/self/fd", "fd"},
                                     {"/proc/self/fd/0", "stdin"},
                                     {"/proc/self/fd/1", "stdout"},
                                     {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
        format_into(path, sizeof path, "%s/dev/%s", root, links[i][1]);
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
        DIE_SYS("statvfs %s", path);
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
    int landlock;
};

/* Bytes from hexadecimal digits (check_value let only those through). */
static unsigned char *parse_hex(const char *text, size_t *len)
{
    size_t n = strlen(text);
    unsigned char *out;

    if (n % 2)
        DIE("bad --seccomp: an odd number of hexadecimal digits (%zu)", n);
    out = malloc(n / 2);
    if (!out)
        DIE("out of memory");
    for (size_t i = 0; i < n / 2; i++)
        out[i] = (unsigned char)(hex_digit(text[2 * i]) << 4 | hex_digit(text[2 * i + 1]));
    *len = n / 2;
    return out;
}

/* Landlock, by number and layout: the build machine's headers may predate the ABI used here. */
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif
#define NE_LANDLOCK_CREATE_RULESET_VERSION 1U
#define NE_LANDLOCK_RULE_PATH_BENEATH 1
#define NE_LANDLOCK_ACCESS_FS_REFER (1ULL << 13)       /* ABI 2 */
#define NE_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
struct ne_landlock_ruleset_attr {
    uint64_t handled_access_fs, handled_access_net, scoped;
};
struct ne_landlock_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

/* --landlock (a host that sees the machine's PIDs, `pid: host`): its processes go in a Landlock
 * domain of their own. Root in one host and root in another share uid 0, and a default host's
 * capabilities are a subset of another's, so the kernel's ptrace check would let the first read
 * the second's /proc/PID/environ and write through /proc/PID/root; Landlock refuses ptrace-class
 * access from a domain to any process outside it. The ruleset restricts nothing else: from ABI 6
 * it scopes abstract unix sockets (per network namespace anyway); before, it handles REFER and
 * grants it beneath the host's own "/". restrict_self needs CAP_SYS_ADMIN, still held here. */
static void enter_landlock_domain(void)
{
    struct ne_landlock_ruleset_attr attr = {0};
    size_t size = sizeof attr;
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, NE_LANDLOCK_CREATE_RULESET_VERSION);
    int fd;

    if (abi < 2)
        DIE_ERR(abi < 0 ? errno : EOPNOTSUPP, "this host sees the machine's processes (pid: host) and needs "
                "Landlock (ABI 2, Linux 5.19, with landlock in the lsm= list) to keep it from reading others");
    if (abi >= 6) {
        attr.scoped = NE_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET;
    } else {
        attr.handled_access_fs = NE_LANDLOCK_ACCESS_FS_REFER;
        size = sizeof attr.handled_access_fs; /* the ABI 1 layout: one field */
    }
    fd = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (fd < 0)
        DIE_SYS("landlock_create_ruleset");
    if (abi < 6) {
        struct ne_landlock_path_beneath_attr rule = {.allowed_access = NE_LANDLOCK_ACCESS_FS_REFER,
                                                     .parent_fd = open("/", O_PATH | O_CLOEXEC)};
        if (rule.parent_fd < 0 || syscall(SYS_landlock_add_rule, fd, NE_LANDLOCK_RULE_PATH_BENEATH, &rule, 0) < 0)
            DIE_SYS("landlock_add_rule on /");
        close(rule.parent_fd);
    }
    if (syscall(SYS_landlock_restrict_self, fd, 0) < 0)
        DIE_SYS("landlock_restrict_self");
    close(fd);
}

static void read_confinement(const struct args *a, struct confinement *c)
{
    const char *caps = value_of(a, NE_OPT_CAPS, NULL), *filter = value_of(a, NE_OPT_SECCOMP, NULL);

    c->landlock = is_given(a, NE_OPT_LANDLOCK);

    if (caps) { /* at most 16 hexadecimal digits (the table's limit): 64 bits */
        for (const char *p = caps; *p; p++)
            c->caps = c->caps << 4 | (unsigned long long)hex_digit(*p);
        c->has_caps = 1;
    }
    if (filter) {
        c->filter = parse_hex(filter, &c->filter_len);
        if (c->filter_len % sizeof(struct sock_filter) || c->filter_len / sizeof(struct sock_filter) > BPF_MAXINSNS)
            DIE("bad --seccomp: not a whole BPF program (%zu bytes)", c->filter_len);
    }
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
                DIE_SYS("drop capability %d from the bounding set", cap);
    if (c->landlock)
        enter_landlock_domain(); /* before the filter, which may refuse its calls */
    if (c->filter) {
        struct sock_fprog prog = {.len = (unsigned short)(c->filter_len / sizeof(struct sock_filter)),
                                  .filter = (struct sock_filter *)c->filter};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
            DIE_SYS("install the seccomp filter");
    }
    if (c->has_caps) {
        struct __user_cap_header_struct head = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
        struct __user_cap_data_struct data[2] = {{0}};
        for (int i = 0; i < 2; i++)
            data[i].permitted = data[i].effective = (unsigned int)(c->caps >> (32 * i));
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
            DIE_SYS("clear the ambient capabilities");
        if (syscall(SYS_capset, &head, data) < 0)
            DIE_SYS("set capabilities");
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

/* --userns BASE:COUNT (see "User namespaces" below). */
struct idrange {
    unsigned long long base, count;
};

/* Everything `run` is told on its command line, read by read_run. */
struct run_opts {
    struct list cgroups, lowers, envs, hides;
    struct list binds; /* --bind SRC:DST[:ro|rw] and --device, as SRC:DST:dev, in order */
    struct list masks; /* --mask, --ro-path and --rw-path, as m:PATH, r:PATH and w:PATH, in order */
    const char *upper, *work, *merged, *hostname, *net, *ipc, *pid, *cwd;
    int has_userns, read_only, privileged, keep_run;
    struct idrange ids;
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
            DIE_SYS("bind source %s", src);
        out[i].fd = (int)syscall(SYS_open_tree, AT_FDCWD, src,
                                 NE_OPEN_TREE_CLONE | NE_AT_RECURSIVE | O_CLOEXEC);
        if (out[i].fd < 0)
            DIE_SYS("open_tree %s", src);
        struct ne_mount_attr *attr = !mode || strcmp(mode, "rw") == 0 ? &rw : strcmp(mode, "ro") == 0 ? &ro : &dev;
        if (mode && strcmp(mode, "dev") == 0 && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
            DIE("device %s is not a device node", src);
        if (syscall(SYS_mount_setattr, out[i].fd, "", AT_EMPTY_PATH | NE_AT_RECURSIVE, attr, sizeof *attr) < 0)
            DIE_SYS("bind of %s (mount_setattr)", src);
        out[i].dst = dst;
        out[i].is_dir = S_ISDIR(st.st_mode);
    }
}

/* mkdir -p of an absolute path inside the host (we are past pivot_root: every symlink on the
 * way resolves inside the host's own root). */
static void make_parents(const char *path)
{
    char buf[4096];

    format_into(buf, sizeof buf, "%s", path);
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
            DIE_SYS("bind mount on %s (move_mount)", binds[i].dst);
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
static void parse_idrange(const char *text, struct idrange *ids)
{
    const char *end;
    int ok = parse_decimal(text, &end, 0xFFFFFFFFULL, &ids->base) && *end == ':' &&
             parse_decimal(end + 1, &end, 0xFFFFFFFFULL, &ids->count) && !*end;

    if (!ok || ids->base == 0 || ids->count == 0 || ids->base + ids->count > 0xFFFFFFFFULL)
        DIE("bad --userns %s: BASE:COUNT, a range of ids on the machine other than root's", text);
}

static void write_id_map(pid_t pid, const char *file, const struct idrange *ids)
{
    char path[64], map[64];

    format_into(path, sizeof path, "/proc/%d/%s", pid, file);
    format_into(map, sizeof map, "0 %llu %llu\n", ids->base, ids->count);
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
        DIE_SYS("pipe");
    pid_t pid = fork();
    if (pid < 0)
        DIE_SYS("fork");
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
        DIE_ERR(err, "unshare user namespace: %s%s", strerror(err),
            err == ENOSPC ? " (user.max_user_namespaces reached)" : "");
    write_id_map(pid, "uid_map", ids);
    write_id_map(pid, "gid_map", ids);
    format_into(path, sizeof path, "/proc/%d/ns/user", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        DIE_SYS("open %s", path);
    close(done[1]);
    close(ready[0]);
    if (waitpid(pid, NULL, 0) < 0)
        DIE_SYS("wait for the user namespace helper");
    return fd;
}

/* A detached clone of the mount at `path` (that directory only, no submounts), its ids
 * translated through user namespace `userns_fd`: on-disk id N reads as N inside it. */
static int idmapped_clone(const char *path, int userns_fd)
{
    struct ne_mount_attr attr = {.attr_set = NE_MOUNT_ATTR_IDMAP, .userns_fd = (unsigned)userns_fd};
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, NE_OPEN_TREE_CLONE | O_CLOEXEC);

    if (fd < 0)
        DIE_SYS("open_tree %s", path);
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        DIE_ERR(errno, "idmapped mount of %s (mount_setattr): %s%s", path, strerror(errno),
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
        size_t off = 0;

        line[n] = 0;
        put(log, sizeof log, &off, " [%s]", line); /* the last message, whole: it always fits */
    }
    DIE_ERR(err, "mount overlay: %s %s: %s%s%s", what, value, strerror(err), log,
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
        DIE_SYS("mount overlay (fsopen)");
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
        DIE_SYS("mount overlay (fsmount)");
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
        DIE_SYS("setgroups in the user namespace");
    if (setresgid(0, 0, 0) < 0)
        DIE_SYS("setresgid 0 in the user namespace");
    if (setresuid(0, 0, 0) < 0)
        DIE_SYS("setresuid 0 in the user namespace");
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
        DIE_SYS("prctl PR_SET_DUMPABLE");
}

static void enter_userns(int userns_fd)
{
    if (setns(userns_fd, CLONE_NEWUSER) < 0)
        DIE_SYS("setns user namespace");
    become_root();
}

/* The launcher left us in the mount point (`merged`, reached as the machine's root): attach the
 * overlay there and step into it, so that no path up to it is walked from inside. */
static void attach_overlay(int ovl_fd, const char *merged)
{
    if (syscall(SYS_move_mount, ovl_fd, "", AT_FDCWD, ".", NE_MOVE_MOUNT_F_EMPTY_PATH) < 0)
        DIE_SYS("attach the overlay on %s (move_mount)", merged);
    if (fchdir(ovl_fd) < 0)
        DIE_SYS("enter the overlay on %s", merged);
    close(ovl_fd);
}

static void mount_overlay(struct list *lowers, const char *upper, const char *work,
                          const char *merged, unsigned long flags)
{
    char opts[8192];
    size_t off = 0;
    int fits;

    if (lowers->n == 0)
        DIE("no lower layer given");
    fits = put(opts, sizeof opts, &off, "lowerdir=");
    for (int i = 0; fits && i < lowers->n; i++)
        fits = put(opts, sizeof opts, &off, "%s%s", i ? ":" : "", lowers->items[i]);
    if (!fits || !put(opts, sizeof opts, &off, ",upperdir=%s,workdir=%s", upper, work))
        DIE("overlay options longer than %zu bytes", sizeof opts - 1);
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
        DIE_SYS("mount sysfs on %s", path);
    do_mount("/sys", path, NULL, MS_BIND | MS_REC, NULL);
    if (!privileged)
        remount_bind(path, MS_RDONLY);
}

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
        DIE_SYS("pivot_root %s", merged);
    if (umount2(".", MNT_DETACH) < 0)
        DIE_SYS("detach old root");
    if (chdir("/") < 0)
        DIE_SYS("chdir /");
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
    stage = NE_STAGE_OVERLAY;
    if (ovl_fd >= 0) {
        attach_overlay(ovl_fd, o->merged);
    } else {
        mount_overlay(&o->lowers, o->upper, o->work, o->merged, root_flags);
        if (chdir(o->merged) < 0)
            DIE_SYS("chdir %s", o->merged);
    }
    stage = NE_STAGE_ROOTFS;
    make_dir("proc", 0555);
    do_mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    make_dir("sys", 0555);
    mount_sys("sys", o->has_userns && strcmp(o->net, "new") != 0, o->privileged);
    if (o->privileged)
        setup_machine_dev();
    else
        setup_dev(".");
    make_dir("run", 0755);
    /* An image's own /run stays, as Docker keeps it (FRR's images ship /run/frr for their
     * daemons' pid files). The machine's (image: host, a read-only root) is hidden by a fresh
     * tmpfs: through the overlay its live unix sockets would reach the machine's daemons. */
    if (!o->keep_run)
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
        DIE_SYS("socket");
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
        DIE_SYS("SIOCGIFFLAGS lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
        DIE_SYS("SIOCSIFFLAGS lo");
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

/* A command's environment: the --env values, NULL-terminated. */
static char **env_array(const struct list *envs)
{
    char **envp = calloc((size_t)envs->n + 1, sizeof *envp);

    if (!envp)
        DIE("out of memory");
    for (int i = 0; i < envs->n; i++)
        envp[i] = envs->items[i];
    return envp;
}

/* `value` with `tag` before (prefix) or after it, in new memory. */
static char *tagged(const char *value, const char *tag, int prefix)
{
    char *out;
    if (asprintf(&out, "%s%s", prefix ? tag : value, prefix ? value : tag) < 0)
        DIE("out of memory");
    return out;
}

/* SRC:DST[:ro|rw] of --bind, or SRC:DST of --device: absolute paths with no ':' in them
 * (open_binds splits them there). */
static void check_bind(const char *spec, enum ne_opt id)
{
    const char *dst = strchr(spec, ':'), *mode = dst ? strchr(dst + 1, ':') : NULL;
    int ok = spec[0] == '/' && dst && dst[1] == '/';

    if (mode)
        ok = ok && id == NE_OPT_BIND && (strcmp(mode + 1, "ro") == 0 || strcmp(mode + 1, "rw") == 0);
    if (!ok)
        DIE("bad %s %.200s: %s, absolute paths", ne_options[id].name, spec,
            id == NE_OPT_BIND ? "SRC:DST[:ro|rw]" : "SRC:DST");
}

/* The mounts made after pivot_root, each list in the order given. */
static void read_mounts(const struct args *a, struct run_opts *o)
{
    for (int i = 0; i < a->n; i++) {
        char *v = a->items[i].value;
        switch (a->items[i].id) {
        case NE_OPT_BIND:
            check_bind(v, NE_OPT_BIND);
            list_add(&o->binds, v);
            break;
        case NE_OPT_DEVICE:
            check_bind(v, NE_OPT_DEVICE);
            list_add(&o->binds, tagged(v, ":dev", 0));
            break;
        case NE_OPT_MASK:
            list_add(&o->masks, tagged(v, "m:", 1));
            break;
        case NE_OPT_RO_PATH:
            list_add(&o->masks, tagged(v, "r:", 1));
            break;
        case NE_OPT_RW_PATH:
            list_add(&o->masks, tagged(v, "w:", 1));
            break;
        default:
            break;
        }
    }
}

/* --ipc and --pid: "new", "host" or an absolute path (a namespace file, /proc/PID/ns/KIND). A
 * relative path would be opened from wherever the launcher happens to be. */
static void check_namespace_mode(enum ne_opt id, const char *mode)
{
    if (strcmp(mode, "new") != 0 && strcmp(mode, "host") != 0 && mode[0] != '/')
        DIE("bad %s %.200s: new, host or the absolute path of a namespace", ne_options[id].name, mode);
}

/* Everything `run` was told, checked before anything is done (check-args stops here). */
static void read_run(const struct args *a, struct run_opts *o)
{
    const char *userns = value_of(a, NE_OPT_USERNS, NULL);

    values_of(a, NE_OPT_CGROUP, &o->cgroups);
    values_of(a, NE_OPT_LOWER, &o->lowers);
    values_of(a, NE_OPT_ENV, &o->envs);
    values_of(a, NE_OPT_HIDE, &o->hides);
    o->upper = value_of(a, NE_OPT_UPPER, NULL);
    o->work = value_of(a, NE_OPT_WORK, NULL);
    o->merged = value_of(a, NE_OPT_MERGED, NULL);
    o->hostname = value_of(a, NE_OPT_HOSTNAME, NULL);
    o->net = value_of(a, NE_OPT_NET, "new");
    o->ipc = value_of(a, NE_OPT_IPC, "new");
    o->pid = value_of(a, NE_OPT_PID, "new");
    check_namespace_mode(NE_OPT_IPC, o->ipc);
    check_namespace_mode(NE_OPT_PID, o->pid);
    o->cwd = value_of(a, NE_OPT_CWD, NULL);
    o->read_only = is_given(a, NE_OPT_READ_ONLY);
    o->keep_run = is_given(a, NE_OPT_KEEP_RUN);
    o->privileged = is_given(a, NE_OPT_PRIVILEGED);
    o->has_userns = userns != NULL;
    if (userns)
        parse_idrange(userns, &o->ids);
    read_confinement(a, &o->confine);
    read_mounts(a, o);
    o->cmd = a->cmd;
}

/* Join the namespace at `path` (another host's /proc/PID/ns/KIND). setns with `nstype` refuses a
 * file that is not a namespace of that kind (EINVAL), so a wrong path cannot make us join
 * something else. A PID namespace joined this way holds our children, not us (pid_for_children):
 * the PID 1 forked next is the one in it. */
static void join_ns(const char *path, int nstype, const char *what)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        DIE_SYS("open %s namespace %s", what, path);
    if (setns(fd, nstype) < 0)
        DIE_SYS("setns %s namespace %s", what, path);
    close(fd);
}

/* One of --net, --ipc and --pid: a namespace of our own is unshared later (its flag is added to
 * `flags`), the machine's is kept, another host's is joined now. */
static void choose_ns(const char *mode, int nstype, const char *what, int *flags)
{
    if (strcmp(mode, "new") == 0)
        *flags |= nstype;
    else if (strcmp(mode, "host") != 0)
        join_ns(mode, nstype, what);
}

/* The launcher's side once PID 1 is forked: pass its report on, naming PID 1 by its number on
 * the machine (only this side knows it). */
static int report_start(pid_t pid, int ready_fd)
{
    char buf[STATUS_MAX + 1];
    ssize_t n = read(ready_fd, buf, sizeof buf - 1);

    if (n <= 0) {
        report_error(0, "host init exited during set-up");
        return 1;
    }
    buf[n] = 0;
    int ok = strcmp(buf, NE_STATUS_OK "\n") == 0;
    buf[strcspn(buf, "\n")] = 0;
    if (ok && status_fd >= 0)
        status_line(status_fd, NE_STATUS_OK " %d", pid);
    else if (ok)
        printf("%d\n", pid);
    else if (status_fd >= 0)
        status_line(status_fd, "%s", buf); /* PID 1's own error line, as it is */
    else
        fprintf(stderr, "%s\n", buf);
    return ok ? 0 : 1;
}

/* What is done as the machine's root in the machine's namespaces: the cgroups joined, the bind
 * sources cloned and, for a host with a user namespace, that namespace and the detached overlay
 * made (returned; -1 for the others, whose overlay PID 1 mounts). */
static int prepare_outside(struct run_opts *o, struct bind_mount *binds, int *userns_fd)
{
    int ovl_fd;

    stage = NE_STAGE_CGROUPS;
    join_cgroups(&o->cgroups);
    stage = NE_STAGE_BINDS;
    open_binds(&o->binds, binds, o->privileged);
    if (!o->has_userns)
        return -1;
    stage = NE_STAGE_USERNS;
    *userns_fd = make_userns(&o->ids);
    stage = NE_STAGE_OVERLAY;
    ovl_fd = make_overlay(&o->lowers, o->upper, o->work, *userns_fd,
                          (o->privileged ? 0 : NE_MOUNT_ATTR_NODEV) | (o->read_only ? NE_MOUNT_ATTR_RDONLY : 0));
    /* Reach the mount point while still the machine's root; unshare keeps us there. */
    if (chdir(o->merged) < 0)
        DIE_SYS("chdir %s", o->merged);
    return ovl_fd;
}

/* Another host's network, IPC and PID namespaces joined as the machine's root (setns needs
 * CAP_SYS_ADMIN over the namespace's owner, which root inside a user namespace lacks), then the
 * user namespace entered, so that it owns the namespaces unshared after it. */
static void enter_namespaces(const struct run_opts *o, int userns_fd)
{
    int flags = CLONE_NEWNS | CLONE_NEWUTS;

    stage = NE_STAGE_NAMESPACES;
    choose_ns(o->net, CLONE_NEWNET, "network", &flags);
    choose_ns(o->ipc, CLONE_NEWIPC, "IPC", &flags);
    choose_ns(o->pid, CLONE_NEWPID, "PID", &flags);
    if (userns_fd >= 0) {
        stage = NE_STAGE_USERNS;
        enter_userns(userns_fd); /* first, so that it owns the namespaces made below */
        close(userns_fd);
        stage = NE_STAGE_NAMESPACES;
    }
    if (unshare(flags) < 0)
        DIE_SYS("unshare namespaces");
    if (unshare(CLONE_NEWCGROUP) < 0 && errno != EINVAL)
        DIE_SYS("unshare cgroup namespace");
}

/* The host's PID 1 (the init of its new PID namespace, or a subreaper in a joined one): its root,
 * name, loopback and confinement, then "ok" through `ready` (the launcher passes it on) and the
 * init loop. */
static int become_pid1(struct run_opts *o, int ovl_fd, struct bind_mount *binds, int ready)
{
    int outer_status = status_fd;

    status_fd = ready;
    if (outer_status >= 0)
        close(outer_status);
    /* In a PID namespace that is not the host's own (--pid host or another host's), the orphans
     * of the host's processes would go to that namespace's init (the machine's, or the other
     * host's PID 1): as a subreaper we keep them, and reap them as PID 1 would. */
    if (strcmp(o->pid, "new") != 0 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        DIE_SYS("prctl PR_SET_CHILD_SUBREAPER");
    stage = NE_STAGE_ROOTFS;
    setup_rootfs(o, ovl_fd, binds); /* its /proc is of the PID namespace we are in: ours, or the one joined */
    stage = NE_STAGE_HOST;
    if (o->hostname && sethostname(o->hostname, strlen(o->hostname)) < 0)
        DIE_SYS("sethostname %s", o->hostname);
    if (strcmp(o->net, "new") == 0)
        loopback_up();

    char **envp = env_array(&o->envs);
    stage = NE_STAGE_CONFINE;
    confine(&o->confine, last_cap());
    /* Not dumpable: /proc/1 then belongs to the machine's root, so root inside cannot open
     * /proc/1/exe (this binary, a file of the machine) nor read PID 1's memory. The command's
     * execve makes it dumpable again. */
    if (!o->privileged && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        DIE_SYS("prctl PR_SET_DUMPABLE");
    status_line(status_fd, NE_STATUS_OK);
    close(status_fd);
    status_fd = -1;
    return pid1_loop(o->cmd, envp, o->cwd);
}

static int cmd_run(const struct args *a)
{
    static struct bind_mount binds[MAX_LIST];
    struct run_opts o = {0};
    int pipefd[2], userns_fd = -1, ovl_fd;

    read_run(a, &o);
    ovl_fd = prepare_outside(&o, binds, &userns_fd);
    enter_namespaces(&o, userns_fd);
    /* The child reports "ready" through this pipe so the caller learns of any failure in
     * the mount set-up synchronously, with the reason. */
    stage = NE_STAGE_START;
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        DIE_SYS("pipe");
    pid_t pid = fork();
    if (pid < 0 && errno == ENOMEM && strcmp(o.pid, "new") != 0 && strcmp(o.pid, "host") != 0)
        DIE_SYS("fork into PID namespace %s (has the host that owns it stopped?)", o.pid);
    if (pid < 0)
        DIE_SYS("fork");
    if (pid > 0) {
        close(pipefd[1]);
        return report_start(pid, pipefd[0]);
    }
    close(pipefd[0]);
    return become_pid1(&o, ovl_fd, binds, pipefd[1]);
}

/* ---- exec: CMD inside a running host ---------------------------------------------------
 *
 * exec joins the cgroups and every namespace of host PID, then runs CMD as a child so that the
 * PID namespace applies; the exit status of CMD is ours. */
#define NS_COUNT 7

/* The user namespace first: it is joined apart from the others (see join_target). */
static const char *const ns_names[NS_COUNT] = {"user", "ipc", "uts", "net", "pid", "cgroup", "mnt"};

struct exec_opts {
    struct list cgroups, envs;
    const char *cwd;
    struct confinement confine;
    int tty, has_start_time;
    unsigned long long start_time; /* --start-time: what PID's must be (field 22 of /proc/PID/stat) */
    pid_t target;
    char **cmd;
};

/* A running host as exec enters it: its namespaces and root, and which namespaces we share. */
struct target {
    pid_t pid;
    int ns[NS_COUNT], root, same[NS_COUNT];
};

/* The command's stdio: what the relay copies, and the ends the command gets (-1: its own). */
struct stdio {
    struct channel ch[3];
    int n, child_fd[3];
};

/* Everything `exec` was told, checked before anything is done (check-args stops here). */
static void read_exec(const struct args *a, struct exec_opts *o)
{
    unsigned long long pid;
    const char *end;

    if (!parse_decimal(a->operand, &end, INT_MAX, &pid) || *end || pid == 0)
        DIE("bad PID %.64s: the host's PID 1 on the machine, a number", a->operand);
    o->target = (pid_t)pid;
    values_of(a, NE_OPT_CGROUP, &o->cgroups);
    values_of(a, NE_OPT_ENV, &o->envs);
    o->cwd = value_of(a, NE_OPT_CWD, "/");
    o->tty = is_given(a, NE_OPT_TTY);
    read_confinement(a, &o->confine);
    o->cmd = a->cmd;
    const char *started = value_of(a, NE_OPT_START_TIME, NULL);
    if (started && !(parse_decimal(started, &end, ULLONG_MAX, &o->start_time) && !*end))
        DIE("bad --start-time %.64s: a decimal number of clock ticks", started);
    o->has_start_time = started != NULL;
}

/* The start time of the process that directory `dir` (/proc/PID) was opened for: the field after
 * the 21 that follow the command's name, whose closing parenthesis is the last in the line. */
static unsigned long long start_time_of(int dir, pid_t pid)
{
    char buf[1024], *p;
    unsigned long long started;
    const char *end;
    int fd = openat(dir, "stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);

    if (n < 0)
        DIE_ERR(errno, "read /proc/%d/stat: %s (is the host running?)", pid, strerror(errno));
    close(fd);
    buf[n] = 0;
    p = strrchr(buf, ')');
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (!p || !parse_decimal(p + 1, &end, ULLONG_MAX, &started))
        DIE("cannot read the start time in /proc/%d/stat", pid);
    return started;
}

/* Everything opened first, through one descriptor of /proc/PID: once in the host's mount
 * namespace, /proc is the host's own. The descriptor stays with the process it was opened for
 * (a lookup through it fails once that process exits, even if its PID is given to another), so
 * with --start-time the namespaces joined are those of the host's PID 1 that netemu checked,
 * never those of a process that took its PID since: a host that shares a PID namespace can
 * kill another host's PID 1 and try to take its number while `netemu exec` starts. */
static void open_target(pid_t pid, const struct exec_opts *o, struct target *t)
{
    char path[64];
    int dir;

    t->pid = pid;
    format_into(path, sizeof path, "/proc/%d", pid);
    dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        DIE_ERR(errno, "open %s: %s (is the host running?)", path, strerror(errno));
    for (int i = 0; i < NS_COUNT; i++) {
        format_into(path, sizeof path, "ns/%s", ns_names[i]);
        t->ns[i] = openat(dir, path, O_RDONLY | O_CLOEXEC);
        if (t->ns[i] < 0)
            DIE_ERR(errno, "open /proc/%d/%s: %s (is the host running?)", pid, path, strerror(errno));
    }
    t->root = openat(dir, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (t->root < 0)
        DIE_SYS("open /proc/%d/root", pid);
    /* Read last: the descriptors above then belong to the process whose start time this is. */
    if (o->has_start_time && start_time_of(dir, pid) != o->start_time)
        DIE("process %d is not the host's PID 1 any more (it exited, and its PID went to another process)", pid);
    close(dir);
}

/* Which namespaces we share already, read before any setns: in the host's mount namespace
 * /proc/self is no longer ours. Joining one's own user namespace is refused: those are skipped. */
static void find_shared(struct target *t)
{
    char path[64];

    for (int i = 0; i < NS_COUNT; i++) {
        struct stat mine, theirs;
        format_into(path, sizeof path, "/proc/self/ns/%s", ns_names[i]);
        t->same[i] = stat(path, &mine) == 0 && fstat(t->ns[i], &theirs) == 0 && mine.st_ino == theirs.st_ino;
    }
}

/* As nsenter does: every namespace but the user one while still the machine's root (a userns
 * host on network: container:X sits in a network namespace its own user namespace does not
 * own), then the user namespace, then what the machine's root was refused; then the host's
 * root, and `cwd` in it. */
static void join_target(const struct target *t, const char *cwd)
{
    int refused[NS_COUNT] = {0}, joined_user = 0;

    for (int i = 1; i < NS_COUNT; i++)
        if (!t->same[i] && setns(t->ns[i], 0) < 0)
            refused[i] = errno;
    if (!t->same[0]) {
        if (setns(t->ns[0], 0) < 0)
            DIE_SYS("setns user of %d", t->pid);
        joined_user = 1;
    }
    for (int i = 1; i < NS_COUNT; i++) {
        if (!refused[i] || setns(t->ns[i], 0) == 0)
            continue;
        int err = errno;
        DIE_ERR(err, "setns %s of %d: %s (first attempt: %s)", ns_names[i], t->pid, strerror(err),
                strerror(refused[i]));
    }
    if (joined_user)
        become_root(); /* the host's root, not the machine's uid 0 that it cannot map */
    if (fchdir(t->root) < 0 || chroot(".") < 0)
        DIE_SYS("enter root of %d", t->pid);
    if (chdir(cwd) < 0)
        DIE_SYS("chdir %s", cwd);
}

/* The signals the relay forwards, and SIGCHLD, blocked and read from a signalfd; `old` is the
 * mask the command gets back. */
static int block_signals(sigset_t *old)
{
    static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};
    sigset_t set;

    sigemptyset(&set);
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++)
        sigaddset(&set, forwarded[i]);
    sigprocmask(SIG_BLOCK, &set, old);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0)
        DIE_SYS("signalfd");
    return sfd;
}

/* With --tty the terminal is made inside the host (its own devpts), as docker exec -t does,
 * so the shell owns a controlling terminal of the host and job control works. Without it,
 * nothing of the caller's but an anonymous pipe enters the host: each of stdin, stdout and
 * stderr that is a terminal, a file, a device or a socket is replaced by a pipe we copy, and
 * the command starts a session of its own, with no controlling terminal. Otherwise root
 * inside could read the caller's keystrokes or push its own into the caller's shell
 * (TIOCSTI), or chmod and fill the machine's file that the caller redirected output to
 * (a setuid binary for any local user). */
static void open_stdio(int tty, struct stdio *io)
{
    io->n = 0;
    for (int fd = 0; fd < 3; fd++)
        io->child_fd[fd] = -1;
    if (tty) {
        int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
            DIE_SYS("open a pseudo-terminal in the host");
        copy_winsize(master);
        io->ch[io->n++] = (struct channel){master, STDOUT_FILENO, -1};
        io->ch[io->n++] = (struct channel){STDIN_FILENO, master, 4};
        return;
    }
    for (int fd = 0; fd < 3; fd++) {
        int p[2];
        if (passes_through(fd))
            continue;
        if (pipe2(p, O_CLOEXEC) < 0)
            DIE_SYS("pipe");
        io->child_fd[fd] = fd == 0 ? p[0] : p[1];
        io->ch[io->n++] = fd == 0 ? (struct channel){STDIN_FILENO, p[1], -1} : (struct channel){p[0], fd, -1};
    }
}

/* The child's side: its stdio, not dumpable, confined, then the command. */
static void exec_child(const struct exec_opts *o, const struct stdio *io, const sigset_t *old, char **envp)
    __attribute__((noreturn));
static void exec_child(const struct exec_opts *o, const struct stdio *io, const sigset_t *old, char **envp)
{
    int last = last_cap(); /* read now: once confined, /proc/sys may be another's */

    sigprocmask(SIG_SETMASK, old, NULL);
    if (o->tty) {
        attach_terminal(io->ch[0].from);
    } else {
        for (int fd = 0; fd < 3; fd++)
            if (io->child_fd[fd] >= 0 && dup2(io->child_fd[fd], fd) < 0)
                _exit(126);
        setsid();
    }
    /* Not dumpable until execve: once confined, this process holds no more capabilities than
     * root inside, which could otherwise open its /proc/PID/exe (this binary, a file of the
     * machine) in the moment before the command replaces it. execve makes the command
     * dumpable again. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        DIE_SYS("prctl PR_SET_DUMPABLE");
    confine(&o->confine, last);
    close_inherited();
    exec_in_host(o->cmd, envp);
    fprintf(stderr, "netemu exec: %s: %s\n", o->cmd[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
}

/* The caller's side: the relay until the command exits, the caller's terminal raw meanwhile. */
static int relay_child(pid_t pid, int sfd, struct stdio *io, int tty)
{
    struct termios saved;

    for (int fd = 0; fd < 3; fd++)
        if (io->child_fd[fd] >= 0)
            close(io->child_fd[fd]); /* the child's ends: EOF reaches us once it (and its heirs) close them */
    signal(SIGPIPE, SIG_IGN); /* a command that closed its stdin must not kill the relay */
    int raw = tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (raw) {
        struct termios t = saved;
        cfmakeraw(&t);
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    int status = relay(pid, sfd, io->ch, io->n);
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return status;
}

static int cmd_exec(const struct args *a)
{
    struct exec_opts o = {0};
    struct target t;
    struct stdio io;
    sigset_t old;

    read_exec(a, &o);
    stage = NE_STAGE_JOIN;
    open_target(o.target, &o, &t);
    stage = NE_STAGE_CGROUPS;
    join_cgroups(&o.cgroups);
    stage = NE_STAGE_JOIN;
    find_shared(&t);
    join_target(&t, o.cwd);
    char **envp = env_array(&o.envs);
    stage = NE_STAGE_STDIO;
    int sfd = block_signals(&old);
    open_stdio(o.tty, &io);
    pid_t pid = fork();
    if (pid < 0)
        DIE_SYS("fork");
    if (pid == 0) {
        stage = NE_STAGE_CONFINE;
        exec_child(&o, &io, &old, envp);
    }
    return relay_child(pid, sfd, &io, o.tty);
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
        DIE_SYS("open /proc/self/exe");
    int seals = fcntl(self, F_GET_SEALS); /* EINVAL for a file of a filesystem */
    if (seals != -1 && (seals & F_SEAL_WRITE)) {
        close(self);
        return;
    }
    copy = memfd_create("netemu-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (copy < 0 || fstat(self, &st) < 0)
        DIE_SYS("memfd_create");
    for (off_t done = 0; done < st.st_size;) {
        ssize_t n = sendfile(copy, self, NULL, (size_t)(st.st_size - done));
        if (n <= 0)
            DIE_ERR(n < 0 ? errno : 0, "copy netemu-init into memory: %s", n < 0 ? strerror(errno) : "short read");
        done += n;
    }
    if (fcntl(copy, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
        DIE_SYS("seal the copy of netemu-init");
    close(self);
    fexecve(copy, argv, environ);
    DIE_SYS("run the sealed copy of netemu-init");
}

/* check-args: ARGS read and checked exactly as the subcommand reads them, then printed. */
static int check_args(const struct ne_command *command, int argc, char **argv, struct args *a)
{
    parse_args(argc, argv, command, a);
    if (command->id == NE_CMD_RUN) {
        static struct run_opts o;
        read_run(a, &o);
    } else {
        static struct exec_opts o;
        read_exec(a, &o);
    }
    print_args(a);
    return 0;
}

int main(int argc, char **argv)
{
    static struct args args;
    const struct ne_command *command = argc >= 2 ? find_command(argv[1]) : NULL;

    if (argc >= 3 && strcmp(argv[1], NE_CHECK_ARGS) == 0 && (command = find_command(argv[2])))
        return check_args(command, argc - 3, argv + 3, &args);
    if (!command) {
        fprintf(stderr, "usage: netemu-init run|exec|" NE_CHECK_ARGS " ...\n");
        return 2;
    }
    if (command->id == NE_CMD_EXEC)
        run_sealed(argv); /* first: the command line is read by the sealed copy */
    parse_args(argc - 2, argv + 2, command, &args);
    return command->id == NE_CMD_RUN ? cmd_run(&args) : cmd_exec(&args);
}
