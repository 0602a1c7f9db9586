/*
 * bench.c - bench_chorus: what a real chorusd costs, next to the floor.
 *
 * One run measures, in this order:
 *   1. the floor: a raw nng req0/rep0 round trip on loopback TCP between
 *      this process and an in-process echo thread, with the same payload
 *      size as the tasks (no sealing, no journal, no worker);
 *   2. a real node (fork/exec chorusd with a temporary data dir), waited for
 *      by its secret file and a successful handshake, deadline-bounded;
 *   3. submit-and-await latency of the echo handler, sequential;
 *   4. fan-out throughput: one ch_map of N echo tasks (journal on);
 *   5. concurrent submit-and-await throughput: 8 threads sharing one client;
 *   6. node RSS when idle and when it holds 100,000 finished results;
 *   7. (unless --skip-full) 3 and 4 again on a node with --synchronous full.
 * Every figure is printed with its ratio to a same-run floor: latencies to
 * the floor round trip, rates to the floor's sequential round trips/s, RSS to
 * this bench process's own RSS (nng + libchorus + libsodium loaded).
 *
 * Targets are reported MET / MISSED, never asserted: the exit code is
 * non-zero only when the node cannot be started or a call (or a result)
 * is wrong. Percentiles are nearest-rank over sorted CLOCK_MONOTONIC
 * samples. The node is always stopped (SIGTERM, then SIGKILL after a
 * deadline) and its temporary directory removed; PR_SET_PDEATHSIG makes
 * it die with us if we are killed.
 */
#include "chorus.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD_BYTES 64
#define HANDLER "echo"
#define FIGURES_MAX 48
#define CONCURRENT_THREADS 8
#define CONCURRENT_SAMPLES_MAX 200000u   /* per thread; beyond it calls are only counted */
#define NODE_START_DEADLINE_MS 20000
#define NODE_STOP_DEADLINE_MS 15000
#define CALL_WAIT_MS 30000u              /* ch_submit_await wait for one echo */
#define MAP_DEADLINE_MS 300000u          /* one ch_map of at most 10,000 echoes */
#define MAP_CHUNK_TASKS_MAX 10000u
#define FANOUT_ROUNDS 3u                 /* odd: the median is one round */
#define CLIENT_TIMEOUT_MS 10000u
#define CLIENT_CONTEXTS 16u
#define LOG_TAIL_BYTES 4096
#define ROOT_DIR_BYTES_MAX 512             /* the temporary directory */
#define DIR_BYTES_MAX (ROOT_DIR_BYTES_MAX + 64) /* a node's data dir in it */
#define STREAM_MEMBERS_MAX 4               /* --stream-nodes: members beside the coordinator */
#define CLUSTER_FORM_DEADLINE_MS 20000

/* Targets (reported, never asserted). */
#define TARGET_AWAIT_P50_RATIO_MAX 5.0
#define TARGET_FANOUT_TASKS_PER_S_MIN 20000.0
#define TARGET_IDLE_RSS_MIB_MAX 16.0
#define TARGET_STREAM_RSS_GROWTH_MAX 1.25 /* peak RSS, 10x the input */

struct counts {
	uint32_t floor_warmup, floor_round_trips;
	uint32_t await_warmup, await_calls;
	uint32_t fanout_tasks;
	uint32_t concurrent_ms;
	uint32_t held_results;
	uint32_t full_await_warmup, full_await_calls;
	uint32_t full_fanout_tasks;
	uint32_t stream_small, stream_large; /* --stream: two sizes, 10x apart */
};

static const struct counts counts_full = {
	.floor_warmup = 500, .floor_round_trips = 5000,
	.await_warmup = 200, .await_calls = 2000,
	.fanout_tasks = 10000,
	.concurrent_ms = 2000,
	.held_results = 100000,
	.full_await_warmup = 50, .full_await_calls = 500,
	.full_fanout_tasks = 10000,
	.stream_small = 100000, .stream_large = 1000000,
};

static const struct counts counts_quick = {
	.floor_warmup = 100, .floor_round_trips = 1000,
	.await_warmup = 50, .await_calls = 300,
	.fanout_tasks = 2000,
	.concurrent_ms = 500,
	.held_results = 10000,
	.full_await_warmup = 10, .full_await_calls = 100,
	.full_fanout_tasks = 2000,
	.stream_small = 10000, .stream_large = 100000,
};

/* ---- one figure of the table ---- */

enum target_state { TARGET_NONE = -1, TARGET_MISSED = 0, TARGET_MET = 1 };

struct figure {
	char key[48];     /* for --json */
	char label[64];
	double value;
	const char *unit;
	double ratio;     /* to its floor; < 0 = none */
	char target[24];  /* "" = none */
	int met;          /* enum target_state */
};

/* A running node: the process, its data dir and one client. */
struct node {
	pid_t pid;        /* 0 = not running */
	char dir[DIR_BYTES_MAX];
	char log_path[PATH_MAX];
	char secret_path[PATH_MAX];
	char addr[64];
	ch_client *client;
};

static struct {
	struct figure figures[FIGURES_MAX];
	uint32_t figure_count;
	char root_dir[ROOT_DIR_BYTES_MAX]; /* "" = none made yet */
	struct node node;        /* the node measured (a coordinator) */
	struct node members[STREAM_MEMBERS_MAX]; /* --stream-nodes: the others */
	bool json;
} bench;

/* ---- time and samples ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples: the smallest sample such that
 * at least pct % of all samples are <= it. */
static uint64_t percentile_ns(const uint64_t *sorted, size_t count, uint32_t pct)
{
	if (count == 0)
		return 0;
	size_t rank = ((size_t)pct * count + 99) / 100;
	if (rank == 0)
		rank = 1;
	if (rank > count)
		rank = count;
	return sorted[rank - 1];
}

static double ns_to_us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

/* ---- reporting ---- */

static struct figure *figure_add(const char *key, const char *label, double value,
                                 const char *unit, double ratio)
{
	if (bench.figure_count >= FIGURES_MAX) {
		fprintf(stderr, "bench: more than %d figures\n", FIGURES_MAX);
		abort(); /* a bug in this file, not in the node */
	}
	struct figure *f = &bench.figures[bench.figure_count++];
	memset(f, 0, sizeof(*f));
	snprintf(f->key, sizeof(f->key), "%s", key);
	snprintf(f->label, sizeof(f->label), "%s", label);
	f->value = value;
	f->unit = unit;
	f->ratio = ratio;
	f->met = TARGET_NONE;
	return f;
}

static void figure_target(struct figure *f, const char *target, bool met)
{
	snprintf(f->target, sizeof(f->target), "%s", target);
	f->met = met ? TARGET_MET : TARGET_MISSED;
}

/* The table goes to stdout, or to stderr with --json (stdout is then JSON
 * only, for `bench_chorus --json > out.json`). */
static FILE *table_out(void)
{
	return bench.json ? stderr : stdout;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(table_out(), fmt, ap);
	va_end(ap);
	fflush(table_out());
}

