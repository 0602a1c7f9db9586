/*
 * workers.c - the supervisor: pools of forked worker processes, the job and
 * result frames on their socketpairs, and OTP-style restarts.
 *
 * Owns every worker process, its socket (the parent end, non-blocking), a
 * read buffer that reassembles result frames and a write buffer holding job
 * bytes the socket did not take yet (flushed on the next call or when poll
 * reports POLLOUT), so the node's loop never blocks on a worker.
 *
 * Each worker holds a ring of at most `prefetch` task ids: the head is the
 * running job, the rest are queued behind it in the order they were sent.
 * A result must name the head; anything else is a protocol error and the
 * worker is SIGKILLed. A killed or crashed worker keeps its jobs until it
 * is reaped; workers_reap then reports them through `lost` (head first,
 * was_running=1) and the worker is restarted.
 *
 * Restarts follow OTP one_for_one with an intensity limit per pool: the
 * (intensity+1)-th restart within period_ms marks the pool degraded, and
 * from then on restarts are spaced degraded_backoff_ms apart until a whole
 * period passes without a restart. The last `intensity` restart times are
 * kept in a ring, which is all the window check needs.
 *
 * Subtle parts:
 *  - Events never reach the node from inside workers_dispatch or
 *    workers_kill_task: those are called by the task core's effects, and a
 *    callback there would re-enter the core in the middle of a state change
 *    (tasks_pump -> dispatch -> `started` -> tasks_on_started; the core now
 *    asserts against it). workers_dispatch queues its `started` in
 *    w->started_q; workers_kill_task raises nothing (the loss is reported
 *    when the worker is reaped). The queue is delivered, oldest first, by
 *    the calls the loop makes outside the core: workers_deliver,
 *    workers_on_readable, workers_reap, workers_tick and workers_stop,
 *    before any other event (a task's `started` precedes its result or
 *    loss) and again after every callback.
 *  - The queue holds at most one event per worker: one is queued only when
 *    a dispatch makes an idle worker busy, and a worker becomes idle again
 *    only inside workers_on_readable / workers_reap, which drain the queue
 *    before that and after every callback.
 *  - Callbacks may call back into the supervisor (dispatch, kill_task). A
 *    worker's jobs are copied out and cleared before `lost` is called, and
 *    after every callback the worker's state is checked again.
 *  - workers_reap uses waitpid(-1): the node has no other children (exec
 *    children are the workers' children), and pids that are not ours are
 *    ignored.
 *  - Which jobs a dead worker had run comes from its progress slot in a
 *    shared page (jobs reached, counted by the worker), not from the ring:
 *    with results batched in the worker, jobs past the head may have run.
 *    A reaped worker's socket is drained before its jobs are reported lost
 *    (a crashing worker writes the results it kept); a reaped pid is never
 *    signalled again.
 *  - Writes use send(MSG_NOSIGNAL) so a dead worker gives EPIPE, never a
 *    SIGPIPE in the node.
 */
#include "io/workers.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/chorus.pb-c.h"
#include "worker/handlers.h"

#define RESULT_FRAME_SLACK_BYTES (64u * 1024u)
#define READ_CHUNK_BYTES (64u * 1024u)
#define READS_PER_CALL_MAX 64
#define STOP_POLL_SLICE_MS 10
#define PREFETCH_MAX 1024
#define INTENSITY_MAX 100000
#define OUTPUT_MAX_LIMIT (1024u * 1024u * 1024u)

enum worker_state {
	WORKER_DEAD = 0, /* not running; waiting for a restart */
	WORKER_LIVE,     /* running, socket open */
	WORKER_DYING,    /* killed or socket gone; jobs held until reaped */
};

struct worker {
	enum worker_state state;
	pid_t pid;  /* > 0 unless DEAD */
	int fd;     /* parent end; >= 0 only when LIVE */
	uint32_t pool;
	uint64_t *jobs; /* ring of task ids, capacity ring_cap; head is running */
	uint8_t *kill_at_start; /* same ring: killed before it started (cancel) */
	uint32_t job_head, job_count;
	uint8_t *rbuf;
	size_t rlen, rcap;
	uint8_t *wbuf;
	size_t woff, wlen, wcap; /* unsent bytes are wbuf[woff, wlen) */
	int held;                /* a job dispatched with `hold` is in wbuf: */
	size_t hold_from;        /* bytes from here on wait for workers_release_held */
	int shut_wr;             /* workers_stop sent SHUT_WR */
	int unsent;              /* wbuf has bytes to flush at the next delivering call */
	int reaped;              /* the process is gone (waited for): its last results are read */
	struct handlers_progress *progress; /* this worker's slot in the shared page */
	uint64_t results_seen;   /* results read from this process (its jobs 1..results_seen) */
	uint64_t run_us_seen;    /* progress->run_us when the pool's EWMA last took it in */
	uint64_t head_since_us;  /* when the head job started, as far as we know */
	char kill_reason[160];   /* why we killed it, "" when we did not */
};

struct pool {
	char name[WORKERS_POOL_NAME_MAX + 1];
	uint32_t worker_count;
	struct worker *workers;
	uint32_t restarts;
	uint64_t *restart_ms; /* ring of the last `intensity` restart times */
	uint32_t restart_head, restart_count;
	uint64_t last_restart_ms;
	int any_restart;
	int degraded;
	uint32_t cursor; /* tie-break for dispatch, spreads work */
	uint32_t run_ewma_us; /* EWMA of the run time of this pool's jobs */
	uint32_t run_samples;
};

