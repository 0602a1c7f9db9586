/*
 * test_config.c - chorusd settings (node/config.c): defaults, the INI file,
 * environment variables over the file and flags over both, every refusal
 * naming file:line (or the flag, or the variable), the advertised address
 * of a wildcard listen address and the warning when its host name looks
 * unreachable, and the duration/size parsers at their
 * edges. Config files are written to a temporary directory per test; the
 * CHORUS_* settings variables are cleared before and after each test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chorus.h"
#include "config.h"
#include "io/log.h"
#include "io/store.h"

struct fixture {
	char dir[64];
	char path[128]; /* DIR/chorus.conf */
	struct config c;
	char err[512];
};

extern char **environ;

/* Unsets every CHORUS_* variable but the test runner's own (CHORUS_TEST_*,
 * CHORUS_BUILD_DIR, CHORUS_SOURCE_DIR), so that neither the caller's
 * environment nor an earlier test changes what config_load sees. */
static void clear_chorus_env(void)
{
	for (int again = 1; again;) {
		again = 0;
		for (char **e = environ; *e; e++) {
			if (strncmp(*e, "CHORUS_", 7) != 0 || strncmp(*e, "CHORUS_TEST_", 12) == 0 ||
			    strncmp(*e, "CHORUS_BUILD_DIR=", 17) == 0 ||
			    strncmp(*e, "CHORUS_SOURCE_DIR=", 18) == 0)
				continue;
			char name[128];
			size_t n = strcspn(*e, "=");
			assert_true(n < sizeof(name));
			memcpy(name, *e, n);
			name[n] = '\0';
			assert_int_equal(unsetenv(name), 0);
			again = 1; /* environ changed under us: start over */
			break;
		}
	}
}