static void print_table(void)
{
	FILE *out = table_out();
	fprintf(out, "\n%-46s %14s %-8s %10s  %-16s\n", "figure", "value", "unit", "vs floor", "target");
	for (int i = 0; i < 46 + 1 + 14 + 1 + 8 + 1 + 10 + 2 + 16; i++)
		fputc('-', out);
	fputc('\n', out);
	for (uint32_t i = 0; i < bench.figure_count; i++) {
		const struct figure *f = &bench.figures[i];
		char ratio[24] = "";
		if (f->ratio >= 0)
			snprintf(ratio, sizeof(ratio), "%.2fx", f->ratio);
		char target[48] = "";
		if (f->met != TARGET_NONE)
			snprintf(target, sizeof(target), "%s %s", f->target,
			         f->met == TARGET_MET ? "MET" : "MISSED");
		int decimals = f->value >= 1000.0 ? 0 : (f->value >= 100.0 ? 1 : 2);
		fprintf(out, "%-46s %14.*f %-8s %10s  %s\n", f->label, decimals, f->value, f->unit, ratio,
		        target);
	}
	fflush(out);
}

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

static void print_json(const char *date, const char *machine, bool quick)
{
	FILE *out = stdout;
	fprintf(out, "{\"date\":");
	json_string(out, date);
	fprintf(out, ",\"machine\":");
	json_string(out, machine);
	fprintf(out, ",\"quick\":%s,\"payload_bytes\":%d,\"figures\":[", quick ? "true" : "false",
	        PAYLOAD_BYTES);
	for (uint32_t i = 0; i < bench.figure_count; i++) {
		const struct figure *f = &bench.figures[i];
		fprintf(out, "%s{\"key\":", i ? "," : "");
		json_string(out, f->key);
		fprintf(out, ",\"label\":");
		json_string(out, f->label);
		fprintf(out, ",\"value\":%.3f,\"unit\":", f->value);
		json_string(out, f->unit);
		if (f->ratio >= 0)
			fprintf(out, ",\"ratio_to_floor\":%.4f", f->ratio);
		else
			fprintf(out, ",\"ratio_to_floor\":null");
		if (f->met != TARGET_NONE) {
			fprintf(out, ",\"target\":");
			json_string(out, f->target);
			fprintf(out, ",\"met\":%s", f->met == TARGET_MET ? "true" : "false");
		}
		fputc('}', out);
	}
	fprintf(out, "]}\n");
	fflush(out);
}

/* ---- /proc ---- */

/* VmRSS (or another "Vm" line) of pid in KiB; -1 when unreadable. */
static long proc_status_kib(pid_t pid, const char *field)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	char line[256];
	size_t field_len = strlen(field);
	long kib = -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, field, field_len) == 0 && line[field_len] == ':') {
			kib = strtol(line + field_len + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kib;
}

/* Sum of VmRSS of the direct children of pid (the node's workers). */
static long children_rss_kib(pid_t parent, uint32_t *child_count)
{
	*child_count = 0;
	DIR *d = opendir("/proc");
	if (d == NULL)
		return -1;
	long total_kib = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end != '\0' || pid <= 0)
			continue;
		char path[64], buf[512];
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		size_t got = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[got] = '\0';
		/* "pid (comm) state ppid ...": comm may hold spaces and ')' */
		char *close_paren = strrchr(buf, ')');
		char state;
		int ppid;
		if (close_paren == NULL || sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2)
			continue;
		if (ppid != (int)parent)
			continue;
		long kib = proc_status_kib((pid_t)pid, "VmRSS");
		if (kib > 0) {
			total_kib += kib;
			(*child_count)++;
		}
	}
	closedir(d);
	return total_kib;
}

/* ---- cleanup and failure ---- */

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	if (remove(path) != 0)
		fprintf(stderr, "bench: cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

static void remove_tree(const char *dir)
{
	if (dir[0] != '\0')
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void print_log_tail(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	struct stat st;
	if (fstat(fd, &st) == 0) {
		off_t from = st.st_size > LOG_TAIL_BYTES ? st.st_size - LOG_TAIL_BYTES : 0;
		char buf[LOG_TAIL_BYTES + 1];
		ssize_t got = pread(fd, buf, LOG_TAIL_BYTES, from);
		if (got > 0) {
			buf[got] = '\0';
			fprintf(stderr, "---- last %zd bytes of %s ----\n%s\n----\n", got, path, buf);
		}
	}
	close(fd);
}

/* Stops the node: SIGTERM, then SIGKILL after a deadline. Returns the exit
 * status as waitpid gives it, or -1 if it was never running. */
static int node_stop(struct node *n)
{
	if (n->client != NULL) {
		ch_client_close(n->client);
		n->client = NULL;
	}
	if (n->pid <= 0)
		return -1;
	int status = 0;
	kill(n->pid, SIGTERM);
	uint64_t deadline_ns = now_ns() + (uint64_t)NODE_STOP_DEADLINE_MS * 1000000ull;
	for (;;) {
		pid_t r = waitpid(n->pid, &status, WNOHANG);
		if (r == n->pid || (r < 0 && errno != EINTR))
			break;
		if (now_ns() >= deadline_ns) {
			fprintf(stderr, "bench: node %d still running %d ms after SIGTERM: SIGKILL\n",
			        (int)n->pid, NODE_STOP_DEADLINE_MS);
			kill(n->pid, SIGKILL);
			while (waitpid(n->pid, &status, 0) < 0 && errno == EINTR) {
			}
			break;
		}
		sleep_ms(10);
	}
	n->pid = 0;
	return status;
}

static void cleanup(void)
{
	node_stop(&bench.node);
	for (int i = 0; i < STREAM_MEMBERS_MAX; i++)
		node_stop(&bench.members[i]);
	remove_tree(bench.root_dir);
	bench.root_dir[0] = '\0';
	nng_fini(); /* joins nng's own threads: nothing left for valgrind to flag */
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench: FAILED: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	int status;
	if (bench.node.pid > 0 && waitpid(bench.node.pid, &status, WNOHANG) == bench.node.pid) {
		if (WIFSIGNALED(status))
			fprintf(stderr, "bench: the node died of signal %d\n", WTERMSIG(status));
		else
			fprintf(stderr, "bench: the node exited with status %d\n", WEXITSTATUS(status));
		bench.node.pid = 0;
	}
	if (bench.node.log_path[0] != '\0')
		print_log_tail(bench.node.log_path);
	cleanup();
	exit(1);
}

static volatile sig_atomic_t interrupted_pid;

/* Ctrl-C: take the node down with us (async-signal-safe calls only). */
static void on_signal(int sig)
{
	pid_t pid = (pid_t)interrupted_pid;
	if (pid > 0)
		kill(pid, SIGKILL);
	_exit(128 + sig);
}

/* ---- 1. the floor: raw nng req/rep on loopback TCP ---- */

struct echo_server {
	nng_socket sock;
	pthread_t thread;
};

static void *echo_main(void *arg)
{
	struct echo_server *e = arg;
	for (;;) {
		nng_msg *m;
		int rv = nng_recvmsg(e->sock, &m, 0);
		if (rv == NNG_ECLOSED)
			break;
		if (rv != 0)
			continue;
		rv = nng_sendmsg(e->sock, m, 0);
		if (rv != 0) {
			nng_msg_free(m);
			if (rv == NNG_ECLOSED)
				break;
		}
	}
	return NULL;
}

struct floor_figures {
	uint64_t p50_ns, p99_ns;
	double round_trips_per_s;
	long bench_rss_kib;
};

static void measure_floor(const struct counts *k, struct floor_figures *out)
{
	struct echo_server srv;
	nng_socket req;
	nng_listener l;
	int rv = nng_rep0_open(&srv.sock);
	if (rv != 0)
		fail("floor: nng_rep0_open: %s", nng_strerror(rv));
	rv = nng_listener_create(&l, srv.sock, "tcp://127.0.0.1:0");
	if (rv == 0)
		rv = nng_listener_start(l, 0);
	int port = 0;
	if (rv == 0)
		rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port);
	if (rv != 0)
		fail("floor: listen on tcp://127.0.0.1:0: %s", nng_strerror(rv));
	if (pthread_create(&srv.thread, NULL, echo_main, &srv) != 0)
		fail("floor: pthread_create");

	char url[64];
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	rv = nng_req0_open(&req);
	if (rv == 0)
		rv = nng_dial(req, url, NULL, 0);
	if (rv != 0)
		fail("floor: dial %s: %s", url, nng_strerror(rv));
	nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, 10000);
	nng_socket_set_ms(req, NNG_OPT_SENDTIMEO, 10000);

	uint8_t payload[PAYLOAD_BYTES];
	memset(payload, 'f', sizeof(payload));
	uint32_t total = k->floor_warmup + k->floor_round_trips;
	uint64_t *samples_ns = calloc(k->floor_round_trips, sizeof(uint64_t));
	if (samples_ns == NULL)
		fail("floor: out of memory");
	uint64_t measured_from_ns = 0;
	for (uint32_t i = 0; i < total; i++) {
		if (i == k->floor_warmup)
			measured_from_ns = now_ns();
		uint64_t t0_ns = now_ns();
		nng_msg *m;
		rv = nng_msg_alloc(&m, 0);
		if (rv == 0)
			rv = nng_msg_append(m, payload, sizeof(payload));
		if (rv == 0) {
			rv = nng_sendmsg(req, m, 0);
			if (rv != 0)
				nng_msg_free(m);
		}
		if (rv == 0)
			rv = nng_recvmsg(req, &m, 0);
		if (rv != 0)
			fail("floor: round trip %u: %s", i, nng_strerror(rv));
		bool same = nng_msg_len(m) == sizeof(payload) &&
		            memcmp(nng_msg_body(m), payload, sizeof(payload)) == 0;
		nng_msg_free(m);
		if (!same)
			fail("floor: echo came back changed");
		if (i >= k->floor_warmup)
			samples_ns[i - k->floor_warmup] = now_ns() - t0_ns;
	}
	uint64_t elapsed_ns = now_ns() - measured_from_ns;
	out->bench_rss_kib = proc_status_kib(getpid(), "VmRSS");
	nng_close(req);
	nng_close(srv.sock);
	pthread_join(srv.thread, NULL);

	qsort(samples_ns, k->floor_round_trips, sizeof(uint64_t), cmp_u64);
	out->p50_ns = percentile_ns(samples_ns, k->floor_round_trips, 50);
	out->p99_ns = percentile_ns(samples_ns, k->floor_round_trips, 99);
	out->round_trips_per_s = (double)k->floor_round_trips * 1e9 / (double)elapsed_ns;
	free(samples_ns);
}

