/*
 * main.c - chorusd: parse settings, set up logging, run the node.
 *
 * Exit codes: 0 clean stop (SIGTERM/SIGINT drained), 1 runtime failure
 * (store, listener, workers), 2 bad settings (message on stderr).
 */
#include <stdio.h>

#include "config.h"
#include "io/log.h"
#include "io/server.h"

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
	log_setup(cfg.log_level, cfg.log_json);
	int code = server_run(&cfg);
	config_free(&cfg);
	return code;
}