static int setup(void **state)
{
	clear_chorus_env();
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/chorus-config-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/chorus.conf", f->dir);
	config_defaults(&f->c);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	clear_chorus_env();
	config_free(&f->c);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void write_conf(struct fixture *f, const char *text)
{
	FILE *fp = fopen(f->path, "w");
	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

/* config_load with a NULL-terminated argument list (argv[0] added). */
static int load_args(struct fixture *f, ...)
{
	char *argv[64] = {"chorusd"};
	int argc = 1;
	va_list ap;
	va_start(ap, f);
	for (char *a; (a = va_arg(ap, char *)) != NULL;) {
		assert_true(argc < 63);
		argv[argc++] = a;
	}
	va_end(ap);
	f->err[0] = '\0';
	return config_load(&f->c, argc, argv, f->err, sizeof(f->err));
}

/* Loads `text` as the config file and expects the error "PATH:LINE: reason". */
static void assert_file_error(struct fixture *f, const char *text, int line, const char *reason)
{
	write_conf(f, text);
	assert_int_equal(config_load_file(&f->c, f->path, f->err, sizeof(f->err)), -1);
	char want[512];
	snprintf(want, sizeof(want), "%s:%d: %s", f->path, line, reason);
	assert_string_equal(f->err, want);
}

static void defaults_are_the_documented_ones(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	assert_true(strlen(c->name) > 0);
	char host[256] = "";
	if (gethostname(host, sizeof(host)) == 0 && host[0])
		assert_int_equal(strncmp(c->name, host, sizeof(c->name) - 1), 0);
	assert_string_equal(c->listen, "tcp://127.0.0.1:7400");
	assert_string_equal(c->data_dir, "./chorus-data");
	assert_string_equal(c->secret_file, "");
	assert_int_equal(c->workers, 2);
	assert_int_equal(c->prefetch, 2);
	assert_int_equal(c->log_level, LOG_INFO);
	assert_int_equal(c->log_json, 0);
	assert_int_equal(c->synchronous, STORE_SYNC_NORMAL);
	assert_int_equal(c->frame_bytes_max, 16u << 20);
	assert_int_equal(c->result_ttl_ms, 3600000);
	assert_int_equal(c->queue_max, 1000000);
	assert_int_equal(c->default_timeout_ms, 0);
	assert_int_equal(c->shutdown_grace_ms, 10000);
	assert_int_equal(c->max_attempts, 3);
	assert_int_equal(c->backoff_ms, 100);
	assert_int_equal(c->backoff_max_ms, 30000);
	assert_int_equal(c->output_max, 1u << 20);
	assert_int_equal(c->intensity, 10);
	assert_int_equal(c->period_ms, 5000);
	assert_int_equal(c->exec_allow_count, 0);
	assert_null(c->exec_allow[0]);
	assert_int_equal(c->plugin_count, 0);
	assert_int_equal(c->pool_count, 0);
	/* no flags: nothing changes */
	assert_int_equal(load_args(f, NULL), 0);
	assert_int_equal(c->workers, 2);
}

static const char full_file[] =
	"# every key\n"
	"[node]\n"
	"name = edge-7\n"
	"listen = tcp://0.0.0.0:7500\n"
	"data_dir = /var/lib/chorus\n"
	"secret = /etc/chorus/secret\n"
	"workers = 8\n"
	"prefetch = 4\n"
	"log_level = debug\n"
	"log_format = json\n"
	"synchronous = full\n"
	"frame_bytes_max = 64k\n"
	"result_ttl = 2m\n"
	"queue_max = 5000\n"
	"default_timeout = 30s\n"
	"shutdown_grace = 1500\n"
	"plugins = /opt/a.so, /opt/b.so\n"
	"[tasks]\n"
	"max_attempts = 5\n"
	"backoff = 250ms\n"
	"backoff_max = 1h\n"
	"output_max = 2M\n"
	"[supervisor]\n"
	"intensity = 3\n"
	"period = 1m   ; inline comment\n"
	"[exec]\n"
	"allow = /bin/echo,/usr/bin/env\n"
	"[pool slow]\n"
	"workers = 3\n"
	"handlers = resize, transcode\n"
	"[pool io_1]\n"
	"handlers = fetch\n";

static void file_sets_every_documented_key(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	write_conf(f, full_file);
	assert_int_equal(config_load_file(c, f->path, f->err, sizeof(f->err)), 0);
	assert_string_equal(c->name, "edge-7");
	assert_string_equal(c->listen, "tcp://0.0.0.0:7500");
	assert_string_equal(c->data_dir, "/var/lib/chorus");
	assert_string_equal(c->secret_file, "/etc/chorus/secret");
	assert_int_equal(c->workers, 8);
	assert_int_equal(c->prefetch, 4);
	assert_int_equal(c->log_level, LOG_DEBUG);
	assert_int_equal(c->log_json, 1);
	assert_int_equal(c->synchronous, STORE_SYNC_FULL);
	assert_int_equal(c->frame_bytes_max, 65536);
	assert_int_equal(c->result_ttl_ms, 120000);
	assert_int_equal(c->queue_max, 5000);
	assert_int_equal(c->default_timeout_ms, 30000);
	assert_int_equal(c->shutdown_grace_ms, 1500);
	assert_int_equal(c->plugin_count, 2);
	assert_string_equal(c->plugins[0], "/opt/a.so");
	assert_string_equal(c->plugins[1], "/opt/b.so");
	assert_int_equal(c->max_attempts, 5);
	assert_int_equal(c->backoff_ms, 250);
	assert_int_equal(c->backoff_max_ms, 3600000);
	assert_int_equal(c->output_max, 2u << 20);
	assert_int_equal(c->intensity, 3);
	assert_int_equal(c->period_ms, 60000);
	assert_int_equal(c->exec_allow_count, 2);
	assert_string_equal(c->exec_allow[0], "/bin/echo");
	assert_string_equal(c->exec_allow[1], "/usr/bin/env");
	assert_null(c->exec_allow[2]);
	assert_int_equal(c->pool_count, 2);
	assert_string_equal(c->pools[0].name, "slow");
	assert_int_equal(c->pools[0].workers, 3);
	assert_int_equal(c->pools[0].handler_count, 2);
	assert_string_equal(c->pools[0].handlers[0], "resize");
	assert_string_equal(c->pools[0].handlers[1], "transcode");
	assert_string_equal(c->pools[1].name, "io_1");
	assert_int_equal(c->pools[1].workers, 1);
	assert_string_equal(c->pools[1].handlers[0], "fetch");
}

static void flags_override_the_file_wherever_config_appears(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	write_conf(f, full_file);
	/* --config last: the file is still applied first */
	assert_int_equal(load_args(f, "--workers", "16", "--exec-allow", "/bin/true", "--plugin",
				   "/opt/c.so", "--plugin", "/opt/d.so", "--pool", "slow:5:resize",
				   "--config", f->path, NULL),
			 0);
	assert_string_equal(c->config_file, f->path);
	assert_int_equal(c->workers, 16);
	assert_int_equal(c->prefetch, 4); /* from the file */
	assert_int_equal(c->exec_allow_count, 1);
	assert_string_equal(c->exec_allow[0], "/bin/true");
	assert_null(c->exec_allow[1]);
	assert_int_equal(c->plugin_count, 2);
	assert_string_equal(c->plugins[0], "/opt/c.so");
	assert_string_equal(c->plugins[1], "/opt/d.so");
	assert_int_equal(c->pool_count, 2);
	assert_int_equal(c->pools[0].workers, 5);
	assert_int_equal(c->pools[0].handler_count, 1);
	assert_string_equal(c->pools[0].handlers[0], "resize");
}


static void cluster_settings_from_file_and_flags(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	assert_int_equal(c->seed_count, 0);
	assert_int_equal(c->gossip_period_ms, 1000);
	write_conf(f, "[cluster]\nseeds = tcp://10.0.0.1:7400, tcp://10.0.0.2:7400\n"
		      "tags = gpu,zone:a\nadvertise = tcp://10.0.0.9:7400\ngossip_period = 200ms\n"
		      "probe_timeout = 100ms\nreap_after = 5s\n");
	assert_int_equal(load_args(f, "--config", f->path, "--tags", "ssd", NULL), 0);
	assert_int_equal(c->seed_count, 2);
	assert_string_equal(c->seeds[1], "tcp://10.0.0.2:7400");
	assert_null(c->seeds[2]);
	assert_int_equal(c->tag_count, 1);
	assert_string_equal(c->tags[0], "ssd");
	assert_string_equal(c->advertise, "tcp://10.0.0.9:7400");
	assert_int_equal(c->gossip_period_ms, 200);
	assert_int_equal(c->probe_timeout_ms, 100);
	assert_int_equal(c->reap_after_ms, 5000);
}

static void bad_cluster_settings_are_refused(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[cluster]\nseeds = 10.0.0.1:7400\n", 2,
			  "'10.0.0.1:7400' is not a tcp://, ipc:// or inproc:// address");
	assert_file_error(f, "[cluster]\ntags = GPU\n", 2, "tag 'GPU' is not 1..31 of [a-z0-9_.:-]");
	assert_file_error(f, "[cluster]\ntags = a,a\n", 2, "tag 'a' listed twice");
	assert_file_error(f, "[cluster]\ngossip = 1s\n", 2, "unknown key 'gossip' in [cluster]");
	assert_int_equal(load_args(f, "--gossip-period", "5ms", NULL), -1);
	assert_non_null(strstr(f->err, "--gossip-period"));
}

static void resp_settings_from_file_and_flag(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	assert_string_equal(c->resp.listen, "");
	assert_int_equal(c->resp.clients_max, 256);
	assert_int_equal(c->resp.idle_timeout_ms, 0);
	write_conf(f, "[resp]\nlisten = 127.0.0.1:6380\npassword = hunter2\nmax_clients = 10\n"
		      "bulk_bytes_max = 1M\nmultibulk_count_max = 100\nquery_bytes_max = 4M\n"
		      "inline_bytes_max = 4k\noutput_bytes_max = 2M\nidle_timeout = 30s\n"
		      "allow_open = yes\n");
	assert_int_equal(load_args(f, "--config", f->path, "--resp", "[::1]:6390", NULL), 0);
	assert_string_equal(c->resp.listen, "[::1]:6390");
	assert_string_equal(c->resp.password, "hunter2");
	assert_int_equal(c->resp.clients_max, 10);
	assert_int_equal(c->resp.bulk_bytes_max, 1 << 20);
	assert_int_equal(c->resp.multibulk_count_max, 100);
	assert_int_equal(c->resp.query_bytes_max, 4 << 20);
	assert_int_equal(c->resp.inline_bytes_max, 4096);
	assert_int_equal(c->resp.output_bytes_max, 2 << 20);
	assert_int_equal(c->resp.idle_timeout_ms, 30000);
	assert_int_equal(c->resp.allow_open, 1);
}

/* A listener others can reach must have a password, or say it is meant. */
static void open_resp_address_needs_a_password(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(load_args(f, "--resp", "0.0.0.0:6380", NULL), -1);
	assert_non_null(strstr(f->err, "not a loopback address and has no password"));
	assert_non_null(strstr(f->err, "allow_open"));
	config_free(&f->c);
	config_defaults(&f->c);
	write_conf(f, "[resp]\nallow_open = true\n");
	assert_int_equal(load_args(f, "--config", f->path, "--resp", "0.0.0.0:6380", NULL), 0);
	config_free(&f->c);
	config_defaults(&f->c);
	write_conf(f, "[resp]\npassword_file = /etc/chorus/resp.pw\n");
	assert_int_equal(load_args(f, "--config", f->path, "--resp", "10.1.2.3:6380", NULL), 0);
	config_free(&f->c);
	config_defaults(&f->c);
	assert_int_equal(load_args(f, "--resp", "localhost:6380", NULL), 0);
	assert_int_equal(load_args(f, "--resp", "127.9.9.9:6380", NULL), 0);
}

static void bad_resp_settings_are_refused(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[resp]\nlisten = 6380\n", 2,
			  "'6380' is not HOST:PORT (e.g. 127.0.0.1:6380, [::1]:6380)");
	assert_file_error(f, "[resp]\nlisten = ::1:6380\n", 2,
			  "'::1:6380' is not HOST:PORT (e.g. 127.0.0.1:6380, [::1]:6380)");
	assert_file_error(f, "[resp]\nmax_clients = 449\n", 2, "'449' is out of range 1..448");
	assert_file_error(f, "[resp]\nallow_open = maybe\n", 2,
			  "'maybe' is not one of true, false");
	assert_file_error(f, "[resp]\nrequirepass = x\n", 2, "unknown key 'requirepass' in [resp]");
	write_conf(f, "[resp]\npassword = a\npassword_file = /x\n");
	assert_int_equal(config_load_file(&f->c, f->path, f->err, sizeof(f->err)), -1);
	assert_non_null(strstr(f->err, "both password and password_file"));
	config_free(&f->c);
	config_defaults(&f->c);
	write_conf(f, "[resp]\nbulk_bytes_max = 8M\nquery_bytes_max = 1M\n");
	assert_int_equal(config_load_file(&f->c, f->path, f->err, sizeof(f->err)), -1);
	assert_non_null(strstr(f->err, "query_bytes_max is below bulk_bytes_max"));
	assert_int_equal(load_args(f, "--resp", "127.0.0.1:0", NULL), -1);
	assert_non_null(strstr(f->err, "--resp"));
}

