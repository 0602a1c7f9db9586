/*
 * handlers.c - the handler registry, the built-in handlers, the exec
 * handler and the worker process main loop.
 *
 * The registry is filled in the node before any worker forks (built-ins by
 * handlers_init, plugins by handlers_load_plugin), so each worker inherits
 * it as plain memory; workers never change it.
 *
 * Subtle parts:
 *  - exec writes the payload to the child's stdin and reads its stdout and
 *    stderr in one poll() loop, so a child that never reads stdin (or
 *    writes a lot before reading) cannot deadlock the worker. The child's
 *    exit is watched through a pidfd when the kernel has one, else by
 *    polling waitid() every few milliseconds.
 *  - The child runs in its own process group and dies with its worker
 *    (PR_SET_PDEATHSIG). Once it exits, or on timeout or output overflow,
 *    the whole group is SIGKILLed so no straggler keeps our pipes open.
 *  - SIGPIPE is blocked around the stdin writes (a pending one is consumed)
 *    so handlers_run is safe in a process that has not ignored SIGPIPE.
 *  - The worker main reads job frames in bulk and may keep results to
 *    write many at once (rules in handlers.h). A crash signal writes the
 *    kept results before the worker dies (crash_flush), so a finished job's
 *    answer is not lost with a later job that crashed.
 *  - Text that ends up in an error string (stderr head, a `fail` payload, a
 *    plugin's message) is made valid UTF-8, since it travels as a protobuf
 *    string and ends up in JSON.
 */
#include "worker/handlers.h"

#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/chorus.pb-c.h"

#define SLEEP_MS_MAX (3600u * 1000u)
#define EXEC_STDERR_HEAD_BYTES 4096
#define EXEC_CHUNK_BYTES 65536
#define EXEC_DRAIN_AFTER_EXIT_MS 1000 /* pipes held by an escaped grandchild */
#define EXEC_POLL_NO_PIDFD_MS 5
#define ERROR_TEXT_MAX 8192

/* ---- small helpers ---- */

