/*
 * test_handlers.c - the handler registry, the built-ins, exec, plugins and
 * the worker main loop (node/worker/handlers.c).
 *
 * Built-ins run in-process through handlers_run (crash in a forked child).
 * Plugins are compiled into a temporary directory with `gcc -shared -fPIC`
 * (the example plugin comes from $CHORUS_BUILD_DIR/example_upper.so when the
 * build made it, else from its source, found relative to this file).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto/chorus.pb-c.h"
#include "worker/handlers.h"

static char tmp_dir[256];
static char src_root[1024]; /* the repository root, from __FILE__ */

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *const allow[] = {"/bin/cat", "/bin/sh", NULL};

static int setup(void **state)
{
	struct handler_registry *reg = malloc(sizeof *reg);
	assert_non_null(reg);
	assert_int_equal(handlers_init(reg, allow), 0);
	*state = reg;
	return 0;
}

static int teardown(void **state)
{
	struct handler_registry *reg = *state;
	handlers_free(reg);
	free(reg);
	return 0;
}

static void run(const struct handler_registry *reg, const char *handler, const char *payload,
                const char *const *argv, uint32_t timeout_ms, size_t output_max,
                struct handler_run_result *res)
{
	handlers_run(reg, handler, (const uint8_t *)payload, payload ? strlen(payload) : 0, argv,
	             timeout_ms, output_max, res);
}

static void res_free(struct handler_run_result *res)
{
	free(res->output);
	free(res->error);
}

static void assert_output(const struct handler_run_result *res, const char *want)
{
	assert_int_equal(res->output_len, strlen(want));
	assert_memory_equal(res->output, want, res->output_len);
}

/* ---- built-ins ---- */

static void builtins_are_registered_and_names_are_checked(void **state)
{
	struct handler_registry *reg = *state;
	const char *names[] = {"echo", "sleep", "sha256", "fail", "crash", "exec"};
	for (size_t i = 0; i < 6; i++) {
		const struct handler_entry *e = handlers_find(reg, names[i]);
		assert_non_null(e);
		assert_true(e->builtin);
	}
	assert_null(handlers_find(reg, "nope"));
	assert_null(handlers_find(reg, NULL));
}

static void echo_returns_payload(void **state)
{
	struct handler_run_result res;
	run(*state, "echo", "hello, chorus", NULL, 0, 1024, &res);
	assert_true(res.ok);
	assert_null(res.error);
	assert_output(&res, "hello, chorus");
	res_free(&res);

	run(*state, "echo", NULL, NULL, 0, 1024, &res);
	assert_true(res.ok);
	assert_int_equal(res.output_len, 0);
	res_free(&res);
}

static void output_over_cap_fails_and_keeps_what_fits(void **state)
{
	struct handler_run_result res;
	run(*state, "echo", "0123456789", NULL, 0, 4, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "output exceeds 4 bytes");
	assert_output(&res, "0123");
	res_free(&res);
}

static void unknown_handler_fails(void **state)
{
	struct handler_run_result res;
	run(*state, "no-such", "x", NULL, 0, 1024, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "unknown handler no-such");
	res_free(&res);
}

static void sleep_waits_the_given_milliseconds(void **state)
{
	struct handler_run_result res;
	uint64_t t0 = mono_ms();
	run(*state, "sleep", "120\n", NULL, 0, 1024, &res);
	uint64_t took = mono_ms() - t0;
	assert_true(res.ok);
	assert_int_equal(res.output_len, 0);
	assert_true(took >= 120);
	assert_true(took < 5000);
	res_free(&res);
}

static void sleep_rejects_bad_payloads(void **state)
{
	const char *bad[] = {"", "abc", "12x", "-5", "1.5"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct handler_run_result res;
		run(*state, "sleep", bad[i], NULL, 0, 1024, &res);
		assert_false(res.ok);
		assert_non_null(strstr(res.error, "sleep: "));
		res_free(&res);
	}
	struct handler_run_result res;
	run(*state, "sleep", "3600001", NULL, 0, 1024, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "sleep: at most 3600000 ms (1 hour) allowed");
	res_free(&res);
	run(*state, "sleep", "99999999999999999999999", NULL, 0, 1024, &res);
	assert_false(res.ok);
	res_free(&res);
}