/* [cache] persist: off by default; on means DATA_DIR/cache.db (the path
 * stays empty: the cache service joins it to the data dir); an absolute
 * path is taken as it is; persist_interval 0 is "at shutdown only". */
static void cache_persist_settings_from_file(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	assert_int_equal(c->cache_persist, 0);
	assert_string_equal(c->cache_persist_path, "");
	assert_int_equal(c->cache_persist_interval_ms, 0);
	write_conf(f, "[cache]\npersist = on\npersist_interval = 5m\n");
	assert_int_equal(config_load_file(c, f->path, f->err, sizeof(f->err)), 0);
	assert_int_equal(c->cache_persist, 1);
	assert_string_equal(c->cache_persist_path, "");
	assert_int_equal(c->cache_persist_interval_ms, 300000);
	write_conf(f, "[cache]\npersist = /var/lib/chorus/snap/cache.db\npersist_interval = 0\n");
	assert_int_equal(config_load_file(c, f->path, f->err, sizeof(f->err)), 0);
	assert_int_equal(c->cache_persist, 1);
	assert_string_equal(c->cache_persist_path, "/var/lib/chorus/snap/cache.db");
	assert_int_equal(c->cache_persist_interval_ms, 0);
	write_conf(f, "[cache]\npersist = off\n");
	assert_int_equal(config_load_file(c, f->path, f->err, sizeof(f->err)), 0);
	assert_int_equal(c->cache_persist, 0);
	assert_string_equal(c->cache_persist_path, "");
	write_conf(f, "[cache]\npersist = on\npersist_interval = 100ms\n");
	assert_int_equal(config_load_file(c, f->path, f->err, sizeof(f->err)), 0);
	assert_int_equal(c->cache_persist_interval_ms, 100);
	assert_int_equal(c->cache_persist_stop_timeout_ms, 60000);
	write_conf(f, "[cache]\npersist = on\npersist_stop_timeout = 5m\n");
	assert_int_equal(config_load_file(c, f->path, f->err, sizeof(f->err)), 0);
	assert_int_equal(c->cache_persist_stop_timeout_ms, 300000);
	/* DATA_DIR/cache.db named as a path is what persist = on means */
	config_free(c);
	config_defaults(c);
	write_conf(f, "[node]\ndata_dir = /var/lib/chorus/\n"
		      "[cache]\npersist = /var/lib//chorus/./cache.db\n");
	assert_int_equal(config_load_file(c, f->path, f->err, sizeof(f->err)), 0);
	/* a sibling of the data dir is elsewhere */
	write_conf(f, "[node]\ndata_dir = /var/lib/chorus\n[cache]\npersist = /var/lib/chorus-2/x.db\n");
	assert_int_equal(config_load_file(c, f->path, f->err, sizeof(f->err)), 0);
}

static void bad_cache_persist_settings_are_refused(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[cache]\npersist = maybe\n", 2,
			  "persist: off, on or the absolute path of the snapshot file, not 'maybe'");
	assert_file_error(f, "[cache]\npersist = cache.db\n", 2,
			  "persist: off, on or the absolute path of the snapshot file, not 'cache.db'");
	assert_file_error(f, "[cache]\npersist = /var/lib/chorus/\n", 2,
			  "persist: off, on or the absolute path of the snapshot file, not "
			  "'/var/lib/chorus/'");
	assert_file_error(f, "[cache]\npersist =\n", 2,
			  "persist: off, on or the absolute path of the snapshot file, not ''");
	assert_file_error(f, "[cache]\npersist = on\npersist_interval = 50ms\n", 3,
			  "persist_interval: 0 (at shutdown only) or at least 100ms, not '50ms'");
	assert_file_error(f, "[cache]\npersist = on\npersist_interval = 8d\n", 3,
			  "'8d' is not a duration (e.g. 250ms, 5s, 2m, 1h)");
	assert_file_error(f, "[cache]\npersist = on\npersist_interval = 169h\n", 3,
			  "'169h' is out of range 0ms..604800000ms");
	assert_file_error(f, "[cache]\npersist = on\npersist_interval = soon\n", 3,
			  "'soon' is not a duration (e.g. 250ms, 5s, 2m, 1h)");
	assert_file_error(f, "[cache]\npersist = on\npersist_stop_timeout = 10ms\n", 3,
			  "'10ms' is out of range 1000ms..86400000ms");
	/* the data dir holds the journal and the node's identity: a snapshot
	 * (written over PATH, a bad one moved aside) must not be among them */
	static const char *const inside[] = {"/d/chorus.db", "/d//chorus.db-wal", "/d/secret",
	                                     "/d/./sub/cache.db", "/d/other.db", "/d"};
	for (size_t i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
		config_free(&f->c);
		config_defaults(&f->c);
		char text[256], want[512];
		snprintf(text, sizeof(text), "[node]\ndata_dir = /d/\n[cache]\npersist = %s\n",
			 inside[i]);
		write_conf(f, text);
		assert_int_equal(config_load_file(&f->c, f->path, f->err, sizeof(f->err)), -1);
		snprintf(want, sizeof(want), "%s: [cache] persist = %s is inside the data dir, beside "
			 "the journal: name a file elsewhere, or persist = on (DATA_DIR/cache.db)",
			 f->path, inside[i]);
		assert_string_equal(f->err, want);
	}
	/* the data dir from the command line counts as well */
	config_free(&f->c);
	config_defaults(&f->c);
	write_conf(f, "[cache]\npersist = /srv/node1/chorus.db\n");
	assert_int_equal(load_args(f, "--config", f->path, "--data-dir", "/srv/node1", NULL), -1);
	assert_non_null(strstr(f->err, "is inside the data dir"));
	/* an interval without persistence is a mistake, not a silent no-op */
	config_free(&f->c);
	config_defaults(&f->c);
	write_conf(f, "[cache]\npersist_interval = 1m\n");
	assert_int_equal(config_load_file(&f->c, f->path, f->err, sizeof(f->err)), -1);
	char want[512];
	snprintf(want, sizeof(want), "%s: [cache] persist_interval is set but persist is off: set "
		 "persist = on (or a path), or remove persist_interval", f->path);
	assert_string_equal(f->err, want);
}