static void set_err(char *err, size_t err_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
	if (err == NULL || err_len == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Replaces, in place, every byte that is not part of a valid UTF-8 sequence
 * (and every control character but \n and \t) with '?'. */
static void text_sanitize(char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned char c = (unsigned char)s[i];
		size_t need;
		uint32_t cp;
		if (c < 0x80) {
			if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
				s[i] = '?';
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else {
			s[i++] = '?';
			continue;
		}
		int ok = len - i > need; /* the continuation bytes are there */
		for (size_t k = 1; ok && k <= need; k++) {
			unsigned char cc = (unsigned char)s[i + k];
			if ((cc & 0xc0) != 0x80)
				ok = 0;
			else
				cp = (cp << 6) | (cc & 0x3f);
		}
		if (ok && ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		           (need == 3 && (cp < 0x10000 || cp > 0x10ffff))))
			ok = 0;
		if (!ok) {
			s[i++] = '?';
			continue;
		}
		i += need + 1;
	}
}

/* malloc'd copy of len bytes of text, sanitized and NUL-terminated. */
static char *text_dup(const void *data, size_t len)
{
	if (len > ERROR_TEXT_MAX)
		len = ERROR_TEXT_MAX;
	char *s = malloc(len + 1);
	if (s == NULL)
		return NULL;
	if (len > 0)
		memcpy(s, data, len);
	s[len] = '\0';
	text_sanitize(s, len);
	return s;
}

/* ---- registry ---- */

static int name_valid(const char *name)
{
	size_t n = 0;
	for (; name[n] != '\0'; n++) {
		char c = name[n];
		if (n >= HANDLER_NAME_MAX)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return 0;
	}
	return n >= 1;
}

const struct handler_entry *handlers_find(const struct handler_registry *reg, const char *name)
{
	if (name == NULL)
		return NULL;
	for (uint32_t i = 0; i < reg->count; i++)
		if (strcmp(reg->entries[i].name, name) == 0)
			return &reg->entries[i];
	return NULL;
}

/* 0, or -1 with a reason in why. */
static int registry_add(struct handler_registry *reg, const char *name, chorus_handler_fn fn,
                        int builtin, char *why, size_t why_len)
{
	if (name == NULL || !name_valid(name)) {
		set_err(why, why_len, "handler name \"%.64s\" is invalid (want [a-z0-9_.-]{1,63})",
		        name ? name : "(null)");
		return -1;
	}
	if (handlers_find(reg, name) != NULL) {
		set_err(why, why_len, "handler %s already registered", name);
		return -1;
	}
	if (reg->count >= HANDLERS_MAX) {
		set_err(why, why_len, "too many handlers (max %d)", HANDLERS_MAX);
		return -1;
	}
	struct handler_entry *e = &reg->entries[reg->count++];
	memset(e, 0, sizeof *e);
	snprintf(e->name, sizeof e->name, "%s", name);
	e->fn = fn;
	e->builtin = builtin;
	return 0;
}

/* ---- built-ins ---- */

static int h_echo(const uint8_t *payload, size_t len, struct chorus_handler_out *out)
{
	return out->append(out, payload, len) == 0 ? 0 : 1;
}

static int h_sleep(const uint8_t *payload, size_t len, struct chorus_handler_out *out)
{
	size_t i = 0, end = len;
	while (i < end && (payload[i] == ' ' || payload[i] == '\t' || payload[i] == '\n' ||
	                   payload[i] == '\r'))
		i++;
	while (end > i && (payload[end - 1] == ' ' || payload[end - 1] == '\t' ||
	                   payload[end - 1] == '\n' || payload[end - 1] == '\r'))
		end--;
	if (i == end) {
		snprintf(out->error, sizeof out->error,
		         "sleep: payload must be milliseconds as decimal text, got nothing");
		return 1;
	}
	uint64_t ms = 0;
	for (size_t k = i; k < end; k++) {
		if (payload[k] < '0' || payload[k] > '9') {
			snprintf(out->error, sizeof out->error,
			         "sleep: payload must be milliseconds as decimal text");
			return 1;
		}
		ms = ms * 10 + (uint64_t)(payload[k] - '0');
		if (ms > SLEEP_MS_MAX) {
			snprintf(out->error, sizeof out->error,
			         "sleep: at most %u ms (1 hour) allowed", SLEEP_MS_MAX);
			return 1;
		}
	}
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += (time_t)(ms / 1000);
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
		;
	return 0;
}

static int h_sha256(const uint8_t *payload, size_t len, struct chorus_handler_out *out)
{
	static const uint8_t empty[1];
	unsigned char digest[crypto_hash_sha256_BYTES];
	char hex[crypto_hash_sha256_BYTES * 2 + 1];
	crypto_hash_sha256(digest, len > 0 ? payload : empty, len);
	sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
	return out->append(out, hex, strlen(hex)) == 0 ? 0 : 1;
}

static int h_fail(const uint8_t *payload, size_t len, struct chorus_handler_out *out)
{
	if (len == 0) {
		snprintf(out->error, sizeof out->error, "failed on purpose");
		return 1;
	}
	size_t n = len < sizeof out->error - 1 ? len : sizeof out->error - 1;
	memcpy(out->error, payload, n);
	out->error[n] = '\0';
	return 1;
}

static int h_crash(const uint8_t *payload, size_t len, struct chorus_handler_out *out)
{
	(void)payload;
	(void)len;
	(void)out;
	abort();
}

int handlers_init(struct handler_registry *reg, const char *const *exec_allow)
{
	memset(reg, 0, sizeof *reg);
	if (sodium_init() < 0)
		return -1;
	static const struct {
		const char *name;
		chorus_handler_fn fn;
	} builtins[] = {
		{"echo", h_echo},   {"sleep", h_sleep}, {"sha256", h_sha256},
		{"fail", h_fail},   {"crash", h_crash}, {"exec", NULL},
	};
	for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
		int rc = registry_add(reg, builtins[i].name, builtins[i].fn, 1, NULL, 0);
		assert(rc == 0);
		(void)rc;
	}
	uint32_t n = 0;
	while (exec_allow != NULL && exec_allow[n] != NULL)
		n++;
	reg->exec_allow = calloc((size_t)n + 1, sizeof *reg->exec_allow);
	if (reg->exec_allow == NULL)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		/* Only absolute paths can match; a relative entry is a config bug. */
		if (exec_allow[i][0] != '/' || (reg->exec_allow[i] = strdup(exec_allow[i])) == NULL) {
			handlers_free(reg);
			return -1;
		}
		reg->exec_allow_count++;
	}
	return 0;
}

void handlers_free(struct handler_registry *reg)
{
	if (reg->exec_allow != NULL) {
		for (uint32_t i = 0; i < reg->exec_allow_count; i++)
			free(reg->exec_allow[i]);
		free(reg->exec_allow);
	}
	for (uint32_t i = 0; i < reg->plugin_count; i++)
		dlclose(reg->plugin_handles[i]);
	memset(reg, 0, sizeof *reg);
}