static void sha256_is_lowercase_hex(void **state)
{
	struct handler_run_result res;
	run(*state, "sha256", "abc", NULL, 0, 1024, &res);
	assert_true(res.ok);
	assert_output(&res, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	res_free(&res);
	run(*state, "sha256", "", NULL, 0, 1024, &res);
	assert_true(res.ok);
	assert_output(&res, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	res_free(&res);
}

static void fail_reports_payload_or_default_message(void **state)
{
	struct handler_run_result res;
	run(*state, "fail", "disk on fire", NULL, 0, 1024, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "disk on fire");
	res_free(&res);
	run(*state, "fail", "", NULL, 0, 1024, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "failed on purpose");
	res_free(&res);
	/* Bytes that are not UTF-8 text never reach the error string. */
	handlers_run(*state, "fail", (const uint8_t *)"a\xff\x01z", 4, NULL, 0, 1024, &res);
	assert_string_equal(res.error, "a??z");
	res_free(&res);
}

static void crash_aborts_the_process(void **state)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGABRT, SIG_DFL);
		struct handler_run_result res;
		run(*state, "crash", "", NULL, 0, 1024, &res);
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
}

/* ---- exec ---- */

static void exec_refuses_paths_outside_the_allowlist(void **state)
{
	struct handler_registry *reg = *state;
	assert_true(handlers_exec_allowed(reg, "/bin/cat"));
	assert_false(handlers_exec_allowed(reg, "/bin/rm"));
	assert_false(handlers_exec_allowed(reg, "cat"));
	assert_false(handlers_exec_allowed(reg, NULL));

	struct handler_run_result res;
	const char *rm[] = {"/bin/rm", "-rf", "/tmp/nothing-here", NULL};
	run(reg, "exec", "", rm, 1000, 1024, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "exec: /bin/rm is not in the exec allowlist");
	res_free(&res);

	const char *rel[] = {"cat", NULL};
	run(reg, "exec", "", rel, 1000, 1024, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "exec: cat is not in the exec allowlist");
	res_free(&res);

	run(reg, "exec", "", NULL, 1000, 1024, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "exec: argv is empty");
	res_free(&res);
}

static void relative_allowlist_entry_is_refused(void **state)
{
	(void)state;
	struct handler_registry reg;
	const char *bad[] = {"/bin/cat", "bin/sh", NULL};
	assert_int_equal(handlers_init(&reg, bad), -1);
}

static void exec_cat_echoes_stdin(void **state)
{
	struct handler_run_result res;
	const char *cat[] = {"/bin/cat", NULL};
	run(*state, "exec", "through the pipe\n", cat, 5000, 1024, &res);
	assert_true(res.ok);
	assert_null(res.error);
	assert_int_equal(res.exit_code, 0);
	assert_output(&res, "through the pipe\n");
	res_free(&res);
}

static void exec_keeps_exit_code_and_stderr_head(void **state)
{
	struct handler_run_result res;
	const char *sh[] = {"/bin/sh", "-c", "echo partial; echo 'it broke' >&2; exit 3", NULL};
	run(*state, "exec", "", sh, 5000, 1024, &res);
	assert_false(res.ok);
	assert_int_equal(res.exit_code, 3);
	assert_string_equal(res.error, "exit status 3: it broke");
	assert_output(&res, "partial\n");
	res_free(&res);

	const char *quiet[] = {"/bin/sh", "-c", "exit 3", NULL};
	run(*state, "exec", "", quiet, 5000, 1024, &res);
	assert_false(res.ok);
	assert_int_equal(res.exit_code, 3);
	assert_string_equal(res.error, "exit status 3");
	res_free(&res);
}

static void exec_stderr_head_is_capped_at_4_kib(void **state)
{
	struct handler_run_result res;
	const char *sh[] = {"/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' e >&2; exit 1",
	                    NULL};
	run(*state, "exec", "", sh, 5000, 1024, &res);
	assert_false(res.ok);
	assert_int_equal(strlen(res.error), strlen("exit status 1: ") + 4096);
	res_free(&res);
}

static void exec_child_killed_by_signal_is_reported(void **state)
{
	struct handler_run_result res;
	const char *sh[] = {"/bin/sh", "-c", "kill -9 $$", NULL};
	run(*state, "exec", "", sh, 5000, 1024, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "killed by signal 9");
	assert_int_equal(res.exit_code, 128 + 9);
	res_free(&res);
}