static void host_ports_and_loopback_addresses(void **state)
{
	(void)state;
	char host[64];
	uint16_t port = 0;
	assert_int_equal(config_parse_hostport("127.0.0.1:6380", host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 6380);
	assert_int_equal(config_parse_hostport("[::1]:1", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(config_parse_hostport("cache.example:65535", host, sizeof(host), &port), 0);
	static const char *const bad[] = {"", ":6380", "host", "host:", "host:0", "host:65536",
					  "h:1x", "::1:6380", "[::1]6380", "[]:1", "a b:1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (config_parse_hostport(bad[i], host, sizeof(host), &port) == 0)
			fail_msg("'%s' parsed", bad[i]);
	assert_true(config_host_is_loopback("127.0.0.1"));
	assert_true(config_host_is_loopback("127.200.0.1"));
	assert_true(config_host_is_loopback("::1"));
	assert_true(config_host_is_loopback("::ffff:127.0.0.1"));
	assert_true(config_host_is_loopback("localhost"));
	assert_false(config_host_is_loopback("0.0.0.0"));
	assert_false(config_host_is_loopback("::"));
	assert_false(config_host_is_loopback("10.0.0.1"));
	assert_false(config_host_is_loopback("128.0.0.1"));
	assert_false(config_host_is_loopback("cache.example"));
}

static void every_flag_is_parsed(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	assert_int_equal(load_args(f, "--data-dir", "/d", "--listen", "ipc:///tmp/c.sock",
				   "--secret", "/s", "--workers", "256", "--prefetch", "64", "--name",
				   "n1", "--plugin", "/p.so", "--exec-allow", "/bin/sh", "--log-level",
				   "error", "--log-format", "json", "--synchronous", "extra",
				   "--frame-max", "1G", "--result-ttl", "5s", "--queue-max", "7",
				   "--timeout", "2m", "--shutdown-grace", "250ms", "--pool",
				   "gpu:2:render,encode", "--pool=cpu:1:hash", NULL),
			 0);
	assert_string_equal(c->data_dir, "/d");
	assert_string_equal(c->listen, "ipc:///tmp/c.sock");
	assert_string_equal(c->secret_file, "/s");
	assert_int_equal(c->workers, 256);
	assert_int_equal(c->prefetch, 64);
	assert_string_equal(c->name, "n1");
	assert_string_equal(c->plugins[0], "/p.so");
	assert_string_equal(c->exec_allow[0], "/bin/sh");
	assert_int_equal(c->log_level, LOG_ERROR);
	assert_int_equal(c->log_json, 1);
	assert_int_equal(c->synchronous, STORE_SYNC_EXTRA);
	assert_int_equal(c->frame_bytes_max, 1u << 30);
	assert_int_equal(c->result_ttl_ms, 5000);
	assert_int_equal(c->queue_max, 7);
	assert_int_equal(c->default_timeout_ms, 120000);
	assert_int_equal(c->shutdown_grace_ms, 250);
	assert_int_equal(c->pool_count, 2);
	assert_string_equal(c->pools[0].name, "gpu");
	assert_int_equal(c->pools[0].workers, 2);
	assert_string_equal(c->pools[0].handlers[1], "encode");
	assert_string_equal(c->pools[1].name, "cpu");
}

static void unknown_key_names_file_and_line(void **state)
{
	assert_file_error(*state, "[node]\nworkers = 2\n\nwrkers = 3\n", 4,
			  "unknown key 'wrkers' in [node]");
}

static void unknown_section_names_file_and_line(void **state)
{
	assert_file_error(*state, "[node]\nworkers = 2\n[nodes]\nworkers = 3\n", 4,
			  "unknown section [nodes]");
}

static void key_outside_a_section_is_refused(void **state)
{
	assert_file_error(*state, "workers = 3\n", 1, "key 'workers' is outside of a [section]");
}

static void bad_number_names_file_and_line(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[node]\nworkers = two\n", 2, "'two' is not a number");
	assert_file_error(f, "[node]\nworkers = 0\n", 2, "'0' is out of range 1..256");
	assert_file_error(f, "[node]\nprefetch = 65\n", 2, "'65' is out of range 1..64");
	assert_file_error(f, "[node]\nqueue_max = 99999999999\n", 2,
			  "'99999999999' is out of range 1..4294967295");
	assert_file_error(f, "[supervisor]\nintensity = 100001\n", 2,
			  "'100001' is out of range 0..100000");
	assert_file_error(f, "[tasks]\nmax_attempts = 0\n", 2, "'0' is out of range 1..1000");
}

static void bad_duration_names_file_and_line(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[tasks]\nbackoff = 5 sec\n", 2,
			  "'5 sec' is not a duration (e.g. 250ms, 5s, 2m, 1h)");
	assert_file_error(f, "[node]\nshutdown_grace = 50000h\n", 2,
			  "'50000h' is out of range 0ms..4294967295ms");
	assert_file_error(f, "[node]\nresult_ttl = 87601h\n", 2,
			  "'87601h' is out of range 0ms..315360000000ms");
	assert_file_error(f, "[supervisor]\nperiod = 0\n", 2, "'0' is out of range 1ms..4294967295ms");
}

static void bad_size_names_file_and_line(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[tasks]\noutput_max = 1T\n", 2,
			  "'1T' is not a size (e.g. 512, 64k, 16M, 1G)");
	assert_file_error(f, "[node]\nframe_bytes_max = 1023\n", 2,
			  "'1023' is out of range 1k..1G");
	assert_file_error(f, "[node]\nframe_bytes_max = 2G\n", 2, "'2G' is out of range 1k..1G");
	assert_file_error(f, "[tasks]\noutput_max = 0\n", 2, "'0' is out of range 1..1G");
}

static void bad_enum_values_are_refused(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[node]\nlog_level = loud\n", 2,
			  "'loud' is not one of debug, info, warn, error");
	assert_file_error(f, "[node]\nlog_format = xml\n", 2, "'xml' is not one of text, json");
	assert_file_error(f, "[node]\nsynchronous = maybe\n", 2,
			  "'maybe' is not one of off, normal, full, extra");
}

static void relative_exec_path_is_refused(void **state)
{
	assert_file_error(*state, "[exec]\nallow = /bin/echo, bin/sh\n", 2,
			  "'bin/sh' is not an absolute path");
}

static void handler_in_two_pools_is_refused(void **state)
{
	assert_file_error(*state,
			  "[pool a]\nhandlers = x, y\n[pool b]\nworkers = 2\nhandlers = z,y\n", 5,
			  "handler 'y' is already in pool 'a'");
}

static void bad_pool_names_and_too_many_pools_are_refused(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[pool default]\nhandlers = x\n", 2,
			  "pool name 'default' is reserved (the default pool is sized by workers)");
	config_free(&f->c);
	assert_file_error(f, "[pool GPU]\nhandlers = x\n", 2,
			  "pool name 'GPU' is not 1..31 of [a-z0-9_-]");
	config_free(&f->c);
	char text[4096] = "";
	for (int i = 0; i <= 15; i++) {
		char sec[64];
		snprintf(sec, sizeof(sec), "[pool p%d]\nhandlers = h%d\n", i, i);
		strcat(text, sec);
	}
	assert_file_error(f, text, 32, "more than 15 pools");
}

static void pool_without_handlers_is_refused(void **state)
{
	struct fixture *f = *state;
	write_conf(f, "[pool lonely]\nworkers = 2\n");
	assert_int_equal(config_load_file(&f->c, f->path, f->err, sizeof(f->err)), -1);
	char want[256];
	snprintf(want, sizeof(want), "%s: pool 'lonely' has no handlers", f->path);
	assert_string_equal(f->err, want);
}

static void bad_listen_url_is_refused(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[node]\nlisten = http://0.0.0.0:80\n", 2,
			  "'http://0.0.0.0:80' is not a tcp://, ipc:// or inproc:// address");
	assert_file_error(f, "[node]\nlisten = tcp://\n", 2,
			  "'tcp://' is not a tcp://, ipc:// or inproc:// address");
}