/* ---- 2. a real node ---- */

/* A port free right now on 127.0.0.1 (the kernel's pick). chorusd binds it
 * a moment later; a clash shows as a failed start, not a wrong figure. */
static int free_tcp_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(a);
	int port = -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* seed: NULL, or the node a member joins through (--stream-nodes): it gets
 * that node's secret and is named after its data dir. */
static void node_start_seeded(struct node *n, const char *chorusd, const char *name,
                              bool sync_full, const struct node *seed)
{
	memset(n, 0, sizeof(*n));
	int len = snprintf(n->dir, sizeof(n->dir), "%s/%s", bench.root_dir, name);
	if (len < 0 || (size_t)len >= sizeof(n->dir))
		fail("data dir path too long");
	if (mkdir(n->dir, 0700) != 0)
		fail("mkdir %s: %s", n->dir, strerror(errno));
	snprintf(n->log_path, sizeof(n->log_path), "%s.log", n->dir);
	if (seed != NULL)
		snprintf(n->secret_path, sizeof(n->secret_path), "%s", seed->secret_path);
	else
		snprintf(n->secret_path, sizeof(n->secret_path), "%s/secret", n->dir);
	int port = free_tcp_port();
	if (port <= 0)
		fail("no free TCP port on 127.0.0.1");
	snprintf(n->addr, sizeof(n->addr), "tcp://127.0.0.1:%d", port);

	char *argv[24];
	int argc = 0;
	argv[argc++] = (char *)chorusd;
	argv[argc++] = "--data-dir";
	argv[argc++] = n->dir;
	argv[argc++] = "--listen";
	argv[argc++] = n->addr;
	argv[argc++] = "--workers";
	argv[argc++] = "2";
	if (sync_full) {
		argv[argc++] = "--synchronous";
		argv[argc++] = "full";
	}
	if (seed != NULL) {
		argv[argc++] = "--seeds";
		argv[argc++] = (char *)seed->addr;
		argv[argc++] = "--secret";
		argv[argc++] = n->secret_path;
		argv[argc++] = "--name";
		argv[argc++] = (char *)name;
	}
	argv[argc] = NULL;

	int log_fd = open(n->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (log_fd < 0)
		fail("open %s: %s", n->log_path, strerror(errno));
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		/* the node dies with the bench, however the bench ends */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int null_fd = open("/dev/null", O_RDONLY);
		if (null_fd >= 0)
			dup2(null_fd, STDIN_FILENO);
		dup2(log_fd, STDOUT_FILENO);
		dup2(log_fd, STDERR_FILENO);
		execv(chorusd, argv);
		dprintf(STDERR_FILENO, "bench: exec %s: %s\n", chorusd, strerror(errno));
		_exit(127);
	}
	close(log_fd);
	n->pid = pid;
	interrupted_pid = pid;

	say("starting %s:", chorusd);
	for (int i = 1; i < argc; i++)
		say(" %s", argv[i]);
	say("\n");

	uint64_t deadline_ns = now_ns() + (uint64_t)NODE_START_DEADLINE_MS * 1000000ull;
	char err[512] = "";
	int last_rc = 0;
	for (;;) {
		int status;
		pid_t r = waitpid(n->pid, &status, WNOHANG);
		if (r == n->pid) {
			n->pid = 0;
			interrupted_pid = 0;
			if (WIFEXITED(status))
				fail("chorusd exited with status %d before it answered", WEXITSTATUS(status));
			fail("chorusd died (signal %d) before it answered",
			     WIFSIGNALED(status) ? WTERMSIG(status) : -1);
		}
		if (access(n->secret_path, R_OK) == 0) {
			struct ch_client_options o = {.timeout_ms = 1000, .contexts = CLIENT_CONTEXTS};
			last_rc = ch_client_connect(&n->client, n->addr, n->secret_path, &o, err, sizeof(err));
			if (last_rc == CH_OK)
				break;
			n->client = NULL;
		}
		if (now_ns() >= deadline_ns) {
			if (last_rc != 0)
				fail("no handshake with %s within %d ms: %s (%s)", n->addr,
				     NODE_START_DEADLINE_MS, ch_strerror(last_rc), err);
			fail("no secret file %s within %d ms", n->secret_path, NODE_START_DEADLINE_MS);
		}
		sleep_ms(20);
	}
	/* reconnect with the longer per-call timeout for the measurements */
	ch_client_close(n->client);
	n->client = NULL;
	struct ch_client_options o = {.timeout_ms = CLIENT_TIMEOUT_MS, .contexts = CLIENT_CONTEXTS};
	int rc = ch_client_connect(&n->client, n->addr, n->secret_path, &o, err, sizeof(err));
	if (rc != CH_OK) {
		n->client = NULL;
		fail("connect %s: %s (%s)", n->addr, ch_strerror(rc), err);
	}
}