int handlers_exec_allowed(const struct handler_registry *reg, const char *path)
{
	if (path == NULL || path[0] != '/')
		return 0;
	for (uint32_t i = 0; i < reg->exec_allow_count; i++)
		if (strcmp(reg->exec_allow[i], path) == 0)
			return 1;
	return 0;
}

/* ---- plugins ---- */

struct plugin_load {
	struct handler_registry *reg;
	char failure[192]; /* first registration error, "" when none */
};

static int plugin_register(const struct chorus_plugin_api *api, const char *name,
                           chorus_handler_fn fn)
{
	struct plugin_load *ctx = api->impl;
	char why[sizeof ctx->failure];
	if (fn == NULL) {
		snprintf(why, sizeof why, "handler %.64s has no function", name ? name : "(null)");
	} else if (registry_add(ctx->reg, name, fn, 0, why, sizeof why) == 0) {
		return 0;
	}
	if (ctx->failure[0] == '\0')
		snprintf(ctx->failure, sizeof ctx->failure, "%s", why);
	return -1;
}

typedef int (*plugin_init_fn)(const struct chorus_plugin_api *api);

int handlers_load_plugin(struct handler_registry *reg, const char *path, char *err, size_t err_len)
{
	uint32_t max = sizeof reg->plugin_handles / sizeof reg->plugin_handles[0];
	if (path == NULL || path[0] == '\0') {
		/* dlopen(NULL) would hand back the main program itself. */
		set_err(err, err_len, "plugin: empty path");
		return -1;
	}
	if (reg->plugin_count >= max) {
		set_err(err, err_len, "plugin %s: too many plugins (max %u)", path, max);
		return -1;
	}
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *why = dlerror();
		set_err(err, err_len, "plugin %s: dlopen: %s", path, why ? why : "unknown error");
		return -1;
	}
	dlerror();
	void *sym = dlsym(h, "chorus_plugin_init");
	if (sym == NULL) {
		dlclose(h);
		set_err(err, err_len, "plugin %s: no chorus_plugin_init", path);
		return -1;
	}
	plugin_init_fn init;
	memcpy(&init, &sym, sizeof init); /* POSIX: object pointer to function pointer */

	uint32_t count_before = reg->count;
	struct plugin_load ctx = {.reg = reg};
	struct chorus_plugin_api api = {
		.api_version = CHORUS_PLUGIN_API_VERSION,
		.register_handler = plugin_register,
		.impl = &ctx,
	};
	int rc = init(&api);
	if (rc != 0 || ctx.failure[0] != '\0') {
		/* Undo this plugin's registrations: none of its handlers may stay
		 * behind pointing into a closed object. */
		memset(&reg->entries[count_before], 0,
		       (reg->count - count_before) * sizeof reg->entries[0]);
		reg->count = count_before;
		dlclose(h);
		if (ctx.failure[0] != '\0')
			set_err(err, err_len, "plugin %s: %s", path, ctx.failure);
		else
			set_err(err, err_len, "plugin %s: init returned %d", path, rc);
		return -1;
	}
	reg->plugin_handles[reg->plugin_count++] = h;
	return 0;
}

/* ---- output sink given to handlers ---- */

struct out_buf {
	uint8_t *data;
	size_t len, cap, max;
	int capped; /* a handler tried to go past max */
	int oom;
};

static int out_append(struct chorus_handler_out *out, const void *data, size_t len)
{
	struct out_buf *b = out->impl;
	assert(b->len <= b->max);
	size_t take = len < b->max - b->len ? len : b->max - b->len;
	if (take > 0) {
		if (b->len + take > b->cap) {
			size_t cap = b->cap ? b->cap : 4096;
			while (cap < b->len + take)
				cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
			if (cap > b->max)
				cap = b->max;
			uint8_t *p = realloc(b->data, cap);
			if (p == NULL) {
				b->oom = 1;
				return -1;
			}
			b->data = p;
			b->cap = cap;
		}
		memcpy(b->data + b->len, data, take);
		b->len += take;
	}
	if (take < len) {
		b->capped = 1;
		return -1;
	}
	return 0;
}

/* ---- exec ---- */

/* pipe2(O_CLOEXEC) whose ends are both >= 3, so the child's dup2 onto
 * 0/1/2 can never clobber one of them. */
static int pipe_high(int p[2])
{
	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		if (p[i] >= 3)
			continue;
		int hi = fcntl(p[i], F_DUPFD_CLOEXEC, 3);
		if (hi < 0) {
			close(p[0]);
			close(p[1]);
			return -1;
		}
		close(p[i]);
		p[i] = hi;
	}
	return 0;
}

