/*
 * http_api.h - the JSON API routes of the HTTP service (http_api.c):
 * status, members, tasks, fan-outs, cancel, schedules, cache.
 */
#ifndef CHORUS_SVC_HTTP_API_H
#define CHORUS_SVC_HTTP_API_H

struct host;

/* Adds the routes to the HTTP service (after http_svc_register); nothing
 * when --http is off. 0, or -1 (out of memory, route table full). */
int http_api_register(struct host *h);

#endif