static void node_start(struct node *n, const char *chorusd, const char *name, bool sync_full)
{
	node_start_seeded(n, chorusd, name, sync_full, NULL);
}

/* ---- checking results ---- */

static void payload_fill(uint8_t *p, uint32_t index)
{
	char head[32];
	int len = snprintf(head, sizeof(head), "bench %010u ", index);
	memset(p, '.', PAYLOAD_BYTES);
	memcpy(p, head, (size_t)len < PAYLOAD_BYTES ? (size_t)len : PAYLOAD_BYTES);
}

/* NULL when r is a succeeded echo of payload, else why not. */
static const char *echo_mismatch(const struct ch_result *r, const uint8_t *payload)
{
	if (r == NULL)
		return "no result";
	if (r->state != CH_TASK_SUCCEEDED)
		return ch_task_state_name(r->state);
	if (r->output_len != PAYLOAD_BYTES || r->output == NULL ||
	    memcmp(r->output, payload, PAYLOAD_BYTES) != 0)
		return "output differs from the payload";
	return NULL;
}

static void await_one(ch_client *c, const uint8_t *payload, const char *what)
{
	struct ch_result *r = NULL;
	char err[512] = "";
	int rc = ch_submit_await(c, HANDLER, payload, PAYLOAD_BYTES, NULL, CALL_WAIT_MS, &r, err,
	                         sizeof(err));
	if (rc != CH_OK)
		fail("%s: ch_submit_await: %s (%s)", what, ch_strerror(rc), err);
	const char *why = echo_mismatch(r, payload);
	if (why != NULL) {
		char detail[256];
		snprintf(detail, sizeof(detail), "%s%s%s", why, r && r->error && r->error[0] ? ": " : "",
		         r && r->error ? r->error : "");
		ch_result_free(r);
		fail("%s: task %s", what, detail);
	}
	ch_result_free(r);
}

/* ---- 3. sequential submit-and-await ---- */

struct latency {
	uint64_t p50_ns, p99_ns;
	double calls_per_s;
};

static void measure_await(ch_client *c, uint32_t warmup, uint32_t calls, struct latency *out)
{
	uint8_t payload[PAYLOAD_BYTES];
	payload_fill(payload, 0);
	for (uint32_t i = 0; i < warmup; i++)
		await_one(c, payload, "submit-and-await warm-up");
	uint64_t *samples_ns = calloc(calls, sizeof(uint64_t));
	if (samples_ns == NULL)
		fail("out of memory");
	uint64_t t_start_ns = now_ns();
	for (uint32_t i = 0; i < calls; i++) {
		payload_fill(payload, i);
		uint64_t t0_ns = now_ns();
		await_one(c, payload, "submit-and-await");
		samples_ns[i] = now_ns() - t0_ns;
	}
	uint64_t elapsed_ns = now_ns() - t_start_ns;
	qsort(samples_ns, calls, sizeof(uint64_t), cmp_u64);
	out->p50_ns = percentile_ns(samples_ns, calls, 50);
	out->p99_ns = percentile_ns(samples_ns, calls, 99);
	out->calls_per_s = (double)calls * 1e9 / (double)elapsed_ns;
	free(samples_ns);
}

/* ---- 4. fan-out ---- */

/* One ch_map of n echo tasks; checks every result (state, output, order).
 * Returns the elapsed wall time in ns. */
static uint64_t run_map(ch_client *c, uint32_t n, uint32_t first_index, const char *what)
{
	uint8_t *buf = malloc((size_t)n * PAYLOAD_BYTES);
	const void **payloads = malloc((size_t)n * sizeof(*payloads));
	size_t *lens = malloc((size_t)n * sizeof(*lens));
	if (buf == NULL || payloads == NULL || lens == NULL)
		fail("out of memory");
	for (uint32_t i = 0; i < n; i++) {
		payload_fill(buf + (size_t)i * PAYLOAD_BYTES, first_index + i);
		payloads[i] = buf + (size_t)i * PAYLOAD_BYTES;
		lens[i] = PAYLOAD_BYTES;
	}
	struct ch_map_opts mo = {.max_concurrency = 0, .deadline_ms = MAP_DEADLINE_MS};
	struct ch_result **results = NULL;
	char err[512] = "";
	uint64_t t0_ns = now_ns();
	int rc = ch_map(c, HANDLER, payloads, lens, n, NULL, &mo, &results, err, sizeof(err));
	uint64_t elapsed_ns = now_ns() - t0_ns;
	if (rc != CH_OK) {
		free(buf);
		free(payloads);
		free(lens);
		fail("%s: ch_map of %u: %s (%s)", what, n, ch_strerror(rc), err);
	}
	uint32_t bad_count = 0;
	char first_bad[256] = "";
	for (uint32_t i = 0; i < n; i++) {
		const char *why = echo_mismatch(results[i], payloads[i]);
		if (why == NULL)
			continue;
		if (bad_count++ == 0)
			snprintf(first_bad, sizeof(first_bad), "result %u: %s%s%s", i, why,
			         results[i] && results[i]->error && results[i]->error[0] ? ": " : "",
			         results[i] && results[i]->error ? results[i]->error : "");
	}
	ch_results_free(results, n);
	free(buf);
	free(payloads);
	free(lens);
	if (bad_count > 0)
		fail("%s: %u of %u results wrong, first: %s", what, bad_count, n, first_bad);
	return elapsed_ns;
}

struct fanout {
	double median_per_s, slowest_per_s, fastest_per_s;
};

/* FANOUT_ROUNDS maps of n tasks, after a small warm-up map; the median
 * round is the figure (a 2-core machine's neighbours make single runs
 * jumpy), the spread is printed. Adds the tasks run to *finished_count. */
static void measure_fanout(ch_client *c, uint32_t n, const char *what, uint64_t *finished_count,
                           struct fanout *out)
{
	double rate_per_s[FANOUT_ROUNDS];
	run_map(c, 100, 0, what);
	*finished_count += 100;
	for (uint32_t r = 0; r < FANOUT_ROUNDS; r++) {
		uint64_t elapsed_ns = run_map(c, n, r * n, what);
		*finished_count += n;
		rate_per_s[r] = (double)n * 1e9 / (double)elapsed_ns;
	}
	/* insertion sort: FANOUT_ROUNDS is tiny */
	for (uint32_t i = 1; i < FANOUT_ROUNDS; i++) {
		for (uint32_t j = i; j > 0 && rate_per_s[j - 1] > rate_per_s[j]; j--) {
			double t = rate_per_s[j];
			rate_per_s[j] = rate_per_s[j - 1];
			rate_per_s[j - 1] = t;
		}
	}
	out->slowest_per_s = rate_per_s[0];
	out->median_per_s = rate_per_s[FANOUT_ROUNDS / 2];
	out->fastest_per_s = rate_per_s[FANOUT_ROUNDS - 1];
	say("  median %.0f tasks/s (slowest %.0f, fastest %.0f)\n", out->median_per_s,
	    out->slowest_per_s, out->fastest_per_s);
}

/* ---- 5. concurrent submit-and-await ---- */