static void close_from(int lowfd)
{
	if (close_range((unsigned)lowfd, ~0u, 0) == 0)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (int fd = lowfd; fd < max; fd++)
		close(fd);
}

static void write_str(int fd, const char *s)
{
	ssize_t r = write(fd, s, strlen(s));
	(void)r;
}

static __attribute__((noreturn)) void exec_child(const char *const *argv, int in_r, int out_w,
                                                 int err_w, pid_t parent)
{
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent) /* the worker died before prctl took effect */
		_exit(127);
	if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
		_exit(127);
	/* Dispositions set to "ignore" and the blocked mask survive execv. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	close_from(3);
	execv(argv[0], (char *const *)argv);
	int e = errno;
	write_str(2, "exec ");
	write_str(2, argv[0]);
	write_str(2, ": ");
	write_str(2, strerror(e));
	write_str(2, "\n");
	_exit(127);
}

struct exec_state {
	pid_t pid;
	int in_fd, out_fd, err_fd, pid_fd;
	char err_head[EXEC_STDERR_HEAD_BYTES];
	size_t err_head_len;
};

static void fd_close(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

static void group_kill(pid_t pid)
{
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL); /* in case the child had not run setpgid yet */
}

/* 1 if the child has exited (left as a zombie, not reaped). */
static int child_exited(pid_t pid)
{
	siginfo_t si;
	memset(&si, 0, sizeof si);
	if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
		return errno == ECHILD;
	return si.si_pid == pid;
}

static void exec_fail(struct handler_run_result *res, char *msg)
{
	res->ok = 0;
	free(res->error);
	res->error = msg;
}

static void run_exec(const struct handler_registry *reg, const uint8_t *payload,
                     size_t payload_len, const char *const *argv, uint32_t timeout_ms,
                     struct out_buf *ob, struct handler_run_result *res)
{
	if (argv == NULL || argv[0] == NULL) {
		exec_fail(res, str_printf("exec: argv is empty"));
		return;
	}
	/* Defence in depth: the node checked at submit; a worker checks too. */
	if (!handlers_exec_allowed(reg, argv[0])) {
		exec_fail(res, str_printf("exec: %.512s is not in the exec allowlist", argv[0]));
		return;
	}
	int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
	if (pipe_high(in_p) != 0 || pipe_high(out_p) != 0 || pipe_high(err_p) != 0) {
		int e = errno;
		int *all[] = {&in_p[0], &in_p[1], &out_p[0], &out_p[1], &err_p[0], &err_p[1]};
		for (size_t i = 0; i < 6; i++)
			fd_close(all[i]);
		exec_fail(res, str_printf("exec: pipe: %s", strerror(e)));
		return;
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		int *all[] = {&in_p[0], &in_p[1], &out_p[0], &out_p[1], &err_p[0], &err_p[1]};
		for (size_t i = 0; i < 6; i++)
			fd_close(all[i]);
		exec_fail(res, str_printf("exec: fork: %s", strerror(e)));
		return;
	}
	if (pid == 0)
		exec_child(argv, in_p[0], out_p[1], err_p[1], parent);

	setpgid(pid, pid); /* races with the child's own call; either wins */
	close(in_p[0]);
	close(out_p[1]);
	close(err_p[1]);
	struct exec_state st = {
		.pid = pid, .in_fd = in_p[1], .out_fd = out_p[0], .err_fd = err_p[0], .pid_fd = -1,
	};
	st.pid_fd = (int)syscall(SYS_pidfd_open, pid, 0);
	fcntl(st.in_fd, F_SETFL, O_NONBLOCK);
	fcntl(st.out_fd, F_SETFL, O_NONBLOCK);
	fcntl(st.err_fd, F_SETFL, O_NONBLOCK);
	if (payload_len == 0)
		fd_close(&st.in_fd);