static void exec_output_over_cap_kills_the_child(void **state)
{
	struct handler_run_result res;
	const char *yes[] = {"/bin/sh", "-c", "while :; do echo yyyyyyyyyyyyyyyyyyyy; done", NULL};
	uint64_t t0 = mono_ms();
	run(*state, "exec", "", yes, 20000, 1000, &res);
	assert_true(mono_ms() - t0 < 10000);
	assert_false(res.ok);
	assert_string_equal(res.error, "output exceeds 1000 bytes");
	assert_int_equal(res.output_len, 1000);
	assert_int_equal(res.exit_code, 128 + SIGKILL);
	res_free(&res);
}

static void exec_timeout_kills_the_child(void **state)
{
	struct handler_run_result res;
	const char *sh[] = {"/bin/sh", "-c", "sleep 30", NULL};
	uint64_t t0 = mono_ms();
	run(*state, "exec", "", sh, 200, 1024, &res);
	uint64_t took = mono_ms() - t0;
	assert_false(res.ok);
	assert_string_equal(res.error, "timed out after 200 ms");
	assert_true(took >= 200);
	assert_true(took < 5000);
	res_free(&res);
}

static void exec_background_child_does_not_hold_the_task(void **state)
{
	/* The grandchild keeps stdout open; it is killed with the group when
	 * the direct child exits, so the task ends at once. */
	struct handler_run_result res;
	const char *sh[] = {"/bin/sh", "-c", "sleep 30 & echo started", NULL};
	uint64_t t0 = mono_ms();
	run(*state, "exec", "", sh, 20000, 1024, &res);
	assert_true(mono_ms() - t0 < 5000);
	assert_true(res.ok);
	assert_output(&res, "started\n");
	res_free(&res);
}

static void exec_child_that_never_reads_stdin_does_not_deadlock(void **state)
{
	/* 4 MiB in, 1 MiB out, and the child never reads: a writer that
	 * blocked on stdin before reading stdout would hang forever. */
	size_t in_len = 4u << 20;
	uint8_t *payload = malloc(in_len);
	assert_non_null(payload);
	memset(payload, 'p', in_len);
	const char *sh[] = {"/bin/sh", "-c", "head -c 1048576 /dev/zero", NULL};
	struct handler_run_result res;
	uint64_t t0 = mono_ms();
	handlers_run(*state, "exec", payload, in_len, sh, 20000, 2u << 20, &res);
	assert_true(mono_ms() - t0 < 10000);
	assert_true(res.ok);
	assert_int_equal(res.output_len, 1048576);
	res_free(&res);

	/* And a child that reads all of a big stdin while writing it back. */
	const char *cat[] = {"/bin/cat", NULL};
	handlers_run(*state, "exec", payload, in_len, cat, 20000, 8u << 20, &res);
	assert_true(res.ok);
	assert_int_equal(res.output_len, in_len);
	assert_memory_equal(res.output, payload, in_len);
	res_free(&res);
	free(payload);
}

static void exec_child_gets_no_inherited_fds(void **state)
{
	/* fd 7 open in the worker must not be visible in the child. */
	int fd = dup2(2, 7);
	assert_int_equal(fd, 7);
	struct handler_run_result res;
	const char *sh[] = {"/bin/sh", "-c", "ls /proc/self/fd | wc -l", NULL};
	run(*state, "exec", "", sh, 5000, 1024, &res);
	close(7);
	assert_true(res.ok);
	/* 0, 1, 2 and the fd ls opens on the directory itself. */
	assert_int_equal(atoi((const char *)res.output), 4);
	res_free(&res);
}

/* ---- plugins ---- */

