/*
 * server.h - chorusd's I/O shell: the event loop that ties the sealed nng
 * listener, the journal, the worker supervisor and the task core together.
 *
 * One loop thread does all the work. nng's own threads only complete aios
 * and post "context N is ready" into a queue, waking the loop through an
 * eventfd. Each loop iteration:
 *   1. waits (poll) on the wake eventfd, a signalfd (TERM, INT, CHLD) and the
 *      worker sockets, with a timeout at the next core deadline;
 *   2. opens one sqlite transaction, handles every ready request and worker
 *      event, ticks and pumps the task core;
 *   3. writes every task the core changed, commits (group commit), and only
 *      then sends the replies that acknowledge work and wakes waiters.
 * See docs/design.md.
 */
#ifndef CHORUS_IO_SERVER_H
#define CHORUS_IO_SERVER_H

struct config;

/* Runs a node until SIGTERM/SIGINT. Returns the process exit code
 * (0 after a clean drain). */
int server_run(const struct config *cfg);

#endif