/* A `started` raised by workers_dispatch, waiting for delivery. */
struct started_ev {
	uint64_t task_id;
	uint64_t now_ms;
};

struct workers {
	struct workers_config cfg;
	const struct handler_registry *reg;
	struct workers_events ev;
	struct pool pools[WORKERS_POOLS_MAX];
	size_t result_frame_max;
	int stopping;
	struct started_ev *started_q; /* ring; capacity = number of workers */
	uint32_t started_head, started_count, started_cap;
	struct handlers_beat *beat;   /* shared with the workers (mmap) */
	uint64_t last_beat_ms;
	uint32_t held_workers; /* a hint: workers marked held since the last release (>= the real count) */
	uint32_t ring_cap;     /* max(prefetch, prefetch_short): the job rings' capacity */
	uint32_t unsent_workers; /* a hint: workers marked unsent (>= the real count) */
	struct handlers_progress *progress; /* shared page: one slot per worker */
	size_t progress_bytes;
};

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

uint64_t workers_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- processes ---- */

static __attribute__((noreturn)) void worker_child(const struct workers *w,
                                                  struct handlers_progress *progress, int fd,
                                                  pid_t parent)
{
	/* A worker must not outlive its node (a kill -9 of chorusd would
	 * otherwise leave it running its current job). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(HANDLERS_EXIT_EOF);
	/* Keep only stdio and our end of the socketpair: no other worker's
	 * socket, no nng socket, no sqlite file may leak into a worker. */
	if (fd != 3) {
		if (dup2(fd, 3) < 0)
			_exit(HANDLERS_EXIT_BAD_FRAME);
		fd = 3;
	}
	if (close_range(4, ~0u, 0) != 0) {
		long max = sysconf(_SC_OPEN_MAX);
		if (max < 0 || max > 65536)
			max = 65536;
		for (int i = 4; i < max; i++)
			close(i);
	}
	handlers_worker_run(w->reg, fd, w->beat, progress);
}

static int worker_spawn(struct workers *w, struct worker *wk, char *err, size_t err_len)
{
	assert(wk->state == WORKER_DEAD);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		set_err(err, err_len, "socketpair: %s", strerror(errno));
		return -1;
	}
	/* a fresh process counts its jobs from 0 (written before the fork,
	 * so the child's first job can only move it up) */
	atomic_store(&wk->progress->begun, 0);
	atomic_store(&wk->progress->run_us, 0);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		set_err(err, err_len, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		worker_child(w, wk->progress, sv[1], parent);
	}
	close(sv[1]);
	int flags = fcntl(sv[0], F_GETFL);
	fcntl(sv[0], F_SETFL, flags | O_NONBLOCK);
	wk->state = WORKER_LIVE;
	wk->pid = pid;
	wk->fd = sv[0];
	wk->job_head = 0;
	wk->job_count = 0;
	wk->rlen = 0;
	wk->woff = 0;
	wk->wlen = 0;
	wk->held = 0;
	wk->shut_wr = 0;
	wk->unsent = 0;
	wk->reaped = 0;
	wk->results_seen = 0;
	wk->run_us_seen = 0;
	wk->head_since_us = 0;
	wk->kill_reason[0] = '\0';
	return 0;
}

/* SIGKILLs a live worker and closes its socket; its jobs stay until it is
 * reaped. reason (may be NULL) is added to the `lost` message. */
static void worker_kill(struct worker *wk, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void worker_kill(struct worker *wk, const char *fmt, ...)
{
	if (wk->state != WORKER_LIVE)
		return;
	assert(wk->pid > 0);
	if (!wk->reaped) /* a reaped pid may belong to someone else by now */
		kill(wk->pid, SIGKILL);
	close(wk->fd);
	wk->fd = -1;
	wk->state = WORKER_DYING;
	wk->rlen = 0;
	wk->woff = wk->wlen = 0;
	wk->held = 0;
	if (fmt != NULL && wk->kill_reason[0] == '\0') {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(wk->kill_reason, sizeof wk->kill_reason, fmt, ap);
		va_end(ap);
	}
}

static struct worker *worker_by_fd(struct workers *w, int fd)
{
	for (uint32_t p = 0; p < w->cfg.pool_count; p++)
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++)
			if (w->pools[p].workers[i].state == WORKER_LIVE && w->pools[p].workers[i].fd == fd)
				return &w->pools[p].workers[i];
	return NULL;
}

static struct worker *worker_by_pid(struct workers *w, pid_t pid)
{
	for (uint32_t p = 0; p < w->cfg.pool_count; p++)
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++)
			if (w->pools[p].workers[i].state != WORKER_DEAD && w->pools[p].workers[i].pid == pid)
				return &w->pools[p].workers[i];
	return NULL;
}

/* ---- writing jobs ---- */

/* Sends what the socket takes now. A broken socket kills the worker. */
static void worker_flush(struct worker *wk)
{
	/* a held job and those behind it wait for workers_release_held */
	size_t end = wk->held ? wk->hold_from : wk->wlen;
	while (wk->state == WORKER_LIVE && wk->woff < end) {
		ssize_t n = send(wk->fd, wk->wbuf + wk->woff, end - wk->woff, MSG_NOSIGNAL);
		if (n > 0) {
			wk->woff += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return;
		} else {
			worker_kill(wk, "job socket write failed: %s", n < 0 ? strerror(errno) : "0 bytes");
			return;
		}
	}
	if (wk->woff == wk->wlen)
		wk->woff = wk->wlen = 0;
}