static int sh_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh_run(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Writes src into tmp_dir/name.c and builds tmp_dir/name.so. */
static void build_plugin(const char *name, const char *src, char *so, size_t so_len)
{
	char c_path[512];
	snprintf(c_path, sizeof c_path, "%s/%s.c", tmp_dir, name);
	FILE *f = fopen(c_path, "w");
	assert_non_null(f);
	fputs(src, f);
	fclose(f);
	snprintf(so, so_len, "%s/%s.so", tmp_dir, name);
	assert_int_equal(sh_run("gcc -shared -fPIC -I'%s/node' -o '%s' '%s'", src_root, so, c_path), 0);
}

static void example_plugin_path(char *so, size_t so_len)
{
	const char *build = getenv("CHORUS_BUILD_DIR");
	if (build != NULL) {
		snprintf(so, so_len, "%s/example_upper.so", build);
		if (access(so, R_OK) == 0)
			return;
	}
	snprintf(so, so_len, "%s/example_upper.so", tmp_dir);
	if (access(so, R_OK) == 0)
		return;
	assert_int_equal(sh_run("gcc -shared -fPIC -I'%s/node' -o '%s' '%s/node/plugins/example_upper.c'",
	                        src_root, so, src_root),
	                 0);
}

static void example_plugin_registers_upper_and_wordcount(void **state)
{
	struct handler_registry *reg = *state;
	char so[600], err[512];
	example_plugin_path(so, sizeof so);
	assert_int_equal(handlers_load_plugin(reg, so, err, sizeof err), 0);
	assert_int_equal(reg->plugin_count, 1);
	const struct handler_entry *e = handlers_find(reg, "upper");
	assert_non_null(e);
	assert_false(e->builtin);

	struct handler_run_result res;
	run(reg, "upper", "Hello, wörld 42", NULL, 0, 1024, &res);
	assert_true(res.ok);
	assert_output(&res, "HELLO, WöRLD 42");
	res_free(&res);
	run(reg, "wordcount", "  the quick\tbrown\n\nfox  ", NULL, 0, 1024, &res);
	assert_true(res.ok);
	assert_output(&res, "4");
	res_free(&res);
	run(reg, "wordcount", "", NULL, 0, 1024, &res);
	assert_output(&res, "0");
	res_free(&res);
	run(reg, "upper", "abcdef", NULL, 0, 3, &res);
	assert_false(res.ok);
	assert_string_equal(res.error, "output exceeds 3 bytes");
	res_free(&res);
}

static void plugin_loaded_twice_is_a_name_clash(void **state)
{
	struct handler_registry *reg = *state;
	char so[600], err[512];
	example_plugin_path(so, sizeof so);
	assert_int_equal(handlers_load_plugin(reg, so, err, sizeof err), 0);
	uint32_t count = reg->count;
	assert_int_equal(handlers_load_plugin(reg, so, err, sizeof err), -1);
	char want[800];
	snprintf(want, sizeof want, "plugin %s: handler upper already registered", so);
	assert_string_equal(err, want);
	assert_int_equal(reg->count, count);
	assert_int_equal(reg->plugin_count, 1);
	/* The first load still works. */
	struct handler_run_result res;
	run(reg, "upper", "ok", NULL, 0, 1024, &res);
	assert_output(&res, "OK");
	res_free(&res);
}

static void plugin_with_bad_path_is_refused(void **state)
{
	char err[512];
	assert_int_equal(handlers_load_plugin(*state, "/nonexistent/x.so", err, sizeof err), -1);
	assert_non_null(strstr(err, "plugin /nonexistent/x.so: dlopen: "));
}

static void plugin_without_init_is_refused(void **state)
{
	char so[600], err[1024];
	build_plugin("noinit", "int something_else(void) { return 0; }\n", so, sizeof so);
	assert_int_equal(handlers_load_plugin(*state, so, err, sizeof err), -1);
	char want[800];
	snprintf(want, sizeof want, "plugin %s: no chorus_plugin_init", so);
	assert_string_equal(err, want);
}

static void plugin_init_failure_is_refused_and_rolled_back(void **state)
{
	struct handler_registry *reg = *state;
	char so[600], err[1024];
	build_plugin("initfail",
	             "#include \"chorus_plugin.h\"\n"
	             "static int h(const uint8_t *p, size_t n, struct chorus_handler_out *o)\n"
	             "{ (void)p; (void)n; (void)o; return 0; }\n"
	             "int chorus_plugin_init(const struct chorus_plugin_api *api)\n"
	             "{ api->register_handler(api, \"half\", h); return 7; }\n",
	             so, sizeof so);
	uint32_t count = reg->count;
	assert_int_equal(handlers_load_plugin(reg, so, err, sizeof err), -1);
	char want[800];
	snprintf(want, sizeof want, "plugin %s: init returned 7", so);
	assert_string_equal(err, want);
	assert_int_equal(reg->count, count);
	assert_null(handlers_find(reg, "half"));
	assert_int_equal(reg->plugin_count, 0);
}

static void plugin_clashing_with_builtin_or_bad_name_is_refused(void **state)
{
	struct handler_registry *reg = *state;
	char so[600], err[1024], want[900];
	build_plugin("clash",
	             "#include \"chorus_plugin.h\"\n"
	             "static int h(const uint8_t *p, size_t n, struct chorus_handler_out *o)\n"
	             "{ (void)p; (void)n; (void)o; return 0; }\n"
	             "int chorus_plugin_init(const struct chorus_plugin_api *api)\n"
	             "{ return api->register_handler(api, \"echo\", h) == -1 ? 0 : 1; }\n",
	             so, sizeof so);
	assert_int_equal(handlers_load_plugin(reg, so, err, sizeof err), -1);
	snprintf(want, sizeof want, "plugin %s: handler echo already registered", so);
	assert_string_equal(err, want);

	build_plugin("badname",
	             "#include \"chorus_plugin.h\"\n"
	             "static int h(const uint8_t *p, size_t n, struct chorus_handler_out *o)\n"
	             "{ (void)p; (void)n; (void)o; return 0; }\n"
	             "int chorus_plugin_init(const struct chorus_plugin_api *api)\n"
	             "{ return api->register_handler(api, \"Bad Name\", h) == -1 ? 3 : 0; }\n",
	             so, sizeof so);
	assert_int_equal(handlers_load_plugin(reg, so, err, sizeof err), -1);
	assert_non_null(strstr(err, "handler name \"Bad Name\" is invalid"));
	assert_null(handlers_find(reg, "Bad Name"));
}

/* ---- the worker process ---- */

static pid_t worker_fork(const struct handler_registry *reg, int *fd)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		handlers_worker_main(reg, sv[1], NULL);
	}
	close(sv[1]);
	*fd = sv[0];
	return pid;
}