static void syntax_error_names_its_line(void **state)
{
	struct fixture *f = *state;
	assert_file_error(f, "[node]\nworkers 3\n", 2,
			  "syntax error (want [section] or key = value)");
	/* an earlier syntax error wins over a later bad key */
	assert_file_error(f, "[node]\nworkers 3\nbogus = 1\n", 2,
			  "syntax error (want [section] or key = value)");
}

static void overlong_line_is_refused_not_split(void **state)
{
	struct fixture *f = *state;
	char text[600];
	char dir[400];
	memset(dir, 'd', sizeof(dir) - 1);
	dir[0] = '/';
	dir[sizeof(dir) - 1] = '\0';
	snprintf(text, sizeof(text), "[node]\nworkers = 2\ndata_dir = %s\n", dir);
	assert_file_error(f, text, 3, "line longer than 197 bytes");
}

static void missing_config_file_is_a_clear_error(void **state)
{
	struct fixture *f = *state;
	char missing[160];
	snprintf(missing, sizeof(missing), "%s/nope.conf", f->dir);
	assert_int_equal(load_args(f, "--config", missing, NULL), -1);
	char want[256];
	snprintf(want, sizeof(want), "config file %s: No such file or directory", missing);
	assert_string_equal(f->err, want);
}

static void bad_flags_are_refused_with_the_flag_named(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(load_args(f, "--workers", "0", NULL), -1);
	assert_string_equal(f->err, "--workers: '0' is out of range 1..256");
	assert_int_equal(load_args(f, "--prefetch", "x", NULL), -1);
	assert_string_equal(f->err, "--prefetch: 'x' is not a number");
	assert_int_equal(load_args(f, "--listen", "udp://x", NULL), -1);
	assert_string_equal(f->err, "--listen: 'udp://x' is not a tcp://, ipc:// or inproc:// address");
	assert_int_equal(load_args(f, "--exec-allow", "sh", NULL), -1);
	assert_string_equal(f->err, "--exec-allow: 'sh' is not an absolute path");
	assert_int_equal(load_args(f, "--frame-max", "10", NULL), -1);
	assert_string_equal(f->err, "--frame-max: '10' is out of range 1k..1G");
	assert_int_equal(load_args(f, "--timeout", "soon", NULL), -1);
	assert_string_equal(f->err, "--timeout: 'soon' is not a duration (e.g. 250ms, 5s, 2m, 1h)");
	assert_int_equal(load_args(f, "--pool", "a:1", NULL), -1);
	assert_string_equal(f->err, "--pool: 'a:1' is not NAME:WORKERS:handler1,handler2");
	assert_int_equal(load_args(f, "--pool", "a:1:x", "--pool", "b:1:x", NULL), -1);
	assert_string_equal(f->err, "--pool: handler 'x' is already in pool 'a'");
	assert_int_equal(load_args(f, "--name", "has space", NULL), -1);
	assert_string_equal(f->err, "--name: 'has space' is not 1..63 of [A-Za-z0-9._-]");
	assert_int_equal(load_args(f, "--wrkers", "3", NULL), -1);
	assert_string_equal(f->err, "unknown option '--wrkers' (see --help)");
	assert_int_equal(load_args(f, "-x", NULL), -1);
	assert_string_equal(f->err, "unknown option '-x' (see --help)");
	assert_int_equal(load_args(f, "--workers", NULL), -1);
	assert_string_equal(f->err, "option '--workers' needs a value (see --help)");
	assert_int_equal(load_args(f, "stray", NULL), -1);
	assert_string_equal(f->err, "unexpected argument 'stray' (see --help)");
}

static void too_many_pools_by_flag_are_refused(void **state)
{
	struct fixture *f = *state;
	char *argv[40] = {"chorusd"};
	char specs[16][32];
	int argc = 1;
	for (int i = 0; i < 16; i++) {
		snprintf(specs[i], sizeof(specs[i]), "p%d:1:h%d", i, i);
		argv[argc++] = "--pool";
		argv[argc++] = specs[i];
	}
	assert_int_equal(config_load(&f->c, argc, argv, f->err, sizeof(f->err)), -1);
	assert_string_equal(f->err, "--pool: more than 15 pools");
	assert_int_equal(f->c.pool_count, 15);
}

static void help_and_version_return_one(void **state)
{
	struct fixture *f = *state;
	fflush(stdout);
	int saved = dup(STDOUT_FILENO);
	int devnull = open("/dev/null", O_WRONLY);
	assert_true(saved >= 0 && devnull >= 0);
	dup2(devnull, STDOUT_FILENO);
	int help = load_args(f, "--workers", "0", "--help", NULL); /* help wins over a bad flag */
	int h = load_args(f, "-h", NULL);
	int version = load_args(f, "-V", NULL);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	close(devnull);
	assert_int_equal(help, 1);
	assert_int_equal(h, 1);
	assert_int_equal(version, 1);
}

static void usage_lists_every_flag_and_default(void **state)
{
	(void)state;
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	assert_non_null(out);
	config_usage(out);
	fclose(out);
	static const char *const flags[] = {
		"--config FILE", "--data-dir DIR", "--listen URL", "--secret FILE", "--workers N",
		"--prefetch N", "--name NAME", "--plugin PATH", "--exec-allow PATH",
		"--log-level", "--log-format", "--synchronous", "--frame-max SIZE",
		"--result-ttl DUR", "--queue-max N", "--timeout DUR", "--shutdown-grace DUR",
		"--pool NAME:WORKERS:handler1,handler2", "-h, --help", "-V, --version",
		"--resp HOST:PORT",
		"(default tcp://127.0.0.1:7400)", "(default ./chorus-data)", "(default 2)",
		"(default 16M)", "(default 1h)", "(default 10s)", "(default normal)",
		"(default info)", "(default text)", "(default 1000000)",
	};
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (!strstr(text, flags[i]))
			fail_msg("usage lacks '%s'", flags[i]);
	free(text);
}

static void example_file_parses_to_the_defaults(void **state)
{
	struct fixture *f = *state;
	char src[1024];
	snprintf(src, sizeof(src), "%s", __FILE__);
	char example[1200];
	/* tests/unit/test_config.c -> deploy/chorus.conf.example */
	snprintf(example, sizeof(example), "%s/../../deploy/chorus.conf.example", dirname(src));
	if (access(example, R_OK) != 0)
		skip();
	struct config d;
	config_defaults(&d);
	assert_int_equal(config_load_file(&f->c, example, f->err, sizeof(f->err)), 0);
	assert_memory_equal(&f->c, &d, sizeof(d));
	config_free(&d);
}

/* The conffile of the Debian package (/etc/chorus/chorus.conf) loads, sets
 * the host's paths and leaves every other setting at its default: what it
 * shows is what a host gets. */
static void package_host_file_sets_only_the_host_paths(void **state)
{
	struct fixture *f = *state;
	char src[1024];
	snprintf(src, sizeof(src), "%s", __FILE__);
	char host[1200];
	/* tests/unit/test_config.c -> deploy/debian/chorus.conf */
	snprintf(host, sizeof(host), "%s/../../deploy/debian/chorus.conf", dirname(src));
	if (access(host, R_OK) != 0)
		skip();
	assert_int_equal(config_load_file(&f->c, host, f->err, sizeof(f->err)), 0);
	assert_string_equal(f->c.data_dir, "/var/lib/chorus");
	assert_string_equal(f->c.secret_file, "/etc/chorus/secret");
	assert_null(f->c.seeds[0]);
	struct config d;
	config_defaults(&d);
	snprintf(d.data_dir, sizeof(d.data_dir), "%s", f->c.data_dir);
	snprintf(d.secret_file, sizeof(d.secret_file), "%s", f->c.secret_file);
	assert_memory_equal(&f->c, &d, sizeof(d));
	config_free(&d);
}