/* Room for `need` more bytes at the end of the write buffer. */
static int wbuf_reserve(struct worker *wk, size_t need)
{
	if (wk->woff > 0) {
		memmove(wk->wbuf, wk->wbuf + wk->woff, wk->wlen - wk->woff);
		wk->wlen -= wk->woff;
		if (wk->held)
			wk->hold_from -= wk->woff;
		wk->woff = 0;
	}
	if (wk->wcap - wk->wlen >= need)
		return 0;
	size_t cap = wk->wcap ? wk->wcap : 4096;
	while (cap - wk->wlen < need)
		cap *= 2;
	uint8_t *p = realloc(wk->wbuf, cap);
	if (p == NULL)
		return -1;
	wk->wbuf = p;
	wk->wcap = cap;
	return 0;
}

static uint32_t le32_get(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* ---- start ---- */

static void workers_free_memory(struct workers *w)
{
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		struct pool *pl = &w->pools[p];
		if (pl->workers != NULL) {
			for (uint32_t i = 0; i < pl->worker_count; i++) {
				struct worker *wk = &pl->workers[i];
				assert(wk->state == WORKER_DEAD);
				free(wk->jobs);
				free(wk->kill_at_start);
				free(wk->rbuf);
				free(wk->wbuf);
			}
		}
		free(pl->workers);
		free(pl->restart_ms);
	}
	free(w->started_q);
	if (w->progress)
		munmap(w->progress, w->progress_bytes);
	if (w->beat)
		munmap(w->beat, sizeof(*w->beat));
	free(w);
}

/* Kills and reaps every running worker without reporting anything (used
 * when start fails half-way). */
static void workers_kill_all_silently(struct workers *w)
{
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
			struct worker *wk = &w->pools[p].workers[i];
			if (wk->state == WORKER_DEAD)
				continue;
			kill(wk->pid, SIGKILL);
			if (wk->fd >= 0)
				close(wk->fd);
			while (waitpid(wk->pid, NULL, 0) < 0 && errno == EINTR)
				;
			wk->state = WORKER_DEAD;
			wk->fd = -1;
			wk->pid = 0;
		}
	}
}

int workers_start(struct workers **out, const struct workers_config *cfg,
                  const struct handler_registry *reg, const struct workers_events *ev,
                  char *err, size_t err_len)
{
	*out = NULL;
	if (cfg->pool_count == 0 || cfg->pool_count > WORKERS_POOLS_MAX) {
		set_err(err, err_len, "workers: pool count %u out of range 1..%d", cfg->pool_count,
		        WORKERS_POOLS_MAX);
		return -1;
	}
	if (cfg->prefetch == 0 || cfg->prefetch > PREFETCH_MAX) {
		set_err(err, err_len, "workers: prefetch %u out of range 1..%d", cfg->prefetch,
		        PREFETCH_MAX);
		return -1;
	}
	if (cfg->prefetch_short > PREFETCH_MAX) {
		set_err(err, err_len, "workers: prefetch_short %u out of range 0..%d",
		        cfg->prefetch_short, PREFETCH_MAX);
		return -1;
	}
	if (cfg->output_max == 0 || cfg->output_max > OUTPUT_MAX_LIMIT) {
		set_err(err, err_len, "workers: output_max %zu out of range 1..%u", cfg->output_max,
		        OUTPUT_MAX_LIMIT);
		return -1;
	}
	if (cfg->intensity > INTENSITY_MAX) {
		set_err(err, err_len, "workers: intensity %u above %d", cfg->intensity, INTENSITY_MAX);
		return -1;
	}
	for (uint32_t p = 0; p < cfg->pool_count; p++) {
		const struct workers_pool_config *pc = &cfg->pools[p];
		if (pc->worker_count == 0 || pc->worker_count > WORKERS_PER_POOL_MAX) {
			set_err(err, err_len, "workers: pool %.31s: %u workers, want 1..%d", pc->name,
			        pc->worker_count, WORKERS_PER_POOL_MAX);
			return -1;
		}
	}

	struct workers *w = calloc(1, sizeof *w);
	if (w == NULL) {
		set_err(err, err_len, "workers: out of memory");
		return -1;
	}
	w->cfg = *cfg;
	w->reg = reg;
	w->ring_cap = cfg->prefetch_short > cfg->prefetch ? cfg->prefetch_short : cfg->prefetch;
	/* shared with every worker forked below */
	void *page = mmap(NULL, sizeof(struct handlers_beat), PROT_READ | PROT_WRITE,
	                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED) {
		set_err(err, err_len, "workers: cannot map the heartbeat page");
		free(w);
		return -1;
	}
	w->beat = page;
	if (ev != NULL)
		w->ev = *ev;
	w->result_frame_max = cfg->output_max + RESULT_FRAME_SLACK_BYTES;
	for (uint32_t p = 0; p < cfg->pool_count; p++)
		w->started_cap += cfg->pools[p].worker_count;
	w->started_q = calloc(w->started_cap, sizeof *w->started_q);
	int oom = w->started_q == NULL;
	/* shared too: each worker's progress slot (a crash is read from it) */
	w->progress_bytes = (size_t)w->started_cap * sizeof *w->progress;
	void *slots = mmap(NULL, w->progress_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                   -1, 0);
	if (slots == MAP_FAILED)
		oom = 1;
	else
		w->progress = slots;
	uint32_t slot = 0;
	for (uint32_t p = 0; p < cfg->pool_count && !oom; p++) {
		struct pool *pl = &w->pools[p];
		snprintf(pl->name, sizeof pl->name, "%s", cfg->pools[p].name);
		pl->worker_count = cfg->pools[p].worker_count;
		pl->workers = calloc(pl->worker_count, sizeof *pl->workers);
		pl->restart_ms = calloc(cfg->intensity ? cfg->intensity : 1, sizeof *pl->restart_ms);
		if (pl->workers == NULL || pl->restart_ms == NULL) {
			oom = 1;
			break;
		}
		for (uint32_t i = 0; i < pl->worker_count; i++) {
			struct worker *wk = &pl->workers[i];
			wk->fd = -1;
			wk->pool = p;
			wk->progress = &w->progress[slot++];
			wk->jobs = calloc(w->ring_cap, sizeof *wk->jobs);
			wk->kill_at_start = calloc(w->ring_cap, sizeof *wk->kill_at_start);
			if (wk->jobs == NULL || wk->kill_at_start == NULL) {
				oom = 1;
				break;
			}
		}
	}
	if (oom) {
		set_err(err, err_len, "workers: out of memory");
		workers_free_memory(w);
		return -1;
	}
	for (uint32_t p = 0; p < cfg->pool_count; p++) {
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
			char why[128];
			if (worker_spawn(w, &w->pools[p].workers[i], why, sizeof why) != 0) {
				set_err(err, err_len, "workers: pool %s: %s", w->pools[p].name, why);
				workers_kill_all_silently(w);
				workers_free_memory(w);
				return -1;
			}
		}
	}
	*out = w;
	return 0;
}