static void send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		assert_true(w > 0);
		p += w;
		len -= (size_t)w;
	}
}

static void recv_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t r = read(fd, p, len);
		assert_true(r > 0);
		p += r;
		len -= (size_t)r;
	}
}

static void send_job(int fd, uint64_t task_id, const char *handler, const char *payload)
{
	Chorus__WorkerJob job = CHORUS__WORKER_JOB__INIT;
	job.task_id = task_id;
	job.handler = (char *)handler;
	job.payload.data = (uint8_t *)payload;
	job.payload.len = strlen(payload);
	job.output_max = 1024;
	job.timeout_ms = 5000;
	size_t len = chorus__worker_job__get_packed_size(&job);
	uint8_t *frame = malloc(4 + len);
	assert_non_null(frame);
	frame[0] = (uint8_t)len;
	frame[1] = (uint8_t)(len >> 8);
	frame[2] = (uint8_t)(len >> 16);
	frame[3] = (uint8_t)(len >> 24);
	chorus__worker_job__pack(&job, frame + 4);
	send_all(fd, frame, 4 + len);
	free(frame);
}

static Chorus__WorkerResult *recv_result(int fd)
{
	uint8_t hdr[4];
	recv_all(fd, hdr, 4);
	uint32_t len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
	               (uint32_t)hdr[3] << 24;
	uint8_t *body = malloc(len ? len : 1);
	assert_non_null(body);
	recv_all(fd, body, len);
	Chorus__WorkerResult *r = chorus__worker_result__unpack(NULL, len, body);
	free(body);
	assert_non_null(r);
	return r;
}