static void durations_parse_with_units_and_refuse_overflow(void **state)
{
	(void)state;
	uint64_t ms = 1;
	static const struct {
		const char *in;
		uint64_t ms;
	} ok[] = {
		{"0", 0},          {"1500", 1500},         {"250ms", 250},
		{"5s", 5000},      {"2m", 120000},         {"1h", 3600000},
		{"18446744073709551615", UINT64_MAX},      {"5124095576030h", 5124095576030ull * 3600000},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(config_parse_duration_ms(ok[i].in, &ms), 0);
		assert_int_equal(ms, ok[i].ms);
	}
	static const char *const bad[] = {
		"", "5x", "-1", "+1", "1.5s", " 5s", "5s ", "5 s", "ms", "5S", "1d", "5sec",
		"18446744073709551616", "18446744073709551615ms0", "18446744073709552s",
		"5124095576031h", "307445734561826m", NULL,
	};
	for (size_t i = 0; bad[i]; i++)
		if (config_parse_duration_ms(bad[i], &ms) != -1)
			fail_msg("duration '%s' was accepted", bad[i]);
	assert_int_equal(config_parse_duration_ms(NULL, &ms), -1);
}

static void sizes_parse_with_binary_units_and_refuse_overflow(void **state)
{
	(void)state;
	size_t n = 1;
	static const struct {
		const char *in;
		size_t bytes;
	} ok[] = {
		{"0", 0}, {"512", 512}, {"64k", 65536}, {"64K", 65536}, {"16M", 16u << 20},
		{"1G", 1u << 30}, {"1g", 1u << 30}, {"17179869183G", 17179869183ull << 30},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(config_parse_size(ok[i].in, &n), 0);
		assert_int_equal(n, ok[i].bytes);
	}
	static const char *const bad[] = {
		"", "1T", "1kb", "1KiB", "-1", "1.5M", " 1k", "k", "17179869184G",
		"18446744073709551616", NULL,
	};
	for (size_t i = 0; bad[i]; i++)
		if (config_parse_size(bad[i], &n) != -1)
			fail_msg("size '%s' was accepted", bad[i]);
}

/* ---- environment variables ---- */

static void env_sets_settings_as_their_flags_do(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	setenv("CHORUS_NAME", "n7", 1);
	setenv("CHORUS_LISTEN", "tcp://127.0.0.1:7500", 1);
	setenv("CHORUS_ADVERTISE", "tcp://n7:7500", 1);
	setenv("CHORUS_SEEDS", "tcp://n1:7400,tcp://n2:7400", 1);
	setenv("CHORUS_DATA_DIR", "/var/lib/chorus", 1);
	setenv("CHORUS_SECRET", "/run/secrets/chorus_secret", 1);
	setenv("CHORUS_RESP", "127.0.0.1:6380", 1);
	setenv("CHORUS_WORKERS", "6", 1);
	setenv("CHORUS_TAGS", "gpu,ssd", 1);
	setenv("CHORUS_LOG_FORMAT", "json", 1);
	setenv("CHORUS_GOSSIP_PERIOD", "200ms", 1);
	setenv("CHORUS_VOTERS_TARGET", "5", 1);
	setenv("CHORUS_BOOTSTRAP", "off", 1);
	assert_int_equal(load_args(f, NULL), 0);
	assert_string_equal(c->name, "n7");
	assert_string_equal(c->listen, "tcp://127.0.0.1:7500");
	assert_string_equal(c->advertise, "tcp://n7:7500");
	assert_int_equal(c->advertise_auto, 0);
	assert_int_equal(c->seed_count, 2);
	assert_string_equal(c->seeds[0], "tcp://n1:7400");
	assert_string_equal(c->seeds[1], "tcp://n2:7400");
	assert_null(c->seeds[2]);
	assert_string_equal(c->data_dir, "/var/lib/chorus");
	assert_string_equal(c->secret_file, "/run/secrets/chorus_secret");
	assert_string_equal(c->resp.listen, "127.0.0.1:6380");
	assert_int_equal(c->workers, 6);
	assert_int_equal(c->tag_count, 2);
	assert_int_equal(c->log_json, 1);
	assert_int_equal(c->gossip_period_ms, 200);
	assert_int_equal(c->voters_target, 5);
	assert_int_equal(c->bootstrap, 0);
	/* named in the flag table's order, for the start log */
	assert_string_equal(c->env_used,
			    "CHORUS_DATA_DIR CHORUS_LISTEN CHORUS_SECRET CHORUS_WORKERS CHORUS_NAME "
			    "CHORUS_LOG_FORMAT CHORUS_SEEDS CHORUS_TAGS CHORUS_ADVERTISE "
			    "CHORUS_GOSSIP_PERIOD CHORUS_VOTERS_TARGET CHORUS_BOOTSTRAP CHORUS_RESP");
}

static void flag_beats_env_beats_file_beats_default(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	write_conf(f, "[node]\nname = from-file\nworkers = 3\nprefetch = 5\n"
		      "[cluster]\ngossip_period = 300ms\n");
	setenv("CHORUS_NAME", "from-env", 1);
	setenv("CHORUS_WORKERS", "4", 1);
	setenv("CHORUS_GOSSIP_PERIOD", "400ms", 1);
	assert_int_equal(load_args(f, "--config", f->path, "--name", "from-flag", NULL), 0);
	assert_string_equal(c->name, "from-flag");   /* flag over env and file */
	assert_int_equal(c->workers, 4);             /* env over file */
	assert_int_equal(c->gossip_period_ms, 400);  /* env over file, another section */
	assert_int_equal(c->prefetch, 5);            /* file over default */
	assert_int_equal(c->queue_max, 1000000);     /* default */
	assert_string_equal(c->env_used, "CHORUS_WORKERS CHORUS_NAME CHORUS_GOSSIP_PERIOD");
}

static void config_file_from_env_unless_the_flag_names_one(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	write_conf(f, "[node]\nworkers = 7\n");
	setenv("CHORUS_CONFIG", f->path, 1);
	assert_int_equal(load_args(f, NULL), 0);
	assert_int_equal(c->workers, 7);
	assert_string_equal(c->config_file, f->path);
	assert_string_equal(c->env_used, ""); /* CHORUS_CONFIG is not a setting of its own */

	/* --config wins: the file CHORUS_CONFIG names is not even opened */
	struct config d;
	config_defaults(&d);
	setenv("CHORUS_CONFIG", "/nonexistent/chorus.conf", 1);
	char *argv[] = {"chorusd", "--config", f->path, NULL};
	assert_int_equal(config_load(&d, 3, argv, f->err, sizeof(f->err)), 0);
	assert_int_equal(d.workers, 7);
	config_free(&d);

	/* a file named by the variable that cannot be read is an error naming it */
	config_defaults(&d);
	assert_int_equal(config_load(&d, 1, argv, f->err, sizeof(f->err)), -1);
	assert_non_null(strstr(f->err, "/nonexistent/chorus.conf"));
	config_free(&d);
}