/* ---- event delivery ---- */

static void flush_unsent(struct workers *w);

/* Delivers the queued `started` events, oldest first. A callback may
 * dispatch, which queues more: they are delivered in the same call. */
static void deliver_started(struct workers *w)
{
	while (w->started_count > 0) {
		struct started_ev e = w->started_q[w->started_head];
		w->started_head = (w->started_head + 1) % w->started_cap;
		w->started_count--;
		if (w->ev.started != NULL)
			w->ev.started(w->ev.ctx, e.task_id, e.now_ms);
	}
}

static void queue_started(struct workers *w, uint64_t task_id)
{
	/* at most one per worker (see the top of the file) */
	assert(w->started_count < w->started_cap);
	uint32_t i = (w->started_head + w->started_count) % w->started_cap;
	w->started_q[i].task_id = task_id;
	w->started_q[i].now_ms = workers_now_ms();
	w->started_count++;
}

void workers_deliver(struct workers *w)
{
	flush_unsent(w);
	deliver_started(w);
}

uint64_t workers_beat(struct workers *w, uint64_t now_ms, uint64_t pause_ms)
{
	uint64_t gap = w->last_beat_ms && now_ms > w->last_beat_ms ? now_ms - w->last_beat_ms : 0;
	/* workers wait once the beat is half the pause threshold old, so a
	 * job never starts in a pause long enough to hand it back */
	atomic_store(&w->beat->stale_ms, pause_ms / 2 ? pause_ms / 2 : 1);
	if (gap > pause_ms)
		atomic_fetch_add(&w->beat->epoch, 1);
	else
		gap = 0;
	atomic_store(&w->beat->alive_ms, now_ms);
	w->last_beat_ms = now_ms;
	return gap;
}

void workers_new_epoch(struct workers *w)
{
	atomic_fetch_add(&w->beat->epoch, 1);
}

int workers_job_waiting(const struct workers *w, uint64_t task_id)
{
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		const struct pool *pl = &w->pools[p];
		for (uint32_t i = 0; i < pl->worker_count; i++) {
			const struct worker *wk = &pl->workers[i];
			for (uint32_t j = 1; j < wk->job_count; j++)
				if (wk->jobs[(wk->job_head + j) % w->ring_cap] == task_id)
					return 1;
		}
	}
	return 0;
}

int workers_job_begun(const struct workers *w, uint64_t task_id)
{
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		const struct pool *pl = &w->pools[p];
		for (uint32_t i = 0; i < pl->worker_count; i++) {
			const struct worker *wk = &pl->workers[i];
			if (wk->state == WORKER_DEAD)
				continue;
			uint64_t begun = atomic_load_explicit(&wk->progress->begun, memory_order_acquire);
			for (uint32_t j = 0; j < wk->job_count; j++)
				if (wk->jobs[(wk->job_head + j) % w->ring_cap] == task_id)
					return wk->results_seen + 1 + j <= begun;
		}
	}
	return 0;
}

/* ---- dispatch ---- */

/* 1 while the pool's recent jobs ran short: deep queues cost nothing
 * then (a job waits behind a few microseconds of others) and save the
 * loop many passes. */
static int pool_short(const struct workers *w, const struct pool *pl)
{
	uint32_t bound = w->cfg.short_ewma_us ? w->cfg.short_ewma_us : WORKERS_SHORT_EWMA_US;
	return w->cfg.prefetch_short > w->cfg.prefetch && pl->run_samples >= 8 &&
	       pl->run_ewma_us < bound;
}

/* How many jobs this worker may hold now. A deep queue only behind a
 * head job not known to be running long: a long job never gets more short
 * ones stuck behind it while another worker could take them. */
static uint32_t worker_limit(const struct workers *w, const struct pool *pl,
                             const struct worker *wk, uint64_t now)
{
	if (!pool_short(w, pl))
		return w->cfg.prefetch;
	uint32_t long_us = w->cfg.head_long_us ? w->cfg.head_long_us : WORKERS_HEAD_LONG_US;
	if (wk->job_count > 0 && now - wk->head_since_us > long_us)
		return w->cfg.prefetch;
	return w->cfg.prefetch_short;
}