	sigset_t pipe_set, old_mask;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);

	uint64_t start_ms = now_ms();
	uint64_t deadline_ms = timeout_ms ? start_ms + timeout_ms : 0;
	uint64_t drain_until_ms = 0;
	size_t in_off = 0;
	int exited = 0, timed_out = 0;
	uint8_t *chunk = malloc(EXEC_CHUNK_BYTES);
	if (chunk == NULL) {
		group_kill(pid);
		ob->oom = 1;
	}

	while (chunk != NULL && !ob->capped && !ob->oom) {
		if (exited && st.out_fd < 0 && st.err_fd < 0)
			break;
		uint64_t now = now_ms();
		if (!exited && deadline_ms && now >= deadline_ms) {
			timed_out = 1;
			break;
		}
		if (exited && now >= drain_until_ms)
			break;
		struct pollfd pfd[4];
		int n = 0, i_in = -1, i_out = -1, i_err = -1, i_pid = -1;
		if (st.in_fd >= 0) {
			i_in = n;
			pfd[n++] = (struct pollfd){.fd = st.in_fd, .events = POLLOUT};
		}
		if (st.out_fd >= 0) {
			i_out = n;
			pfd[n++] = (struct pollfd){.fd = st.out_fd, .events = POLLIN};
		}
		if (st.err_fd >= 0) {
			i_err = n;
			pfd[n++] = (struct pollfd){.fd = st.err_fd, .events = POLLIN};
		}
		if (!exited && st.pid_fd >= 0) {
			i_pid = n;
			pfd[n++] = (struct pollfd){.fd = st.pid_fd, .events = POLLIN};
		}
		int wait_ms = -1;
		uint64_t until = exited ? drain_until_ms : deadline_ms;
		if (until)
			wait_ms = (int)(until > now ? (until - now > INT_MAX ? INT_MAX : until - now) : 0);
		if (!exited && st.pid_fd < 0 && (wait_ms < 0 || wait_ms > EXEC_POLL_NO_PIDFD_MS))
			wait_ms = EXEC_POLL_NO_PIDFD_MS;
		int pr = poll(pfd, (nfds_t)n, wait_ms);
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			group_kill(pid);
			exec_fail(res, str_printf("exec: poll: %s", strerror(errno)));
			break;
		}
		if (i_in >= 0 && pfd[i_in].revents) {
			size_t left = payload_len - in_off;
			ssize_t w = write(st.in_fd, payload + in_off, left);
			if (w > 0) {
				in_off += (size_t)w;
				if (in_off == payload_len)
					fd_close(&st.in_fd);
			} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
				/* The child closed its stdin (EPIPE): it wants no more. */
				if (errno == EPIPE) {
					struct timespec zero = {0, 0};
					sigtimedwait(&pipe_set, NULL, &zero);
				}
				fd_close(&st.in_fd);
			}
		}
		if (i_out >= 0 && pfd[i_out].revents) {
			ssize_t r = read(st.out_fd, chunk, EXEC_CHUNK_BYTES);
			if (r > 0) {
				struct chorus_handler_out o = {.impl = ob};
				out_append(&o, chunk, (size_t)r);
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				fd_close(&st.out_fd);
			}
		}
		if (i_err >= 0 && pfd[i_err].revents) {
			ssize_t r = read(st.err_fd, chunk, EXEC_CHUNK_BYTES);
			if (r > 0) {
				size_t room = sizeof st.err_head - st.err_head_len;
				size_t take = (size_t)r < room ? (size_t)r : room;
				memcpy(st.err_head + st.err_head_len, chunk, take);
				st.err_head_len += take;
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				fd_close(&st.err_fd);
			}
		}
		if (!exited && (st.pid_fd < 0 || (i_pid >= 0 && pfd[i_pid].revents)) &&
		    child_exited(pid)) {
			/* Kill leftovers in its group while the zombie still pins the
			 * pgid, so the pipes reach EOF. */
			exited = 1;
			kill(-pid, SIGKILL);
			fd_close(&st.in_fd);
			drain_until_ms = now_ms() + EXEC_DRAIN_AFTER_EXIT_MS;
		}
	}
	if (!exited || ob->capped || ob->oom || timed_out)
		group_kill(pid);
	fd_close(&st.in_fd);
	fd_close(&st.out_fd);
	fd_close(&st.err_fd);
	fd_close(&st.pid_fd);
	free(chunk);
	{
		/* Consume a SIGPIPE left pending by a late write before unblocking. */
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);

	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status))
		res->exit_code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		res->exit_code = 128 + WTERMSIG(status);

	if (res->error != NULL)
		return; /* poll failure, already reported */
	if (ob->capped) {
		exec_fail(res, str_printf("output exceeds %zu bytes", ob->max));
	} else if (ob->oom) {
		exec_fail(res, str_printf("exec: out of memory"));
	} else if (timed_out) {
		exec_fail(res, str_printf("timed out after %u ms", timeout_ms));
	} else if (WIFSIGNALED(status)) {
		exec_fail(res, str_printf("killed by signal %d", WTERMSIG(status)));
	} else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
		size_t n = st.err_head_len;
		while (n > 0 && (st.err_head[n - 1] == '\n' || st.err_head[n - 1] == '\r' ||
		                 st.err_head[n - 1] == ' '))
			n--;
		char *head = text_dup(st.err_head, n);
		if (head != NULL && n > 0)
			exec_fail(res, str_printf("exit status %d: %s", WEXITSTATUS(status), head));
		else
			exec_fail(res, str_printf("exit status %d", WEXITSTATUS(status)));
		free(head);
	} else {
		res->ok = 1;
	}
}