struct conc_thread {
	pthread_t thread;
	ch_client *client;
	uint32_t index;
	pthread_barrier_t *start;
	const _Atomic uint64_t *stop_at_ns;
	atomic_bool *failed;
	uint64_t *samples_ns;
	uint32_t sample_count;
	uint64_t call_count;
	int rc;
	char err[256];
};

static void *conc_main(void *arg)
{
	struct conc_thread *t = arg;
	uint8_t payload[PAYLOAD_BYTES];
	pthread_barrier_wait(t->start);
	uint64_t stop_ns = atomic_load(t->stop_at_ns);
	for (uint32_t i = 0; !atomic_load(t->failed); i++) {
		uint64_t t0_ns = now_ns();
		if (t0_ns >= stop_ns)
			break;
		payload_fill(payload, t->index * 100000000u + i % 100000000u);
		struct ch_result *r = NULL;
		int rc = ch_submit_await(t->client, HANDLER, payload, PAYLOAD_BYTES, NULL, CALL_WAIT_MS, &r,
		                         t->err, sizeof(t->err));
		const char *why = rc == CH_OK ? echo_mismatch(r, payload) : NULL;
		if (rc != CH_OK || why != NULL) {
			t->rc = rc != CH_OK ? rc : CH_ERR_INTERNAL;
			if (why != NULL)
				snprintf(t->err, sizeof(t->err), "task: %s", why);
			ch_result_free(r);
			atomic_store(t->failed, true);
			break;
		}
		ch_result_free(r);
		uint64_t took_ns = now_ns() - t0_ns;
		if (t->sample_count < CONCURRENT_SAMPLES_MAX)
			t->samples_ns[t->sample_count++] = took_ns;
		t->call_count++;
	}
	return NULL;
}

struct concurrent {
	uint64_t call_count;
	double tasks_per_s;
	uint64_t p50_ns, p99_ns;
};

static void measure_concurrent(ch_client *c, uint32_t duration_ms, struct concurrent *out)
{
	struct conc_thread th[CONCURRENT_THREADS];
	pthread_barrier_t start;
	_Atomic uint64_t stop_at_ns = 0;
	atomic_bool failed = false;
	pthread_barrier_init(&start, NULL, CONCURRENT_THREADS + 1);
	/* samples: enough for the run at any plausible rate, bounded */
	uint32_t cap = CONCURRENT_SAMPLES_MAX;
	for (uint32_t i = 0; i < CONCURRENT_THREADS; i++) {
		memset(&th[i], 0, sizeof(th[i]));
		th[i].client = c;
		th[i].index = i;
		th[i].start = &start;
		th[i].stop_at_ns = &stop_at_ns;
		th[i].failed = &failed;
		th[i].samples_ns = malloc((size_t)cap * sizeof(uint64_t));
		if (th[i].samples_ns == NULL)
			fail("out of memory");
		if (pthread_create(&th[i].thread, NULL, conc_main, &th[i]) != 0)
			fail("pthread_create");
	}
	uint64_t t0_ns = now_ns();
	atomic_store(&stop_at_ns, t0_ns + (uint64_t)duration_ms * 1000000ull);
	pthread_barrier_wait(&start);
	uint64_t calls = 0, samples = 0;
	for (uint32_t i = 0; i < CONCURRENT_THREADS; i++) {
		pthread_join(th[i].thread, NULL);
		calls += th[i].call_count;
		samples += th[i].sample_count;
	}
	uint64_t elapsed_ns = now_ns() - t0_ns;
	pthread_barrier_destroy(&start);
	if (atomic_load(&failed)) {
		for (uint32_t i = 0; i < CONCURRENT_THREADS; i++) {
			if (th[i].rc != 0) {
				char msg[300];
				snprintf(msg, sizeof(msg), "%s (%s)", ch_strerror(th[i].rc), th[i].err);
				for (uint32_t j = 0; j < CONCURRENT_THREADS; j++)
					free(th[j].samples_ns);
				fail("concurrent submit-and-await: %s", msg);
			}
		}
	}
	uint64_t *all_ns = malloc((size_t)(samples ? samples : 1) * sizeof(uint64_t));
	if (all_ns == NULL)
		fail("out of memory");
	size_t at = 0;
	for (uint32_t i = 0; i < CONCURRENT_THREADS; i++) {
		memcpy(all_ns + at, th[i].samples_ns, (size_t)th[i].sample_count * sizeof(uint64_t));
		at += th[i].sample_count;
		free(th[i].samples_ns);
	}
	qsort(all_ns, at, sizeof(uint64_t), cmp_u64);
	out->p50_ns = percentile_ns(all_ns, at, 50);
	out->p99_ns = percentile_ns(all_ns, at, 99);
	out->call_count = calls;
	out->tasks_per_s = (double)calls * 1e9 / (double)elapsed_ns;
	free(all_ns);
}

static double mib(long kib)
{
	return (double)kib / 1024.0;
}

/* ---- 8. streamed fan-out through clusterctl (--stream) ---- */

/* One streamed fan-out of n echo tasks: `clusterctl submit echo --fanout -`
 * fed by a pipe from a writer thread, its output read back and checked
 * (every index in order, each output its payload), while the peak RSS of
 * clusterctl and of the node are sampled from /proc. */
struct stream_run {
	uint32_t n;
	double tasks_per_s;
	long client_hwm_kib, node_hwm_kib;
};

struct stream_writer {
	int fd;
	uint32_t n;
	int failed_errno;
};

static void *stream_writer_main(void *arg)
{
	struct stream_writer *w = arg;
	FILE *f = fdopen(w->fd, "w");
	if (f == NULL) {
		w->failed_errno = errno;
		close(w->fd);
		return NULL;
	}
	uint8_t p[PAYLOAD_BYTES];
	for (uint32_t i = 0; i < w->n; i++) {
		payload_fill(p, i);
		if (fwrite(p, 1, sizeof(p), f) != sizeof(p) || fputc('\n', f) == EOF) {
			w->failed_errno = errno;
			break;
		}
	}
	if (fclose(f) != 0 && w->failed_errno == 0)
		w->failed_errno = errno;
	return NULL;
}

static pid_t stream_spawn(const char *clusterctl, const struct node *n, int in_fd, int out_fd,
                          const char *log_path)
{
	int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (log_fd < 0)
		fail("open %s: %s", log_path, strerror(errno));
	char *argv[] = {(char *)clusterctl, "-a", (char *)n->addr, "-k", (char *)n->secret_path,
	                "--timeout", "30s", "submit", HANDLER, "--fanout", "-", NULL};
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(in_fd, STDIN_FILENO);
		dup2(out_fd, STDOUT_FILENO);
		dup2(log_fd, STDERR_FILENO);
		execv(clusterctl, argv);
		dprintf(STDERR_FILENO, "bench: exec %s: %s\n", clusterctl, strerror(errno));
		_exit(127);
	}
	close(log_fd);
	return pid;
}

/* Checks one output line "index\tsucceeded\tpayload\tnode". */
static const char *stream_line_wrong(const char *line, size_t len, uint32_t index)
{
	char want[32];
	int wl = snprintf(want, sizeof(want), "%u\tsucceeded\t", index);
	if (len < (size_t)wl + PAYLOAD_BYTES || memcmp(line, want, (size_t)wl) != 0)
		return "not the next index, or not succeeded";
	uint8_t p[PAYLOAD_BYTES];
	payload_fill(p, index);
	if (memcmp(line + wl, p, PAYLOAD_BYTES) != 0 || line[wl + PAYLOAD_BYTES] != '\t')
		return "output differs from the payload";
	return NULL;
}