/* Takes in what the worker's progress slot says about the run time of
 * the jobs it reported since the last call (n of them). */
static void pool_sample(struct workers *w, struct worker *wk, uint64_t n)
{
	if (n == 0)
		return;
	struct pool *pl = &w->pools[wk->pool];
	uint64_t run = atomic_load_explicit(&wk->progress->run_us, memory_order_relaxed);
	uint64_t d = run >= wk->run_us_seen ? run - wk->run_us_seen : 0;
	wk->run_us_seen = run;
	uint64_t avg = d / n;
	uint32_t v = avg > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)avg;
	pl->run_ewma_us = pl->run_samples ? (uint32_t)(((uint64_t)pl->run_ewma_us * 7 + v) / 8) : v;
	if (pl->run_samples < UINT32_MAX)
		pl->run_samples++;
}

/* Sends every worker's unsent job bytes (those not held). */
static void flush_unsent(struct workers *w)
{
	if (!w->unsent_workers)
		return;
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
			struct worker *wk = &w->pools[p].workers[i];
			if (!wk->unsent)
				continue;
			wk->unsent = 0;
			worker_flush(wk);
		}
	}
	w->unsent_workers = 0;
}

int workers_dispatch(struct workers *w, uint32_t pool, const struct workers_job *job)
{
	if (pool >= w->cfg.pool_count || w->stopping)
		return -1;
	struct pool *pl = &w->pools[pool];
	struct worker *best = NULL;
	uint64_t now = now_us();
	for (uint32_t k = 0; k < pl->worker_count; k++) {
		struct worker *wk = &pl->workers[(pl->cursor + k) % pl->worker_count];
		if (wk->state != WORKER_LIVE || wk->reaped ||
		    wk->job_count >= worker_limit(w, pl, wk, now))
			continue;
		if (best == NULL || wk->job_count < best->job_count)
			best = wk;
	}
	if (best == NULL)
		return -1;
	pl->cursor = (pl->cursor + 1) % pl->worker_count;

	Chorus__WorkerJob msg = CHORUS__WORKER_JOB__INIT;
	msg.task_id = job->task_id;
	msg.handler = (char *)(job->handler ? job->handler : "");
	msg.payload.data = (uint8_t *)job->payload;
	msg.payload.len = job->payload ? job->payload_len : 0;
	size_t argc = 0;
	while (job->argv != NULL && job->argv[argc] != NULL)
		argc++;
	msg.n_argv = argc;
	msg.argv = (char **)job->argv;
	msg.timeout_ms = job->timeout_ms;
	msg.output_max = (uint32_t)w->cfg.output_max;
	msg.epoch = atomic_load(&w->beat->epoch);
	size_t len = chorus__worker_job__get_packed_size(&msg);
	if (len > HANDLERS_JOB_FRAME_BYTES_MAX)
		return WORKERS_ERR_JOB_TOO_BIG;
	if (wbuf_reserve(best, 4 + len) != 0)
		return -1;
	if (job->hold && !best->held) {
		best->held = 1;
		best->hold_from = best->wlen;
		w->held_workers++;
	}
	le32_put(best->wbuf + best->wlen, (uint32_t)len);
	size_t packed = chorus__worker_job__pack(&msg, best->wbuf + best->wlen + 4);
	assert(packed == len);
	(void)packed;
	best->wlen += 4 + len;

	assert(best->job_count < w->ring_cap);
	best->jobs[(best->job_head + best->job_count) % w->ring_cap] = job->task_id;
	best->kill_at_start[(best->job_head + best->job_count) % w->ring_cap] = 0;
	best->job_count++;
	/* sent with the others of this pass by the next delivering call (one
	 * send per worker, not one per job) */
	if (!best->unsent) {
		best->unsent = 1;
		w->unsent_workers++;
	}
	/* A job sent to an idle worker is running from now on; the node hears
	 * it from workers_deliver (or the next call that delivers), never from
	 * inside this call. */
	if (best->job_count == 1) {
		best->head_since_us = now;
		queue_started(w, job->task_id);
	}
	return 0;
}

void workers_release_held(struct workers *w)
{
	flush_unsent(w);
	if (!w->held_workers)
		return;
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
			struct worker *wk = &w->pools[p].workers[i];
			if (!wk->held)
				continue;
			wk->held = 0;
			worker_flush(wk);
		}
	}
	w->held_workers = 0;
}

int workers_any_held(const struct workers *w)
{
	if (!w->held_workers)
		return 0;
	for (uint32_t p = 0; p < w->cfg.pool_count; p++)
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++)
			if (w->pools[p].workers[i].held)
				return 1;
	return 0;
}

uint32_t workers_free_slots(const struct workers *w, uint32_t pool)
{
	if (pool >= w->cfg.pool_count || w->stopping)
		return 0;
	const struct pool *pl = &w->pools[pool];
	uint32_t free_slots = 0;
	uint64_t now = now_us();
	for (uint32_t i = 0; i < pl->worker_count; i++) {
		const struct worker *wk = &pl->workers[i];
		uint32_t limit = worker_limit(w, pl, wk, now);
		if (wk->state == WORKER_LIVE && !wk->reaped && wk->job_count < limit)
			free_slots += limit - wk->job_count;
	}
	return free_slots;
}

