/*
 * host.h - runs chorusd: the composition of store, transport, request table
 * and services, and the loop that drives them (see svc/service.h for the
 * loop's order and the service interface).
 */
#ifndef CHORUS_IO_HOST_H
#define CHORUS_IO_HOST_H

struct config;
struct host;

/* Runs a node until SIGTERM/SIGINT: opens the journal, calls
 * register_services (which registers every service, in start order), starts
 * them, listens, loops, drains. Returns the process exit code (0 after a
 * clean drain). */
int host_run(const struct config *cfg, int (*register_services)(struct host *h));

#endif