/* Waits until the coordinator sees `count` alive members (itself included). */
static void cluster_wait_formed(uint32_t count)
{
	uint64_t deadline_ns = now_ns() + (uint64_t)CLUSTER_FORM_DEADLINE_MS * 1000000ull;
	for (;;) {
		char *json = NULL;
		char err[256];
		uint32_t alive = 0;
		if (ch_members_json(bench.node.client, &json, err, sizeof(err)) == CH_OK) {
			for (const char *p = json; (p = strstr(p, "\"state\": \"alive\"")) != NULL; p++)
				alive++;
			free(json);
		}
		if (alive >= count)
			return;
		if (now_ns() >= deadline_ns)
			fail("the coordinator sees %u alive members of %u after %d ms", alive, count,
			     CLUSTER_FORM_DEADLINE_MS);
		sleep_ms(100);
	}
}

static void measure_stream(const char *chorusd, const char *clusterctl, uint32_t n,
                           uint32_t nodes, struct stream_run *out)
{
	char name[32];
	snprintf(name, sizeof(name), "stream%u", n);
	node_start(&bench.node, chorusd, name, false);
	for (uint32_t i = 1; i < nodes; i++) {
		char mname[48];
		snprintf(mname, sizeof(mname), "%s-m%u", name, i);
		node_start_seeded(&bench.members[i - 1], chorusd, mname, false, &bench.node);
	}
	if (nodes > 1)
		cluster_wait_formed(nodes);
	int in[2], outp[2];
	if (pipe2(in, O_CLOEXEC) != 0 || pipe2(outp, O_CLOEXEC) != 0)
		fail("pipe: %s", strerror(errno));
	char log_path[PATH_MAX];
	snprintf(log_path, sizeof(log_path), "%s.clusterctl.log", bench.node.dir);
	say("stream: clusterctl submit %s --fanout - of %u tasks...\n", HANDLER, n);
	uint64_t t0 = now_ns();
	pid_t pid = stream_spawn(clusterctl, &bench.node, in[0], outp[1], log_path);
	close(in[0]);
	close(outp[1]);
	struct stream_writer w = {.fd = in[1], .n = n};
	pthread_t wt;
	if (pthread_create(&wt, NULL, stream_writer_main, &w) != 0)
		fail("pthread_create");
	FILE *rf = fdopen(outp[0], "r");
	if (rf == NULL)
		fail("fdopen: %s", strerror(errno));
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	uint32_t seen = 0;
	long client_hwm = 0, node_hwm = 0;
	const char *wrong = NULL;
	while ((got = getline(&line, &cap, rf)) >= 0) {
		if (wrong == NULL && seen < n)
			wrong = stream_line_wrong(line, (size_t)got, seen);
		seen++;
		if (seen % 4096 == 0) {
			long h = proc_status_kib(pid, "VmHWM");
			if (h > client_hwm)
				client_hwm = h;
		}
	}
	free(line);
	fclose(rf);
	/* the last look at clusterctl before it is reaped */
	long h = proc_status_kib(pid, "VmHWM");
	if (h > client_hwm)
		client_hwm = h;
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	uint64_t elapsed_ns = now_ns() - t0;
	pthread_join(wt, NULL);
	node_hwm = proc_status_kib(bench.node.pid, "VmHWM");
	if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		print_log_tail(log_path);
		fail("clusterctl exited with status 0x%x after %u results", status, seen);
	}
	if (w.failed_errno != 0)
		fail("writing clusterctl's input: %s", strerror(w.failed_errno));
	if (wrong != NULL || seen != n)
		fail("stream of %u: %u results, %s", n, seen, wrong != NULL ? wrong : "count differs");
	out->n = n;
	out->tasks_per_s = (double)n * 1e9 / (double)elapsed_ns;
	out->client_hwm_kib = client_hwm;
	out->node_hwm_kib = node_hwm;
	say("  %.0f tasks/s; peak RSS clusterctl %.1f MiB, node %.1f MiB\n", out->tasks_per_s,
	    mib(client_hwm), mib(node_hwm));
	for (uint32_t i = 1; i < nodes; i++)
		(void)node_stop(&bench.members[i - 1]);
	status = node_stop(&bench.node);
	if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		say("note: node (%s) did not exit 0 on SIGTERM (status 0x%x)\n", name, status);
	bench.node.log_path[0] = '\0';
}

/* The streamed fan-out figures: two sizes, ten times apart; RSS must not
 * follow the size (ratio near 1.0x). */
static void stream_figures(const char *chorusd, const struct counts *k,
                           const struct floor_figures *fl, uint32_t nodes)
{
	char clusterctl[PATH_MAX];
	snprintf(clusterctl, sizeof(clusterctl), "%s", chorusd);
	char *slash = strrchr(clusterctl, '/');
	if (slash != NULL)
		snprintf(slash + 1, sizeof(clusterctl) - (size_t)(slash + 1 - clusterctl), "clusterctl");
	else
		snprintf(clusterctl, sizeof(clusterctl), "./clusterctl");
	if (access(clusterctl, X_OK) != 0)
		fail("cannot run %s: %s", clusterctl, strerror(errno));
	struct stream_run runs[2];
	uint32_t sizes[2] = {k->stream_small, k->stream_large};
	for (int i = 0; i < 2; i++) {
		measure_stream(chorusd, clusterctl, sizes[i], nodes, &runs[i]);
		char key[48], label[64];
		snprintf(key, sizeof(key), "stream_%u_tasks_per_s", sizes[i]);
		snprintf(label, sizeof(label), "stream fan-out %u, %u node(s)", sizes[i], nodes);
		figure_add(key, label, runs[i].tasks_per_s, "tasks/s",
		           runs[i].tasks_per_s / fl->round_trips_per_s);
		snprintf(key, sizeof(key), "stream_%u_client_hwm_mib", sizes[i]);
		snprintf(label, sizeof(label), "  clusterctl peak RSS (VmHWM), %u", sizes[i]);
		figure_add(key, label, mib(runs[i].client_hwm_kib), "MiB",
		           (double)runs[i].client_hwm_kib / (double)fl->bench_rss_kib);
		snprintf(key, sizeof(key), "stream_%u_node_hwm_mib", sizes[i]);
		snprintf(label, sizeof(label), "  coordinator peak RSS (VmHWM), %u", sizes[i]);
		figure_add(key, label, mib(runs[i].node_hwm_kib), "MiB",
		           (double)runs[i].node_hwm_kib / (double)fl->bench_rss_kib);
	}
	/* flat: the larger run's peaks over the smaller's (ratio column) */
	double client_ratio = (double)runs[1].client_hwm_kib / (double)runs[0].client_hwm_kib;
	double node_ratio = (double)runs[1].node_hwm_kib / (double)runs[0].node_hwm_kib;
	struct figure *f = figure_add("stream_client_hwm_growth", "clusterctl peak RSS, 10x input",
	                              client_ratio, "x", client_ratio);
	figure_target(f, "<= 1.25x", client_ratio <= TARGET_STREAM_RSS_GROWTH_MAX);
	f = figure_add("stream_node_hwm_growth", "coordinator peak RSS, 10x input", node_ratio, "x",
	               node_ratio);
	figure_target(f, "<= 1.25x", node_ratio <= TARGET_STREAM_RSS_GROWTH_MAX);
}