int workers_kill_task(struct workers *w, uint64_t task_id)
{
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
			struct worker *wk = &w->pools[p].workers[i];
			for (uint32_t j = 0; j < wk->job_count; j++) {
				uint32_t at = (wk->job_head + j) % w->ring_cap;
				if (wk->jobs[at] != task_id)
					continue;
				if (j > 0) {
					/* queued behind the running job: killing the
					 * worker now would take that job with it; kill
					 * this one as it starts instead */
					wk->kill_at_start[at] = 1;
					return 0;
				}
				worker_kill(wk, "task %llu killed", (unsigned long long)task_id);
				return 0;
			}
		}
	}
	return -1;
}

/* ---- reading results ---- */

/* Handles one decoded result; 0 to go on, -1 when the worker is gone. */
static int worker_on_result(struct workers *w, struct worker *wk, Chorus__WorkerResult *res)
{
	if (wk->job_count == 0 || wk->jobs[wk->job_head] != res->task_id) {
		if (wk->job_count == 0)
			worker_kill(wk, "protocol error: result for task %llu while idle",
			            (unsigned long long)res->task_id);
		else
			worker_kill(wk, "protocol error: result for task %llu, running %llu",
			            (unsigned long long)res->task_id,
			            (unsigned long long)wk->jobs[wk->job_head]);
		return -1;
	}
	deliver_started(w); /* this task's `started` before its result */
	wk->job_head = (wk->job_head + 1) % w->ring_cap;
	wk->job_count--;
	wk->results_seen++;
	wk->head_since_us = now_us();
	int has_next = wk->job_count > 0;
	if (res->withdrawn) {
		if (w->ev.withdrawn != NULL)
			w->ev.withdrawn(w->ev.ctx, res->task_id, workers_now_ms());
		else if (w->ev.lost != NULL)
			w->ev.lost(w->ev.ctx, res->task_id, 0, res->error, workers_now_ms());
	} else if (w->ev.result != NULL) {
		w->ev.result(w->ev.ctx, res->task_id, res->ok ? 1 : 0, res->output.data, res->output.len,
		             res->exit_code, res->error, workers_now_ms());
	}
	deliver_started(w);
	if (wk->state != WORKER_LIVE)
		return -1;
	/* The worker went straight on to the next job it already had. (A job
	 * dispatched from inside the callback to this then idle worker was
	 * queued by workers_dispatch and delivered just above.) */
	if (has_next && wk->job_count > 0 && w->ev.started != NULL) {
		w->ev.started(w->ev.ctx, wk->jobs[wk->job_head], workers_now_ms());
		deliver_started(w);
	}
	if (wk->state == WORKER_LIVE && wk->job_count > 0 && wk->kill_at_start[wk->job_head]) {
		wk->kill_at_start[wk->job_head] = 0;
		worker_kill(wk, "task %llu killed", (unsigned long long)wk->jobs[wk->job_head]);
	}
	return wk->state == WORKER_LIVE ? 0 : -1;
}

/* Decodes every complete frame in the read buffer. */
static void worker_parse(struct workers *w, struct worker *wk)
{
	size_t off = 0;
	uint64_t seen = wk->results_seen;
	while (wk->state == WORKER_LIVE && wk->rlen - off >= 4) {
		uint32_t len = le32_get(wk->rbuf + off);
		if (len > w->result_frame_max) {
			worker_kill(wk, "protocol error: result frame of %u bytes (max %zu)", len,
			            w->result_frame_max);
			return;
		}
		if (wk->rlen - off - 4 < len)
			break;
		Chorus__WorkerResult *res = chorus__worker_result__unpack(NULL, len, wk->rbuf + off + 4);
		off += 4 + (size_t)len;
		if (res == NULL) {
			worker_kill(wk, "protocol error: undecodable result frame");
			return;
		}
		int rc = worker_on_result(w, wk, res);
		chorus__worker_result__free_unpacked(res, NULL);
		if (rc != 0)
			return;
	}
	if (wk->state != WORKER_LIVE)
		return;
	pool_sample(w, wk, wk->results_seen - seen);
	if (off > 0) {
		memmove(wk->rbuf, wk->rbuf + off, wk->rlen - off);
		wk->rlen -= off;
	}
}

/* Room to read: a chunk, or the rest of the frame being assembled. */
static int rbuf_reserve(struct workers *w, struct worker *wk)
{
	size_t want = wk->rlen + READ_CHUNK_BYTES;
	size_t frame_cap = 4 + w->result_frame_max;
	if (want > frame_cap)
		want = frame_cap;
	if (want <= wk->rlen)
		want = wk->rlen + 1; /* cannot happen: a full frame is parsed first */
	if (wk->rcap >= want)
		return 0;
	size_t cap = wk->rcap ? wk->rcap : READ_CHUNK_BYTES;
	while (cap < want)
		cap *= 2;
	uint8_t *p = realloc(wk->rbuf, cap);
	if (p == NULL)
		return -1;
	wk->rbuf = p;
	wk->rcap = cap;
	return 0;
}

void workers_on_readable(struct workers *w, int fd)
{
	flush_unsent(w);
	deliver_started(w);
	struct worker *wk = worker_by_fd(w, fd);
	if (wk == NULL)
		return;
	worker_flush(wk);
	for (int reads = 0; reads < READS_PER_CALL_MAX && wk->state == WORKER_LIVE; reads++) {
		if (rbuf_reserve(w, wk) != 0)
			return; /* try again on the next readiness */
		ssize_t n = read(wk->fd, wk->rbuf + wk->rlen, wk->rcap - wk->rlen);
		if (n > 0) {
			wk->rlen += (size_t)n;
			worker_parse(w, wk);
		} else if (n == 0) {
			worker_kill(wk, NULL);
			return;
		} else if (errno == EINTR) {
			continue;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return;
		} else {
			worker_kill(wk, "job socket read failed: %s", strerror(errno));
			return;
		}
	}
}