/* ---- running one job ---- */

void handlers_run(const struct handler_registry *reg, const char *handler, const uint8_t *payload,
                  size_t payload_len, const char *const *argv, uint32_t timeout_ms,
                  size_t output_max, struct handler_run_result *res)
{
	memset(res, 0, sizeof *res);
	struct out_buf ob = {.max = output_max};
	const struct handler_entry *e = handlers_find(reg, handler);
	if (e == NULL) {
		res->error = str_printf("unknown handler %.64s", handler ? handler : "(null)");
		return;
	}
	if (payload == NULL)
		payload_len = 0;
	if (e->fn == NULL) {
		assert(strcmp(e->name, "exec") == 0);
		run_exec(reg, payload, payload_len, argv, timeout_ms, &ob, res);
	} else {
		struct chorus_handler_out out = {.append = out_append, .impl = &ob};
		int rc = e->fn(payload, payload_len, &out);
		out.error[sizeof out.error - 1] = '\0';
		res->exit_code = out.exit_code;
		if (ob.capped) {
			res->error = str_printf("output exceeds %zu bytes", output_max);
		} else if (ob.oom) {
			res->error = str_printf("%s: out of memory", e->name);
		} else if (rc != 0) {
			if (out.error[0] != '\0')
				res->error = text_dup(out.error, strlen(out.error));
			else
				res->error = str_printf("%s: failed (returned %d)", e->name, rc);
		} else {
			res->ok = 1;
		}
	}
	res->output = ob.data;
	res->output_len = ob.len;
	if (!res->ok && res->error == NULL)
		res->error = str_printf("%s: failed", e->name);
	assert(res->output_len <= output_max);
}

/* ---- the worker process ---- */

static int write_full(int fd, const uint8_t *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(fd, buf + done, len - done);
		if (w > 0)
			done += (size_t)w;
		else if (w < 0 && errno != EINTR)
			return -1;
	}
	return 0;
}