/* ---- the run ---- */

/* chorusd takes settings from CHORUS_* variables too (chorusd --help), and
 * the nodes (and clusterctl) started here inherit this environment: none of
 * the caller's (a CHORUS_SEEDS, a CHORUS_DATA_DIR left in the shell) may
 * change what is measured; the nodes get all they need as flags. Called
 * before any thread starts (unsetenv is not thread-safe). Each pass removes
 * one variable and scans again, as unsetenv moves environ's entries. */
static void clear_chorus_env(void)
{
	for (;;) {
		char name[256];
		bool found = false;
		for (char **e = environ; *e != NULL && !found; e++) {
			const char *eq = strchr(*e, '=');
			size_t len = eq != NULL ? (size_t)(eq - *e) : strlen(*e);
			if (strncmp(*e, "CHORUS_", 7) != 0 || len >= sizeof(name))
				continue;
			memcpy(name, *e, len);
			name[len] = '\0';
			found = true;
		}
		if (!found)
			return;
		if (unsetenv(name) != 0) {
			fprintf(stderr, "bench_chorus: unsetenv %s: %s\n", name, strerror(errno));
			exit(1);
		}
	}
}

static void default_chorusd_path(char *out, size_t out_len, const char *argv0)
{
	char exe[PATH_MAX - 16];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (len > 0) {
		exe[len] = '\0';
	} else {
		snprintf(exe, sizeof(exe), "%s", argv0);
	}
	char *slash = strrchr(exe, '/');
	if (slash == NULL)
		snprintf(out, out_len, "./chorusd");
	else {
		*slash = '\0';
		snprintf(out, out_len, "%s/chorusd", exe);
	}
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: bench_chorus [--chorusd PATH] [--quick] [--json] [--skip-full]\n"
	        "                    [--stream [--stream-nodes N]]\n"
	        "\n"
	        "Measures a real chorusd (started here with a temporary data dir) against a\n"
	        "raw nng req/rep round trip measured in the same run.\n"
	        "\n"
	        "  --chorusd PATH  the node binary (default: chorusd next to this binary)\n"
	        "  --quick         small counts: a smoke run of a few seconds\n"
	        "  --json          JSON on stdout (the table then goes to stderr)\n"
	        "  --skip-full     skip the second node with --synchronous full\n"
	        "  --stream        instead of the default run: streamed fan-outs of 100,000 and\n"
	        "                  1,000,000 echo tasks (quick: 10,000 and 100,000) through\n"
	        "                  `clusterctl submit echo --fanout -`, each on a fresh node:\n"
	        "                  throughput and the peak RSS of clusterctl and of the node\n"
	        "  --stream-nodes N  with --stream: a cluster of N nodes (the coordinator and\n"
	        "                  N-1 members seeded by it), tasks placed over all of them\n"
	        "\n"
	        "Exit status: 0 ran (targets are reported MET/MISSED, never enforced),\n"
	        "1 the node could not be started or a call failed, 2 bad usage.\n");
}