int workers_pollfds(const struct workers *w, struct pollfd *fds, int max)
{
	int n = 0;
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
			const struct worker *wk = &w->pools[p].workers[i];
			if (wk->state != WORKER_LIVE)
				continue;
			if (n >= max)
				return n;
			fds[n].fd = wk->fd;
			/* held bytes wait for a commit, not for the socket */
			size_t end = wk->held ? wk->hold_from : wk->wlen;
			fds[n].events = (short)(POLLIN | (wk->woff < end ? POLLOUT : 0));
			fds[n].revents = 0;
			n++;
		}
	}
	return n;
}

/* ---- exits and restarts ---- */

static void describe_exit(char *out, size_t out_len, pid_t pid, int status, const char *reason)
{
	int n;
	if (WIFSIGNALED(status)) {
		const char *name = strsignal(WTERMSIG(status));
		n = snprintf(out, out_len, "worker %d killed by signal %d (%s)", (int)pid,
		             WTERMSIG(status), name ? name : "?");
	} else if (WIFEXITED(status)) {
		const char *what = NULL;
		switch (WEXITSTATUS(status)) {
		case HANDLERS_EXIT_BAD_FRAME: what = " (bad job frame)"; break;
		case HANDLERS_EXIT_WRITE: what = " (could not write a result)"; break;
		case HANDLERS_EXIT_NOMEM: what = " (out of memory)"; break;
		default: what = ""; break;
		}
		n = snprintf(out, out_len, "worker %d exited with status %d%s", (int)pid,
		             WEXITSTATUS(status), what);
	} else {
		n = snprintf(out, out_len, "worker %d ended (status 0x%x)", (int)pid, (unsigned)status);
	}
	if (reason != NULL && reason[0] != '\0' && n >= 0 && (size_t)n < out_len)
		snprintf(out + n, out_len - (size_t)n, ": %s", reason);
}

/* The worker's process is gone (reaped): report its jobs and mark it for
 * a restart. */
static void worker_exited(struct workers *w, struct worker *wk, int status)
{
	assert(wk->state != WORKER_DEAD);
	char why[320];
	describe_exit(why, sizeof why, wk->pid, status, wk->kill_reason);
	if (wk->fd >= 0)
		close(wk->fd);
	/* Copy first: a `lost` callback may dispatch, even to this pool. */
	uint64_t ids[PREFETCH_MAX];
	uint32_t held = wk->job_count;
	assert(held <= PREFETCH_MAX);
	for (uint32_t j = 0; j < held; j++)
		ids[j] = wk->jobs[(wk->job_head + j) % w->ring_cap];
	/* Which of them ran: the process numbered the jobs it reached; the
	 * head is job results_seen + 1. Those it reached ran (the last one
	 * was running; the results of those before it were still in the
	 * worker); the others never started. */
	uint64_t begun = atomic_load_explicit(&wk->progress->begun, memory_order_acquire);
	uint32_t ran = begun > wk->results_seen ? (uint32_t)(begun - wk->results_seen < held
	                                                         ? begun - wk->results_seen
	                                                         : held)
	                                        : 0;
	wk->state = WORKER_DEAD;
	wk->pid = 0;
	wk->fd = -1;
	wk->job_head = wk->job_count = 0;
	wk->rlen = wk->woff = wk->wlen = 0;
	wk->held = 0;
	wk->kill_reason[0] = '\0';
	deliver_started(w); /* their `started` before their loss */
	if (w->ev.lost == NULL)
		return;
	for (uint32_t j = 0; j < held; j++) {
		w->ev.lost(w->ev.ctx, ids[j], j < ran, why, workers_now_ms());
		deliver_started(w);
	}
}

/* The process is gone but its socket may still hold results it wrote
 * before it died (a crashing worker writes those it was keeping): they are
 * delivered before its jobs are reported lost. */
static void worker_drain(struct workers *w, struct worker *wk)
{
	wk->reaped = 1;
	for (int reads = 0; reads < READS_PER_CALL_MAX * 16 && wk->state == WORKER_LIVE; reads++) {
		if (rbuf_reserve(w, wk) != 0)
			return;
		ssize_t n = read(wk->fd, wk->rbuf + wk->rlen, wk->rcap - wk->rlen);
		if (n > 0) {
			wk->rlen += (size_t)n;
			worker_parse(w, wk);
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else {
			return; /* EOF, or nothing more */
		}
	}
}

/* How many of the pool's restarts fall within the last period_ms; only
 * whether it reaches `intensity` matters, so the ring holds that many. */
static int pool_intensity_reached(const struct workers *w, const struct pool *pl, uint64_t now_ms)
{
	uint32_t cap = w->cfg.intensity;
	if (cap == 0)
		return 1;
	if (pl->restart_count < cap)
		return 0;
	uint64_t oldest = pl->restart_ms[pl->restart_head]; /* ring full: head is oldest */
	return now_ms - oldest < w->cfg.period_ms;
}

static void pool_record_restart(const struct workers *w, struct pool *pl, uint64_t now_ms)
{
	pl->restarts++;
	pl->last_restart_ms = now_ms;
	pl->any_restart = 1;
	uint32_t cap = w->cfg.intensity;
	if (cap == 0)
		return;
	if (pl->restart_count < cap) {
		pl->restart_ms[(pl->restart_head + pl->restart_count) % cap] = now_ms;
		pl->restart_count++;
	} else {
		pl->restart_ms[pl->restart_head] = now_ms;
		pl->restart_head = (pl->restart_head + 1) % cap;
	}
}

static void restart_due(struct workers *w, uint64_t now_ms)
{
	if (w->stopping)
		return;
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		struct pool *pl = &w->pools[p];
		if (pl->degraded && now_ms - pl->last_restart_ms >= w->cfg.period_ms)
			pl->degraded = 0;
		for (uint32_t i = 0; i < pl->worker_count; i++) {
			struct worker *wk = &pl->workers[i];
			if (wk->state != WORKER_DEAD)
				continue;
			if (!pl->degraded && pool_intensity_reached(w, pl, now_ms))
				pl->degraded = 1;
			if (pl->degraded && pl->any_restart &&
			    now_ms < pl->last_restart_ms + w->cfg.degraded_backoff_ms)
				continue;
			if (worker_spawn(w, wk, NULL, 0) != 0)
				continue; /* fork failed: the next tick tries again */
			pool_record_restart(w, pl, now_ms);
		}
	}
}

