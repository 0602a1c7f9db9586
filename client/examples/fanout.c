/*
 * fanout.c - a small libchorus example: fan out, then one async request.
 *
 * usage: fanout ADDR SECRET_FILE
 *   e.g. fanout tcp://127.0.0.1:7400 ./chorus-data/secret
 *
 * 1. connects to the node at ADDR with the cluster secret in SECRET_FILE;
 * 2. runs the built-in "sha256" handler on 100 payloads ("payload-0" ..
 *    "payload-99") with ch_map, which returns the results in input order
 *    whatever order the tasks finished in, and prints one line per task;
 * 3. submits one more task with ch_submit_async; the callback runs once on
 *    an nng thread, so it only records the outcome and signals main();
 * 4. exits 0 only if every task succeeded.
 *
 * Build: cc fanout.c $(pkg-config --cflags --libs chorus) -o fanout
 */
#include <chorus.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define PAYLOAD_COUNT 100
#define PAYLOAD_BYTES_MAX 32

/* What the async callback hands back to main(). */
struct async_outcome {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	int code;
	int state;
	char line[160];
};

/* Runs on an nng thread: keep it short, never call blocking ch_ functions. */
static void on_result(void *arg, int code, struct ch_result *r, const char *err)
{
	struct async_outcome *o = arg;
	pthread_mutex_lock(&o->mu);
	o->code = code;
	if (r != NULL) {
		o->state = r->state;
		snprintf(o->line, sizeof o->line, "async task %llu: %s %s",
		         (unsigned long long)r->task_id, ch_task_state_name(r->state),
		         (const char *)r->output); /* output is NUL-terminated */
		ch_result_free(r);                 /* the callback owns the result */
	} else {
		snprintf(o->line, sizeof o->line, "async task failed: %s", err);
	}
	o->done = 1;
	pthread_cond_signal(&o->cv);
	pthread_mutex_unlock(&o->mu);
}

static void on_progress(void *arg, uint32_t done, uint32_t total)
{
	(void)arg;
	fprintf(stderr, "\r%u/%u done", done, total);
	if (done == total)
		fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s ADDR SECRET_FILE\n", argv[0]);
		return 2;
	}
	char err[256];
	ch_client *c = NULL;
	int rv = ch_client_connect(&c, argv[1], argv[2], NULL, err, sizeof err);
	if (rv != CH_OK) {
		fprintf(stderr, "fanout: connect: %s\n", err);
		return 1;
	}

	static char bufs[PAYLOAD_COUNT][PAYLOAD_BYTES_MAX];
	const void *payloads[PAYLOAD_COUNT];
	size_t lens[PAYLOAD_COUNT];
	for (int i = 0; i < PAYLOAD_COUNT; i++) {
		lens[i] = (size_t)snprintf(bufs[i], sizeof bufs[i], "payload-%d", i);
		payloads[i] = bufs[i];
	}
	struct ch_map_opts mopts = {
		.max_concurrency = 16,  /* at most 16 running at once */
		.deadline_ms = 60000,   /* all finished or timed out within a minute */
		.progress = on_progress,
	};
	struct ch_result **results = NULL;
	rv = ch_map(c, "sha256", payloads, lens, PAYLOAD_COUNT, NULL, &mopts, &results, err,
	            sizeof err);
	if (rv != CH_OK) {
		fprintf(stderr, "fanout: map: %s\n", err);
		ch_client_close(c);
		return 1;
	}
	int failed = 0;
	for (int i = 0; i < PAYLOAD_COUNT; i++) {
		const struct ch_result *r = results[i]; /* results[i] belongs to payloads[i] */
		if (r->state == CH_TASK_SUCCEEDED) {
			printf("%-12s %s\n", bufs[i], (const char *)r->output);
		} else {
			printf("%-12s %s: %s\n", bufs[i], ch_task_state_name(r->state), r->error);
			failed++;
		}
	}
	ch_results_free(results, PAYLOAD_COUNT);

	struct async_outcome o = { .mu = PTHREAD_MUTEX_INITIALIZER,
		                   .cv = PTHREAD_COND_INITIALIZER };
	rv = ch_submit_async(c, "sha256", "async", 5, NULL, 10000, on_result, &o);
	if (rv != CH_OK) {
		fprintf(stderr, "fanout: submit_async: %s\n", ch_strerror(rv));
		failed++;
	} else {
		/* the callback runs exactly once, with a result or an error */
		pthread_mutex_lock(&o.mu);
		while (!o.done)
			pthread_cond_wait(&o.cv, &o.mu);
		pthread_mutex_unlock(&o.mu);
		printf("%s\n", o.line);
		if (o.code != CH_OK || o.state != CH_TASK_SUCCEEDED)
			failed++;
	}
	ch_client_close(c);
	if (failed > 0)
		fprintf(stderr, "fanout: %d task(s) did not succeed\n", failed);
	return failed == 0 ? 0 : 1;
}