static void bad_env_value_names_the_variable(void **state)
{
	struct fixture *f = *state;
	setenv("CHORUS_WORKERS", "0", 1);
	assert_int_equal(load_args(f, NULL), -1);
	assert_string_equal(f->err, "environment CHORUS_WORKERS: '0' is out of range 1..256");
	unsetenv("CHORUS_WORKERS");
	setenv("CHORUS_SEEDS", "n1:7400", 1);
	assert_int_equal(load_args(f, NULL), -1);
	assert_string_equal(f->err, "environment CHORUS_SEEDS: 'n1:7400' is not a tcp://, ipc:// "
				    "or inproc:// address");
	unsetenv("CHORUS_SEEDS");
	setenv("CHORUS_NAME", "has space", 1);
	assert_int_equal(load_args(f, NULL), -1);
	assert_non_null(strstr(f->err, "environment CHORUS_NAME: "));
	unsetenv("CHORUS_NAME");
	/* a value the flag would refuse is refused even when a flag overrides it:
	 * a broken environment is reported, never silently shadowed */
	setenv("CHORUS_LOG_LEVEL", "loud", 1);
	assert_int_equal(load_args(f, "--log-level", "warn", NULL), -1);
	assert_non_null(strstr(f->err, "environment CHORUS_LOG_LEVEL: "));
}

static void empty_env_variable_counts_as_unset(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	write_conf(f, "[node]\nname = from-file\n[cluster]\nseeds = tcp://n1:7400\n");
	setenv("CHORUS_CONFIG", f->path, 1);
	setenv("CHORUS_NAME", "", 1);
	setenv("CHORUS_SEEDS", "", 1);
	setenv("CHORUS_WORKERS", "", 1);
	assert_int_equal(load_args(f, NULL), 0);
	assert_string_equal(c->name, "from-file");
	assert_int_equal(c->seed_count, 1);
	assert_int_equal(c->workers, 2);
	assert_string_equal(c->env_used, "");
	/* an empty CHORUS_CONFIG reads no file */
	struct config d;
	config_defaults(&d);
	setenv("CHORUS_CONFIG", "", 1);
	char *argv[] = {"chorusd", NULL};
	assert_int_equal(config_load(&d, 1, argv, f->err, sizeof(f->err)), 0);
	assert_string_equal(d.config_file, "");
	config_free(&d);
}

static void env_list_replaces_the_file_list_and_flags_replace_the_env(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	write_conf(f, "[exec]\nallow = /bin/echo,/usr/bin/env\n[node]\nplugins = /opt/a.so\n");
	setenv("CHORUS_EXEC_ALLOW", "/bin/true, /bin/false", 1);
	setenv("CHORUS_PLUGIN", "/opt/e.so", 1);
	setenv("CHORUS_POOL", "slow:2:resize", 1); /* --pool has no variable: ignored */
	assert_int_equal(load_args(f, "--config", f->path, "--plugin", "/opt/f.so", "--plugin",
				   "/opt/g.so", NULL), 0);
	assert_int_equal(c->exec_allow_count, 2);
	assert_string_equal(c->exec_allow[0], "/bin/true");
	assert_string_equal(c->exec_allow[1], "/bin/false");
	assert_null(c->exec_allow[2]);
	assert_int_equal(c->plugin_count, 2);
	assert_string_equal(c->plugins[0], "/opt/f.so");
	assert_string_equal(c->plugins[1], "/opt/g.so");
	assert_int_equal(c->pool_count, 0);
	/* the variable's list is checked as the flag's is */
	setenv("CHORUS_EXEC_ALLOW", "bin/true", 1);
	assert_int_equal(load_args(f, NULL), -1);
	assert_string_equal(f->err, "environment CHORUS_EXEC_ALLOW: 'bin/true' is not an absolute "
				    "path");
}

