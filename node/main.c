/*
 * main.c - chorusd's composition root: parse settings, set up logging,
 * register the services, run the node.
 *
 * The one place that names every service. Registration order is start and
 * tick order (svc/service.h); drain and stop run in reverse:
 *   cluster  membership and placement (provides "placement")
 *   tasks    tasks, fan-outs, workers (provides "task_sink" and
 *            "task_submit"; its workers fork at start, before any thread
 *            exists)
 *   sched    election (Raft among the voters) and the cluster's schedules
 *            (uses "peers" and "task_submit")
 *   cache    the partitioned, replicated cache (provides "cache")
 *   resp     the cache's Redis-protocol front door (--resp; uses "cache";
 *            drains before the cache, so answers it owes still come)
 *   status   `clusterctl status`, from every service's status()
 *   events   `clusterctl events`: the ring of recent events (io/events.h);
 *            near the end, so it answers in the iteration an event was
 *            reported in, and drains early (node_draining is the first
 *            thing a drain reports)
 *   http     /metrics, the dashboard and its JSON API (--http; last, so it
 *            drains first: it stops serving before what it shows stops)
 * So on SIGTERM schedules stop first, then the tasks drain, then the node
 * leaves the cluster.
 *
 * Exit codes: 0 clean stop (SIGTERM/SIGINT drained), 1 runtime failure
 * (store, listener, workers), 2 bad settings (message on stderr).
 *
 * A static build (CHORUS_STATIC, cmake/static.cmake) refuses --plugin: a
 * plugin is a shared object that needs the shared libc, and loading one
 * into a static program would give it a second libc.
 */
#include <stdio.h>

#include "config.h"
#include "io/host.h"
#include "io/log.h"
#include "svc/cache_svc.h"
#include "svc/cluster_svc.h"
#include "svc/events_svc.h"
#include "svc/http_api.h"
#include "svc/http_svc.h"
#include "svc/resp_svc.h"
#include "svc/sched_svc.h"
#include "svc/status_svc.h"
#include "svc/tasks_svc.h"

static int register_services(struct host *h)
{
	if (cluster_svc_register(h) != 0 || tasks_svc_register(h) != 0 ||
	    sched_svc_register(h) != 0 || cache_svc_register(h) != 0 ||
	    resp_svc_register(h) != 0 ||
	    status_svc_register(h) != 0 || events_svc_register(h) != 0 ||
	    http_svc_register(h) != 0 || http_api_register(h) != 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	static struct config cfg; /* large: keep it off the stack */
	char err[1024] = "";
	config_defaults(&cfg);
	int rc = config_load(&cfg, argc, argv, err, sizeof(err));
	if (rc == 1) {
		config_free(&cfg);
		return 0;
	}
	if (rc != 0) {
		fprintf(stderr, "chorusd: %s\n", err);
		fprintf(stderr, "chorusd: see chorusd --help\n");
		config_free(&cfg);
		return 2;
	}
#ifdef CHORUS_STATIC_BUILD
	if (cfg.plugin_count > 0) {
		fprintf(stderr, "chorusd: --plugin %s: this chorusd is statically linked and cannot "
			"load plugins; use a dynamically linked build\n", cfg.plugins[0]);
		config_free(&cfg);
		return 2;
	}
#endif
	log_setup(cfg.log_level, cfg.log_json);
	if (cfg.env_used[0])
		log_info("node", "settings from the environment: %s", cfg.env_used);
	if (cfg.advertise_auto)
		log_info("node", "advertising %s to other nodes (the listen address %s is a "
			 "wildcard; --advertise sets another)", cfg.advertise, cfg.listen);
	char risk[1024];
	if (config_advertise_risk(&cfg, config_host_resolve, risk, sizeof(risk)))
		log_warn("node", "%s", risk);
	int code = host_run(&cfg, register_services);
	config_free(&cfg);
	return code;
}
