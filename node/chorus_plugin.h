/*
 * chorus_plugin.h - the handler plugin interface of chorusd.
 *
 * A plugin is a shared object given to chorusd with --plugin PATH. chorusd
 * dlopen()s it at start-up, before forking its workers, and calls its
 *
 *     int chorus_plugin_init(const struct chorus_plugin_api *api);
 *
 * which registers handlers with api->register_handler(api, "name", fn).
 * Return 0 on success; any other value stops chorusd start-up with an error.
 * Handler names are [a-z0-9_.-]{1,63} and must not clash with built-ins.
 *
 * A handler runs inside a worker process, one task at a time. It reads the
 * payload and appends its result with out->append(out, data, len). It
 * returns 0 for success; non-zero marks the task failed (an answer, not a
 * crash: a failed task is never retried), with an optional message in
 * out->error. A handler that crashes kills only its worker; the supervisor
 * starts another and the task follows its restart policy.
 */
#ifndef CHORUS_PLUGIN_H
#define CHORUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define CHORUS_PLUGIN_API_VERSION 1

struct chorus_handler_out {
	/* Appends len bytes to the result; returns 0, or -1 when the output
	 * cap is reached (the bytes that fit are kept). */
	int (*append)(struct chorus_handler_out *out, const void *data, size_t len);
	char error[256];   /* message for a failure, NUL-terminated */
	int exit_code;     /* kept with the result (default 0) */
	void *impl;        /* private to chorusd */
};

typedef int (*chorus_handler_fn)(const uint8_t *payload, size_t payload_len,
                                 struct chorus_handler_out *out);

struct chorus_plugin_api {
	int api_version;   /* CHORUS_PLUGIN_API_VERSION */
	/* 0 on success, -1 if the name is invalid or taken. */
	int (*register_handler)(const struct chorus_plugin_api *api, const char *name,
	                        chorus_handler_fn fn);
	void *impl;        /* private to chorusd */
};

int chorus_plugin_init(const struct chorus_plugin_api *api);

#endif