static void worker_signals_reset(void)
{
	static const int to_default[] = {SIGTERM, SIGINT, SIGCHLD, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof to_default / sizeof to_default[0]; i++)
		signal(to_default[i], SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	/* The node blocks signals it reads through a signalfd; a worker must
	 * not inherit that mask. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Waits while the node's heartbeat is stale (the node is stopped or
 * stalled). 1 when the job must be handed back: the node was held up since
 * it gave the job (its coordinator may run it elsewhere by now). */
static int job_withdrawn(const struct handlers_beat *beat, uint64_t job_epoch)
{
	if (!beat)
		return 0;
	uint64_t stale = atomic_load(&((struct handlers_beat *)beat)->stale_ms);
	if (!stale)
		stale = 1000;
	for (;;) {
		uint64_t alive = atomic_load(&((struct handlers_beat *)beat)->alive_ms);
		if (!alive || now_ms() - alive < stale)
			break;
		struct timespec d = {0, 20 * 1000 * 1000};
		nanosleep(&d, NULL);
	}
	return job_epoch < atomic_load(&((struct handlers_beat *)beat)->epoch);
}

/* 1 while the node's heartbeat is fresh: job_withdrawn will not wait. */
static int beat_fresh(const struct handlers_beat *beat)
{
	if (!beat)
		return 1;
	uint64_t stale = atomic_load(&((struct handlers_beat *)beat)->stale_ms);
	if (!stale)
		stale = 1000;
	uint64_t alive = atomic_load(&((struct handlers_beat *)beat)->alive_ms);
	return !alive || now_ms() - alive < stale;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The job frames read but not run yet: [off, len) of buf. */
struct job_in {
	uint8_t *buf;
	size_t off, len, cap;
};

/* Result frames run but not written yet (see handlers_worker_run). */
struct results_out {
	uint8_t *buf;
	size_t len, cap;
	uint32_t count;
};

/* Per handler: an EWMA of its run time and whether it can be trusted. */
struct run_stats {
	uint32_t ewma_us[HANDLERS_MAX];
	uint32_t last_us[HANDLERS_MAX];
	uint8_t samples[HANDLERS_MAX];
};

/* What a crashing worker still writes (see crash_flush). Set only while
 * the buffer holds whole frames and the main loop is not changing it. */
static const uint8_t *volatile g_crash_buf;
static volatile size_t g_crash_len;
static volatile int g_crash_fd = -1;

/* A handler crashed the worker (SIGSEGV, abort, ...): the results it was
 * keeping behind that job ran to completion, so they go out before it dies
 * (the node reads them before it reports the worker's jobs lost). Only
 * write(2) and raise(3) here: async-signal-safe. */
static void crash_flush(int sig)
{
	const uint8_t *b = g_crash_buf;
	size_t len = g_crash_len, off = 0;
	g_crash_len = 0;
	while (b != NULL && off < len) {
		ssize_t w = write(g_crash_fd, b + off, len - off);
		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno == EINTR)
			continue;
		else
			break;
	}
	raise(sig); /* SA_RESETHAND: the default action now, SA_NODEFER: at once */
}

static void crash_flush_install(int fd)
{
	g_crash_fd = fd;
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = crash_flush;
	sa.sa_flags = (int)(SA_RESETHAND | SA_NODEFER);
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
}

/* The pending results as a crash would write them (whole frames only). */
static void crash_expose(const struct results_out *o)
{
	g_crash_len = 0;
	g_crash_buf = o->buf;
	g_crash_len = o->len;
}

static void results_flush(int fd, struct results_out *o)
{
	if (o->len == 0)
		return;
	g_crash_len = 0;
	if (write_full(fd, o->buf, o->len) != 0)
		_exit(HANDLERS_EXIT_WRITE);
	o->len = 0;
	o->count = 0;
}

/* 1 when handler h's recent runs were all short: its result may wait for
 * the next job's. A handler never seen is not known to be short. */
static int known_short(const struct run_stats *rs, int h)
{
	return h >= 0 && rs->samples[h] >= HANDLERS_SHORT_SAMPLES_MIN &&
	       rs->ewma_us[h] < HANDLERS_SHORT_EWMA_US && rs->last_us[h] < HANDLERS_SHORT_LAST_US;
}

static void stats_add(struct run_stats *rs, int h, uint64_t us)
{
	if (h < 0)
		return;
	uint32_t v = us > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)us;
	rs->ewma_us[h] = rs->samples[h] ? (uint32_t)(((uint64_t)rs->ewma_us[h] * 7 + v) / 8) : v;
	rs->last_us[h] = v;
	if (rs->samples[h] < UINT8_MAX)
		rs->samples[h]++;
}

/* The next complete job frame in `in` (body at *body, *len bytes), 1; 0
 * when none is complete yet. Exits on an oversized frame. */
static int job_next(struct job_in *in, const uint8_t **body, uint32_t *len)
{
	size_t have = in->len - in->off;
	if (have < 4)
		return 0;
	const uint8_t *h = in->buf + in->off;
	uint32_t n = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
	if (n > HANDLERS_JOB_FRAME_BYTES_MAX)
		_exit(HANDLERS_EXIT_BAD_FRAME);
	if (have - 4 < n)
		return 0;
	*body = h + 4;
	*len = n;
	return 1;
}

/* Reads what the socket has (blocking until something comes) into `in`,
 * with room for at least the rest of the frame being assembled. Exits on
 * EOF: cleanly between frames, as a bad frame in the middle of one. */
static void job_read(int fd, struct job_in *in)
{
	if (in->off > 0) {
		memmove(in->buf, in->buf + in->off, in->len - in->off);
		in->len -= in->off;
		in->off = 0;
	}
	size_t want = in->len + HANDLERS_READ_CHUNK_BYTES;
	if (in->len >= 4) {
		const uint8_t *h = in->buf;
		size_t frame = 4 + ((size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 |
		                    (size_t)h[3] << 24);
		if (frame > want)
			want = frame;
	}
	if (in->cap < want) {
		size_t cap = in->cap ? in->cap : HANDLERS_READ_CHUNK_BYTES;
		while (cap < want)
			cap *= 2;
		uint8_t *p = realloc(in->buf, cap);
		if (p == NULL)
			_exit(HANDLERS_EXIT_NOMEM);
		in->buf = p;
		in->cap = cap;
	}
	for (;;) {
		ssize_t r = read(fd, in->buf + in->len, in->cap - in->len);
		if (r > 0) {
			in->len += (size_t)r;
			return;
		}
		if (r == 0)
			_exit(in->len == 0 ? HANDLERS_EXIT_EOF : HANDLERS_EXIT_BAD_FRAME);
		if (errno != EINTR)
			_exit(HANDLERS_EXIT_BAD_FRAME);
	}
}

static void result_append(struct results_out *o, const Chorus__WorkerResult *res)
{
	g_crash_len = 0; /* the buffer may move: nothing to write until it is whole again */
	size_t body_len = chorus__worker_result__get_packed_size(res);
	if (o->cap - o->len < 4 + body_len) {
		size_t cap = o->cap ? o->cap : 4096;
		while (cap - o->len < 4 + body_len)
			cap *= 2;
		uint8_t *p = realloc(o->buf, cap);
		if (p == NULL)
			_exit(HANDLERS_EXIT_NOMEM);
		o->buf = p;
		o->cap = cap;
	}
	uint8_t *f = o->buf + o->len;
	f[0] = (uint8_t)body_len;
	f[1] = (uint8_t)(body_len >> 8);
	f[2] = (uint8_t)(body_len >> 16);
	f[3] = (uint8_t)(body_len >> 24);
	chorus__worker_result__pack(res, f + 4);
	o->len += 4 + body_len;
	o->count++;
	crash_expose(o);
}

void handlers_worker_main(const struct handler_registry *reg, int fd,
                          const struct handlers_beat *beat)
{
	handlers_worker_run(reg, fd, beat, NULL);
}

void handlers_worker_run(const struct handler_registry *reg, int fd,
                         const struct handlers_beat *beat, struct handlers_progress *progress)
{
	worker_signals_reset();
	crash_flush_install(fd);
	struct job_in in = {0};
	struct results_out out = {0};
	struct run_stats *rs = calloc(1, sizeof *rs);
	if (rs == NULL)
		_exit(HANDLERS_EXIT_NOMEM);
	uint64_t begun = 0, run_total = 0;
	for (;;) {
		const uint8_t *body;
		uint32_t len;
		if (!job_next(&in, &body, &len)) {
			/* nothing to run: what is done goes out before we wait */
			results_flush(fd, &out);
			job_read(fd, &in);
			continue;
		}
		Chorus__WorkerJob *job = chorus__worker_job__unpack(NULL, len, body);
		in.off += 4 + (size_t)len;
		if (job == NULL)
			_exit(HANDLERS_EXIT_BAD_FRAME);
		const struct handler_entry *e = handlers_find(reg, job->handler);
		int h = e ? (int)(e - reg->entries) : -1;
		/* A result waits only behind a job known to be short and only
		 * while the node is not held up (job_withdrawn may wait then). */
		if (out.count > 0 && (!known_short(rs, h) || !beat_fresh(beat)))
			results_flush(fd, &out);

		const char **argv = NULL;
		if (job->n_argv > 0) {
			argv = calloc(job->n_argv + 1, sizeof *argv);
			if (argv == NULL)
				_exit(HANDLERS_EXIT_NOMEM);
			for (size_t i = 0; i < job->n_argv; i++)
				argv[i] = job->argv[i];
		}
		/* The node reads this if we die: jobs up to `begun` started (the
		 * last one was running, those before it ran and their results
		 * may be among those not written yet); the rest never did. */
		struct handler_run_result res;
		int withdrawn = job_withdrawn(beat, job->epoch);
		begun++;
		if (progress)
			atomic_store_explicit(&progress->begun, begun, memory_order_release);
		if (withdrawn) {
			memset(&res, 0, sizeof(res));
			res.error = strdup("withdrawn: the node was held up before it started");
		} else {
			uint64_t t0 = now_us();
			handlers_run(reg, job->handler, job->payload.data, job->payload.len, argv,
			             job->timeout_ms, job->output_max, &res);
			uint64_t took = now_us() - t0;
			stats_add(rs, h, took);
			run_total += took; /* only this process writes it: no RMW */
			if (progress)
				atomic_store_explicit(&progress->run_us, run_total, memory_order_relaxed);
		}
		free(argv);

		Chorus__WorkerResult r = CHORUS__WORKER_RESULT__INIT;
		r.withdrawn = withdrawn;
		r.task_id = job->task_id;
		r.ok = res.ok ? 1 : 0;
		r.output.data = res.output;
		r.output.len = res.output_len;
		r.exit_code = res.exit_code;
		if (res.error != NULL)
			r.error = res.error;
		result_append(&out, &r);
		chorus__worker_job__free_unpacked(job, NULL);
		free(res.output);
		free(res.error);
		/* a job handed back never ran: its answer must not be lost with
		 * a later job (the node would count it as run) */
		if (withdrawn || out.count >= HANDLERS_RESULTS_BATCH_MAX ||
		    out.len >= HANDLERS_RESULTS_BATCH_BYTES)
			results_flush(fd, &out);
	}
}