static void wildcard_listen_advertises_the_host_name(void **state)
{
	struct fixture *f = *state;
	struct config *c = &f->c;
	static const struct {
		const char *listen, *advertise;
	} cases[] = {
		{"tcp://0.0.0.0:7400", "tcp://a1b2c3d4e5f6:7400"},
		{"tcp://[::]:7401", "tcp://a1b2c3d4e5f6:7401"},
		{"tcp://*:7402", "tcp://a1b2c3d4e5f6:7402"},
		{"tcp://:7403", "tcp://a1b2c3d4e5f6:7403"},
		{"tcp://127.0.0.1:7400", ""},   /* reachable as it is: advertised as listen */
		{"tcp://10.0.0.5:7400", ""},
		{"tcp://n1:7400", ""},
		{"ipc:///tmp/chorus.ipc", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(c->listen, sizeof(c->listen), "%s", cases[i].listen);
		c->advertise[0] = '\0';
		assert_int_equal(config_resolve_advertise(c, "a1b2c3d4e5f6", f->err, sizeof(f->err)), 0);
		if (strcmp(c->advertise, cases[i].advertise) != 0)
			fail_msg("listen %s advertised '%s', want '%s'", cases[i].listen, c->advertise,
				 cases[i].advertise);
		assert_int_equal(c->advertise_auto, cases[i].advertise[0] != '\0');
	}
	/* an advertise that was given is kept */
	snprintf(c->listen, sizeof(c->listen), "tcp://0.0.0.0:7400");
	snprintf(c->advertise, sizeof(c->advertise), "tcp://n1:7400");
	assert_int_equal(config_resolve_advertise(c, "a1b2c3d4e5f6", f->err, sizeof(f->err)), 0);
	assert_string_equal(c->advertise, "tcp://n1:7400");
	assert_int_equal(c->advertise_auto, 0);
	/* no host name: a wildcard cannot be advertised */
	c->advertise[0] = '\0';
	assert_int_equal(config_resolve_advertise(c, "", f->err, sizeof(f->err)), -1);
	assert_non_null(strstr(f->err, "set --advertise"));
	assert_string_equal(c->advertise, "");

	/* config_load does it with this host's name, whichever source set listen */
	struct config d;
	config_defaults(&d);
	setenv("CHORUS_LISTEN", "tcp://0.0.0.0:7400", 1);
	char *argv[] = {"chorusd", NULL};
	assert_int_equal(config_load(&d, 1, argv, f->err, sizeof(f->err)), 0);
	char host[256] = "", want[300];
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	snprintf(want, sizeof(want), "tcp://%s:7400", host);
	assert_string_equal(d.advertise, want);
	assert_int_equal(d.advertise_auto, 1);
	config_free(&d);
}

/* The resolver of advertised_host_name_risks: names by what they stand for. */
static enum config_host_kind fake_resolve(const char *host)
{
	static const struct {
		const char *host;
		enum config_host_kind kind;
	} table[] = {
		{"debian-box", CONFIG_HOST_LOOPBACK},   /* 127.0.1.1 in /etc/hosts */
		{"127.0.0.1", CONFIG_HOST_LOOPBACK},
		{"localhost", CONFIG_HOST_LOOPBACK},
		{"::1", CONFIG_HOST_LOOPBACK},
		{"a1b2c3d4e5f6", CONFIG_HOST_ROUTABLE}, /* a container's id */
		{"10.0.0.2", CONFIG_HOST_ROUTABLE},
		{"seed.example", CONFIG_HOST_ROUTABLE},
		{"fd00::2", CONFIG_HOST_ROUTABLE},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strcmp(host, table[i].host) == 0)
			return table[i].kind;
	return CONFIG_HOST_UNRESOLVED;
}

/* The config a node would run with: a wildcard listen address, these
 * seeds (NULL: none), advertised under this host name. */
static void load_wildcard(struct fixture *f, struct config *d, const char *seeds, const char *host)
{
	clear_chorus_env();
	config_defaults(d);
	setenv("CHORUS_LISTEN", "tcp://0.0.0.0:7400", 1);
	if (seeds)
		setenv("CHORUS_SEEDS", seeds, 1);
	char *argv[] = {"chorusd", NULL};
	assert_int_equal(config_load(d, 1, argv, f->err, sizeof(f->err)), 0);
	d->advertise[0] = '\0';
	assert_int_equal(config_resolve_advertise(d, host, f->err, sizeof(f->err)), 0);
	assert_int_equal(d->advertise_auto, 1);
}

static void advertised_host_name_risks_are_warned(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *host, *seeds;
		const char *warn; /* a part of the warning; NULL: none */
	} cases[] = {
		/* a name no resolver here knows: warned, seeds or not */
		{"nowhere", NULL, "'nowhere' does not resolve on this host"},
		{"nowhere", "tcp://127.0.0.1:7401", "'nowhere' does not resolve on this host"},
		/* loopback only: a risk once a seed is elsewhere */
		{"debian-box", NULL, NULL},
		{"debian-box", "tcp://127.0.0.1:7401,tcp://localhost:7402,tcp://[::1]:7403", NULL},
		{"debian-box", "tcp://127.0.0.1:7401,tcp://10.0.0.2:7400",
		 "seed tcp://10.0.0.2:7400 is not on loopback"},
		{"debian-box", "tcp://seed.example:7400", "seed tcp://seed.example:7400"},
		{"debian-box", "tcp://[fd00::2]:7400", "seed tcp://[fd00::2]:7400"},
		{"debian-box", "tcp://unknown-seed:7400", NULL}, /* no evidence of another host */
		{"debian-box", "ipc:///tmp/x.ipc", NULL},
		/* a name that resolves to an address others can use */
		{"a1b2c3d4e5f6", "tcp://10.0.0.2:7400", NULL},
		{"a1b2c3d4e5f6", NULL, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config d;
		load_wildcard(f, &d, cases[i].seeds, cases[i].host);
		char msg[1024] = "";
		int risk = config_advertise_risk(&d, fake_resolve, msg, sizeof(msg));
		if (risk != (cases[i].warn != NULL) || (cases[i].warn && !strstr(msg, cases[i].warn)))
			fail_msg("host %s, seeds %s: risk %d '%s', want '%s'", cases[i].host,
				 cases[i].seeds ? cases[i].seeds : "-", risk, msg,
				 cases[i].warn ? cases[i].warn : "(none)");
		if (risk) {
			assert_non_null(strstr(msg, d.advertise));
			assert_non_null(strstr(msg, "set --advertise (CHORUS_ADVERTISE)"));
		}
		config_free(&d);
	}
	/* an address that was given is the operator's choice: nothing said */
	struct config d;
	load_wildcard(f, &d, "tcp://10.0.0.2:7400", "nowhere");
	snprintf(d.advertise, sizeof(d.advertise), "tcp://nowhere:7400");
	d.advertise_auto = 0;
	char msg[1024] = "";
	assert_int_equal(config_advertise_risk(&d, fake_resolve, msg, sizeof(msg)), 0);
	config_free(&d);
}

static void numeric_hosts_resolve_by_their_address(void **state)
{
	(void)state;
	/* numeric addresses: no resolver consulted, the same on every machine */
	assert_int_equal(config_host_resolve("127.0.0.1"), CONFIG_HOST_LOOPBACK);
	assert_int_equal(config_host_resolve("127.0.1.1"), CONFIG_HOST_LOOPBACK);
	assert_int_equal(config_host_resolve("::1"), CONFIG_HOST_LOOPBACK);
	assert_int_equal(config_host_resolve("::ffff:127.0.0.1"), CONFIG_HOST_LOOPBACK);
	assert_int_equal(config_host_resolve("10.0.0.2"), CONFIG_HOST_ROUTABLE);
	assert_int_equal(config_host_resolve("fd00::2"), CONFIG_HOST_ROUTABLE);
	assert_int_equal(config_host_resolve(""), CONFIG_HOST_UNRESOLVED);
	assert_int_equal(config_host_resolve(NULL), CONFIG_HOST_UNRESOLVED);
	assert_string_equal(config_host_kind_name(CONFIG_HOST_LOOPBACK), "loopback");
}

static void usage_explains_the_environment(void **state)
{
	(void)state;
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	assert_non_null(out);
	config_usage(out);
	fclose(out);
	static const char *const words[] = {
		"the defaults, the config\nfile, environment variables, the flags",
		"CHORUS_SOME_FLAG=VALUE", "CHORUS_NAME", "CHORUS_LISTEN", "CHORUS_ADVERTISE",
		"CHORUS_SEEDS", "CHORUS_DATA_DIR", "CHORUS_SECRET", "CHORUS_RESP", "CHORUS_CONFIG",
		"an empty variable counts as unset", "tcp://HOSTNAME:7400",
	};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (!strstr(text, words[i]))
			fail_msg("usage lacks '%s'", words[i]);
	free(text);
}

int main(void)
{
	log_setup(LOG_ERROR + 1, 0);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(defaults_are_the_documented_ones),
		T(file_sets_every_documented_key),
		T(flags_override_the_file_wherever_config_appears),
		T(cluster_settings_from_file_and_flags),
		T(bad_cluster_settings_are_refused),
		T(resp_settings_from_file_and_flag),
		T(open_resp_address_needs_a_password),
		T(bad_resp_settings_are_refused),
		T(cache_persist_settings_from_file),
		T(bad_cache_persist_settings_are_refused),
		T(host_ports_and_loopback_addresses),
		T(every_flag_is_parsed),
		T(unknown_key_names_file_and_line),
		T(unknown_section_names_file_and_line),
		T(key_outside_a_section_is_refused),
		T(bad_number_names_file_and_line),
		T(bad_duration_names_file_and_line),
		T(bad_size_names_file_and_line),
		T(bad_enum_values_are_refused),
		T(relative_exec_path_is_refused),
		T(handler_in_two_pools_is_refused),
		T(bad_pool_names_and_too_many_pools_are_refused),
		T(pool_without_handlers_is_refused),
		T(bad_listen_url_is_refused),
		T(syntax_error_names_its_line),
		T(overlong_line_is_refused_not_split),
		T(missing_config_file_is_a_clear_error),
		T(bad_flags_are_refused_with_the_flag_named),
		T(too_many_pools_by_flag_are_refused),
		T(help_and_version_return_one),
		T(usage_lists_every_flag_and_default),
		T(example_file_parses_to_the_defaults),
		T(package_host_file_sets_only_the_host_paths),
		T(durations_parse_with_units_and_refuse_overflow),
		T(sizes_parse_with_binary_units_and_refuse_overflow),
		T(env_sets_settings_as_their_flags_do),
		T(flag_beats_env_beats_file_beats_default),
		T(config_file_from_env_unless_the_flag_names_one),
		T(bad_env_value_names_the_variable),
		T(empty_env_variable_counts_as_unset),
		T(env_list_replaces_the_file_list_and_flags_replace_the_env),
		T(wildcard_listen_advertises_the_host_name),
		T(advertised_host_name_risks_are_warned),
		T(numeric_hosts_resolve_by_their_address),
		T(usage_explains_the_environment),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