int main(int argc, char **argv)
{
	char chorusd[PATH_MAX] = "";
	bool quick = false, skip_full = false, stream = false;
	uint32_t stream_nodes = 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--chorusd") == 0 && i + 1 < argc) {
			snprintf(chorusd, sizeof(chorusd), "%s", argv[++i]);
		} else if (strncmp(argv[i], "--chorusd=", 10) == 0) {
			snprintf(chorusd, sizeof(chorusd), "%s", argv[i] + 10);
		} else if (strcmp(argv[i], "--quick") == 0) {
			quick = true;
		} else if (strcmp(argv[i], "--json") == 0) {
			bench.json = true;
		} else if (strcmp(argv[i], "--skip-full") == 0) {
			skip_full = true;
		} else if (strcmp(argv[i], "--stream") == 0) {
			stream = true;
		} else if (strcmp(argv[i], "--stream-nodes") == 0 && i + 1 < argc) {
			char *end;
			unsigned long v = strtoul(argv[++i], &end, 10);
			if (*end != '\0' || v < 1 || v > STREAM_MEMBERS_MAX + 1) {
				fprintf(stderr, "bench_chorus: --stream-nodes takes 1..%d\n",
				        STREAM_MEMBERS_MAX + 1);
				return 2;
			}
			stream_nodes = (uint32_t)v;
			stream = true;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "bench_chorus: unknown option %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (chorusd[0] == '\0')
		default_chorusd_path(chorusd, sizeof(chorusd), argv[0]);
	if (access(chorusd, X_OK) != 0) {
		fprintf(stderr, "bench_chorus: cannot run %s: %s (give --chorusd PATH)\n", chorusd,
		        strerror(errno));
		return 1;
	}
	const struct counts *k = quick ? &counts_quick : &counts_full;
	clear_chorus_env();

	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	char date[64];
	time_t t = time(NULL);
	struct tm tm;
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S %Z", localtime_r(&t, &tm));
	struct utsname un;
	char machine[160] = "unknown";
	if (uname(&un) == 0)
		snprintf(machine, sizeof(machine), "%s %s, %ld cores", un.machine, un.release,
		         sysconf(_SC_NPROCESSORS_ONLN));
	say("bench_chorus %s: %s on %s; payload %d bytes, handler %s%s\n", CH_VERSION_STRING, date,
	    machine, PAYLOAD_BYTES, HANDLER, quick ? ", QUICK counts" : "");

	const char *tmp = getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp";
	int root_len = snprintf(bench.root_dir, sizeof(bench.root_dir), "%s/bench_chorus.XXXXXX", tmp);
	if (root_len < 0 || (size_t)root_len >= sizeof(bench.root_dir)) {
		fprintf(stderr, "bench_chorus: TMPDIR too long\n");
		return 1;
	}
	if (mkdtemp(bench.root_dir) == NULL) {
		fprintf(stderr, "bench_chorus: mkdtemp %s: %s\n", bench.root_dir, strerror(errno));
		return 1;
	}

	/* 1. floor */
	struct floor_figures fl;
	say("floor: %u nng round trips on loopback TCP...\n", k->floor_round_trips);
	measure_floor(k, &fl);
	double floor_p50_us = ns_to_us(fl.p50_ns), floor_p99_us = ns_to_us(fl.p99_ns);
	say("  p50 %.1f us, p99 %.1f us\n", floor_p50_us, floor_p99_us);
	figure_add("floor_rtt_p50_us", "floor: nng req/rep round trip p50", floor_p50_us, "us", 1.0);
	figure_add("floor_rtt_p99_us", "floor: nng req/rep round trip p99", floor_p99_us, "us", 1.0);
	figure_add("floor_round_trips_per_s", "floor: nng round trips/s, sequential",
	           fl.round_trips_per_s, "/s", 1.0);
	figure_add("floor_bench_rss_mib", "floor: RSS of this bench process", mib(fl.bench_rss_kib),
	           "MiB", 1.0);

	if (stream) {
		/* 8 alone: the other sections are the default run's */
		stream_figures(chorusd, k, &fl, stream_nodes);
		print_table();
		if (bench.json)
			print_json(date, machine, quick);
		cleanup();
		return 0;
	}

	/* 2. node, synchronous = normal */
	node_start(&bench.node, chorusd, "normal", false);
	ch_client *c = bench.node.client;
	long idle_kib = proc_status_kib(bench.node.pid, "VmRSS");
	uint32_t worker_count = 0;
	long idle_workers_kib = children_rss_kib(bench.node.pid, &worker_count);
	if (idle_kib < 0)
		fail("cannot read /proc/%d/status", (int)bench.node.pid);

	/* 3. latency */
	say("submit-and-await: %u calls after %u warm-up...\n", k->await_calls, k->await_warmup);
	struct latency lat;
	measure_await(c, k->await_warmup, k->await_calls, &lat);
	uint64_t finished_count = (uint64_t)k->await_warmup + k->await_calls;
	say("  p50 %.1f us, p99 %.1f us\n", ns_to_us(lat.p50_ns), ns_to_us(lat.p99_ns));
	double ratio50 = ns_to_us(lat.p50_ns) / floor_p50_us;
	struct figure *f = figure_add("await_p50_us", "submit+await echo p50", ns_to_us(lat.p50_ns),
	                              "us", ratio50);
	figure_target(f, "<= 5x floor", ratio50 <= TARGET_AWAIT_P50_RATIO_MAX);
	figure_add("await_p99_us", "submit+await echo p99", ns_to_us(lat.p99_ns), "us",
	           ns_to_us(lat.p99_ns) / floor_p99_us);
	figure_add("await_sequential_per_s", "submit+await sequential calls/s", lat.calls_per_s, "/s",
	           lat.calls_per_s / fl.round_trips_per_s);

	/* 4. fan-out */
	say("fan-out: %u x ch_map of %u echo tasks...\n", FANOUT_ROUNDS, k->fanout_tasks);
	struct fanout fan;
	measure_fanout(c, k->fanout_tasks, "fan-out", &finished_count, &fan);
	f = figure_add("fanout_tasks_per_s", "fan-out ch_map, sync=normal (median)", fan.median_per_s,
	               "tasks/s", fan.median_per_s / fl.round_trips_per_s);
	figure_target(f, ">= 20000/s", fan.median_per_s >= TARGET_FANOUT_TASKS_PER_S_MIN);
	figure_add("fanout_slowest_tasks_per_s", "fan-out ch_map, sync=normal (slowest)",
	           fan.slowest_per_s, "tasks/s", fan.slowest_per_s / fl.round_trips_per_s);

	/* 5. concurrent submit-and-await */
	say("concurrent: %d threads of submit-and-await for %u ms...\n", CONCURRENT_THREADS,
	    k->concurrent_ms);
	struct concurrent conc;
	measure_concurrent(c, k->concurrent_ms, &conc);
	finished_count += conc.call_count;
	say("  %.0f tasks/s\n", conc.tasks_per_s);
	figure_add("concurrent_tasks_per_s", "8 threads submit+await", conc.tasks_per_s, "tasks/s",
	           conc.tasks_per_s / fl.round_trips_per_s);
	figure_add("concurrent_p50_us", "8 threads submit+await p50", ns_to_us(conc.p50_ns), "us",
	           ns_to_us(conc.p50_ns) / floor_p50_us);
	figure_add("concurrent_p99_us", "8 threads submit+await p99", ns_to_us(conc.p99_ns), "us",
	           ns_to_us(conc.p99_ns) / floor_p99_us);

	/* 6. RSS idle and holding results */
	double idle_mib = mib(idle_kib);
	f = figure_add("idle_rss_mib", "node RSS idle (after start)", idle_mib, "MiB",
	               (double)idle_kib / (double)fl.bench_rss_kib);
	figure_target(f, "<= 16 MiB", idle_mib <= TARGET_IDLE_RSS_MIB_MAX);
	if (idle_workers_kib >= 0 && worker_count > 0) {
		char label[64];
		snprintf(label, sizeof(label), "%u workers RSS idle, sum", worker_count);
		figure_add("idle_workers_rss_mib", label, mib(idle_workers_kib), "MiB",
		           (double)idle_workers_kib / (double)fl.bench_rss_kib);
	}
	/* every task so far succeeded and was counted: fill up to held_results */
	uint64_t fill_tasks = 0, fill_ns = 0;
	uint32_t fill_index = 1000000;
	say("filling the journal to %u finished results...\n", k->held_results);
	while (finished_count < k->held_results) {
		uint64_t left = k->held_results - finished_count;
		uint32_t n = left < MAP_CHUNK_TASKS_MAX ? (uint32_t)left : MAP_CHUNK_TASKS_MAX;
		fill_ns += run_map(c, n, fill_index, "journal fill");
		fill_index += n;
		fill_tasks += n;
		finished_count += n;
	}
	long held_kib = proc_status_kib(bench.node.pid, "VmRSS");
	long hwm_kib = proc_status_kib(bench.node.pid, "VmHWM");
	if (held_kib < 0)
		fail("cannot read /proc/%d/status", (int)bench.node.pid);
	char label[64];
	snprintf(label, sizeof(label), "node RSS holding %" PRIu64 " results", finished_count);
	figure_add("held_rss_mib", label, mib(held_kib), "MiB",
	           (double)held_kib / (double)fl.bench_rss_kib);
	if (hwm_kib > 0)
		figure_add("peak_rss_mib", "node peak RSS (VmHWM)", mib(hwm_kib), "MiB",
		           (double)hwm_kib / (double)fl.bench_rss_kib);
	if (fill_tasks > 0) {
		double fill_per_s = (double)fill_tasks * 1e9 / (double)fill_ns;
		figure_add("fill_tasks_per_s", "fan-out while filling, mean", fill_per_s, "tasks/s",
		           fill_per_s / fl.round_trips_per_s);
	}
	int status = node_stop(&bench.node);
	if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		say("note: node (sync=normal) did not exit 0 on SIGTERM (status 0x%x)\n", status);
	bench.node.log_path[0] = '\0';

	/* 7. synchronous = full */
	if (!skip_full) {
		node_start(&bench.node, chorusd, "full", true);
		c = bench.node.client;
		say("sync=full: submit-and-await %u calls, %u x ch_map of %u...\n", k->full_await_calls,
		    FANOUT_ROUNDS, k->full_fanout_tasks);
		struct latency full;
		measure_await(c, k->full_await_warmup, k->full_await_calls, &full);
		figure_add("full_await_p50_us", "submit+await p50, sync=full", ns_to_us(full.p50_ns), "us",
		           ns_to_us(full.p50_ns) / floor_p50_us);
		figure_add("full_await_p99_us", "submit+await p99, sync=full", ns_to_us(full.p99_ns), "us",
		           ns_to_us(full.p99_ns) / floor_p99_us);
		uint64_t full_finished_count = 0;
		struct fanout full_fan;
		measure_fanout(c, k->full_fanout_tasks, "fan-out (sync=full)", &full_finished_count,
		               &full_fan);
		/* the 20,000/s target is for the default (normal); full is reported as its cost */
		figure_add("full_fanout_tasks_per_s", "fan-out ch_map, sync=full (median)",
		           full_fan.median_per_s, "tasks/s", full_fan.median_per_s / fl.round_trips_per_s);
		status = node_stop(&bench.node);
		if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
			say("note: node (sync=full) did not exit 0 on SIGTERM (status 0x%x)\n", status);
		bench.node.log_path[0] = '\0';
	}

	print_table();
	if (bench.json)
		print_json(date, machine, quick);
	cleanup();
	return 0;
}