void workers_reap(struct workers *w)
{
	flush_unsent(w);
	deliver_started(w);
	for (;;) {
		int status = 0;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			break;
		struct worker *wk = worker_by_pid(w, pid);
		if (wk == NULL)
			continue; /* not one of ours */
		worker_drain(w, wk);
		if (wk->state != WORKER_DEAD)
			worker_exited(w, wk, status);
	}
	restart_due(w, workers_now_ms());
}

void workers_tick(struct workers *w, uint64_t now_ms)
{
	flush_unsent(w);
	deliver_started(w);
	restart_due(w, now_ms);
}

void workers_pool_status(const struct workers *w, uint32_t pool, struct workers_pool_status *st)
{
	memset(st, 0, sizeof *st);
	if (pool >= w->cfg.pool_count)
		return;
	const struct pool *pl = &w->pools[pool];
	st->name = pl->name;
	st->workers = pl->worker_count;
	st->restarts = pl->restarts;
	st->degraded = pl->degraded;
	for (uint32_t i = 0; i < pl->worker_count; i++) {
		const struct worker *wk = &pl->workers[i];
		if (wk->state == WORKER_LIVE)
			st->alive++;
		if (wk->job_count > 0) {
			st->busy++;
			st->queued += wk->job_count - 1;
		}
	}
}

uint32_t workers_jobs_held(const struct workers *w)
{
	uint32_t n = 0;
	for (uint32_t p = 0; p < w->cfg.pool_count; p++)
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++)
			n += w->pools[p].workers[i].job_count;
	return n;
}

/* ---- stop ---- */

void workers_stop(struct workers *w, uint32_t grace_ms)
{
	if (w == NULL)
		return;
	deliver_started(w);
	/* jobs still held were never journaled as started: they are not sent
	 * (reported lost below, like any job a stopped worker did not finish;
	 * the journal still has them queued) */
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
			struct worker *wk = &w->pools[p].workers[i];
			if (wk->held) {
				wk->wlen = wk->hold_from;
				wk->held = 0;
			}
		}
	}
	w->held_workers = 0;
	w->stopping = 1;
	uint64_t deadline_ms = workers_now_ms() + grace_ms;
	for (;;) {
		int running = 0;
		for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
			for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
				struct worker *wk = &w->pools[p].workers[i];
				if (wk->state == WORKER_DEAD)
					continue;
				running = 1;
				worker_flush(wk);
				/* EOF only after the last whole job frame is out. */
				if (wk->state == WORKER_LIVE && !wk->shut_wr && wk->woff == wk->wlen) {
					shutdown(wk->fd, SHUT_WR);
					wk->shut_wr = 1;
				}
			}
		}
		if (!running)
			break;
		uint64_t now = workers_now_ms();
		if (now >= deadline_ms)
			break;
		struct pollfd fds[WORKERS_POOLS_MAX * WORKERS_PER_POOL_MAX];
		int n = workers_pollfds(w, fds, (int)(sizeof fds / sizeof fds[0]));
		uint64_t left = deadline_ms - now;
		int slice = left < STOP_POLL_SLICE_MS ? (int)left : STOP_POLL_SLICE_MS;
		if (poll(fds, (nfds_t)n, slice) > 0)
			for (int k = 0; k < n; k++)
				if (fds[k].revents != 0)
					workers_on_readable(w, fds[k].fd);
		workers_reap(w);
	}
	/* Grace is over: whoever is left is killed, and its jobs are lost. */
	for (uint32_t p = 0; p < w->cfg.pool_count; p++) {
		for (uint32_t i = 0; i < w->pools[p].worker_count; i++) {
			struct worker *wk = &w->pools[p].workers[i];
			if (wk->state == WORKER_DEAD)
				continue;
			worker_kill(wk, "shutdown grace of %u ms ran out", grace_ms);
			kill(wk->pid, SIGKILL);
			int status = 0;
			pid_t r;
			while ((r = waitpid(wk->pid, &status, 0)) < 0 && errno == EINTR)
				;
			if (r == wk->pid)
				worker_exited(w, wk, status);
			else
				worker_exited(w, wk, SIGKILL); /* raw wait status of "killed by SIGKILL" */
		}
	}
	workers_free_memory(w);
}