static int wait_exit_status(pid_t pid)
{
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void worker_runs_jobs_in_order_and_exits_on_eof(void **state)
{
	int fd;
	pid_t pid = worker_fork(*state, &fd);
	send_job(fd, 11, "echo", "one");
	send_job(fd, 12, "fail", "two");
	send_job(fd, 13, "nope", "");
	Chorus__WorkerResult *r = recv_result(fd);
	assert_int_equal(r->task_id, 11);
	assert_true(r->ok);
	assert_int_equal(r->output.len, 3);
	assert_memory_equal(r->output.data, "one", 3);
	chorus__worker_result__free_unpacked(r, NULL);
	r = recv_result(fd);
	assert_int_equal(r->task_id, 12);
	assert_false(r->ok);
	assert_string_equal(r->error, "two");
	chorus__worker_result__free_unpacked(r, NULL);
	r = recv_result(fd);
	assert_int_equal(r->task_id, 13);
	assert_false(r->ok);
	assert_string_equal(r->error, "unknown handler nope");
	chorus__worker_result__free_unpacked(r, NULL);
	shutdown(fd, SHUT_WR);
	assert_int_equal(wait_exit_status(pid), HANDLERS_EXIT_EOF);
	close(fd);
}

static void worker_exits_3_on_oversized_frame(void **state)
{
	int fd;
	pid_t pid = worker_fork(*state, &fd);
	uint32_t len = HANDLERS_JOB_FRAME_BYTES_MAX + 1;
	uint8_t hdr[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
	                  (uint8_t)(len >> 24)};
	send_all(fd, hdr, 4);
	assert_int_equal(wait_exit_status(pid), HANDLERS_EXIT_BAD_FRAME);
	close(fd);
}

static void worker_exits_3_on_garbage_or_truncated_frame(void **state)
{
	int fd;
	pid_t pid = worker_fork(*state, &fd);
	uint8_t junk[] = {5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff};
	send_all(fd, junk, sizeof junk);
	assert_int_equal(wait_exit_status(pid), HANDLERS_EXIT_BAD_FRAME);
	close(fd);

	pid = worker_fork(*state, &fd);
	uint8_t part[] = {100, 0, 0, 0, 0x08, 0x01};
	send_all(fd, part, sizeof part);
	shutdown(fd, SHUT_WR);
	assert_int_equal(wait_exit_status(pid), HANDLERS_EXIT_BAD_FRAME);
	close(fd);
}

static int suite_setup(void **state)
{
	(void)state;
	snprintf(tmp_dir, sizeof tmp_dir, "/tmp/chorus-test-handlers-XXXXXX");
	if (mkdtemp(tmp_dir) == NULL)
		return -1;
	const char *file = __FILE__;
	const char *tail = strstr(file, "tests/unit/test_handlers.c");
	if (tail == NULL)
		return -1;
	size_t n = (size_t)(tail - file);
	if (n == 0) {
		snprintf(src_root, sizeof src_root, ".");
	} else {
		snprintf(src_root, sizeof src_root, "%.*s", (int)n - 1, file);
	}
	return 0;
}

static int suite_teardown(void **state)
{
	(void)state;
	sh_run("rm -rf '%s'", tmp_dir);
	return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(builtins_are_registered_and_names_are_checked),
		T(echo_returns_payload),
		T(output_over_cap_fails_and_keeps_what_fits),
		T(unknown_handler_fails),
		T(sleep_waits_the_given_milliseconds),
		T(sleep_rejects_bad_payloads),
		T(sha256_is_lowercase_hex),
		T(fail_reports_payload_or_default_message),
		T(crash_aborts_the_process),
		T(exec_refuses_paths_outside_the_allowlist),
		T(relative_allowlist_entry_is_refused),
		T(exec_cat_echoes_stdin),
		T(exec_keeps_exit_code_and_stderr_head),
		T(exec_stderr_head_is_capped_at_4_kib),
		T(exec_child_killed_by_signal_is_reported),
		T(exec_output_over_cap_kills_the_child),
		T(exec_timeout_kills_the_child),
		T(exec_background_child_does_not_hold_the_task),
		T(exec_child_that_never_reads_stdin_does_not_deadlock),
		T(exec_child_gets_no_inherited_fds),
		T(example_plugin_registers_upper_and_wordcount),
		T(plugin_loaded_twice_is_a_name_clash),
		T(plugin_with_bad_path_is_refused),
		T(plugin_without_init_is_refused),
		T(plugin_init_failure_is_refused_and_rolled_back),
		T(plugin_clashing_with_builtin_or_bad_name_is_refused),
		T(worker_runs_jobs_in_order_and_exits_on_eof),
		T(worker_exits_3_on_oversized_frame),
		T(worker_exits_3_on_garbage_or_truncated_frame),
	};
	return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
