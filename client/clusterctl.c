/*
 * clusterctl.c - the command-line client of a Chorus cluster.
 *
 * Owns argument parsing, reading payloads (argument, file, stdin, one per
 * line for a fan-out), rendering results as tables or JSON, and the mapping
 * of libchorus error codes to the documented exit codes. Everything that
 * talks to a node goes through libchorus (client/chorus.h).
 *
 * Output discipline: results go to stdout (a task's raw output, task ids,
 * tables, JSON); diagnostics go to stderr as ONE line starting with
 * "clusterctl: ". With `submit --wait` in human mode the task's output is
 * written raw to stdout and its state table to stderr, so the output can be
 * piped untouched.
 */
#include "chorus.h"
#include "views.h"
#include "core/cron.h"
#include "core/tz.h"
#include "io/tzload.h"
#include "proto/seal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <nng/nng.h>
#include <sodium.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ADDR_DEFAULT "tcp://127.0.0.1:7400"
#define SECRET_DEFAULT "./chorus-data/secret"
#define KEYGEN_FILE_DEFAULT "./chorus-secret"
#define INPUT_BYTES_MAX (16u * 1024u * 1024u) /* the default frame cap */
#define FANOUT_FLUSH_MS 100u    /* results reach a pipe at least this often */
#define FANOUT_PROGRESS_MS 200u
#define ARGV_COUNT_MAX 4096u
#define WAIT_CHUNK_MS 30000u  /* one await round trip while waiting "forever" */
#define ERR_BYTES 512u
#define PROGRESS_WIDTH 40
#define CRON_NEXT_COUNT_DEFAULT 5u
#define CRON_NEXT_COUNT_MAX 1000u

enum exit_code {
	EXIT_OK = 0,
	EXIT_TASK_FAILED = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
	EXIT_AUTH = 4,
	EXIT_NOT_FOUND = 5,
	EXIT_REJECTED = 6,
	EXIT_OTHER = 7,
};

struct cli {
	const char *addr;
	const char *secret;
	bool json;
	uint32_t timeout_ms; /* 0 = library default */
	ch_client *c;
};

/* ------------------------------------------------------------------ */
/* help                                                                */

static const char usage_text[] =
	"usage: clusterctl [-a ADDR] [-k SECRET_FILE] [--json] [--timeout DUR] COMMAND ...\n"
	"\n"
	"Talks to a Chorus node over its sealed link.\n"
	"\n"
	"commands:\n"
	"  submit HANDLER [PAYLOAD | -f FILE | -] [options]   run one task\n"
	"  submit HANDLER --fanout FILE|- [options]           one task per input line,\n"
	"                                                     spread over the cluster\n"
	"  status [TASK_ID]                                   node status, or one task\n"
	"  members                                            the cluster as this node sees it\n"
	"  metrics                                            the node's Prometheus metrics\n"
	"  events [--follow] [--after SEQ] [--max N]          the node's recent cluster events\n"
	"  tasks [--state STATE] [--limit N]                  list tasks, newest first\n"
	"  wait TASK_ID [--timeout DUR]                       wait for a task's result\n"
	"  wait --batch ID [--from N]                         re-attach to a fan-out: its\n"
	"                                                     results from index N on\n"
	"  cancel TASK_ID | --batch ID                        cancel a task, or a fan-out\n"
	"  fanouts [--limit N]                                running and recent fan-outs\n"
	"  cron add NAME 'EXPR' HANDLER [PAYLOAD] [options]   add a schedule to the cluster\n"
	"  cron every NAME DURATION HANDLER [PAYLOAD] [options]\n"
	"                                                     the same, every DURATION\n"
	"  cron list                                          the schedules, next run, state\n"
	"  cron show NAME [--limit N]                         one schedule and its history\n"
	"  cron history NAME [--limit N]                      its runs, newest first\n"
	"  cron rm|resume|trigger NAME                        remove, resume, run once now\n"
	"  cron pause NAME [--note TEXT]                      pause (occurrences are skipped)\n"
	"  cron backfill NAME --from T --to T [--overlap P]   run a past range's occurrences\n"
	"  cron next 'EXPR' [--from T] [--count N] [--tz ZONE]\n"
	"                                                     next fire times of a cron\n"
	"                                                     expression (no cluster needed)\n"
	"  cache get|put|del|incr|ttl|expire|persist|exists|getdel|update KEY ...\n"
	"                                                     the cluster's cache (see\n"
	"  cache get-or-compute KEY HANDLER [PAYLOAD]         clusterctl help cache)\n"
	"  cache scan|stats|flush|dbsize\n"
	"  voters [list]                                      the voters, the leader, the term\n"
	"  voters add|remove MEMBER                           change the voters (name or id)\n"
	"  keygen [FILE]                                      write a new cluster secret\n"
	"  keygen --client SECRET_FILE OUT_FILE               write a client credential\n"
	"  http-token [--all]                                 the bearer token of chorusd --http\n"
	"                                                     (from -k: a secret or credential)\n"
	"  help [COMMAND]                                     help on a command\n"
	"\n"
	"global options:\n"
	"  -a, --addr ADDR      node address (env CHORUS_ADDR; default " ADDR_DEFAULT ")\n"
	"  -k, --secret FILE    cluster secret file (env CHORUS_SECRET;\n"
	"                       default " SECRET_DEFAULT ", the node's default data dir)\n"
	"  --json               machine-readable output\n"
	"  --timeout DUR        connect and per-request timeout (default 5s)\n"
	"  -h, --help           this help\n"
	"  --version            print the version\n"
	"\n"
	"DUR is a number with a unit: 250ms, 5s, 2m, 1h (a bare number is seconds).\n"
	"\n"
	"exit codes:\n"
	"  0  ok\n"
	"  1  the task (or a task of a fan-out, or a cache get-or-compute's task) did\n"
	"     not succeed; a cache put --nx or --xx whose condition did not hold\n"
	"  2  usage error, or a request the node found invalid (e.g. a schedule name\n"
	"     already taken, a cache incr of a value that is not an integer)\n"
	"  3  node unreachable, a timeout, no leader elected in time (cron, voters),\n"
	"     too few replicas alive for the consistency asked, or a partition still\n"
	"     moving after the retries (cache)\n"
	"  4  authentication failed (wrong cluster secret)\n"
	"  5  not found (no such task, schedule or member; no such key in the cache,\n"
	"     or no such cache)\n"
	"  6  rejected by the node (unknown handler, exec denied, too large, queue full,\n"
	"     schedule limit, a voter change already under way)\n"
	"  7  any other error\n";

static const char help_submit[] =
	"usage: clusterctl submit HANDLER [PAYLOAD | -f FILE | -] [options] [-- ARGV...]\n"
	"       clusterctl submit HANDLER --fanout FILE|- [options]\n"
	"\n"
	"Submits a task and prints its id. The payload is the PAYLOAD argument, the\n"
	"contents of FILE (-f), or standard input (-); none means an empty payload.\n"
	"\n"
	"options:\n"
	"  --wait             wait for the result: the task's output goes raw to stdout,\n"
	"                     its state, exit code and error to stderr (exit 1 unless it\n"
	"                     succeeded). With --json one object with \"output\" (UTF-8)\n"
	"                     or \"output_base64\".\n"
	"  --timeout DUR      the task's own time limit (default: the node's)\n"
	"  --transient        retry the task after a crash or timeout\n"
	"  --retries N        transient: at most N attempts in all\n"
	"  --backoff DUR      transient: first retry delay, doubling each attempt\n"
	"  --arg ARG          exec handler: append ARG to argv (repeatable)\n"
	"  --key KEY          idempotency key: a submit (or fan-out) with a KEY the node\n"
	"                     has seen within its result retention time is not run\n"
	"                     again; it answers with the first task's id (--wait waits\n"
	"                     on it). Without it every request still has its own key,\n"
	"                     so a retry after a node restart never runs twice.\n"
	"  --require TAG      run only on a member that has tag TAG (repeatable: all of\n"
	"                     them); the task may then run on another node than the one\n"
	"                     asked. It fails, naming the tags, when no alive member has\n"
	"                     them all. With --fanout it applies to every task.\n"
	"  --                 the remaining arguments are argv\n"
	"\n"
	"fan-out:\n"
	"  --fanout FILE|-    one task per line (the line without its newline is the\n"
	"                     payload), spread over the alive members of the cluster;\n"
	"                     prints \"index<TAB>state<TAB>output-or-error<TAB>node\" per\n"
	"                     task in input order (tabs, newlines and backslashes in the\n"
	"                     text are escaped; node is the member that ran it), or a\n"
	"                     JSON array with --json (each result has \"node\").\n"
	"                     Streamed: any number of lines, read as the cluster takes\n"
	"                     them and in constant memory, so `generate | clusterctl\n"
	"                     submit H --fanout - | consume` works on an endless input;\n"
	"                     results are printed as they come. The batch id goes to\n"
	"                     stderr at the start; if the coordinator is lost, stderr\n"
	"                     says how to re-attach (wait --batch ID --from N). If\n"
	"                     the coordinator closes the batch first (--deadline\n"
	"                     passed, or it restarted), the rest of the input is not\n"
	"                     submitted: stderr says from which line, the results of\n"
	"                     what was taken are printed, and the exit code is 1. A\n"
	"                     counter is drawn on stderr when it is a terminal.\n"
	"  --unordered        print results as they finish, not in input order\n"
	"  --window N         the coordinator holds at most N unfinished tasks of the\n"
	"                     batch (default: its own, 4096)\n"
	"  --max-concurrency N  at most N tasks of the batch running at once\n"
	"  --deadline DUR     every task finished or timed out by then\n";

static const char help_metrics[] =
	"usage: clusterctl metrics\n"
	"\n"
	"Prints the node's metrics in the Prometheus text format, as its HTTP\n"
	"listener (chorusd --http) serves them on /metrics: tasks, pools, requests,\n"
	"links, membership, the election, schedules, the cache and the journal.\n"
	"docs/metrics.md lists every family. --json is not accepted: the text is\n"
	"the format.\n";

static const char help_status[] =
	"usage: clusterctl status [TASK_ID]\n"
	"\n"
	"Without TASK_ID: the node, its tags, the election as it sees it (leader and\n"
	"term, voters, commit index, schedules), worker pools, queue, counters, the\n"
	"peers that sent bad frames and the cluster's members as this node sees them\n"
	"(see clusterctl help members); --json adds \"tags\", \"members\",\n"
	"\"raft_role\" (follower, candidate, leader; \"\" when not a voter),\n"
	"\"raft_term\", \"raft_leader\" (\"\" = none known), \"raft_commit\",\n"
	"\"raft_voters\" (names) and \"schedules\"; the RESP listener, when one is\n"
	"on (chorusd --resp), as \"resp_listen\", \"resp_clients\", \"resp_commands\"\n"
	"and \"resp_errors\". With TASK_ID: that task's current state, and the node\n"
	"that ran it.\n";

static const char help_events[] =
	"usage: clusterctl events [--follow] [--after SEQ] [--max N]\n"
	"\n"
	"The cluster events the node asked saw, oldest first, one line each:\n"
	"  2026-12-01T18:00:00.123Z member n2 suspect (was alive)\n"
	"TIME (UTC) KIND SUBJECT MESSAGE. Kinds: member, leader, task_failed,\n"
	"task_timed_out, task_lost, pool_degraded, pool_recovered, schedule_skipped,\n"
	"partitions_moved, frames_refused, node_started, node_draining\n"
	"(docs/events.md). Each node keeps its last 1024 events in memory: a\n"
	"restart empties them, and their seqs start again from 1.\n"
	"\n"
	"  --after SEQ   only the events after seq SEQ (default: all the node holds)\n"
	"  --max N       at most N events (with --follow: per request)\n"
	"  --follow      keep waiting for new events and print them as they come,\n"
	"                until interrupted (exit 0 on SIGINT, SIGTERM or a closed\n"
	"                pipe). A line says when events were lost (the node's ring\n"
	"                moved past the ones expected) or the node restarted; after\n"
	"                an error it reconnects, waiting 0.25 s doubling to 5 s.\n"
	"\n"
	"With --json: one JSON object per line (JSON Lines), {\"seq\", \"wall_ms\" (unix\n"
	"ms), \"kind\", \"subject\", \"message\"}, the event object of the HTTP API's\n"
	"/api/events; with --follow the lines about lost events and restarts go to\n"
	"stderr, so stdout holds events only.\n";

static const char help_members[] =
	"usage: clusterctl members\n"
	"\n"
	"The cluster's members as the node asked sees them (SWIM gossip), one line\n"
	"each: NAME (the node asked is marked with *), STATE (alive, suspect, dead\n"
	"or left), ADDRESS, TAGS, LOAD/CAP (tasks running / worker capacity),\n"
	"INCARNATION (grows each time the member restarts or refutes a suspicion)\n"
	"and SINCE (the last change of state, as an age by this machine's clock).\n"
	"\n"
	"With --json: an array of {\"id\", \"name\", \"addr\", \"state\", \"incarnation\",\n"
	"\"tags\", \"capacity\", \"load\", \"since_ms\" (unix ms), \"self\",\n"
	"\"protocol_version\"}.\n";

static const char help_tasks[] =
	"usage: clusterctl tasks [--state STATE] [--limit N]\n"
	"\n"
	"Lists tasks, newest first. STATE is one of queued, running, succeeded,\n"
	"failed, timed_out, cancelled, lost. N defaults to 50.\n";

static const char help_wait[] =
	"usage: clusterctl wait TASK_ID [--timeout DUR]\n"
	"       clusterctl wait --batch ID [--from N]\n"
	"\n"
	"Waits for the task to finish (at most DUR) and prints its result like\n"
	"submit --wait. Exit 3 when it is still running after DUR.\n"
	"\n"
	"With --batch, re-attaches to a fan-out (e.g. after its coordinator was\n"
	"lost: `submit --fanout` printed the id) and prints its results from index N\n"
	"(default 0) on, in input order and as `submit --fanout` prints them, until\n"
	"the batch's input is closed and every result is printed. A batch whose\n"
	"coordinator restarted is closed at the tasks it had journaled. Exit 1 when\n"
	"a task printed did not succeed, 5 when the batch is unknown or expired.\n";

static const char help_cancel[] =
	"usage: clusterctl cancel TASK_ID\n"
	"       clusterctl cancel --batch BATCH_ID\n"
	"\n"
	"Cancels a task that has not finished and prints its state afterwards\n"
	"(--json: {\"task_id\", \"state\"}); with --batch, every unfinished task of\n"
	"a fan-out (ask its coordinator, the node it was submitted to) and prints\n"
	"how many (--json: {\"batch_id\", \"cancelled\"}).\n";
static const char help_fanouts[] =
	"usage: clusterctl fanouts [--limit N]\n"
	"\n"
	"The fan-outs this node coordinates (those submitted through it): the\n"
	"running ones, then the most recently finished (the node keeps the last\n"
	"100 in memory), each newest first, at most N (default 50), with their\n"
	"progress. With --json an array of {\"batch_id\", \"total\", \"done\",\n"
	"\"succeeded\", \"failed\", \"timed_out\", \"cancelled\", \"lost\",\n"
	"\"running\", \"queued\", \"submitted_ms\", \"finished_ms\" (0 while\n"
	"running), \"state\" (running, done, cancelled), \"handler\",\n"
	"\"input_open\"}: the objects of GET /api/fanouts (docs/http.md).\n";

static const char help_cron[] =
	"usage: clusterctl cron add NAME 'EXPR' HANDLER [PAYLOAD | -f FILE | -] [options]\n"
	"       clusterctl cron every NAME DURATION HANDLER [PAYLOAD | -f FILE | -] [options]\n"
	"       clusterctl cron list\n"
	"       clusterctl cron show NAME [--limit N]\n"
	"       clusterctl cron history NAME [--limit N]\n"
	"       clusterctl cron rm NAME\n"
	"       clusterctl cron pause NAME [--note TEXT]\n"
	"       clusterctl cron resume NAME\n"
	"       clusterctl cron trigger NAME\n"
	"       clusterctl cron backfill NAME --from T --to T [--overlap POLICY]\n"
	"       clusterctl cron next 'EXPR' [--from T] [--count N] [--tz ZONE]\n"
	"\n"
	"Schedules belong to the cluster: they are replicated by Raft among the voters\n"
	"(clusterctl voters) and every occurrence runs once, as a task. Any node takes\n"
	"these commands and forwards them to the leader; a change is answered once it\n"
	"is committed. While no leader is elected (an election takes about a second)\n"
	"clusterctl retries until --timeout (default 5s), then exits 3.\n"
	"\n"
	"add NAME 'EXPR' HANDLER [PAYLOAD]: runs HANDLER with PAYLOAD (or the contents\n"
	"of FILE, or standard input) at each time EXPR gives; `every` is add with\n"
	"EXPR '@every DURATION'. NAME: 1 to 64 letters, digits, '-', '_' and '.'.\n"
	"Prints the next run. options:\n"
	"  --tz ZONE           the zone EXPR is read in (default UTC)\n"
	"  --on tag:NAME       run each occurrence on a member with tag NAME (default:\n"
	"                      wherever placement puts it)\n"
	"  --on all            run each occurrence on every member alive when it is\n"
	"                      decided (at most 64): one task per member, in its own\n"
	"                      journal; history has one line per member; --overlap\n"
	"                      counts any member's run; not with --require\n"
	"  --overlap POLICY    when an occurrence comes while the previous run is not\n"
	"                      done: skip (default; recorded), buffer_one (one waits),\n"
	"                      buffer_all (all wait, in order), cancel_other (cancel\n"
	"                      the running one) or allow_all (run side by side)\n"
	"  --catchup DUR       occurrences missed by more than DUR (no leader, no\n"
	"                      majority) are skipped as one recorded range (default\n"
	"                      1m; 1s to 168h)\n"
	"  --start T, --end T  no run before / after T\n"
	"  --max-runs N        end the schedule after N runs\n"
	"  --jitter DUR        delay each run by a fixed amount under DUR (at most 1h)\n"
	"  --pause-on-failure  a run that does not succeed pauses the schedule\n"
	"  --timeout DUR       each run's time limit (default: the node's)\n"
	"  --transient         retry a run after a crash or timeout\n"
	"  --retries N         transient: at most N attempts in all\n"
	"  --backoff DUR       transient: first retry delay, doubling each attempt\n"
	"  --require TAG       run only on a member with TAG (repeatable)\n"
	"  --arg ARG           exec handler: append ARG to argv (repeatable; or -- ARGV...)\n"
	"\n"
	"list: NAME, EXPR, TZ, NEXT (the next run, ISO-8601 in the schedule's zone\n"
	"when this machine has it, else UTC), RUNS and STATE: active, paused (with\n"
	"its note), ended (no run to come) or broken (the node cannot evaluate it,\n"
	"and why). show: the schedule and its newest N runs (default 20). history:\n"
	"only the runs: SCHEDULED, OUTCOME (fired, dispatched, buffered, skipped, or\n"
	"the task's end: succeeded, failed, ...), NODE, TASK (clusterctl status TASK\n"
	"on that node) and WHY. pause: occurrences that come while paused are skipped\n"
	"(recorded); --note says why (list shows it). trigger: one extra run now\n"
	"(prints its task). backfill: runs the occurrences of [--from, --to] (at most\n"
	"1000, --to not in the future) with their own --overlap (default skip).\n"
	"With --json: a schedule is an object with the fields of show (times as\n"
	"\"next\" ISO-8601 and \"next_s\" unix seconds), list an array of them, history\n"
	"an array of {\"scheduled\", \"scheduled_s\", \"fired_ms\", \"outcome\", \"node\",\n"
	"\"task_id\", \"why\"}, rm {\"name\", \"removed\"}.\n"
	"\n"
	"T is ISO-8601 with an offset (2026-03-08T01:30:00-05:00, 2026-03-08T06:30Z)\n"
	"or unix seconds; add's --start and --end also take a local time in --tz\n"
	"without an offset (2026-03-08T01:30). DUR: 500ms, 5s, 2m, 1h.\n"
	"\n"
	"next 'EXPR': prints the next N fire times (default 5, at most 1000) of a cron\n"
	"expression strictly after T (default: now), one ISO-8601 time per line with\n"
	"its UTC offset (2026-03-08T03:00:00-04:00), or a JSON array of such strings\n"
	"with --json. Contacts no node.\n"
	"  --tz ZONE    an IANA time zone from /usr/share/zoneinfo (default UTC)\n"
	"  --from T     2026-03-08T01:30:00-05:00, 2026-03-08T06:30:00Z, or a local\n"
	"               time in ZONE without an offset (2026-03-08T01:30)\n"
	"  --count N    how many times to print\n"
	"\n"
	"EXPR: 5 fields (minute hour day-of-month month day-of-week) or 6 (second\n"
	"first); lists, ranges, steps (*/15, 10-40/5), JAN-DEC, SUN-SAT (0 or 7 =\n"
	"Sunday); L (last day) in day-of-month; 5#2 (2nd Friday) and 5L (last Friday)\n"
	"in day-of-week; @yearly @annually @monthly @weekly @daily @midnight @hourly;\n"
	"@every DURATION (1s to 366d, e.g. 90s, 1h30m; multiples of it since the Unix\n"
	"epoch). When both day fields are restricted either may match (Vixie cron).\n"
	"DST as cronie: a job with a fixed minute and hour fires once at the end of a\n"
	"spring-forward gap for times in it, and once (the first time) in a fall-back\n"
	"repeat; a job with '*' in minute or hour follows the wall clock (nothing in\n"
	"the gap, each occurrence in the repeat). See docs/design.md.\n"
	"\n"
	"Exit 2 for a bad expression, time zone, time or option (the reason on\n"
	"stderr; add and every check these before contacting a node), 5 for no such\n"
	"schedule, 3 when no leader answered in time.\n";

static const char help_cache[] =
	"usage: clusterctl cache get KEY\n"
	"       clusterctl cache put KEY VALUE [--ttl DUR] [--nx | --xx] [--keepttl]\n"
	"       clusterctl cache put KEY --value-file PATH|- [--ttl DUR] [--nx | --xx] [--keepttl]\n"
	"       clusterctl cache get-or-compute KEY HANDLER [PAYLOAD] [--ttl DUR] [--timeout DUR]\n"
	"                                       [--arg ARG]... [--require TAG]...\n"
	"       clusterctl cache del KEY...\n"
	"       clusterctl cache incr KEY [DELTA]\n"
	"       clusterctl cache ttl KEY\n"
	"       clusterctl cache expire KEY DUR\n"
	"       clusterctl cache persist KEY\n"
	"       clusterctl cache exists KEY...\n"
	"       clusterctl cache getdel KEY\n"
	"       clusterctl cache update KEY [--ttl DUR] [--lease DUR] [--delete-if-empty] -- COMMAND [ARG...]\n"
	"       clusterctl cache scan [--match GLOB] [--count N] [--cursor C]\n"
	"       clusterctl cache stats\n"
	"       clusterctl cache partitions\n"
	"       clusterctl cache flush --yes\n"
	"       clusterctl cache dbsize\n"
	"\n"
	"The cluster's cache: named caches whose keys are spread over the members in\n"
	"partitions, each held by a primary and its replicas (docs/cache.md). Any\n"
	"node takes these commands and routes each key to its partition's primary.\n"
	"Keys and values are bytes; a key has at least 1 byte, and the most a key or\n"
	"a value may have is the nodes' setting (exit 6 beyond it).\n"
	"\n"
	"options of every cache command:\n"
	"  --cache NAME         the cache (default: \"default\")\n"
	"  --consistency LEVEL  how many of the key's replicas must answer: one,\n"
	"                       quorum (a majority) or all (default: the cache's own,\n"
	"                       quorum unless configured); exit 3 when too few are alive\n"
	"  --json               machine-readable output (below)\n"
	"  --                   the arguments after it are not options (a key that\n"
	"                       starts with '-')\n"
	"\n"
	"get KEY: writes the value to stdout exactly as stored (a newline is added\n"
	"only when stdout is a terminal); exit 5 when the key is absent or expired.\n"
	"put KEY VALUE: stores VALUE as it is (even \"-\"); --value-file PATH stores\n"
	"the contents of PATH, or of standard input for -, byte for byte (at most\n"
	"16 MiB, the frame cap). options:\n"
	"  --ttl DUR     the key expires after DUR (default: the cache's default TTL)\n"
	"  --nx          store only if the key is absent\n"
	"  --xx          store only if the key is present\n"
	"  --keepttl     keep the key's time to live (not with --ttl)\n"
	"A put whose --nx or --xx condition does not hold stores nothing and exits 1.\n"
	"del KEY...: deletes the keys and prints how many existed. incr KEY [DELTA]:\n"
	"adds DELTA (default 1, may be negative) to the decimal integer the key holds,\n"
	"atomically at its primary (an absent key counts as 0), and prints the new\n"
	"value; exit 2 when the value is not a 64-bit integer. ttl KEY: the time left\n"
	"to the key, or \"no expiry\". expire KEY DUR: the key expires after DUR.\n"
	"ttl and expire exit 5 when the key is absent. persist KEY: the key no longer\n"
	"expires (exit 1 when it is absent or had no ttl). exists KEY...: prints how\n"
	"many of the keys exist; exit 0 when all do, 5 otherwise. getdel KEY: as get,\n"
	"and deletes the key.\n"
	"\n"
	"update KEY -- COMMAND [ARG...]: an isolated update. The key's primary locks\n"
	"the key for this update (others updating it wait their turn), COMMAND runs\n"
	"here with the value on its standard input (empty when absent;\n"
	"CHORUS_CACHE_FOUND=1 or 0 and CHORUS_CACHE_KEY in its environment), and what\n"
	"it prints becomes the value (--ttl as put; --delete-if-empty: no output\n"
	"deletes the key). A command that exits non-zero changes nothing (exit 1).\n"
	"--lease DUR (default 30s, at most 1m) is how long the lock is held at most.\n"
	"A plain put or del does not wait for the lock; when one lands between the\n"
	"read and the write, or the lease runs out, the write is refused and the\n"
	"update begins again: the command may run more than once, the value is\n"
	"written once. Example: clusterctl cache update hits -- sh -c 'echo $(( $(cat)\n"
	"+ 1 ))'.\n"
	"\n"
	"get-or-compute KEY HANDLER [PAYLOAD]: the key's value if it holds one; else\n"
	"the key's primary runs one HANDLER task with PAYLOAD and stores its output\n"
	"as the value (only if the key is still absent: a value written meanwhile is\n"
	"kept), and every caller of that key that came meanwhile, on any node, gets\n"
	"the same value: the task runs once (docs/cache.md). Prints the value as get\n"
	"does. options:\n"
	"  --ttl DUR      the stored value expires after DUR (default: the cache's)\n"
	"  --timeout DUR  the task's own time limit (default: the node's); the\n"
	"                 command waits for the task (at most 10 minutes without it)\n"
	"  --arg ARG      exec handler: append ARG to argv (repeatable)\n"
	"  --require TAG  run the task only on a member with tag TAG (repeatable)\n"
	"A task that fails exits 1 (its error on stderr) and one that times out exits\n"
	"3: nothing is stored, and the next call runs the task again. Exit 2 for a\n"
	"missing HANDLER, 6 for an unknown handler, a PAYLOAD or output over the\n"
	"nodes' value_bytes_max, or too many computes or callers at once.\n"
	"\n"
	"scan: prints every key of the cache, one per line (control bytes and\n"
	"backslashes escaped as \\n, \\t, \\xNN, \\\\), going round the cluster until\n"
	"the scan is complete; a key present the whole time is printed at least once\n"
	"(twice, maybe, when partitions move meanwhile). --match GLOB keeps the keys\n"
	"matching a Redis glob (*, ?, [a-z], [^a], \\ escapes). --count N asks each\n"
	"step to look at about N keys (default 10). --cursor C does one step from C (0\n"
	"starts) and prints the next cursor to stderr (0: the scan is complete); a\n"
	"cursor the cluster never handed out exits 2.\n"
	"stats: the counters of the node asked, one line per cache (--cache: one):\n"
	"entries, memory, hits, misses, evictions, expirations, hinted writes pending\n"
	"for a replica that is down, and the partitions it holds as primary, as\n"
	"replica and moving. partitions: the partition map the node asked routes by\n"
	"(every cache shares it): how many partitions each member holds as primary\n"
	"and as replica; with --json {\"stats\": [as stats], \"partitions\":\n"
	"{\"partitions\", \"replicas\", \"epoch\", \"primary\", \"owned\", \"moving\",\n"
	"\"map\": [[owners of partition 0, primary first], ...]}}, what the node's\n"
	"GET /api/cache answers (docs/http.md). flush --yes: removes every entry of\n"
	"the cache on every member. dbsize: the cache's entries, cluster-wide.\n"
	"\n"
	"With --json each command prints one object: get {\"key\", \"value\", \"ttl_ms\"\n"
	"(-1: no expiry), \"version\": {\"hlc\", \"node\"}}, put {\"key\", \"stored\"}, del\n"
	"{\"deleted\"}, incr {\"key\", \"value\"}, ttl and expire {\"key\", \"ttl_ms\"}\n"
	"(ttl: -1 = no expiry), persist {\"key\", \"persisted\"}, exists {\"exists\"},\n"
	"getdel {\"key\", \"value\"}, update {\"key\", \"outcome\": stored|deleted},\n"
	"get-or-compute {\"key\", \"value\", \"computed\" (true: the value is a task's\n"
	"output; false: the key held it), \"version\"}, scan\n"
	"{\"cursor\", \"keys\", \"keys_base64\"}, flush {\"cache\", \"flushed\"}, dbsize\n"
	"{\"cache\", \"entries\"}; stats prints an array\n"
	"of {\"cache\", \"node\", \"entries\", \"memory_bytes\", \"hits\", \"misses\",\n"
	"\"evictions\", \"expirations\", \"hints_pending\", \"tombstones\",\n"
	"\"partitions_primary\", \"partitions_replica\", \"partitions_moving\"}. A key or\n"
	"value that is valid UTF-8 is a JSON string under \"key\" / \"value\"; any other\n"
	"is base64 (standard alphabet, padded) under \"key_base64\" / \"value_base64\"\n"
	"instead; scan's UTF-8 keys are in \"keys\", the others, in base64, in\n"
	"\"keys_base64\".\n"
	"\n"
	"DUR: 500ms, 30s, 10m, 2h, 7d (a bare number is seconds). Exit 2 for a bad\n"
	"option or argument (checked before contacting a node), 3 when the node is\n"
	"unreachable or too few replicas are alive, 5 and 1 as above, 6 for a key or\n"
	"value over the nodes' limit.\n";

static const char help_voters[] =
	"usage: clusterctl voters [list]\n"
	"       clusterctl voters add MEMBER\n"
	"       clusterctl voters remove MEMBER\n"
	"\n"
	"The voters are the members that hold the cluster's replicated log (Raft):\n"
	"the schedules live there, and a majority of voters alive is needed to change\n"
	"them or to elect a leader. list prints NAME (the leader marked with *), ID\n"
	"(the first 8 hex digits), ADDRESS and ALIVE as the node asked sees them,\n"
	"then its term and commit index. With --json: {\"term\", \"commit_index\",\n"
	"\"voters\": [{\"name\", \"id\", \"addr\", \"alive\", \"leader\"}]}.\n"
	"\n"
	"add and remove change the voters one at a time (exit 6 while another change\n"
	"is not committed) and print the voters after. MEMBER is a member's name or a\n"
	"hex id prefix of at least 8 digits; a voter gone from the membership is\n"
	"removed by its full 32-digit id. Adding needs the member alive; removing is\n"
	"refused when it would leave no alive majority. The nodes also keep the\n"
	"voter count at their voters_target on their own (see chorusd --help).\n";

static const char help_keygen[] =
	"usage: clusterctl keygen [FILE]\n"
	"       clusterctl keygen --client SECRET_FILE OUT_FILE\n"
	"\n"
	"Writes a new random cluster secret (64 hex characters, mode 0600) to FILE\n"
	"(default " KEYGEN_FILE_DEFAULT "). Refuses to overwrite an existing file.\n"
	"Every node of a cluster needs the same secret; clients may use it too.\n"
	"\n"
	"--client writes a client credential for the cluster secret SECRET_FILE to\n"
	"OUT_FILE (mode 0600, never overwritten): it lets clusterctl and libchorus\n"
	"do everything a client does, but it cannot join or pose as a node. Give\n"
	"clients this file instead of the secret. A two-key secret file (rotation,\n"
	"see docs/protocol.md) gives a two-key credential.\n"
	"\n"
	"Both print the key id(s): 8 hex digits, as clusterctl status shows them.\n";

/* ------------------------------------------------------------------ */
/* diagnostics                                                         */

__attribute__((format(printf, 1, 2), noreturn)) static void usage_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("clusterctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (see clusterctl --help)\n", stderr);
	va_end(ap);
	exit(EXIT_USAGE);
}

static int exit_for(int code)
{
	switch (code) {
	case CH_OK: return EXIT_OK;
	case CH_ERR_INVALID: return EXIT_USAGE;
	case CH_ERR_UNREACHABLE:
	case CH_ERR_TIMEOUT:
	case CH_ERR_NOT_LEADER:
	case CH_ERR_UNAVAILABLE:
	case CH_ERR_MOVED: return EXIT_UNREACHABLE;
	case CH_ERR_AUTH: return EXIT_AUTH;
	case CH_ERR_NOT_FOUND: return EXIT_NOT_FOUND;
	case CH_ERR_TASK_FAILED: return EXIT_TASK_FAILED;
	case CH_ERR_UNKNOWN_HANDLER:
	case CH_ERR_DENIED:
	case CH_ERR_TOO_LARGE:
	case CH_ERR_FULL:
	case CH_ERR_SHUTTING_DOWN: return EXIT_REJECTED;
	default: return EXIT_OTHER;
	}
}

/* Prints one line for a failed call and returns the exit code. */
static int report(const struct cli *cli, int code, const char *err)
{
	const char *msg = (err != NULL && err[0] != '\0') ? err : ch_strerror(code);
	if (code == CH_ERR_UNREACHABLE) {
		/* "no answer from ADDR within ..." reads better as
		 * "cannot reach ADDR: no answer within ..." */
		char from[300];
		snprintf(from, sizeof from, "from %s ", cli->addr);
		const char *at = strstr(msg, from);
		if (at != NULL)
			fprintf(stderr, "clusterctl: cannot reach %s: %.*s%s\n", cli->addr,
			        (int)(at - msg), msg, at + strlen(from));
		else
			fprintf(stderr, "clusterctl: cannot reach %s: %s\n", cli->addr, msg);
	} else if (code == CH_ERR_AUTH) {
		fprintf(stderr, "clusterctl: authentication failed: %s\n", msg);
	} else if (code == CH_ERR_NOT_LEADER) {
		/* the node's own words say it ("no leader elected yet", "the
		 * leader changed before the change committed") */
		fprintf(stderr, "clusterctl: %s\n", msg);
	} else if (strncasecmp(msg, ch_strerror(code), strlen(ch_strerror(code))) == 0) {
		/* the message already starts with the phrase: do not repeat it */
		fprintf(stderr, "clusterctl: %s\n", msg);
	} else {
		fprintf(stderr, "clusterctl: %s: %s\n", ch_strerror(code), msg);
	}
	return exit_for(code);
}

/* ------------------------------------------------------------------ */
/* parsing                                                             */

/* "250ms", "5s", "2m", "1h", bare number = seconds. */
static bool parse_duration_ms(const char *s, uint32_t *out)
{
	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || s[0] == '-')
		return false;
	unsigned long long mult;
	if (*end == '\0' || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0)
		mult = 60000;
	else if (strcmp(end, "h") == 0)
		mult = 3600000;
	else
		return false;
	if (v > UINT32_MAX / mult)
		return false;
	*out = (uint32_t)(v * mult);
	return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	if (s == NULL || *s == '\0' || s[0] == '-')
		return false;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = v;
	return true;
}

static uint32_t parse_u32_or_die(const char *opt, const char *s)
{
	uint64_t v;
	if (!parse_u64(s, &v) || v > UINT32_MAX)
		usage_fail("%s needs a number, got '%s'", opt, s != NULL ? s : "");
	return (uint32_t)v;
}

static uint32_t parse_dur_or_die(const char *opt, const char *s)
{
	uint32_t v;
	if (!parse_duration_ms(s, &v))
		usage_fail("%s needs a duration like 500ms, 5s or 2m, got '%s'", opt,
		           s != NULL ? s : "");
	return v;
}

static uint64_t parse_task_id_or_die(const char *s)
{
	uint64_t v;
	if (!parse_u64(s, &v) || v == 0)
		usage_fail("'%s' is not a task id", s != NULL ? s : "");
	return v;
}

/* The value of an option taking one: argv[*i + 1]. */
static const char *opt_value(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc)
		usage_fail("%s needs a value", argv[*i]);
	(*i)++;
	return argv[*i];
}

/* ------------------------------------------------------------------ */
/* input                                                               */

/* Reads all of f, at most INPUT_BYTES_MAX. Returns 0 or an exit code. */
static int read_all(FILE *f, const char *name, uint8_t **out, size_t *len)
{
	size_t cap = 4096, n = 0;
	uint8_t *buf = malloc(cap);
	if (buf == NULL) {
		fprintf(stderr, "clusterctl: out of memory\n");
		return EXIT_OTHER;
	}
	for (;;) {
		if (n == cap) {
			if (cap >= INPUT_BYTES_MAX + 1) {
				free(buf);
				fprintf(stderr, "clusterctl: %s is larger than %u bytes, the frame cap\n",
				        name, INPUT_BYTES_MAX);
				return EXIT_REJECTED;
			}
			cap = cap * 2 > INPUT_BYTES_MAX + 1 ? INPUT_BYTES_MAX + 1 : cap * 2;
			uint8_t *nb = realloc(buf, cap);
			if (nb == NULL) {
				free(buf);
				fprintf(stderr, "clusterctl: out of memory\n");
				return EXIT_OTHER;
			}
			buf = nb;
		}
		size_t r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0) {
			if (ferror(f)) {
				free(buf);
				fprintf(stderr, "clusterctl: cannot read %s: %s\n", name, strerror(errno));
				return EXIT_OTHER;
			}
			break;
		}
	}
	if (n > INPUT_BYTES_MAX) {
		free(buf);
		fprintf(stderr, "clusterctl: %s is larger than %u bytes, the frame cap\n", name,
		        INPUT_BYTES_MAX);
		return EXIT_REJECTED;
	}
	*out = buf;
	*len = n;
	return EXIT_OK;
}

static int read_source(const char *path, uint8_t **out, size_t *len)
{
	if (strcmp(path, "-") == 0)
		return read_all(stdin, "standard input", out, len);
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "clusterctl: cannot open %s: %s\n", path, strerror(errno));
		return EXIT_OTHER;
	}
	int rc = read_all(f, path, out, len);
	fclose(f);
	return rc;
}

/* ------------------------------------------------------------------ */
/* rendering                                                           */

static bool utf8_valid(const uint8_t *s, size_t n)
{
	return view_utf8_valid(s, n) != 0;
}

/* A result as JSON: the wire message rebuilt, so that its keys are the
 * ones views.c defines for everyone (GET /api/tasks too). */
static json_t *result_json(const struct ch_result *r, bool batch)
{
	Chorus__TaskResult w = CHORUS__TASK_RESULT__INIT;
	w.task_id = r->task_id;
	w.state = (Chorus__TaskState)r->state;
	w.output.data = r->output;
	w.output.len = r->output_len;
	w.exit_code = r->exit_code;
	w.error = r->error;
	w.attempts = r->attempts;
	w.node = r->node;
	w.submitted_ms = r->submitted_ms;
	w.started_ms = r->started_ms;
	w.finished_ms = r->finished_ms;
	w.handler = r->handler;
	w.batch_id = r->batch_id;
	w.batch_index = r->batch_index;
	return view_task(&w, batch);
}

static void json_print(json_t *o)
{
	char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (s != NULL) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
	json_decref(o);
}

static void print_time_ms(FILE *f, const char *label, uint64_t ms)
{
	if (ms == 0) {
		fprintf(f, "%-10s -\n", label);
		return;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char buf[64];
	gmtime_r(&t, &tm);
	strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(f, "%-10s %s.%03u UTC\n", label, buf, (unsigned)(ms % 1000));
}

/* The task table (no output). */
static void result_table(FILE *f, const struct ch_result *r)
{
	fprintf(f, "%-10s %llu\n", "task", (unsigned long long)r->task_id);
	fprintf(f, "%-10s %s\n", "state", ch_task_state_name(r->state));
	fprintf(f, "%-10s %s\n", "handler", r->handler[0] != '\0' ? r->handler : "-");
	fprintf(f, "%-10s %s\n", "node", r->node[0] != '\0' ? r->node : "-");
	fprintf(f, "%-10s %u\n", "attempts", r->attempts);
	fprintf(f, "%-10s %d\n", "exit", r->exit_code);
	fprintf(f, "%-10s %s\n", "error", r->error[0] != '\0' ? r->error : "-");
	print_time_ms(f, "submitted", r->submitted_ms);
	print_time_ms(f, "started", r->started_ms);
	print_time_ms(f, "finished", r->finished_ms);
	if (r->started_ms != 0 && r->finished_ms >= r->started_ms)
		fprintf(f, "%-10s %llu ms\n", "duration",
		        (unsigned long long)(r->finished_ms - r->started_ms));
}

/* Text on one line: \t \n \r \\ and other control bytes escaped. */
static void print_escaped(FILE *f, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];
		switch (c) {
		case '\t': fputs("\\t", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\\': fputs("\\\\", f); break;
		default:
			if (c < 0x20 || c == 0x7F)
				fprintf(f, "\\x%02x", c);
			else
				fputc(c, f);
		}
	}
}

/* Prints a finished (or waited-for) task; returns its exit code. */
static int show_result(const struct cli *cli, const struct ch_result *r, bool raw_output)
{
	if (cli->json) {
		json_print(result_json(r, false));
	} else if (raw_output) {
		fwrite(r->output, 1, r->output_len, stdout);
		fflush(stdout);
		result_table(stderr, r);
	} else {
		result_table(stdout, r);
		fprintf(stdout, "%-10s %zu bytes", "output", r->output_len);
		if (r->output_len > 0) {
			fputs(": ", stdout);
			print_escaped(stdout, r->output, r->output_len > 200 ? 200 : r->output_len);
			if (r->output_len > 200)
				fputs("...", stdout);
		}
		fputc('\n', stdout);
	}
	if (r->state == CH_TASK_SUCCEEDED)
		return EXIT_OK;
	if (!ch_task_state_is_final(r->state))
		return EXIT_UNREACHABLE; /* still going: the wait timed out */
	return EXIT_TASK_FAILED;
}

/* ------------------------------------------------------------------ */
/* connection                                                          */

static int connect_cli(struct cli *cli)
{
	struct ch_client_options o = { .timeout_ms = cli->timeout_ms };
	char err[ERR_BYTES] = "";
	int rv = ch_client_connect(&cli->c, cli->addr, cli->secret, &o, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	return EXIT_OK;
}

/* Waits for task_id until it is final or limit_ms (0 = no limit) passed. */
static int wait_until_final(struct cli *cli, uint64_t task_id, struct ch_result **result,
                            uint32_t limit_ms, char *err, size_t err_len)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		uint32_t chunk = WAIT_CHUNK_MS;
		if (limit_ms > 0) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			uint64_t spent = (uint64_t)(now.tv_sec - t0.tv_sec) * 1000u +
			                 (uint64_t)((now.tv_nsec - t0.tv_nsec) / 1000000L);
			uint64_t left = spent >= limit_ms ? 0 : limit_ms - spent;
			if (left < chunk)
				chunk = (uint32_t)left;
		}
		int rv = ch_await(cli->c, task_id, chunk, result, err, err_len);
		if (rv != CH_OK)
			return rv;
		if (ch_task_state_is_final((*result)->state) || chunk == 0 ||
		    (limit_ms > 0 && chunk < WAIT_CHUNK_MS))
			return CH_OK;
		ch_result_free(*result);
		*result = NULL;
	}
}

/* ------------------------------------------------------------------ */
/* commands                                                            */

struct submit_args {
	const char *handler;
	const char *payload_arg;
	const char *payload_file;
	bool wait;
	struct ch_task_opts opts;
	const char **argv;
	size_t argv_count;
	const char **require; /* NULL-terminated */
	size_t require_count;
	const char *fanout;
	struct ch_map_opts mopts;
	uint32_t window;
	bool unordered;
};

/* The output of a streamed fan-out: one line (or JSON object) per result,
 * written as results arrive; stdout is flushed at least every
 * FANOUT_FLUSH_MS so that a consumer down a pipe sees them flow. */
struct fanout_out {
	bool json;
	bool progress;          /* a counter on stderr (a terminal) */
	uint64_t printed;
	bool failed;            /* a task did not succeed */
	uint64_t flushed_ms;
	uint64_t progress_ms;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fanout_print(struct fanout_out *o, const struct ch_result *r)
{
	if (r->state != CH_TASK_SUCCEEDED)
		o->failed = true;
	if (o->json) {
		json_t *j = result_json(r, true);
		char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		json_decref(j);
		fputs(o->printed == 0 ? "[\n" : ",\n", stdout);
		if (s != NULL)
			fputs(s, stdout);
		free(s);
	} else {
		printf("%u\t%s\t", r->batch_index, ch_task_state_name(r->state));
		if (r->state == CH_TASK_SUCCEEDED)
			print_escaped(stdout, r->output, r->output_len);
		else
			print_escaped(stdout, (const uint8_t *)r->error, strlen(r->error));
		putchar('\t');
		if (r->node[0] != '\0')
			print_escaped(stdout, (const uint8_t *)r->node, strlen(r->node));
		else
			putchar('-');
		putchar('\n');
	}
	o->printed++;
	uint64_t now = mono_ms();
	if (now - o->flushed_ms >= FANOUT_FLUSH_MS) {
		fflush(stdout);
		o->flushed_ms = now;
	}
}

static void fanout_progress(struct fanout_out *o, const ch_map_stream *s, bool last)
{
	if (!o->progress)
		return;
	uint64_t now = mono_ms();
	if (!last && now - o->progress_ms < FANOUT_PROGRESS_MS)
		return;
	o->progress_ms = now;
	fprintf(stderr, "\rbatch %llu: %llu done of %u submitted", 
	        (unsigned long long)ch_map_stream_batch_id(s), (unsigned long long)o->printed,
	        ch_map_stream_submitted(s));
	if (last)
		fputc('\n', stderr);
	fflush(stderr);
}

static void fanout_end(struct fanout_out *o)
{
	if (o->json)
		fputs(o->printed == 0 ? "[]\n" : "\n]\n", stdout);
	fflush(stdout);
}

/* A call on the stream failed: say what to do, and the exit code. The
 * results printed so far are complete up to the first one not printed. */
static int fanout_lost(const struct cli *cli, struct fanout_out *o, const ch_map_stream *s,
                       uint32_t from, bool ordered, int code, const char *err)
{
	fanout_end(o);
	if (o->progress)
		fputc('\n', stderr);
	uint64_t id = ch_map_stream_batch_id(s);
	const char *msg = (err != NULL && err[0] != '\0') ? err : ch_strerror(code);
	if (code == CH_ERR_FULL || code == CH_ERR_INVALID || code == CH_ERR_TOO_LARGE ||
	    code == CH_ERR_UNKNOWN_HANDLER || code == CH_ERR_DENIED || code == CH_ERR_AUTH)
		return report(cli, code, err);
	if (ordered)
		fprintf(stderr,
		        "clusterctl: coordinator lost: re-attach with clusterctl wait --batch %llu "
		        "--from %u (%s: %s)\n",
		        (unsigned long long)id, from, ch_strerror(code), msg);
	else
		fprintf(stderr,
		        "clusterctl: coordinator lost: re-attach with clusterctl wait --batch %llu "
		        "(%s: %s)\n",
		        (unsigned long long)id, ch_strerror(code), msg);
	return exit_for(code) == EXIT_OK ? EXIT_OTHER : exit_for(code);
}

/* Takes one result off the stream and prints it. *over when the stream
 * ended. Returns CH_OK or the stream's error. */
static int fanout_take(ch_map_stream *s, struct fanout_out *o, uint32_t *next_from, bool *over,
                       char *err, size_t err_len)
{
	struct ch_result *r = NULL;
	int rv = ch_map_stream_next(s, CH_WAIT_FOREVER, &r, err, err_len);
	if (rv != CH_OK)
		return rv;
	if (r == NULL) {
		*over = true;
		return CH_OK;
	}
	fanout_print(o, r);
	*next_from = r->batch_index + 1;
	ch_result_free(r);
	fanout_progress(o, s, false);
	return CH_OK;
}

static int cmd_fanout(struct cli *cli, struct submit_args *sa)
{
	FILE *in = stdin;
	const char *in_name = "standard input";
	if (strcmp(sa->fanout, "-") != 0) {
		in = fopen(sa->fanout, "rb");
		in_name = sa->fanout;
		if (in == NULL) {
			fprintf(stderr, "clusterctl: cannot open %s: %s\n", sa->fanout, strerror(errno));
			return EXIT_OTHER;
		}
	}
	int rc = connect_cli(cli);
	if (rc != EXIT_OK) {
		if (in != stdin)
			fclose(in);
		return rc;
	}
	char err[ERR_BYTES] = "";
	struct ch_stream_opts so = {
		.max_concurrency = sa->mopts.max_concurrency,
		.deadline_ms = sa->mopts.deadline_ms,
		.window = sa->window,
		.unordered = sa->unordered,
	};
	ch_map_stream *s = NULL;
	int rv = ch_map_stream_open(cli->c, sa->handler, &sa->opts, &so, &s, err, sizeof err);
	if (rv != CH_OK) {
		if (in != stdin)
			fclose(in);
		return report(cli, rv, err);
	}
	/* the id first, so that a user who loses the coordinator knows what
	 * to re-attach to */
	fprintf(stderr, "clusterctl: batch %llu (re-attach with clusterctl wait --batch %llu)\n",
	        (unsigned long long)ch_map_stream_batch_id(s),
	        (unsigned long long)ch_map_stream_batch_id(s));
	struct fanout_out o = {
		.json = cli->json,
		.progress = !cli->json && isatty(STDERR_FILENO),
		.flushed_ms = mono_ms(),
	};
	uint32_t next_from = 0;
	bool over = false, cut_short = false;
	char *line = NULL;
	size_t line_cap = 0;
	uint64_t lines = 0;
	ssize_t got;
	rv = CH_OK;
	while (rv == CH_OK && (got = getline(&line, &line_cap, in)) >= 0) {
		size_t len = (size_t)got;
		if (len > 0 && line[len - 1] == '\n')
			len--;
		if (lines == UINT32_MAX) {
			rv = CH_ERR_TOO_LARGE;
			snprintf(err, sizeof err, "more than %u lines: a batch holds at most that many",
			         UINT32_MAX);
			break;
		}
		lines++;
		/* the window full: take results until it has room */
		while ((rv = ch_map_stream_push(s, line, len, err, sizeof err)) == CH_ERR_FULL) {
			rv = fanout_take(s, &o, &next_from, &over, err, sizeof err);
			if (rv != CH_OK || over)
				break;
		}
		if (rv == CH_OK && over) {
			rv = CH_ERR_CLOSED;
			snprintf(err, sizeof err, "batch %llu ended before its input did",
			         (unsigned long long)ch_map_stream_batch_id(s));
		}
		if (rv == CH_ERR_CLOSED) {
			/* closed by its coordinator (deadline, restart): the rest of
			 * the input stays out; what it took still gives results */
			fprintf(stderr, "clusterctl: %s; input from line %llu on not submitted\n", err,
			        (unsigned long long)lines);
			cut_short = true;
			rv = CH_OK;
			break;
		}
	}
	if (rv == CH_OK && ferror(in)) {
		fprintf(stderr, "clusterctl: cannot read %s: %s (the %llu line(s) read go on)\n",
		        in_name, strerror(errno), (unsigned long long)lines);
	}
	free(line);
	if (in != stdin)
		fclose(in);
	if (rv == CH_OK)
		rv = ch_map_stream_close_input(s, err, sizeof err);
	while (rv == CH_OK && !over)
		rv = fanout_take(s, &o, &next_from, &over, err, sizeof err);
	if (rv == CH_ERR_CLOSED) {
		/* the end, with payloads the coordinator never took */
		if (!cut_short)
			fprintf(stderr, "clusterctl: %s\n", err);
		cut_short = true;
		rv = CH_OK;
	}
	if (rv != CH_OK) {
		rc = fanout_lost(cli, &o, s, next_from, !sa->unordered, rv, err);
		ch_map_stream_free(s);
		return rc;
	}
	fanout_progress(&o, s, true);
	fanout_end(&o);
	ch_map_stream_free(s);
	return o.failed || cut_short ? EXIT_TASK_FAILED : EXIT_OK;
}

/* wait --batch ID [--from N]: the results of a batch from index N on, in
 * input order, printed as a fan-out prints them. */
static int cmd_wait_batch(struct cli *cli, uint64_t batch_id, uint32_t from)
{
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char err[ERR_BYTES] = "";
	ch_map_stream *s = NULL;
	int rv = ch_batch_attach(cli->c, batch_id, from, &s, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	struct fanout_out o = {
		.json = cli->json,
		.progress = !cli->json && isatty(STDERR_FILENO),
		.flushed_ms = mono_ms(),
	};
	uint32_t next_from = from;
	bool over = false;
	while (rv == CH_OK && !over)
		rv = fanout_take(s, &o, &next_from, &over, err, sizeof err);
	if (rv == CH_ERR_NOT_FOUND) {
		fanout_end(&o);
		ch_map_stream_free(s);
		return report(cli, rv, err);
	}
	if (rv != CH_OK) {
		rc = fanout_lost(cli, &o, s, next_from, true, rv, err);
		ch_map_stream_free(s);
		return rc;
	}
	fanout_progress(&o, s, true);
	fanout_end(&o);
	ch_map_stream_free(s);
	return o.failed ? EXIT_TASK_FAILED : EXIT_OK;
}

static int cmd_submit(struct cli *cli, int argc, char **argv)
{
	struct submit_args sa = { .opts.restart = CH_RESTART_TEMPORARY };
	/* One allocation for both lists, each NULL-terminated by calloc: argv
	 * entries in av[0..argc], required tags in req[0..argc]. */
	const char **av = calloc(2 * ((size_t)argc + 1), sizeof *av);
	if (av == NULL)
		return EXIT_OTHER;
	const char **req = av + argc + 1;
	sa.argv = av;
	sa.require = req;
	bool stdin_payload = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			for (i++; i < argc; i++)
				av[sa.argv_count++] = argv[i];
			break;
		} else if (strcmp(a, "--wait") == 0) {
			sa.wait = true;
		} else if (strcmp(a, "--json") == 0) {
			cli->json = true;
		} else if (strcmp(a, "--timeout") == 0) {
			sa.opts.timeout_ms = parse_dur_or_die(a, opt_value(argc, argv, &i));
		} else if (strcmp(a, "--transient") == 0) {
			sa.opts.restart = CH_RESTART_TRANSIENT;
		} else if (strcmp(a, "--retries") == 0) {
			sa.opts.max_attempts = parse_u32_or_die(a, opt_value(argc, argv, &i));
		} else if (strcmp(a, "--backoff") == 0) {
			sa.opts.backoff_ms = parse_dur_or_die(a, opt_value(argc, argv, &i));
		} else if (strcmp(a, "--arg") == 0) {
			av[sa.argv_count++] = opt_value(argc, argv, &i);
		} else if (strcmp(a, "--key") == 0) {
			sa.opts.key = opt_value(argc, argv, &i);
			size_t kn = strlen(sa.opts.key);
			if (kn == 0 || kn > CH_KEY_BYTES_MAX) {
				free(av);
				usage_fail("submit: --key needs 1..200 bytes");
			}
		} else if (strcmp(a, "--require") == 0) {
			const char *tag = opt_value(argc, argv, &i);
			if (tag[0] == '\0') {
				free(av);
				usage_fail("submit: --require needs a tag");
			}
			req[sa.require_count++] = tag;
		} else if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) {
			sa.payload_file = opt_value(argc, argv, &i);
		} else if (strcmp(a, "--fanout") == 0) {
			sa.fanout = opt_value(argc, argv, &i);
		} else if (strcmp(a, "--max-concurrency") == 0) {
			sa.mopts.max_concurrency = parse_u32_or_die(a, opt_value(argc, argv, &i));
		} else if (strcmp(a, "--deadline") == 0) {
			sa.mopts.deadline_ms = parse_dur_or_die(a, opt_value(argc, argv, &i));
		} else if (strcmp(a, "--window") == 0) {
			sa.window = parse_u32_or_die(a, opt_value(argc, argv, &i));
		} else if (strcmp(a, "--unordered") == 0) {
			sa.unordered = true;
		} else if (strcmp(a, "-") == 0 && sa.handler != NULL && !stdin_payload &&
		           sa.payload_arg == NULL) {
			stdin_payload = true;
		} else if (a[0] == '-' && a[1] != '\0') {
			free(av);
			usage_fail("submit: unknown option '%s'", a);
		} else if (sa.handler == NULL) {
			sa.handler = a;
		} else if (sa.payload_arg == NULL && !stdin_payload) {
			sa.payload_arg = a;
		} else {
			free(av);
			usage_fail("submit: unexpected argument '%s'", a);
		}
	}
	if (sa.handler == NULL) {
		free(av);
		usage_fail("submit needs a HANDLER");
	}
	if (sa.argv_count > ARGV_COUNT_MAX) {
		free(av);
		usage_fail("submit: more than %u argv entries", ARGV_COUNT_MAX);
	}
	int sources = (sa.payload_arg != NULL) + (sa.payload_file != NULL) + stdin_payload +
	              (sa.fanout != NULL);
	if (sources > 1) {
		free(av);
		usage_fail("submit: give one of PAYLOAD, -f FILE, - or --fanout");
	}
	if (sa.fanout == NULL && (sa.mopts.max_concurrency != 0 || sa.mopts.deadline_ms != 0 ||
	                          sa.window != 0 || sa.unordered)) {
		free(av);
		usage_fail("submit: --max-concurrency, --deadline, --window and --unordered go with "
		           "--fanout");
	}
	if (sa.fanout != NULL && sa.wait) {
		free(av);
		usage_fail("submit: --fanout always waits; drop --wait");
	}
	if (sa.require_count > CH_REQUIRE_COUNT_MAX) {
		free(av);
		usage_fail("submit: more than %d --require tags", CH_REQUIRE_COUNT_MAX);
	}
	if (sa.argv_count > 0)
		sa.opts.argv = av; /* NULL-terminated by calloc */
	if (sa.require_count > 0)
		sa.opts.require = req;

	if (sa.fanout != NULL) {
		int rc = cmd_fanout(cli, &sa);
		free(av);
		return rc;
	}

	uint8_t *payload = NULL;
	size_t payload_len = 0;
	int rc = EXIT_OK;
	if (sa.payload_file != NULL || stdin_payload)
		rc = read_source(stdin_payload ? "-" : sa.payload_file, &payload, &payload_len);
	else if (sa.payload_arg != NULL) {
		payload_len = strlen(sa.payload_arg);
		payload = (uint8_t *)strdup(sa.payload_arg);
		if (payload == NULL)
			rc = EXIT_OTHER;
	}
	if (rc == EXIT_OK)
		rc = connect_cli(cli);
	if (rc != EXIT_OK) {
		free(payload);
		free(av);
		return rc;
	}
	char err[ERR_BYTES] = "";
	uint64_t task_id = 0;
	int rv = ch_submit(cli->c, sa.handler, payload != NULL ? payload : (uint8_t *)"",
	                   payload_len, &sa.opts, &task_id, err, sizeof err);
	free(payload);
	free(av);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (!sa.wait) {
		if (cli->json) {
			json_t *o = json_object();
			json_object_set_new(o, "task_id", json_integer((json_int_t)task_id));
			json_print(o);
		} else {
			printf("%llu\n", (unsigned long long)task_id);
		}
		return EXIT_OK;
	}
	struct ch_result *r = NULL;
	rv = wait_until_final(cli, task_id, &r, 0, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	rc = show_result(cli, r, true);
	ch_result_free(r);
	return rc;
}

static uint64_t json_u64(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

static const char *json_str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s != NULL && s[0] != '\0' ? s : "-";
}

static void print_string_list(json_t *arr)
{
	size_t i;
	json_t *v;
	if (json_array_size(arr) == 0) {
		fputs("-", stdout);
		return;
	}
	json_array_foreach(arr, i, v)
	{
		printf("%s%s", i > 0 ? "," : "", json_string_value(v) != NULL ? json_string_value(v)
		                                                              : "");
	}
}

/* An age like "12s ago", "5m ago", "3h ago", "2d ago"; "-" when never. */
static void format_age(char *buf, size_t len, uint64_t since_ms, uint64_t now_ms)
{
	if (since_ms == 0) {
		snprintf(buf, len, "-");
		return;
	}
	/* the clocks of two machines may disagree: never a negative age */
	uint64_t s = now_ms > since_ms ? (now_ms - since_ms) / 1000 : 0;
	if (s < 60)
		snprintf(buf, len, "%llus ago", (unsigned long long)s);
	else if (s < 3600)
		snprintf(buf, len, "%llum ago", (unsigned long long)(s / 60));
	else if (s < 86400)
		snprintf(buf, len, "%lluh ago", (unsigned long long)(s / 3600));
	else
		snprintf(buf, len, "%llud ago", (unsigned long long)(s / 86400));
}

static uint64_t wall_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* "gpu,ssd" or "-" into buf (cut short, never overrun, when very long). */
static void join_strings(char *buf, size_t len, json_t *arr)
{
	size_t off = 0;
	size_t i;
	json_t *v;
	buf[0] = '\0';
	json_array_foreach(arr, i, v)
	{
		const char *t = json_string_value(v);
		if (t == NULL || off >= len)
			continue;
		int k = snprintf(buf + off, len - off, "%s%s", i > 0 ? "," : "", t);
		off += k > 0 ? (size_t)k : 0;
	}
	if (buf[0] == '\0')
		snprintf(buf, len, "-");
}

#define MEMBER_NAME_COLS_MAX 40
#define MEMBER_ADDR_COLS_MAX 60
#define MEMBER_TAGS_BYTES 300

static int member_by_name(const void *x, const void *y)
{
	json_t *const *a = x, *const *b = y;
	int c = strcmp(json_str(*a, "name"), json_str(*b, "name"));
	return c != 0 ? c : strcmp(json_str(*a, "id"), json_str(*b, "id"));
}

/* The member table of `clusterctl members` and `status`, sorted by name,
 * ages measured against now_ms. Columns as wide as their widest cell
 * (within a cap). */
static void print_members_table(json_t *members, uint64_t now_ms)
{
	/* sort a copy of the array (references only) */
	size_t count = json_array_size(members);
	json_t **sorted = calloc(count > 0 ? count : 1, sizeof *sorted);
	json_t *view = json_array();
	if (sorted != NULL && view != NULL) {
		for (size_t k = 0; k < count; k++)
			sorted[k] = json_array_get(members, k);
		qsort(sorted, count, sizeof *sorted, member_by_name);
		for (size_t k = 0; k < count; k++)
			json_array_append(view, sorted[k]);
		members = view;
	}
	free(sorted);

	int name_w = (int)strlen("NAME"), addr_w = (int)strlen("ADDRESS");
	int tags_w = (int)strlen("TAGS");
	size_t i;
	json_t *m;
	char tags[MEMBER_TAGS_BYTES];
	json_array_foreach(members, i, m)
	{
		int w = (int)strlen(json_str(m, "name")) + 1; /* room for the self mark */
		if (w > name_w)
			name_w = w > MEMBER_NAME_COLS_MAX ? MEMBER_NAME_COLS_MAX : w;
		w = (int)strlen(json_str(m, "addr"));
		if (w > addr_w)
			addr_w = w > MEMBER_ADDR_COLS_MAX ? MEMBER_ADDR_COLS_MAX : w;
		join_strings(tags, sizeof tags, json_object_get(m, "tags"));
		w = (int)strlen(tags);
		if (w > tags_w)
			tags_w = w;
	}
	printf("%-*s  %-7s  %-*s  %-*s  %8s  %11s  %s\n", name_w, "NAME", "STATE", addr_w,
	       "ADDRESS", tags_w, "TAGS", "LOAD/CAP", "INCARNATION", "SINCE");
	json_array_foreach(members, i, m)
	{
		char name[MEMBER_NAME_COLS_MAX + 8];
		char load[48];
		char age[32];
		snprintf(name, sizeof name, "%s%s", json_str(m, "name"),
		         json_is_true(json_object_get(m, "self")) ? "*" : "");
		snprintf(load, sizeof load, "%llu/%llu", (unsigned long long)json_u64(m, "load"),
		         (unsigned long long)json_u64(m, "capacity"));
		join_strings(tags, sizeof tags, json_object_get(m, "tags"));
		format_age(age, sizeof age, json_u64(m, "since_ms"), now_ms);
		printf("%-*s  %-7s  %-*s  %-*s  %8s  %11llu  %s\n", name_w, name, json_str(m, "state"),
		       addr_w, json_str(m, "addr"), tags_w, tags, load,
		       (unsigned long long)json_u64(m, "incarnation"), age);
	}
	if (json_array_size(members) == 0)
		printf("(the node reported no members)\n");
	json_decref(view);
}

/* The election as the node sees it: "leader n1 (term 3), voters n1 n2 n3,
 * commit 42, 2 schedule(s); this node: follower". Nothing from a node
 * without the fields (an older version). */
static void print_raft_line(json_t *o)
{
	json_t *voters = json_object_get(o, "raft_voters");
	if (!json_is_array(voters))
		return;
	const char *leader = json_string_value(json_object_get(o, "raft_leader"));
	const char *role = json_string_value(json_object_get(o, "raft_role"));
	printf("%-10s ", "raft");
	if (leader != NULL && leader[0] != '\0')
		printf("leader %s", leader);
	else
		printf("no leader");
	printf(" (term %llu), voters", (unsigned long long)json_u64(o, "raft_term"));
	size_t i;
	json_t *v;
	json_array_foreach(voters, i, v)
	{
		printf(" %s", json_string_value(v) != NULL ? json_string_value(v) : "?");
	}
	if (json_array_size(voters) == 0)
		printf(" none");
	uint64_t n = json_u64(o, "schedules");
	printf(", commit %llu, %llu schedule%s", (unsigned long long)json_u64(o, "raft_commit"),
	       (unsigned long long)n, n == 1 ? "" : "s");
	if (role != NULL && role[0] != '\0')
		printf("; this node: %s\n", role);
	else
		printf("; this node is not a voter\n");
}

static void print_status_tables(json_t *o)
{
	uint64_t started = json_u64(o, "started_ms"), now = json_u64(o, "now_ms");
	uint64_t up_s = (now > started && started > 0) ? (now - started) / 1000 : 0;
	printf("%-10s %s (%s)  version %s  listen %s\n", "node", json_str(o, "node_id"),
	       json_str(o, "name"), json_str(o, "version"), json_str(o, "listen"));
	printf("%-10s %llud %02lluh %02llum %02llus\n", "uptime",
	       (unsigned long long)(up_s / 86400), (unsigned long long)(up_s / 3600 % 24),
	       (unsigned long long)(up_s / 60 % 60), (unsigned long long)(up_s % 60));
	printf("%-10s queued %llu  running %llu  sessions %llu\n", "queue",
	       (unsigned long long)json_u64(o, "queued"), (unsigned long long)json_u64(o, "running"),
	       (unsigned long long)json_u64(o, "sessions"));
	printf("%-10s submitted %llu  succeeded %llu  failed %llu  timed_out %llu  cancelled %llu"
	       "  lost %llu  retried %llu\n",
	       "tasks", (unsigned long long)json_u64(o, "submitted"),
	       (unsigned long long)json_u64(o, "succeeded"), (unsigned long long)json_u64(o, "failed"),
	       (unsigned long long)json_u64(o, "timed_out"),
	       (unsigned long long)json_u64(o, "cancelled"), (unsigned long long)json_u64(o, "lost"),
	       (unsigned long long)json_u64(o, "retried"));
	printf("%-10s ", "handlers");
	print_string_list(json_object_get(o, "handlers"));
	putchar('\n');
	printf("%-10s ", "tags");
	print_string_list(json_object_get(o, "tags"));
	putchar('\n');
	print_raft_line(o);
	const char *resp = json_string_value(json_object_get(o, "resp_listen"));
	if (resp != NULL && resp[0] != '\0')
		printf("%-10s %s  clients %llu  commands %llu  errors %llu\n", "resp", resp,
		       (unsigned long long)json_u64(o, "resp_clients"),
		       (unsigned long long)json_u64(o, "resp_commands"),
		       (unsigned long long)json_u64(o, "resp_errors"));

	json_t *pools = json_object_get(o, "pools");
	size_t i;
	json_t *p;
	printf("\n%-16s %7s %5s %4s %6s %8s %8s  %s\n", "POOL", "WORKERS", "ALIVE", "BUSY",
	       "QUEUED", "RESTARTS", "DEGRADED", "HANDLERS");
	json_array_foreach(pools, i, p)
	{
		printf("%-16s %7llu %5llu %4llu %6llu %8llu %8s  ", json_str(p, "name"),
		       (unsigned long long)json_u64(p, "workers"), (unsigned long long)json_u64(p, "alive"),
		       (unsigned long long)json_u64(p, "busy"), (unsigned long long)json_u64(p, "queued"),
		       (unsigned long long)json_u64(p, "restarts"),
		       json_is_true(json_object_get(p, "degraded")) ? "yes" : "no");
		print_string_list(json_object_get(p, "handlers"));
		putchar('\n');
	}

	static const char *const bad[] = { "forged",    "tampered",  "replayed",
		                           "truncated", "oversized", "malformed" };
	json_t *peers = json_object_get(o, "peers");
	bool header = false;
	json_array_foreach(peers, i, p)
	{
		uint64_t sum = 0;
		for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
			sum += json_u64(p, bad[k]);
		if (sum == 0)
			continue;
		if (!header) {
			printf("\n%-24s %8s %8s %8s %9s %9s %9s\n", "PEER (bad frames)", "FORGED",
			       "TAMPERED", "REPLAYED", "TRUNCATED", "OVERSIZED", "MALFORMED");
			header = true;
		}
		printf("%-24s %8llu %8llu %8llu %9llu %9llu %9llu\n", json_str(p, "peer"),
		       (unsigned long long)json_u64(p, "forged"),
		       (unsigned long long)json_u64(p, "tampered"),
		       (unsigned long long)json_u64(p, "replayed"),
		       (unsigned long long)json_u64(p, "truncated"),
		       (unsigned long long)json_u64(p, "oversized"),
		       (unsigned long long)json_u64(p, "malformed"));
	}
	if (!header)
		printf("\nno peer sent bad frames\n");

	json_t *keys = json_object_get(o, "keys");
	if (json_array_size(keys) > 0) {
		printf("\n%-10s %8s %10s %14s\n", "KEY", "PRIMARY", "SESSIONS", "NODE SESSIONS");
		json_array_foreach(keys, i, p)
		{
			printf("%-10s %8s %10llu %14llu\n", json_str(p, "key_id"),
			       json_is_true(json_object_get(p, "primary")) ? "yes" : "no",
			       (unsigned long long)json_u64(p, "sessions"),
			       (unsigned long long)json_u64(p, "node_sessions"));
		}
	}

	json_t *reqs = json_object_get(o, "requests");
	header = false;
	json_array_foreach(reqs, i, p)
	{
		if (json_u64(p, "calls") == 0)
			continue;
		if (!header) {
			printf("\n%-16s %10s %8s %8s %10s %10s\n", "REQUEST", "CALLS", "ERRORS", "REFUSED",
			       "P50", "P99");
			header = true;
		}
		char p50[32] = "-", p99[32] = "-"; /* "-": none answered yet (this very call) */
		if (json_u64(p, "latency_p50_us"))
			snprintf(p50, sizeof p50, "<%llu us",
			         (unsigned long long)json_u64(p, "latency_p50_us"));
		if (json_u64(p, "latency_p99_us"))
			snprintf(p99, sizeof p99, "<%llu us",
			         (unsigned long long)json_u64(p, "latency_p99_us"));
		printf("%-16s %10llu %8llu %8llu %10s %10s\n", json_str(p, "name"),
		       (unsigned long long)json_u64(p, "calls"), (unsigned long long)json_u64(p, "errors"),
		       (unsigned long long)json_u64(p, "refused"), p50, p99);
	}

	json_t *members = json_object_get(o, "members");
	if (json_is_array(members)) {
		size_t alive = 0;
		json_array_foreach(members, i, p)
		{
			alive += strcmp(json_str(p, "state"), "alive") == 0;
		}
		size_t count = json_array_size(members);
		printf("\n%-10s %zu member%s, %zu alive\n", "cluster", count, count == 1 ? "" : "s",
		       alive);
		print_members_table(members, now > 0 ? now : wall_now_ms());
	}
}

static int cmd_metrics(struct cli *cli, int argc, char **argv)
{
	if (cli->json)
		usage_fail("metrics: --json is not accepted (the output is the Prometheus text format)");
	for (int i = 1; i < argc; i++)
		usage_fail("metrics: unexpected argument '%s'", argv[i]);
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char err[ERR_BYTES] = "";
	char *text = NULL;
	int rv = ch_metrics(cli->c, &text, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	fputs(text, stdout);
	free(text);
	return EXIT_OK;
}

static int cmd_status(struct cli *cli, int argc, char **argv)
{
	const char *id_arg = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else if (argv[i][0] == '-')
			usage_fail("status: unknown option '%s'", argv[i]);
		else if (id_arg == NULL)
			id_arg = argv[i];
		else
			usage_fail("status: unexpected argument '%s'", argv[i]);
	}
	uint64_t task_id = id_arg != NULL ? parse_task_id_or_die(id_arg) : 0;
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char err[ERR_BYTES] = "";
	if (id_arg != NULL) {
		struct ch_result *r = NULL;
		int rv = ch_task_status(cli->c, task_id, &r, err, sizeof err);
		if (rv != CH_OK)
			return report(cli, rv, err);
		show_result(cli, r, false);
		ch_result_free(r);
		return EXIT_OK; /* asking about a task is not the task failing */
	}
	char *text = NULL;
	int rv = ch_status_json(cli->c, &text, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		printf("%s\n", text);
		free(text);
		return EXIT_OK;
	}
	json_error_t je;
	json_t *o = json_loads(text, 0, &je);
	free(text);
	if (o == NULL) {
		fprintf(stderr, "clusterctl: status is not valid JSON: %s\n", je.text);
		return EXIT_OTHER;
	}
	print_status_tables(o);
	json_decref(o);
	return EXIT_OK;
}

static int cmd_members(struct cli *cli, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else
			usage_fail("members: unexpected argument '%s'", argv[i]);
	}
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char err[ERR_BYTES] = "";
	char *text = NULL;
	int rv = ch_members_json(cli->c, &text, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		printf("%s\n", text);
		free(text);
		return EXIT_OK;
	}
	json_error_t je;
	json_t *a = json_loads(text, 0, &je);
	free(text);
	if (!json_is_array(a)) {
		json_decref(a);
		fprintf(stderr, "clusterctl: the member list is not a JSON array\n");
		return EXIT_OTHER;
	}
	print_members_table(a, wall_now_ms());
	json_decref(a);
	return EXIT_OK;
}

/* ---- events ---- */

#define EVENTS_FOLLOW_WAIT_MS 25000u /* one long poll (the node caps it at 30 s) */
#define EVENTS_BACKOFF_FIRST_MS 250u
#define EVENTS_BACKOFF_MAX_MS 5000u

/* A follower stops by being told to: nothing is buffered (each line is
 * flushed), so leaving at once loses nothing. */
static void events_leave(int sig)
{
	(void)sig;
	_exit(EXIT_OK);
}

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint64_t mono_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* 2026-12-01T18:00:00.123Z */
static void format_utc_ms(uint64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000u);
	struct tm tm;
	char day[32];
	if (gmtime_r(&t, &tm) == NULL || strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		snprintf(day, sizeof day, "%llu", (unsigned long long)(ms / 1000u));
	snprintf(buf, len, "%s.%03uZ", day, (unsigned)(ms % 1000u));
}

/* Prints one event; false when stdout is gone (a closed pipe). */
static bool event_print(json_t *e, bool as_json)
{
	if (as_json) {
		char *t = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (t == NULL)
			return true;
		printf("%s\n", t);
		free(t);
	} else {
		char when[48];
		const char *subject = json_string_value(json_object_get(e, "subject"));
		format_utc_ms((uint64_t)json_integer_value(json_object_get(e, "wall_ms")), when,
		              sizeof when);
		printf("%s %s %s %s\n", when, json_string_value(json_object_get(e, "kind")),
		       subject != NULL && subject[0] != '\0' ? subject : "-",
		       json_string_value(json_object_get(e, "message")));
	}
	return fflush(stdout) == 0 && !ferror(stdout);
}

/* A line about the stream itself: stdout in text, stderr with --json (so
 * stdout holds events only). */
static bool events_note(bool as_json, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool events_note(bool as_json, const char *fmt, ...)
{
	FILE *f = as_json ? stderr : stdout;
	va_list ap;
	va_start(ap, fmt);
	fputs(as_json ? "clusterctl: " : "# ", f);
	vfprintf(f, fmt, ap);
	fputc('\n', f);
	va_end(ap);
	return fflush(f) == 0 && !ferror(f);
}

static int cmd_events(struct cli *cli, int argc, char **argv)
{
	bool follow = false;
	uint64_t after = 0;
	uint32_t max = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0) {
			cli->json = true;
		} else if (strcmp(a, "--follow") == 0 || strcmp(a, "-f") == 0) {
			follow = true;
		} else if (strcmp(a, "--after") == 0) {
			const char *v = opt_value(argc, argv, &i);
			if (!parse_u64(v, &after))
				usage_fail("--after needs a seq (a number), got '%s'", v);
		} else if (strcmp(a, "--max") == 0) {
			max = parse_u32_or_die(a, opt_value(argc, argv, &i));
			if (max == 0)
				usage_fail("--max must be more than 0");
		} else {
			usage_fail("events: unexpected argument '%s'", a);
		}
	}
	if (follow) {
		struct sigaction sa = { .sa_handler = events_leave };
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGPIPE, &sa, NULL);
	}
	int rc = connect_cli(cli);
	if (rc != EXIT_OK && !follow)
		return rc;
	uint64_t printed = 0;     /* without --follow: events printed, for --max */
	uint64_t started_ms = 0;  /* the node's run seen last (0: none yet) */
	uint32_t backoff = 0;
	for (;;) {
		char err[ERR_BYTES] = "";
		char *text = NULL;
		uint32_t page = max;
		if (!follow && max > 0 && max - printed < page)
			page = (uint32_t)(max - printed);
		uint64_t t0 = mono_now_ms();
		int rv = cli->c != NULL ? ch_events_json(cli->c, after, follow ? EVENTS_FOLLOW_WAIT_MS : 0,
		                                         page, &text, err, sizeof err)
		                        : CH_ERR_UNREACHABLE;
		if (rv != CH_OK && !follow)
			return report(cli, rv, err);
		if (rv != CH_OK) {
			/* the node went away or restarted: a new client, after a pause */
			if (cli->c != NULL)
				(void)report(cli, rv, err);
			backoff = backoff == 0 ? EVENTS_BACKOFF_FIRST_MS
			                       : (backoff * 2 > EVENTS_BACKOFF_MAX_MS ? EVENTS_BACKOFF_MAX_MS
			                                                              : backoff * 2);
			sleep_ms(backoff);
			ch_client_close(cli->c);
			cli->c = NULL;
			struct ch_client_options o = { .timeout_ms = cli->timeout_ms };
			if (ch_client_connect(&cli->c, cli->addr, cli->secret, &o, err, sizeof err) != CH_OK)
				cli->c = NULL;
			continue;
		}
		backoff = 0;
		json_error_t je;
		json_t *o = json_loads(text, 0, &je);
		free(text);
		json_t *evs = json_object_get(o, "events");
		if (!json_is_array(evs)) {
			json_decref(o);
			fprintf(stderr, "clusterctl: the events page is not a JSON object with events\n");
			return EXIT_OTHER;
		}
		char node[128]; /* outlives o */
		snprintf(node, sizeof node, "%s", json_string_value(json_object_get(o, "node")) != NULL
		                                      ? json_string_value(json_object_get(o, "node"))
		                                      : "?");
		uint64_t run = (uint64_t)json_integer_value(json_object_get(o, "started_ms"));
		if (follow && started_ms != 0 && run != started_ms) {
			char when[48];
			format_utc_ms(run, when, sizeof when);
			if (!events_note(cli->json, "node %s restarted at %s: its events start again "
			                            "from seq 1", node, when)) {
				json_decref(o);
				return EXIT_OK;
			}
			started_ms = run;
			after = 0; /* this page answered an `after` of the run before */
			json_decref(o);
			continue;
		}
		started_ms = run;
		size_t n = json_array_size(evs);
		if (n > 0) {
			uint64_t first = (uint64_t)json_integer_value(
				json_object_get(json_array_get(evs, 0), "seq"));
			if (after > 0 && first > after + 1 &&
			    !events_note(cli->json, "%llu event(s) lost: seq %llu to %llu are no longer "
			                            "held by node %s",
			                 (unsigned long long)(first - after - 1),
			                 (unsigned long long)(after + 1), (unsigned long long)(first - 1),
			                 node)) {
				json_decref(o);
				return EXIT_OK;
			}
		}
		size_t k;
		json_t *e;
		json_array_foreach(evs, k, e) {
			if (!event_print(e, cli->json)) {
				json_decref(o);
				return EXIT_OK; /* the reader went away */
			}
			after = (uint64_t)json_integer_value(json_object_get(e, "seq"));
			printed++;
		}
		uint64_t last = (uint64_t)json_integer_value(json_object_get(o, "last_seq"));
		json_decref(o);
		if (follow && after > last) {
			/* a seq the node has not reached (of an earlier run, or a typo):
			 * the node answers such a wait at once, so wait from its newest */
			if (!events_note(cli->json, "seq %llu is beyond node %s's newest event (%llu): "
			                            "following from there",
			                 (unsigned long long)after, node,
			                 (unsigned long long)last))
				return EXIT_OK;
			after = last;
			continue;
		}
		if (!follow && (n == 0 || after >= last || (max > 0 && printed >= max)))
			return EXIT_OK;
		/* an empty page long before the wait was over (a draining node
		 * answers at once): do not ask again in a tight loop */
		if (follow && n == 0 && mono_now_ms() - t0 < EVENTS_FOLLOW_WAIT_MS / 2)
			sleep_ms(500);
	}
}

static int cmd_tasks(struct cli *cli, int argc, char **argv)
{
	int state = CH_TASK_UNKNOWN;
	uint32_t limit = 50;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			cli->json = true;
		} else if (strcmp(argv[i], "--state") == 0) {
			const char *s = opt_value(argc, argv, &i);
			state = ch_task_state_parse(s);
			if (state == CH_TASK_UNKNOWN && strcmp(s, "any") != 0)
				usage_fail("tasks: unknown state '%s'", s);
		} else if (strcmp(argv[i], "--limit") == 0) {
			limit = parse_u32_or_die("--limit", opt_value(argc, argv, &i));
		} else {
			usage_fail("tasks: unexpected argument '%s'", argv[i]);
		}
	}
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	struct ch_result **rs = NULL;
	uint32_t n = 0;
	char err[ERR_BYTES] = "";
	int rv = ch_list(cli->c, state, limit, &rs, &n, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *arr = json_array();
		for (uint32_t i = 0; i < n; i++)
			json_array_append_new(arr, result_json(rs[i], false));
		json_print(arr);
	} else {
		printf("%-20s %-10s %-16s %-16s %8s %5s  %s\n", "ID", "STATE", "HANDLER", "NODE",
		       "ATTEMPTS", "EXIT", "ERROR");
		for (uint32_t i = 0; i < n; i++) {
			const struct ch_result *r = rs[i];
			printf("%-20llu %-10s %-16s %-16s %8u %5d  ", (unsigned long long)r->task_id,
			       ch_task_state_name(r->state), r->handler[0] ? r->handler : "-",
			       r->node[0] ? r->node : "-", r->attempts, r->exit_code);
			print_escaped(stdout, (const uint8_t *)r->error, strlen(r->error));
			putchar('\n');
		}
	}
	ch_results_free(rs, n);
	return EXIT_OK;
}

static int cmd_wait(struct cli *cli, int argc, char **argv)
{
	const char *id_arg = NULL;
	const char *batch_arg = NULL;
	uint32_t limit_ms = 0, from = 0;
	bool from_given = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else if (strcmp(argv[i], "--timeout") == 0)
			limit_ms = parse_dur_or_die("--timeout", opt_value(argc, argv, &i));
		else if (strcmp(argv[i], "--batch") == 0)
			batch_arg = opt_value(argc, argv, &i);
		else if (strcmp(argv[i], "--from") == 0) {
			from = parse_u32_or_die("--from", opt_value(argc, argv, &i));
			from_given = true;
		} else if (argv[i][0] == '-')
			usage_fail("wait: unknown option '%s'", argv[i]);
		else if (id_arg == NULL)
			id_arg = argv[i];
		else
			usage_fail("wait: unexpected argument '%s'", argv[i]);
	}
	if (batch_arg != NULL) {
		uint64_t batch_id = 0;
		if (id_arg != NULL)
			usage_fail("wait: give a TASK_ID or --batch ID, not both");
		if (!parse_u64(batch_arg, &batch_id) || batch_id == 0)
			usage_fail("'%s' is not a batch id", batch_arg);
		if (limit_ms != 0)
			usage_fail("wait --batch waits until the batch is over; drop --timeout");
		return cmd_wait_batch(cli, batch_id, from);
	}
	if (from_given)
		usage_fail("wait: --from goes with --batch");
	if (id_arg == NULL)
		usage_fail("wait needs a TASK_ID or --batch ID");
	uint64_t task_id = parse_task_id_or_die(id_arg);
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	struct ch_result *r = NULL;
	char err[ERR_BYTES] = "";
	int rv = wait_until_final(cli, task_id, &r, limit_ms, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	rc = show_result(cli, r, true);
	if (rc == EXIT_UNREACHABLE)
		fprintf(stderr, "clusterctl: task %llu is still %s after %u ms\n",
		        (unsigned long long)task_id, ch_task_state_name(r->state), limit_ms);
	ch_result_free(r);
	return rc;
}

static int cmd_cancel(struct cli *cli, int argc, char **argv)
{
	const char *id_arg = NULL, *batch_arg = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else if (strcmp(argv[i], "--batch") == 0)
			batch_arg = opt_value(argc, argv, &i);
		else if (argv[i][0] == '-')
			usage_fail("cancel: unknown option '%s'", argv[i]);
		else if (id_arg == NULL)
			id_arg = argv[i];
		else
			usage_fail("cancel: unexpected argument '%s'", argv[i]);
	}
	if (id_arg != NULL && batch_arg != NULL)
		usage_fail("cancel: give a TASK_ID or --batch ID, not both");
	if (id_arg == NULL && batch_arg == NULL)
		usage_fail("cancel needs a TASK_ID or --batch ID");
	uint64_t batch_id = 0, task_id = 0;
	if (batch_arg != NULL && (!parse_u64(batch_arg, &batch_id) || batch_id == 0))
		usage_fail("'%s' is not a batch id", batch_arg);
	if (id_arg != NULL)
		task_id = parse_task_id_or_die(id_arg);
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char err[ERR_BYTES] = "";
	Chorus__CancelResp cr = CHORUS__CANCEL_RESP__INIT;
	if (batch_id != 0) {
		uint32_t cancelled = 0;
		int rv = ch_cancel_batch(cli->c, batch_id, &cancelled, err, sizeof err);
		if (rv != CH_OK)
			return report(cli, rv, err);
		cr.cancelled = cancelled;
		if (cli->json)
			json_print(view_cancel_batch(batch_id, &cr));
		else
			printf("batch %llu: %u task%s cancelled\n", (unsigned long long)batch_id, cancelled,
			       cancelled == 1 ? "" : "s");
		return EXIT_OK;
	}
	int state = CH_TASK_UNKNOWN;
	int rv = ch_cancel(cli->c, task_id, &state, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	cr.state = (Chorus__TaskState)state;
	if (cli->json)
		json_print(view_cancel_task(task_id, &cr));
	else
		printf("task %llu: %s\n", (unsigned long long)task_id, ch_task_state_name(state));
	return EXIT_OK;
}

static int cmd_fanouts(struct cli *cli, int argc, char **argv)
{
	uint32_t limit = 50;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else if (strcmp(argv[i], "--limit") == 0)
			limit = parse_u32_or_die("--limit", opt_value(argc, argv, &i));
		else
			usage_fail("fanouts: unexpected argument '%s'", argv[i]);
	}
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char *text = NULL;
	char err[ERR_BYTES] = "";
	int rv = ch_fanouts_json(cli->c, limit, &text, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		printf("%s\n", text);
		free(text);
		return EXIT_OK;
	}
	json_error_t je;
	json_t *a = json_loads(text, 0, &je);
	free(text);
	printf("%-20s %-10s %-16s %9s %9s %9s %7s %7s %7s  %s\n", "BATCH", "STATE", "HANDLER", "DONE",
	       "TOTAL", "SUCCEEDED", "FAILED", "RUNNING", "QUEUED", "PROGRESS");
	size_t i;
	json_t *b;
	json_array_foreach(a, i, b)
	{
		uint64_t total = json_u64(b, "total"), done = json_u64(b, "done");
		char bar[PROGRESS_WIDTH + 3];
		size_t fill = total ? (size_t)(done * PROGRESS_WIDTH / total) : 0;
		bar[0] = '[';
		for (size_t k = 0; k < PROGRESS_WIDTH; k++)
			bar[1 + k] = k < fill ? '#' : '.';
		bar[PROGRESS_WIDTH + 1] = ']';
		bar[PROGRESS_WIDTH + 2] = '\0';
		printf("%-20llu %-10s %-16s %9llu %9llu %9llu %7llu %7llu %7llu  %s%s\n",
		       (unsigned long long)json_u64(b, "batch_id"), json_str(b, "state"),
		       json_str(b, "handler"), (unsigned long long)done, (unsigned long long)total,
		       (unsigned long long)json_u64(b, "succeeded"),
		       (unsigned long long)(json_u64(b, "failed") + json_u64(b, "timed_out") +
		                            json_u64(b, "lost")),
		       (unsigned long long)json_u64(b, "running"),
		       (unsigned long long)json_u64(b, "queued"), bar,
		       json_is_true(json_object_get(b, "input_open")) ? " (input open)" : "");
	}
	if (json_array_size(a) == 0)
		printf("(no fan-outs)\n");
	json_decref(a);
	return EXIT_OK;
}

/* Prints what keygen wrote: the file and its key ids. */
static void keygen_report(struct cli *cli, const char *path, const char *what, const char *from)
{
	char err[ERR_BYTES] = "";
	struct seal_keyring *kr = seal_keyring_load(path, SEAL_ROLE_CLIENT, err, sizeof err);
	uint32_t ids[SEAL_KEYS_MAX];
	uint32_t n = kr != NULL ? seal_keyring_ids(kr, ids) : 0;
	seal_keyring_free(kr);
	char hex[SEAL_KEYS_MAX][SEAL_KEY_ID_HEX_BYTES];
	for (uint32_t i = 0; i < n; i++)
		seal_key_id_hex(ids[i], hex[i]);
	if (cli->json) {
		json_t *o = json_object();
		json_object_set_new(o, "path", json_string(path));
		json_object_set_new(o, "kind", json_string(what));
		json_t *a = json_array();
		for (uint32_t i = 0; i < n; i++)
			json_array_append_new(a, json_string(hex[i]));
		json_object_set_new(o, "key_ids", a);
		json_print(o);
		return;
	}
	if (from != NULL)
		printf("wrote a %s for %s to %s (mode 0600), key id", what, from, path);
	else
		printf("wrote a new %s to %s (mode 0600), key id", what, path);
	for (uint32_t i = 0; i < n; i++)
		printf("%s %s", i == 0 ? (n > 1 ? "s" : "") : ",", hex[i]);
	printf("\n");
}

static int cmd_keygen(struct cli *cli, int argc, char **argv)
{
	const char *paths[2] = {NULL, NULL};
	int path_count = 0;
	bool client = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else if (strcmp(argv[i], "--client") == 0)
			client = true;
		else if (argv[i][0] == '-')
			usage_fail("keygen: unknown option '%s'", argv[i]);
		else if (path_count < 2)
			paths[path_count++] = argv[i];
		else
			usage_fail("keygen: unexpected argument '%s'", argv[i]);
	}
	char err[ERR_BYTES] = "";
	if (client) {
		if (path_count != 2)
			usage_fail("keygen --client needs SECRET_FILE and OUT_FILE");
		if (sodium_init() < 0) {
			fprintf(stderr, "clusterctl: libsodium failed to initialise\n");
			return EXIT_OTHER;
		}
		/* only the cluster secret can make a credential: a credential
		 * copied is still a credential, but say so plainly */
		struct seal_keyring *kr = seal_keyring_load(paths[0], SEAL_ROLE_NODE, err, sizeof err);
		if (kr == NULL) {
			fprintf(stderr, "clusterctl: %s\n", err);
			return EXIT_OTHER;
		}
		int rc = seal_client_credential_write(kr, paths[1], err, sizeof err);
		seal_keyring_free(kr);
		if (rc != 0) {
			fprintf(stderr, "clusterctl: %s\n", err);
			return EXIT_OTHER;
		}
		keygen_report(cli, paths[1], "client credential", paths[0]);
		return EXIT_OK;
	}
	if (path_count > 1)
		usage_fail("keygen: unexpected argument '%s'", paths[1]);
	const char *path = path_count == 1 ? paths[0] : KEYGEN_FILE_DEFAULT;
	int rv = ch_keygen(path, err, sizeof err);
	if (rv != CH_OK) {
		fprintf(stderr, "clusterctl: %s\n", err[0] != '\0' ? err : ch_strerror(rv));
		return EXIT_OTHER;
	}
	keygen_report(cli, path, "cluster secret", NULL);
	return EXIT_OK;
}

static const char help_http_token[] =
	"usage: clusterctl [-k SECRET_OR_CREDENTIAL] http-token [--all]\n"
	"\n"
	"Prints the bearer token of the node's HTTP service (chorusd --http,\n"
	"docs/http.md): 64 hex characters, derived from the key file given with -k (a\n"
	"cluster secret or a client credential of it give the same token). Send it as\n"
	"`Authorization: Bearer TOKEN`. No node is contacted.\n"
	"\n"
	"During a key rotation the file holds two keys: the token of the primary key\n"
	"is printed; --all prints one per key, primary first (a node accepts the token\n"
	"of any key it holds).\n";

static int cmd_http_token(struct cli *cli, int argc, char **argv)
{
	bool all = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--all") == 0)
			all = true;
		else if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else
			usage_fail("http-token: unexpected argument '%s'", argv[i]);
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "clusterctl: libsodium failed to initialise\n");
		return EXIT_OTHER;
	}
	char err[ERR_BYTES] = "";
	struct seal_keyring *kr = seal_keyring_load(cli->secret, SEAL_ROLE_CLIENT, err, sizeof err);
	if (kr == NULL) {
		fprintf(stderr, "clusterctl: %s\n", err);
		return EXIT_OTHER;
	}
	uint32_t ids[SEAL_KEYS_MAX];
	uint32_t n = seal_keyring_ids(kr, ids);
	if (!all)
		n = 1;
	json_t *arr = cli->json ? json_array() : NULL;
	for (uint32_t i = 0; i < n; i++) {
		uint8_t tok[SEAL_HTTP_TOKEN_BYTES];
		char hex[2 * SEAL_HTTP_TOKEN_BYTES + 1];
		if (seal_keyring_http_token(kr, i, tok) != 0)
			break;
		sodium_bin2hex(hex, sizeof hex, tok, sizeof tok);
		sodium_memzero(tok, sizeof tok);
		if (arr != NULL)
			json_array_append_new(arr, json_string(hex));
		else
			printf("%s\n", hex);
		sodium_memzero(hex, sizeof hex);
	}
	seal_keyring_free(kr);
	if (arr != NULL) {
		json_t *o = json_object();
		json_object_set_new(o, "token", json_incref(json_array_get(arr, 0)));
		if (all)
			json_object_set_new(o, "tokens", arr);
		else
			json_decref(arr);
		json_print(o);
	}
	return EXIT_OK;
}

/* cron next: pure computation, no node (core/cron.h, core/tz.h). */
static int cmd_cron_next(struct cli *cli, int argc, char **argv)
{
	const char *expr = NULL, *from = NULL, *zone = "UTC";
	uint32_t count = CRON_NEXT_COUNT_DEFAULT;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0)
			cli->json = true;
		else if (strcmp(a, "--from") == 0)
			from = opt_value(argc, argv, &i);
		else if (strcmp(a, "--tz") == 0)
			zone = opt_value(argc, argv, &i);
		else if (strcmp(a, "--count") == 0)
			count = parse_u32_or_die(a, opt_value(argc, argv, &i));
		else if (a[0] == '-' && a[1] == '-')
			usage_fail("cron next: unknown option '%s'", a);
		else if (expr == NULL)
			expr = a;
		else
			usage_fail("cron next: unexpected argument '%s' (quote the expression)", a);
	}
	if (expr == NULL)
		usage_fail("cron next needs an expression, e.g. '*/15 * * * *'");
	if (count == 0 || count > CRON_NEXT_COUNT_MAX)
		usage_fail("--count must be 1 to %u", CRON_NEXT_COUNT_MAX);
	char err[ERR_BYTES];
	struct cron_expr e;
	if (cron_parse(expr, &e, err, sizeof err) != 0) {
		fprintf(stderr, "clusterctl: %s\n", err);
		return EXIT_USAGE;
	}
	struct tzcache *cache = tzcache_new(NULL);
	if (cache == NULL) {
		fprintf(stderr, "clusterctl: out of memory\n");
		return EXIT_OTHER;
	}
	const struct tz *z;
	int rc = EXIT_OK;
	if (tzcache_get(cache, zone, &z, err, sizeof err) != 0) {
		fprintf(stderr, "clusterctl: %s\n", err);
		rc = EXIT_USAGE;
		goto out;
	}
	int64_t t = (int64_t)(wall_now_ms() / 1000u);
	if (from != NULL && tz_parse_iso8601(from, z, &t, err, sizeof err) != 0) {
		fprintf(stderr, "clusterctl: --from: %s\n", err);
		rc = EXIT_USAGE;
		goto out;
	}
	json_t *arr = cli->json ? json_array() : NULL;
	for (uint32_t k = 0; k < count; k++) {
		int r = cron_next(&e, z, t, &t);
		if (r != 0) {
			/* an instant out of range, or no time before year 10000 */
			fprintf(stderr, "clusterctl: no%s fire time within the search limits (years "
			                "1900-9999, 400 years ahead)\n", k > 0 ? " further" : "");
			if (k == 0)
				rc = EXIT_USAGE;
			break;
		}
		char buf[TZ_ISO_BYTES];
		tz_format_iso8601(t, tz_utoff_at(z, t), buf, sizeof buf);
		if (arr != NULL)
			json_array_append_new(arr, json_string(buf));
		else
			printf("%s\n", buf);
	}
	if (arr != NULL)
		json_print(arr);
out:
	tzcache_free(cache);
	return rc;
}

/* ------------------------------------------------------------------ */
/* cron: schedules held by the cluster                                 */

#define CRON_NAME_COLS_MAX 32
#define CRON_EXPR_COLS_MAX 40
#define CRON_NOTE_COLS_MAX 60
#define CRON_CATCHUP_MS_MAX (7u * 24u * 3600u * 1000u)
#define CRON_JITTER_MS_MAX (3600u * 1000u)
#define CRON_EVERY_BYTES_MAX 64

/* A schedule name as the node takes it: 1..64 of [A-Za-z0-9._-]. */
static bool cron_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > CH_CRON_NAME_BYTES_MAX)
		return false;
	for (const char *p = name; *p != '\0'; p++) {
		char ch = *p;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '_' || ch == '.'))
			return false;
	}
	return true;
}

static const char *cron_name_or_die(const char *cmd, const char *name)
{
	if (name == NULL)
		usage_fail("cron %s needs a schedule NAME", cmd);
	if (!cron_name_ok(name))
		usage_fail("cron %s: '%s' is not a schedule name (1 to %d letters, digits, '-', '_' "
		           "or '.')", cmd, name, CH_CRON_NAME_BYTES_MAX);
	return name;
}

/* Does an ISO-8601 time end with its own offset ("Z", "+HH:MM", "-HH:MM")?
 * The date's own dashes are within its first 10 characters. */
static bool iso_has_offset(const char *s)
{
	size_t n = strlen(s);
	if (n > 0 && (s[n - 1] == 'Z' || s[n - 1] == 'z'))
		return true;
	return n > 10 && strpbrk(s + 10, "+-") != NULL;
}

/* T: unix seconds, or ISO-8601 with an offset; without one, a local time
 * in `zone` (NULL: none known, so an offset is required). Exits 2 on a bad
 * T, naming the option. */
static int64_t parse_time_or_die(const char *opt, const char *s, struct tzcache *cache,
                                 const char *zone)
{
	uint64_t secs;
	if (parse_u64(s, &secs)) {
		if (secs == 0 || secs > (uint64_t)INT64_MAX)
			usage_fail("%s: %s is not a time", opt, s);
		return (int64_t)secs;
	}
	const struct tz *z = tz_utc();
	char err[ERR_BYTES];
	if (!iso_has_offset(s)) {
		if (zone == NULL)
			usage_fail("%s: '%s' needs an offset (Z or +HH:MM), or give unix seconds", opt, s);
		if (cache == NULL || tzcache_get(cache, zone, &z, err, sizeof err) != 0)
			usage_fail("%s: '%s' has no offset and the zone cannot be read here (%s): add "
			           "an offset", opt, s, cache == NULL ? "out of memory" : err);
	}
	int64_t t = 0;
	if (tz_parse_iso8601(s, z, &t, err, sizeof err) != 0)
		usage_fail("%s: %s", opt, err);
	if (t <= 0)
		usage_fail("%s: %s is before 1970", opt, s);
	return t;
}

/* t (unix s) as ISO-8601 in `zone` when this machine has it, else UTC;
 * "-" for 0. buf needs TZ_ISO_BYTES. */
static void cron_time_text(struct tzcache *cache, const char *zone, int64_t t, char *buf,
                           size_t len)
{
	if (t == 0) {
		snprintf(buf, len, "-");
		return;
	}
	const struct tz *z = tz_utc();
	char err[TZ_ERR_BYTES];
	if (cache != NULL && zone != NULL && zone[0] != '\0' &&
	    tzcache_get(cache, zone, &z, err, sizeof err) != 0)
		z = tz_utc();
	tz_format_iso8601(t, tz_utoff_at(z, t), buf, len);
}

/* "active", "paused", "paused: NOTE", "ended" (no next occurrence) or
 * "broken: WHY" (the node cannot evaluate it: a note while not paused). */
static void cron_state_text(const struct ch_cron_info *ci, char *buf, size_t len)
{
	if (ci->paused && ci->note[0] != '\0')
		snprintf(buf, len, "paused: %s", ci->note);
	else if (ci->paused)
		snprintf(buf, len, "paused");
	else if (ci->note[0] != '\0')
		snprintf(buf, len, "broken: %s", ci->note);
	else if (ci->next_s == 0)
		snprintf(buf, len, "ended");
	else
		snprintf(buf, len, "active");
}

/* n bytes as a JSON string in base64 (standard alphabet, padded); NULL
 * when out of memory. */
static json_t *base64_json(const uint8_t *p, size_t n)
{
	size_t b64_len = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(b64_len);
	if (b64 == NULL)
		return NULL;
	sodium_bin2base64(b64, b64_len, p, n, sodium_base64_VARIANT_ORIGINAL);
	json_t *s = json_string(b64);
	free(b64);
	return s;
}

/* Times in a schedule's zone for views.c, from this machine's tzdata. */
static void cron_time_view(void *ctx, const char *zone, int64_t t, char *buf, size_t len)
{
	cron_time_text(ctx, zone, t, buf, len);
}

/* The wire form of a schedule rebuilt around ci (pointers into ci, valid
 * while it is), so that its JSON comes from views.c like GET /api/schedules. */
struct cron_wire {
	Chorus__CronInfo info;
	Chorus__CronSpec spec;
	Chorus__TaskOptions opts;
	Chorus__CronRun *runs;
	Chorus__CronRun **runp;
};

static void cron_wire_build(struct cron_wire *w, const struct ch_cron_info *ci)
{
	chorus__cron_info__init(&w->info);
	chorus__cron_spec__init(&w->spec);
	chorus__task_options__init(&w->opts);
	w->spec.name = ci->name;
	w->spec.expr = ci->expr;
	w->spec.tz = ci->tz;
	w->spec.handler = ci->handler;
	w->spec.payload.data = ci->payload;
	w->spec.payload.len = ci->payload_len;
	w->spec.overlap = (Chorus__Overlap)ci->overlap;
	w->spec.catchup_ms = ci->catchup_ms;
	w->spec.start_s = ci->start_s;
	w->spec.end_s = ci->end_s;
	w->spec.max_runs = ci->max_runs;
	w->spec.jitter_ms = ci->jitter_ms;
	w->spec.pause_on_failure = ci->pause_on_failure != 0;
	w->spec.on = ci->on;
	w->opts.timeout_ms = ci->timeout_ms;
	w->opts.restart = ci->restart == CH_RESTART_TRANSIENT ? CHORUS__RESTART_POLICY__RESTART_TRANSIENT
	                                                      : CHORUS__RESTART_POLICY__RESTART_TEMPORARY;
	w->opts.max_attempts = ci->max_attempts;
	w->opts.backoff_ms = ci->backoff_ms;
	w->opts.argv = ci->argv;
	w->opts.n_argv = ci->argv_count;
	w->opts.require = ci->require;
	w->opts.n_require = ci->require_count;
	w->spec.opts = &w->opts;
	w->info.spec = &w->spec;
	w->info.paused = ci->paused != 0;
	w->info.note = ci->note;
	w->info.runs = ci->runs;
	w->info.next_s = ci->next_s;
	w->info.last_s = ci->last_s;
	w->runs = calloc(ci->history_count ? ci->history_count : 1, sizeof *w->runs);
	w->runp = calloc(ci->history_count ? ci->history_count : 1, sizeof *w->runp);
	if (w->runs == NULL || w->runp == NULL)
		return; /* no history then */
	for (uint32_t i = 0; i < ci->history_count; i++) {
		const struct ch_cron_run *r = &ci->history[i];
		Chorus__CronRun *x = &w->runs[i];
		chorus__cron_run__init(x);
		x->scheduled_s = r->scheduled_s;
		x->fired_ms = r->fired_ms;
		x->node = r->node;
		x->task_id = r->task_id;
		x->outcome = r->outcome;
		x->why = r->why;
		w->runp[i] = x;
	}
	w->info.history = w->runp;
	w->info.n_history = ci->history_count;
}

static void cron_wire_free(struct cron_wire *w)
{
	free(w->runs);
	free(w->runp);
}

static json_t *cron_history_json(struct tzcache *cache, const struct ch_cron_info *ci)
{
	struct cron_wire w;
	cron_wire_build(&w, ci);
	struct view_clock clk = { cron_time_view, cache };
	json_t *a = view_cron_history(&w.info, &clk);
	cron_wire_free(&w);
	return a;
}

/* A schedule as JSON: the same fields as the text, times both as unix
 * seconds and as ISO-8601 in the schedule's zone (views.c). */
static json_t *cron_info_json(struct tzcache *cache, const struct ch_cron_info *ci,
                              bool with_history)
{
	struct cron_wire w;
	cron_wire_build(&w, ci);
	struct view_clock clk = { cron_time_view, cache };
	json_t *o = view_cron_info(&w.info, with_history, &clk);
	cron_wire_free(&w);
	return o;
}

/* The history as a table, newest first. */
static void cron_history_table(struct tzcache *cache, const struct ch_cron_info *ci)
{
	if (ci->history_count == 0) {
		printf("(no runs yet)\n");
		return;
	}
	int node_w = (int)strlen("NODE");
	for (uint32_t i = 0; i < ci->history_count; i++) {
		int w = (int)strlen(ci->history[i].node);
		if (w > node_w)
			node_w = w > MEMBER_NAME_COLS_MAX ? MEMBER_NAME_COLS_MAX : w;
	}
	printf("%-25s  %-10s  %-*s  %-20s  %s\n", "SCHEDULED", "OUTCOME", node_w, "NODE", "TASK",
	       "WHY");
	for (uint32_t i = 0; i < ci->history_count; i++) {
		const struct ch_cron_run *r = &ci->history[i];
		char when[TZ_ISO_BYTES], task[24];
		cron_time_text(cache, ci->tz, r->scheduled_s, when, sizeof when);
		if (r->task_id != 0)
			snprintf(task, sizeof task, "%llu", (unsigned long long)r->task_id);
		else
			snprintf(task, sizeof task, "-");
		printf("%-25s  %-10s  %-*s  %-20s  ", when, r->outcome[0] != '\0' ? r->outcome : "-",
		       node_w, r->node[0] != '\0' ? r->node : "-", task);
		if (r->why[0] != '\0')
			print_escaped(stdout, (const uint8_t *)r->why, strlen(r->why));
		else
			putchar('-');
		putchar('\n');
	}
}

static void cron_info_table(struct tzcache *cache, const struct ch_cron_info *ci)
{
	char buf[TZ_ISO_BYTES], state[CH_CRON_NOTE_BYTES_MAX + 32];
	cron_state_text(ci, state, sizeof state);
	printf("%-12s %s\n", "schedule", ci->name);
	printf("%-12s %s\n", "expr", ci->expr);
	printf("%-12s %s\n", "tz", ci->tz[0] != '\0' ? ci->tz : "UTC");
	printf("%-12s %s\n", "state", state);
	cron_time_text(cache, ci->tz, ci->next_s, buf, sizeof buf);
	printf("%-12s %s\n", "next", buf);
	cron_time_text(cache, ci->tz, ci->last_s, buf, sizeof buf);
	printf("%-12s %s\n", "last", buf);
	if (ci->max_runs > 0)
		printf("%-12s %u of at most %u\n", "runs", ci->runs, ci->max_runs);
	else
		printf("%-12s %u\n", "runs", ci->runs);
	printf("%-12s %s\n", "handler", ci->handler);
	printf("%-12s %zu bytes", "payload", ci->payload_len);
	if (ci->payload_len > 0) {
		fputs(": ", stdout);
		print_escaped(stdout, ci->payload, ci->payload_len > 200 ? 200 : ci->payload_len);
		if (ci->payload_len > 200)
			fputs("...", stdout);
	}
	putchar('\n');
	printf("%-12s %s\n", "on", ci->on[0] != '\0' ? ci->on : "any member (placement)");
	printf("%-12s %s\n", "overlap", ch_overlap_name(ci->overlap));
	if (ci->catchup_ms > 0)
		printf("%-12s %llu ms\n", "catch-up", (unsigned long long)ci->catchup_ms);
	else
		printf("%-12s the node's default\n", "catch-up");
	if (ci->start_s != 0) {
		cron_time_text(cache, ci->tz, ci->start_s, buf, sizeof buf);
		printf("%-12s %s\n", "start", buf);
	}
	if (ci->end_s != 0) {
		cron_time_text(cache, ci->tz, ci->end_s, buf, sizeof buf);
		printf("%-12s %s\n", "end", buf);
	}
	if (ci->jitter_ms > 0)
		printf("%-12s %llu ms\n", "jitter", (unsigned long long)ci->jitter_ms);
	if (ci->pause_on_failure)
		printf("%-12s pause the schedule\n", "on failure");
	printf("%-12s %s", "restart", ci->restart == CH_RESTART_TRANSIENT ? "transient" : "temporary");
	if (ci->restart == CH_RESTART_TRANSIENT && ci->max_attempts > 0)
		printf(", at most %u attempts", ci->max_attempts);
	putchar('\n');
	if (ci->timeout_ms > 0)
		printf("%-12s %u ms\n", "timeout", ci->timeout_ms);
	if (ci->argv_count > 0) {
		printf("%-12s", "argv");
		for (uint32_t i = 0; i < ci->argv_count; i++)
			printf(" %s", ci->argv[i]);
		putchar('\n');
	}
	if (ci->require_count > 0) {
		printf("%-12s", "require");
		for (uint32_t i = 0; i < ci->require_count; i++)
			printf("%s%s", i > 0 ? "," : " ", ci->require[i]);
		putchar('\n');
	}
}

static void cron_list_table(struct tzcache *cache, struct ch_cron_info **v, uint32_t n)
{
	if (n == 0) {
		printf("(no schedules)\n");
		return;
	}
	int name_w = (int)strlen("NAME"), expr_w = (int)strlen("EXPR"), tz_w = (int)strlen("TZ");
	for (uint32_t i = 0; i < n; i++) {
		int w = (int)strlen(v[i]->name);
		if (w > name_w)
			name_w = w > CRON_NAME_COLS_MAX ? CRON_NAME_COLS_MAX : w;
		w = (int)strlen(v[i]->expr);
		if (w > expr_w)
			expr_w = w > CRON_EXPR_COLS_MAX ? CRON_EXPR_COLS_MAX : w;
		w = (int)strlen(v[i]->tz);
		if (w > tz_w)
			tz_w = w > (int)TZ_NAME_BYTES_MAX ? (int)TZ_NAME_BYTES_MAX : w;
	}
	printf("%-*s  %-*s  %-*s  %-25s  %6s  %s\n", name_w, "NAME", expr_w, "EXPR", tz_w, "TZ",
	       "NEXT", "RUNS", "STATE");
	for (uint32_t i = 0; i < n; i++) {
		const struct ch_cron_info *ci = v[i];
		char next[TZ_ISO_BYTES], state[CH_CRON_NOTE_BYTES_MAX + 32];
		cron_time_text(cache, ci->tz, ci->next_s, next, sizeof next);
		cron_state_text(ci, state, sizeof state);
		printf("%-*s  %-*s  %-*s  %-25s  %6u  ", name_w, ci->name, expr_w, ci->expr, tz_w,
		       ci->tz[0] != '\0' ? ci->tz : "UTC", next, ci->runs);
		print_escaped(stdout, (const uint8_t *)state,
		              strlen(state) > CRON_NOTE_COLS_MAX ? CRON_NOTE_COLS_MAX : strlen(state));
		putchar('\n');
	}
}

/* What `cron add` and `cron every` take. */
struct cron_add_args {
	struct ch_cron_spec spec;
	const char *payload_arg;
	const char *payload_file; /* "-" = standard input */
	const char *start_arg, *end_arg;
	const char **argv;        /* NULL-terminated; argv_count entries */
	size_t argv_count;
	const char **require;     /* NULL-terminated */
	size_t require_count;
	bool retries_given, backoff_given;
	char every_expr[CRON_EVERY_BYTES_MAX];
};

/* Parses cron add/every's arguments and checks everything that can be
 * checked here, exiting 2 on the first problem: no node is contacted for
 * a malformed schedule. av and req have room for argc entries each. */
static void cron_add_parse(const char *cmd, int argc, char **argv, struct cron_add_args *a,
                           struct tzcache *cache)
{
	bool every = strcmp(cmd, "every") == 0;
	const char *pos[4] = { NULL, NULL, NULL, NULL }; /* NAME EXPR|DUR HANDLER PAYLOAD */
	int pos_count = 0;
	for (int i = 2; i < argc; i++) {
		const char *o = argv[i];
		if (strcmp(o, "--") == 0) {
			for (i++; i < argc; i++)
				a->argv[a->argv_count++] = argv[i];
			break;
		} else if (strcmp(o, "--json") == 0) {
			(void)0; /* handled by the caller */
		} else if (strcmp(o, "--tz") == 0) {
			a->spec.tz = opt_value(argc, argv, &i);
		} else if (strcmp(o, "--on") == 0) {
			a->spec.on = opt_value(argc, argv, &i);
		} else if (strcmp(o, "--overlap") == 0) {
			const char *p = opt_value(argc, argv, &i);
			a->spec.overlap = ch_overlap_parse(p);
			if (a->spec.overlap < 0)
				usage_fail("cron %s: --overlap: unknown policy '%s' (skip, buffer_one, "
				           "buffer_all, cancel_other or allow_all)", cmd, p);
		} else if (strcmp(o, "--catchup") == 0) {
			a->spec.catchup_ms = parse_dur_or_die(o, opt_value(argc, argv, &i));
		} else if (strcmp(o, "--start") == 0) {
			a->start_arg = opt_value(argc, argv, &i);
		} else if (strcmp(o, "--end") == 0) {
			a->end_arg = opt_value(argc, argv, &i);
		} else if (strcmp(o, "--max-runs") == 0) {
			a->spec.max_runs = parse_u32_or_die(o, opt_value(argc, argv, &i));
		} else if (strcmp(o, "--jitter") == 0) {
			a->spec.jitter_ms = parse_dur_or_die(o, opt_value(argc, argv, &i));
		} else if (strcmp(o, "--pause-on-failure") == 0) {
			a->spec.pause_on_failure = 1;
		} else if (strcmp(o, "--timeout") == 0) {
			a->spec.task.timeout_ms = parse_dur_or_die(o, opt_value(argc, argv, &i));
		} else if (strcmp(o, "--transient") == 0) {
			a->spec.task.restart = CH_RESTART_TRANSIENT;
		} else if (strcmp(o, "--retries") == 0) {
			a->spec.task.max_attempts = parse_u32_or_die(o, opt_value(argc, argv, &i));
			a->retries_given = true;
		} else if (strcmp(o, "--backoff") == 0) {
			a->spec.task.backoff_ms = parse_dur_or_die(o, opt_value(argc, argv, &i));
			a->backoff_given = true;
		} else if (strcmp(o, "--arg") == 0) {
			a->argv[a->argv_count++] = opt_value(argc, argv, &i);
		} else if (strcmp(o, "--require") == 0) {
			const char *tag = opt_value(argc, argv, &i);
			if (tag[0] == '\0')
				usage_fail("cron %s: --require needs a tag", cmd);
			a->require[a->require_count++] = tag;
		} else if (strcmp(o, "-f") == 0 || strcmp(o, "--file") == 0) {
			a->payload_file = opt_value(argc, argv, &i);
		} else if (strcmp(o, "-") == 0 && pos_count == 3 && a->payload_file == NULL) {
			a->payload_file = "-";
		} else if (o[0] == '-' && o[1] != '\0') {
			usage_fail("cron %s: unknown option '%s'", cmd, o);
		} else if (pos_count < 4) {
			pos[pos_count++] = o;
		} else {
			usage_fail("cron %s: unexpected argument '%s'%s", cmd, o,
			           every ? "" : " (quote the expression)");
		}
	}
	if (pos_count < 3)
		usage_fail(every ? "cron every needs NAME DURATION HANDLER [PAYLOAD]"
		                 : "cron add needs NAME 'EXPR' HANDLER [PAYLOAD]");
	a->spec.name = cron_name_or_die(cmd, pos[0]);
	if (every) {
		int k = snprintf(a->every_expr, sizeof a->every_expr, "@every %s", pos[1]);
		if (k < 0 || (size_t)k >= sizeof a->every_expr)
			usage_fail("cron every: '%s' is not a duration", pos[1]);
		a->spec.expr = a->every_expr;
	} else {
		a->spec.expr = pos[1];
	}
	a->spec.handler = pos[2];
	if (a->spec.handler[0] == '\0')
		usage_fail("cron %s needs a HANDLER", cmd);
	a->payload_arg = pos[3];
	if (a->payload_arg != NULL && a->payload_file != NULL)
		usage_fail("cron %s: give one of PAYLOAD, -f FILE or -", cmd);

	char err[ERR_BYTES];
	struct cron_expr e;
	if (cron_parse(a->spec.expr, &e, err, sizeof err) != 0) {
		fprintf(stderr, "clusterctl: %s\n", err);
		exit(EXIT_USAGE);
	}
	const char *zone = a->spec.tz;
	if (zone != NULL && zone[0] != '\0' && strcmp(zone, "UTC") != 0 &&
	    tzload_check_name(zone, err, sizeof err) != 0)
		usage_fail("cron %s: --tz: %s", cmd, err);
	if (a->spec.on != NULL && strcmp(a->spec.on, "all") != 0 &&
	    (strncmp(a->spec.on, "tag:", 4) != 0 || a->spec.on[4] == '\0'))
		usage_fail("cron %s: --on takes tag:NAME (or all), got '%s'", cmd, a->spec.on);
	if (a->spec.catchup_ms != 0 && a->spec.catchup_ms < 1000)
		usage_fail("cron %s: --catchup must be at least 1s", cmd);
	if (a->spec.catchup_ms > CRON_CATCHUP_MS_MAX)
		usage_fail("cron %s: --catchup must be at most 7 days (168h)", cmd);
	if (a->spec.jitter_ms > CRON_JITTER_MS_MAX)
		usage_fail("cron %s: --jitter must be at most 1h", cmd);
	if (e.kind == CRON_KIND_EVERY && a->spec.jitter_ms > 0 &&
	    a->spec.jitter_ms >= (uint64_t)e.every_s * 1000u)
		usage_fail("cron %s: --jitter must be shorter than the interval", cmd);
	if ((a->retries_given || a->backoff_given) && a->spec.task.restart != CH_RESTART_TRANSIENT)
		usage_fail("cron %s: --retries and --backoff go with --transient", cmd);
	if (a->argv_count > ARGV_COUNT_MAX)
		usage_fail("cron %s: more than %u argv entries", cmd, ARGV_COUNT_MAX);
	if (a->require_count > CH_REQUIRE_COUNT_MAX)
		usage_fail("cron %s: more than %d --require tags", cmd, CH_REQUIRE_COUNT_MAX);
	/* a local time without an offset is in the schedule's zone */
	const char *local_zone = zone != NULL && zone[0] != '\0' ? zone : "UTC";
	if (a->start_arg != NULL)
		a->spec.start_s = parse_time_or_die("--start", a->start_arg, cache, local_zone);
	if (a->end_arg != NULL)
		a->spec.end_s = parse_time_or_die("--end", a->end_arg, cache, local_zone);
	if (a->spec.start_s != 0 && a->spec.end_s != 0 && a->spec.end_s < a->spec.start_s)
		usage_fail("cron %s: --end is before --start", cmd);
	if (a->argv_count > 0)
		a->spec.task.argv = a->argv;
	if (a->require_count > 0)
		a->spec.task.require = a->require;
}

static int cron_add(struct cli *cli, const char *cmd, int argc, char **argv, struct tzcache *cache)
{
	struct cron_add_args a = { .spec.task.restart = CH_RESTART_TEMPORARY };
	/* One allocation for both lists, each NULL-terminated by calloc. */
	const char **lists = calloc(2 * ((size_t)argc + 1), sizeof *lists);
	if (lists == NULL) {
		fprintf(stderr, "clusterctl: out of memory\n");
		return EXIT_OTHER;
	}
	a.argv = lists;
	a.require = lists + argc + 1;
	cron_add_parse(cmd, argc, argv, &a, cache);

	uint8_t *payload = NULL;
	size_t payload_len = 0;
	int rc = EXIT_OK;
	if (a.payload_file != NULL) {
		rc = read_source(a.payload_file, &payload, &payload_len);
	} else if (a.payload_arg != NULL) {
		payload_len = strlen(a.payload_arg);
		payload = (uint8_t *)strdup(a.payload_arg);
		if (payload == NULL)
			rc = EXIT_OTHER;
	}
	if (rc == EXIT_OK)
		rc = connect_cli(cli);
	if (rc != EXIT_OK) {
		free(payload);
		free(lists);
		return rc;
	}
	a.spec.payload = payload;
	a.spec.payload_len = payload_len;
	char err[ERR_BYTES] = "";
	struct ch_cron_info *ci = NULL;
	int rv = ch_cron_add(cli->c, &a.spec, &ci, err, sizeof err);
	free(payload);
	free(lists);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_print(cron_info_json(cache, ci, false));
	} else {
		char next[TZ_ISO_BYTES];
		cron_time_text(cache, ci->tz, ci->next_s, next, sizeof next);
		printf("added schedule %s (%s%s%s), next run %s\n", ci->name, ci->expr,
		       ci->tz[0] != '\0' ? " in " : "", ci->tz, next);
	}
	ch_cron_info_free(ci);
	return EXIT_OK;
}

/* The options of the cron subcommands that take a NAME. */
struct cron_named_args {
	const char *name;
	const char *note;
	uint32_t limit;
	const char *from_arg, *to_arg;
	int overlap;
};

static void cron_named_parse(const char *cmd, int argc, char **argv, struct cron_named_args *a)
{
	bool takes_limit = strcmp(cmd, "show") == 0 || strcmp(cmd, "history") == 0;
	bool backfill = strcmp(cmd, "backfill") == 0;
	for (int i = 2; i < argc; i++) {
		const char *o = argv[i];
		if (strcmp(o, "--json") == 0) {
			(void)0; /* handled by the caller */
		} else if (takes_limit && strcmp(o, "--limit") == 0) {
			a->limit = parse_u32_or_die(o, opt_value(argc, argv, &i));
			if (a->limit == 0)
				usage_fail("cron %s: --limit must be at least 1", cmd);
		} else if (strcmp(cmd, "pause") == 0 && strcmp(o, "--note") == 0) {
			a->note = opt_value(argc, argv, &i);
			if (strlen(a->note) > CH_CRON_NOTE_BYTES_MAX)
				usage_fail("cron pause: --note has at most %d bytes", CH_CRON_NOTE_BYTES_MAX);
		} else if (backfill && strcmp(o, "--from") == 0) {
			a->from_arg = opt_value(argc, argv, &i);
		} else if (backfill && strcmp(o, "--to") == 0) {
			a->to_arg = opt_value(argc, argv, &i);
		} else if (backfill && strcmp(o, "--overlap") == 0) {
			const char *p = opt_value(argc, argv, &i);
			a->overlap = ch_overlap_parse(p);
			if (a->overlap < 0)
				usage_fail("cron backfill: --overlap: unknown policy '%s' (skip, buffer_one, "
				           "buffer_all, cancel_other or allow_all)", p);
		} else if (o[0] == '-' && o[1] != '\0') {
			usage_fail("cron %s: unknown option '%s'", cmd, o);
		} else if (a->name == NULL) {
			a->name = o;
		} else {
			usage_fail("cron %s: unexpected argument '%s'", cmd, o);
		}
	}
	cron_name_or_die(cmd, a->name);
}

/* Prints the outcome of a change: the schedule (--json) or one line. */
static void cron_changed(struct cli *cli, struct tzcache *cache, const char *cmd,
                         const struct ch_cron_info *ci)
{
	if (cli->json) {
		json_print(cron_info_json(cache, ci, strcmp(cmd, "trigger") == 0));
		return;
	}
	char next[TZ_ISO_BYTES];
	cron_time_text(cache, ci->tz, ci->next_s, next, sizeof next);
	if (strcmp(cmd, "pause") == 0) {
		printf("paused schedule %s%s%s\n", ci->name, ci->note[0] != '\0' ? ": " : "", ci->note);
	} else if (strcmp(cmd, "resume") == 0) {
		printf("resumed schedule %s, next run %s\n", ci->name, next);
	} else if (strcmp(cmd, "trigger") == 0 && ci->history_count > 0) {
		const struct ch_cron_run *r = &ci->history[0];
		printf("triggered schedule %s: %s", ci->name, r->outcome);
		if (r->task_id != 0)
			printf(", task %llu", (unsigned long long)r->task_id);
		if (r->node[0] != '\0')
			printf(" on %s", r->node);
		putchar('\n');
	} else if (strcmp(cmd, "trigger") == 0) {
		printf("triggered schedule %s\n", ci->name);
	} else {
		printf("backfill of schedule %s committed (see clusterctl cron history %s)\n", ci->name,
		       ci->name);
	}
}

static int cron_named(struct cli *cli, const char *cmd, int argc, char **argv,
                      struct tzcache *cache)
{
	struct cron_named_args a = { .overlap = CH_OVERLAP_SKIP };
	cron_named_parse(cmd, argc, argv, &a);
	int64_t from_s = 0, to_s = 0;
	if (strcmp(cmd, "backfill") == 0) {
		if (a.from_arg == NULL || a.to_arg == NULL)
			usage_fail("cron backfill needs --from T and --to T");
		/* the schedule's zone is on the node: an offset is required */
		from_s = parse_time_or_die("--from", a.from_arg, cache, NULL);
		to_s = parse_time_or_die("--to", a.to_arg, cache, NULL);
		if (to_s < from_s)
			usage_fail("cron backfill: --to is before --from");
	}
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char err[ERR_BYTES] = "";
	struct ch_cron_info *ci = NULL;
	int rv;
	if (strcmp(cmd, "rm") == 0) {
		rv = ch_cron_remove(cli->c, a.name, err, sizeof err);
		if (rv != CH_OK)
			return report(cli, rv, err);
		if (cli->json) {
			json_t *o = json_object();
			json_object_set_new(o, "name", json_string(a.name));
			json_object_set_new(o, "removed", json_true());
			json_print(o);
		} else {
			printf("removed schedule %s\n", a.name);
		}
		return EXIT_OK;
	}
	if (strcmp(cmd, "show") == 0 || strcmp(cmd, "history") == 0)
		rv = ch_cron_show(cli->c, a.name, a.limit, &ci, err, sizeof err);
	else if (strcmp(cmd, "pause") == 0)
		rv = ch_cron_pause(cli->c, a.name, a.note, &ci, err, sizeof err);
	else if (strcmp(cmd, "resume") == 0)
		rv = ch_cron_resume(cli->c, a.name, &ci, err, sizeof err);
	else if (strcmp(cmd, "trigger") == 0)
		rv = ch_cron_trigger(cli->c, a.name, &ci, err, sizeof err);
	else
		rv = ch_cron_backfill(cli->c, a.name, from_s, to_s, a.overlap, &ci, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (strcmp(cmd, "show") == 0) {
		if (cli->json) {
			json_print(cron_info_json(cache, ci, true));
		} else {
			cron_info_table(cache, ci);
			putchar('\n');
			cron_history_table(cache, ci);
		}
	} else if (strcmp(cmd, "history") == 0) {
		if (cli->json)
			json_print(cron_history_json(cache, ci));
		else
			cron_history_table(cache, ci);
	} else {
		cron_changed(cli, cache, cmd, ci);
	}
	ch_cron_info_free(ci);
	return EXIT_OK;
}

static int cron_list(struct cli *cli, int argc, char **argv, struct tzcache *cache)
{
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") != 0)
			usage_fail("cron list: unexpected argument '%s'", argv[i]);
	}
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char err[ERR_BYTES] = "";
	struct ch_cron_info **v = NULL;
	uint32_t n = 0;
	int rv = ch_cron_list(cli->c, &v, &n, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *a = json_array();
		for (uint32_t i = 0; i < n; i++)
			json_array_append_new(a, cron_info_json(cache, v[i], false));
		json_print(a);
	} else {
		cron_list_table(cache, v, n);
	}
	ch_cron_infos_free(v, n);
	return EXIT_OK;
}

/* cron SUBCOMMAND: `next` computes here; the others ask the cluster. */
static int cmd_cron(struct cli *cli, int argc, char **argv)
{
	if (argc < 2)
		usage_fail("cron needs a subcommand: add, every, list, show, history, rm, pause, "
		           "resume, trigger, backfill or next");
	const char *sub = argv[1];
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
	}
	if (strcmp(sub, "next") == 0)
		return cmd_cron_next(cli, argc, argv);
	bool named = strcmp(sub, "show") == 0 || strcmp(sub, "history") == 0 ||
	             strcmp(sub, "rm") == 0 || strcmp(sub, "pause") == 0 ||
	             strcmp(sub, "resume") == 0 || strcmp(sub, "trigger") == 0 ||
	             strcmp(sub, "backfill") == 0;
	bool add = strcmp(sub, "add") == 0 || strcmp(sub, "every") == 0;
	if (!named && !add && strcmp(sub, "list") != 0)
		usage_fail("cron: unknown subcommand '%s' (add, every, list, show, history, rm, pause, "
		           "resume, trigger, backfill, next)", sub);
	/* zones for printing times in each schedule's own; NULL: UTC only */
	struct tzcache *cache = tzcache_new(NULL);
	int rc;
	if (add)
		rc = cron_add(cli, sub, argc, argv, cache);
	else if (named)
		rc = cron_named(cli, sub, argc, argv, cache);
	else
		rc = cron_list(cli, argc, argv, cache);
	tzcache_free(cache);
	return rc;
}

/* ------------------------------------------------------------------ */
/* cache                                                               */

#define CACHE_SCAN_STEPS_MAX (1u << 24) /* round trips of one whole-keyspace scan */
#define CACHE_KEY_TEXT_BYTES 64u        /* of a key quoted in a message */
#define CACHE_NAME_DEFAULT "default"

/* What a cache subcommand takes besides --cache, --consistency and --json. */
enum cache_takes {
	CACHE_TAKES_PUT = 1,  /* --ttl, --nx, --xx, --keepttl, --value-file */
	CACHE_TAKES_SCAN = 2, /* --match, --count, --cursor */
	CACHE_TAKES_YES = 4,  /* --yes */
	CACHE_TAKES_UPDATE = 8, /* --ttl, --lease, --delete-if-empty, then -- COMMAND */
	CACHE_TAKES_COMPUTE = 16, /* --ttl, --timeout, --arg, --require */
};

struct cache_cmd {
	const char *name;
	int args_min, args_max; /* positional arguments; args_max -1 = any number */
	unsigned takes;         /* enum cache_takes */
	const char *args;       /* what they are, for a usage error */
};

static const struct cache_cmd cache_cmds[] = {
	{ "get", 1, 1, 0, "KEY" },
	{ "put", 1, 2, CACHE_TAKES_PUT, "KEY VALUE (or KEY --value-file PATH)" },
	{ "get-or-compute", 2, 3, CACHE_TAKES_COMPUTE, "KEY HANDLER [PAYLOAD]" },
	{ "del", 1, -1, 0, "KEY..." },
	{ "incr", 1, 2, 0, "KEY [DELTA]" },
	{ "ttl", 1, 1, 0, "KEY" },
	{ "expire", 2, 2, 0, "KEY DURATION" },
	{ "persist", 1, 1, 0, "KEY" },
	{ "exists", 1, -1, 0, "KEY..." },
	{ "getdel", 1, 1, 0, "KEY" },
	{ "update", 2, -1, CACHE_TAKES_UPDATE, "KEY -- COMMAND [ARG...]" },
	{ "scan", 0, 0, CACHE_TAKES_SCAN, "no argument" },
	{ "stats", 0, 0, 0, "no argument" },
	{ "partitions", 0, 0, 0, "no argument" },
	{ "flush", 0, 0, CACHE_TAKES_YES, "no argument" },
	{ "dbsize", 0, 0, 0, "no argument" },
};
#define CACHE_CMD_COUNT (sizeof cache_cmds / sizeof cache_cmds[0])

struct cache_args {
	const struct cache_cmd *cmd;
	const char **args; /* the positional arguments (argc of them at most) */
	int arg_count;
	struct ch_cache_opts opts;
	int64_t ttl_ms;    /* put: 0 = the cache's default */
	uint32_t flags;    /* put: CH_CACHE_NX, CH_CACHE_XX, CH_CACHE_KEEPTTL */
	const char *value_file;
	const char *match;
	uint32_t count;    /* scan: 0 = the node's default */
	uint64_t cursor;
	bool has_cursor;   /* one step from --cursor, not the whole keyspace */
	bool yes;
	int64_t delta;     /* incr */
	int64_t expire_ms; /* expire */
	uint32_t lease_ms; /* update */
	bool delete_if_empty;
	/* get-or-compute: the task's options; argv and require point into
	 * `lists` (NULL-terminated, argc entries each at most) */
	struct ch_task_opts task;
	const char **argv_list, **require_list;
	int argv_count, require_count;
};

/* A time to live: a number with a unit, ms, s, m, h or d (bare = seconds),
 * above 0. */
static int64_t parse_ttl_or_die(const char *what, const char *s)
{
	const char *text = s != NULL ? s : "";
	errno = 0;
	char *end;
	long long v = strtoll(text, &end, 10);
	long long mult = 0;
	if (errno == 0 && end != text && text[0] != '-' && text[0] != '+') {
		if (*end == '\0' || strcmp(end, "s") == 0)
			mult = 1000;
		else if (strcmp(end, "ms") == 0)
			mult = 1;
		else if (strcmp(end, "m") == 0)
			mult = 60000;
		else if (strcmp(end, "h") == 0)
			mult = 3600000;
		else if (strcmp(end, "d") == 0)
			mult = 86400000;
	}
	if (mult == 0)
		usage_fail("%s needs a duration like 500ms, 30s, 10m, 2h or 7d, got '%s'", what, text);
	if (v <= 0)
		usage_fail("%s must be more than 0", what);
	if (v > INT64_MAX / mult)
		usage_fail("%s is too long: '%s'", what, text);
	return (int64_t)(v * mult);
}

/* "-5" is a negative DELTA, not an option. */
static bool is_negative_number(const char *s)
{
	if (s[0] != '-' || s[1] == '\0')
		return false;
	for (const char *p = s + 1; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return false;
	}
	return true;
}

static int64_t parse_delta_or_die(const char *s)
{
	errno = 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		usage_fail("cache incr: DELTA must be a 64-bit integer, got '%s'", s);
	return (int64_t)v;
}

/* A key quoted for a message: control bytes, quotes and backslashes
 * escaped (and every byte above 0x7F, unless the key is UTF-8), cut at
 * CACHE_KEY_TEXT_BYTES with "...". */
static void key_text(const char *key, char *buf, size_t len)
{
	size_t o = 0, i = 0;
	bool utf8 = utf8_valid((const uint8_t *)key, strlen(key));
	for (; key[i] != '\0' && i < CACHE_KEY_TEXT_BYTES && o + 5 < len; i++) {
		unsigned char c = (unsigned char)key[i];
		if (c < 0x20 || c == 0x7F || (c > 0x7F && !utf8))
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
		else if (c == '\'' || c == '\\')
			o += (size_t)snprintf(buf + o, len - o, "\\%c", c);
		else
			buf[o++] = (char)c;
	}
	buf[o] = '\0';
	if (key[i] != '\0' && o + 4 < len)
		snprintf(buf + o, len - o, "...");
}

static const char *cache_name(const struct cache_args *a)
{
	return a->opts.cache != NULL ? a->opts.cache : CACHE_NAME_DEFAULT;
}

/* "not found" for KEY: one line, exit 5. */
static int cache_key_missing(const struct cli *cli, const struct cache_args *a, const char *key)
{
	char k[CACHE_KEY_TEXT_BYTES * 4 + 8], msg[ERR_BYTES];
	key_text(key, k, sizeof k);
	snprintf(msg, sizeof msg, "no key '%s' in cache %s", k, cache_name(a));
	return report(cli, CH_ERR_NOT_FOUND, msg);
}

static void cache_parse(int argc, char **argv, struct cache_args *a)
{
	const char *sub = argv[1];
	for (size_t k = 0; k < CACHE_CMD_COUNT && a->cmd == NULL; k++) {
		if (strcmp(sub, cache_cmds[k].name) == 0)
			a->cmd = &cache_cmds[k];
	}
	if (a->cmd == NULL)
		usage_fail("cache: unknown subcommand '%s' (get, put, get-or-compute, del, incr, ttl, "
		           "expire, persist, exists, getdel, update, scan, stats, flush, dbsize)", sub);
	unsigned takes = a->cmd->takes;
	bool options_over = false;
	for (int i = 2; i < argc; i++) {
		const char *o = argv[i];
		if (!options_over && strcmp(o, "--") == 0) {
			options_over = true;
		} else if (options_over || o[0] != '-' || o[1] == '\0' || is_negative_number(o)) {
			a->args[a->arg_count++] = o;
		} else if (strcmp(o, "--json") == 0) {
			(void)0; /* handled by the caller */
		} else if (strcmp(o, "--cache") == 0) {
			a->opts.cache = opt_value(argc, argv, &i);
			if (a->opts.cache[0] == '\0')
				usage_fail("cache %s: --cache needs a name", sub);
			if (strlen(a->opts.cache) > CH_CACHE_NAME_BYTES_MAX)
				usage_fail("cache %s: --cache: a cache name has at most %d bytes", sub,
				           CH_CACHE_NAME_BYTES_MAX);
		} else if (strcmp(o, "--consistency") == 0) {
			const char *p = opt_value(argc, argv, &i);
			a->opts.consistency = ch_cache_consistency_parse(p);
			if (a->opts.consistency <= CH_CACHE_DEFAULT)
				usage_fail("cache %s: --consistency: unknown level '%s' (one, quorum or all)",
				           sub, p);
		} else if ((takes & CACHE_TAKES_UPDATE) != 0 && strcmp(o, "--lease") == 0) {
			int64_t ms = parse_ttl_or_die("--lease", opt_value(argc, argv, &i));
			if (ms > CH_CACHE_UPDATE_LEASE_MS_MAX)
				usage_fail("cache update: --lease is at most 1m");
			a->lease_ms = (uint32_t)ms;
		} else if ((takes & CACHE_TAKES_UPDATE) != 0 && strcmp(o, "--delete-if-empty") == 0) {
			a->delete_if_empty = true;
		} else if ((takes & (CACHE_TAKES_PUT | CACHE_TAKES_UPDATE | CACHE_TAKES_COMPUTE)) != 0 &&
		           strcmp(o, "--ttl") == 0) {
			a->ttl_ms = parse_ttl_or_die("--ttl", opt_value(argc, argv, &i));
		} else if ((takes & CACHE_TAKES_COMPUTE) != 0 && strcmp(o, "--timeout") == 0) {
			a->task.timeout_ms = parse_dur_or_die(o, opt_value(argc, argv, &i));
		} else if ((takes & CACHE_TAKES_COMPUTE) != 0 && strcmp(o, "--arg") == 0) {
			a->argv_list[a->argv_count++] = opt_value(argc, argv, &i);
		} else if ((takes & CACHE_TAKES_COMPUTE) != 0 && strcmp(o, "--require") == 0) {
			const char *tag = opt_value(argc, argv, &i);
			if (tag[0] == '\0')
				usage_fail("cache %s: --require needs a tag", sub);
			a->require_list[a->require_count++] = tag;
		} else if ((takes & CACHE_TAKES_PUT) != 0 && strcmp(o, "--nx") == 0) {
			a->flags |= CH_CACHE_NX;
		} else if ((takes & CACHE_TAKES_PUT) != 0 && strcmp(o, "--xx") == 0) {
			a->flags |= CH_CACHE_XX;
		} else if ((takes & CACHE_TAKES_PUT) != 0 && strcmp(o, "--keepttl") == 0) {
			a->flags |= CH_CACHE_KEEPTTL;
		} else if ((takes & CACHE_TAKES_PUT) != 0 && strcmp(o, "--value-file") == 0) {
			a->value_file = opt_value(argc, argv, &i);
		} else if ((takes & CACHE_TAKES_SCAN) != 0 && strcmp(o, "--match") == 0) {
			a->match = opt_value(argc, argv, &i);
		} else if ((takes & CACHE_TAKES_SCAN) != 0 && strcmp(o, "--count") == 0) {
			a->count = parse_u32_or_die(o, opt_value(argc, argv, &i));
			if (a->count == 0)
				usage_fail("cache scan: --count must be at least 1");
		} else if ((takes & CACHE_TAKES_SCAN) != 0 && strcmp(o, "--cursor") == 0) {
			const char *p = opt_value(argc, argv, &i);
			if (!parse_u64(p, &a->cursor))
				usage_fail("cache scan: --cursor needs a cursor a scan printed (a number), "
				           "got '%s'", p);
			a->has_cursor = true;
		} else if ((takes & CACHE_TAKES_YES) != 0 && strcmp(o, "--yes") == 0) {
			a->yes = true;
		} else {
			usage_fail("cache %s: unknown option '%s'", sub, o);
		}
	}
	const struct cache_cmd *c = a->cmd;
	if (strcmp(sub, "put") == 0 && a->value_file != NULL && a->arg_count > 1)
		usage_fail("cache put: give VALUE or --value-file, not both");
	if (a->arg_count < c->args_min)
		usage_fail("cache %s needs %s", sub, c->args);
	if (c->args_max >= 0 && a->arg_count > c->args_max)
		usage_fail("cache %s: unexpected argument '%s'", sub, a->args[c->args_max]);
	/* keys: every argument of del, the first of the others */
	int keys = strcmp(sub, "del") == 0 || strcmp(sub, "exists") == 0
	               ? a->arg_count
	               : (c->args_min > 0 ? 1 : 0);
	for (int i = 0; i < keys; i++) {
		if (a->args[i][0] == '\0')
			usage_fail("cache %s: KEY is empty (a key has 1 byte or more)", sub);
	}
	a->delta = 1;
	if (strcmp(sub, "incr") == 0 && a->arg_count > 1)
		a->delta = parse_delta_or_die(a->args[1]);
	if (strcmp(sub, "expire") == 0)
		a->expire_ms = parse_ttl_or_die("cache expire: DURATION", a->args[1]);
	if (strcmp(sub, "put") == 0) {
		if (a->arg_count < 2 && a->value_file == NULL)
			usage_fail("cache put needs KEY VALUE, or KEY --value-file PATH|-");
		if ((a->flags & CH_CACHE_NX) != 0 && (a->flags & CH_CACHE_XX) != 0)
			usage_fail("cache put: --nx and --xx exclude each other");
		if ((a->flags & CH_CACHE_KEEPTTL) != 0 && a->ttl_ms != 0)
			usage_fail("cache put: --keepttl and --ttl exclude each other");
	}
	if (strcmp(sub, "update") == 0) {
		bool dashdash = false;
		for (int i = 2; i < argc && !dashdash; i++)
			dashdash = strcmp(argv[i], "--") == 0;
		if (!dashdash)
			usage_fail("cache update needs KEY -- COMMAND [ARG...] (the -- before the command)");
		if (a->lease_ms == 0)
			a->lease_ms = 30000;
	}
	if (strcmp(sub, "get-or-compute") == 0) {
		if (a->args[1][0] == '\0')
			usage_fail("cache get-or-compute: HANDLER is empty");
		if (a->argv_count > (int)ARGV_COUNT_MAX)
			usage_fail("cache get-or-compute: more than %u argv entries", ARGV_COUNT_MAX);
		if (a->require_count > CH_REQUIRE_COUNT_MAX)
			usage_fail("cache get-or-compute: more than %d --require tags",
			           CH_REQUIRE_COUNT_MAX);
		a->task.restart = CH_RESTART_TEMPORARY;
		a->task.argv = a->argv_count > 0 ? a->argv_list : NULL;
		a->task.require = a->require_count > 0 ? a->require_list : NULL;
	}
	if (strcmp(sub, "flush") == 0 && !a->yes)
		usage_fail("cache flush removes every entry of cache %s on every member: add --yes",
		           cache_name(a));
}

/* A key (or value) in JSON: a string under `name` when it is UTF-8, else
 * base64 under `name`_base64 (see clusterctl help cache). */
static void cache_bytes_json(json_t *o, const char *name, const void *p, size_t n)
{
	char b64_name[32];
	snprintf(b64_name, sizeof b64_name, "%s_base64", name);
	view_set_bytes(o, name, b64_name, p, n);
}

static json_t *cache_key_json(const char *key)
{
	json_t *o = json_object();
	cache_bytes_json(o, "key", key, strlen(key));
	return o;
}

static json_t *cache_version_json(const struct ch_cache_version *v)
{
	char hex[sizeof v->node * 2 + 1];
	sodium_bin2hex(hex, sizeof hex, v->node, sizeof v->node);
	json_t *o = json_object();
	json_object_set_new(o, "hlc", json_integer((json_int_t)v->hlc));
	json_object_set_new(o, "node", json_string(hex));
	return o;
}

/* A value as get prints it: exactly the bytes stored, so `get K > f` gives
 * what `put K --value-file f` took; a terminal gets a newline after them. */
static void value_print(const void *value, size_t len)
{
	fwrite(value, 1, len, stdout);
	if (isatty(STDOUT_FILENO) && (len == 0 || ((const char *)value)[len - 1] != '\n'))
		fputc('\n', stdout);
}

static int cache_get(struct cli *cli, const struct cache_args *a)
{
	const char *key = a->args[0];
	char err[ERR_BYTES] = "";
	void *value = NULL;
	size_t len = 0;
	struct ch_cache_version version;
	int64_t ttl_ms = -1;
	int rv = ch_cache_get(cli->c, &a->opts, key, strlen(key), &value, &len, &version, &ttl_ms,
	                      err, sizeof err);
	/* a miss, told apart from the node's "no cache named ..." by the
	 * library's message (either way it is exit 5) */
	if (rv == CH_ERR_NOT_FOUND && strcmp(err, "no such key") == 0)
		return cache_key_missing(cli, a, key);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *o = cache_key_json(key);
		cache_bytes_json(o, "value", value, len);
		json_object_set_new(o, "ttl_ms", json_integer(ttl_ms));
		json_object_set_new(o, "version", cache_version_json(&version));
		json_print(o);
	} else {
		value_print(value, len);
	}
	free(value);
	return EXIT_OK;
}

static int cache_put(struct cli *cli, const struct cache_args *a)
{
	const char *key = a->args[0];
	uint8_t *file_value = NULL;
	const void *value;
	size_t len;
	if (a->value_file != NULL) {
		int rc = read_source(a->value_file, &file_value, &len);
		if (rc != EXIT_OK)
			return rc;
		value = file_value;
	} else {
		value = a->args[1];
		len = strlen(a->args[1]);
	}
	char err[ERR_BYTES] = "";
	int applied = 0;
	int rv = ch_cache_put(cli->c, &a->opts, key, strlen(key), value, len, a->ttl_ms, a->flags,
	                      NULL, &applied, err, sizeof err);
	free(file_value);
	if (rv != CH_OK)
		return report(cli, rv, err);
	const char *cond = (a->flags & CH_CACHE_NX) != 0   ? " (--nx: the key exists)"
	                   : (a->flags & CH_CACHE_XX) != 0 ? " (--xx: the key does not exist)"
	                                                   : "";
	if (cli->json) {
		json_t *o = cache_key_json(key);
		json_object_set_new(o, "stored", json_boolean(applied));
		json_print(o);
	} else if (applied) {
		char k[CACHE_KEY_TEXT_BYTES * 4 + 8];
		key_text(key, k, sizeof k);
		printf("stored '%s' (%zu byte%s) in cache %s\n", k, len, len == 1 ? "" : "s",
		       cache_name(a));
	} else {
		fprintf(stderr, "clusterctl: not stored%s\n", cond);
	}
	return applied ? EXIT_OK : EXIT_TASK_FAILED;
}

static int cache_del(struct cli *cli, const struct cache_args *a)
{
	uint64_t deleted = 0;
	for (int i = 0; i < a->arg_count; i++) {
		char err[ERR_BYTES] = "";
		int existed = 0;
		int rv = ch_cache_del(cli->c, &a->opts, a->args[i], strlen(a->args[i]), &existed, err,
		                      sizeof err);
		if (rv != CH_OK) {
			if (i > 0)
				fprintf(stderr, "clusterctl: deleted %llu of the %d keys before this one\n",
				        (unsigned long long)deleted, i);
			return report(cli, rv, err);
		}
		deleted += existed ? 1u : 0u;
	}
	if (cli->json) {
		json_t *o = json_object();
		json_object_set_new(o, "deleted", json_integer((json_int_t)deleted));
		json_print(o);
	} else {
		printf("deleted %llu of %d key%s\n", (unsigned long long)deleted, a->arg_count,
		       a->arg_count == 1 ? "" : "s");
	}
	return EXIT_OK;
}

static int cache_incr(struct cli *cli, const struct cache_args *a)
{
	const char *key = a->args[0];
	char err[ERR_BYTES] = "";
	int64_t result = 0;
	int rv = ch_cache_incr(cli->c, &a->opts, key, strlen(key), a->delta, &result, err,
	                       sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *o = cache_key_json(key);
		json_object_set_new(o, "value", json_integer(result));
		json_print(o);
	} else {
		printf("%lld\n", (long long)result);
	}
	return EXIT_OK;
}

/* A time to live for people: "1500 ms", "2m 5.250s", "3d 4h". */
static void ttl_text(int64_t ms, char *buf, size_t len)
{
	if (ms < 1000) {
		snprintf(buf, len, "%lld ms", (long long)ms);
		return;
	}
	long long d = ms / 86400000, h = ms / 3600000 % 24, m = ms / 60000 % 60;
	long long s = ms / 1000 % 60, frac = ms % 1000;
	if (d > 0)
		snprintf(buf, len, "%lldd %lldh %lldm", d, h, m);
	else if (h > 0)
		snprintf(buf, len, "%lldh %lldm %llds", h, m, s);
	else if (m > 0)
		snprintf(buf, len, "%lldm %lld.%03llds", m, s, frac);
	else
		snprintf(buf, len, "%lld.%03llds", s, frac);
}

static int cache_ttl(struct cli *cli, const struct cache_args *a)
{
	const char *key = a->args[0];
	char err[ERR_BYTES] = "";
	int64_t ttl_ms = -2;
	int rv = ch_cache_ttl(cli->c, &a->opts, key, strlen(key), &ttl_ms, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (ttl_ms == -2)
		return cache_key_missing(cli, a, key);
	if (cli->json) {
		json_t *o = cache_key_json(key);
		json_object_set_new(o, "ttl_ms", json_integer(ttl_ms));
		json_print(o);
	} else if (ttl_ms < 0) {
		printf("no expiry\n");
	} else {
		char t[64];
		ttl_text(ttl_ms, t, sizeof t);
		printf("%s (%lld ms)\n", t, (long long)ttl_ms);
	}
	return EXIT_OK;
}

static int cache_expire(struct cli *cli, const struct cache_args *a)
{
	const char *key = a->args[0];
	int64_t ttl_ms = a->expire_ms;
	char err[ERR_BYTES] = "";
	int applied = 0;
	int rv = ch_cache_expire(cli->c, &a->opts, key, strlen(key), ttl_ms, &applied, err,
	                         sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (!applied)
		return cache_key_missing(cli, a, key);
	if (cli->json) {
		json_t *o = cache_key_json(key);
		json_object_set_new(o, "ttl_ms", json_integer(ttl_ms));
		json_print(o);
	} else {
		char k[CACHE_KEY_TEXT_BYTES * 4 + 8], t[64];
		key_text(key, k, sizeof k);
		ttl_text(ttl_ms, t, sizeof t);
		printf("'%s' expires in %s\n", k, t);
	}
	return EXIT_OK;
}

/* One scan step's keys: printed (text: escaped as print_escaped does, and
 * the bytes above 0x7F of a key that is not UTF-8 as \xNN) or added to the
 * JSON arrays. */
static void scan_emit(const struct ch_bytes *keys, size_t n, json_t *utf8, json_t *b64)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = keys[i].data;
		if (utf8 == NULL) {
			if (utf8_valid(p, keys[i].len)) {
				print_escaped(stdout, p, keys[i].len);
			} else {
				for (size_t k = 0; k < keys[i].len; k++) {
					if (p[k] > 0x7F)
						printf("\\x%02x", p[k]);
					else
						print_escaped(stdout, &p[k], 1);
				}
			}
			fputc('\n', stdout);
			continue;
		}
		if (utf8_valid(p, keys[i].len))
			json_array_append_new(utf8, json_stringn((const char *)p, keys[i].len));
		else
			json_array_append_new(b64, base64_json(p, keys[i].len));
	}
}

static int cache_scan(struct cli *cli, const struct cache_args *a)
{
	json_t *utf8 = cli->json ? json_array() : NULL;
	json_t *b64 = cli->json ? json_array() : NULL;
	uint64_t cursor = a->cursor;
	uint32_t steps = 0;
	int rc = EXIT_OK;
	for (;;) {
		char err[ERR_BYTES] = "";
		struct ch_bytes *keys = NULL;
		size_t n = 0;
		uint64_t next = 0;
		int rv = ch_cache_scan(cli->c, &a->opts, cursor, a->match, a->count, &next, &keys, &n,
		                       err, sizeof err);
		if (rv != CH_OK) {
			rc = report(cli, rv, err);
			break;
		}
		scan_emit(keys, n, utf8, b64);
		ch_bytes_free(keys, n);
		cursor = next;
		steps++;
		if (a->has_cursor || cursor == 0)
			break;
		if (steps == CACHE_SCAN_STEPS_MAX) {
			fprintf(stderr, "clusterctl: scan: no end after %u steps; go on with --cursor %llu\n",
			        steps, (unsigned long long)cursor);
			rc = EXIT_OTHER;
			break;
		}
	}
	if (rc == EXIT_OK && cli->json) {
		json_t *o = json_object();
		json_object_set_new(o, "cursor", json_integer((json_int_t)cursor));
		json_object_set(o, "keys", utf8);
		json_object_set(o, "keys_base64", b64);
		json_print(o);
	} else if (rc == EXIT_OK && a->has_cursor) {
		fflush(stdout);
		fprintf(stderr, "next cursor: %llu%s\n", (unsigned long long)cursor,
		        cursor == 0 ? " (the scan is complete)" : "");
	}
	json_decref(utf8);
	json_decref(b64);
	return rc;
}

/* 1536 -> "1.5 KiB". */
static void bytes_text(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	size_t u = 0;
	while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
}

static json_t *cache_stats_json(const struct ch_cache_stats *s)
{
	Chorus__CacheStatsInfo w = CHORUS__CACHE_STATS_INFO__INIT;
	w.cache = s->cache;
	w.node = s->node;
	w.entries = s->entries;
	w.memory_bytes = s->memory_bytes;
	w.hits = s->hits;
	w.misses = s->misses;
	w.evictions = s->evictions;
	w.expirations = s->expirations;
	w.hints_pending = s->hints_pending;
	w.tombstones = s->tombstones;
	w.partitions_primary = s->partitions_primary;
	w.partitions_replica = s->partitions_replica;
	w.partitions_moving = s->partitions_moving;
	return view_cache_stats(&w);
}

static void cache_stats_table(const struct ch_cache_stats *v, size_t n)
{
	int node_w = (int)strlen("NODE"), cache_w = (int)strlen("CACHE");
	for (size_t i = 0; i < n; i++) {
		int w = (int)strlen(v[i].node);
		if (w > node_w)
			node_w = w > MEMBER_NAME_COLS_MAX ? MEMBER_NAME_COLS_MAX : w;
		w = (int)strlen(v[i].cache);
		if (w > cache_w)
			cache_w = w > CH_CACHE_NAME_BYTES_MAX ? CH_CACHE_NAME_BYTES_MAX : w;
	}
	printf("%-*s  %-*s  %10s  %10s  %10s  %10s  %9s  %9s  %7s  %s\n", node_w, "NODE", cache_w,
	       "CACHE", "ENTRIES", "MEMORY", "HITS", "MISSES", "EVICTED", "EXPIRED", "HINTS",
	       "PARTITIONS (PRIMARY/REPLICA/MOVING)");
	for (size_t i = 0; i < n; i++) {
		const struct ch_cache_stats *s = &v[i];
		char mem[32];
		bytes_text(s->memory_bytes, mem, sizeof mem);
		printf("%-*.*s  %-*s  %10llu  %10s  %10llu  %10llu  %9llu  %9llu  %7llu  %u/%u/%u\n",
		       node_w, MEMBER_NAME_COLS_MAX, s->node[0] != '\0' ? s->node : "-", cache_w,
		       s->cache, (unsigned long long)s->entries, mem, (unsigned long long)s->hits,
		       (unsigned long long)s->misses, (unsigned long long)s->evictions,
		       (unsigned long long)s->expirations, (unsigned long long)s->hints_pending,
		       s->partitions_primary, s->partitions_replica, s->partitions_moving);
	}
	if (n == 0)
		printf("(no cache on this node)\n");
}

/* The partition map: per member, how many partitions it holds as primary
 * and as replica (the node's JSON overview, GET /api/cache, with --json). */
static int cache_partitions(struct cli *cli)
{
	char err[ERR_BYTES] = "";
	char *text = NULL;
	int rv = ch_cache_overview_json(cli->c, &text, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		printf("%s\n", text);
		free(text);
		return EXIT_OK;
	}
	json_t *o = json_loads(text, 0, NULL);
	free(text);
	json_t *p = json_object_get(o, "partitions");
	json_t *map = json_object_get(p, "map");
	const char *epoch = json_string_value(json_object_get(p, "epoch"));
	printf("%" JSON_INTEGER_FORMAT " partitions, %" JSON_INTEGER_FORMAT " copies each, map epoch %s\n",
	       json_integer_value(json_object_get(p, "partitions")),
	       json_integer_value(json_object_get(p, "replicas")), epoch ? epoch : "?");
	/* members in order of first appearance */
	json_t *counts = json_object();
	json_t *order = json_array();
	size_t i;
	json_t *owners;
	json_array_foreach(map, i, owners) {
		size_t k;
		json_t *name;
		json_array_foreach(owners, k, name) {
			const char *nm = json_string_value(name);
			if (nm == NULL)
				continue;
			json_t *c = json_object_get(counts, nm);
			if (c == NULL) {
				c = json_pack("[ii]", 0, 0);
				json_object_set_new(counts, nm, c);
				json_array_append_new(order, json_string(nm));
			}
			size_t slot = k == 0 ? 0 : 1;
			json_array_set_new(c, slot, json_integer(json_integer_value(json_array_get(c, slot)) + 1));
		}
	}
	printf("%-24s %8s %8s\n", "MEMBER", "PRIMARY", "REPLICA");
	json_t *nm;
	json_array_foreach(order, i, nm) {
		json_t *c = json_object_get(counts, json_string_value(nm));
		printf("%-24s %8" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT "\n", json_string_value(nm),
		       json_integer_value(json_array_get(c, 0)), json_integer_value(json_array_get(c, 1)));
	}
	json_decref(counts);
	json_decref(order);
	json_decref(o);
	return EXIT_OK;
}

static int cache_stats(struct cli *cli, const struct cache_args *a)
{
	char err[ERR_BYTES] = "";
	struct ch_cache_stats *v = NULL;
	size_t n = 0;
	int rv = ch_cache_stats(cli->c, a->opts.cache, &v, &n, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, cache_stats_json(&v[i]));
		json_print(arr);
	} else {
		cache_stats_table(v, n);
	}
	ch_cache_stats_free(v, n);
	return EXIT_OK;
}

static int cache_flush(struct cli *cli, const struct cache_args *a)
{
	char err[ERR_BYTES] = "";
	int rv = ch_cache_flush(cli->c, &a->opts, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *o = json_object();
		json_object_set_new(o, "cache", json_string(cache_name(a)));
		json_object_set_new(o, "flushed", json_true());
		json_print(o);
	} else {
		printf("flushed cache %s\n", cache_name(a));
	}
	return EXIT_OK;
}

static int cache_dbsize(struct cli *cli, const struct cache_args *a)
{
	char err[ERR_BYTES] = "";
	uint64_t entries = 0;
	int rv = ch_cache_dbsize(cli->c, &a->opts, &entries, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *o = json_object();
		json_object_set_new(o, "cache", json_string(cache_name(a)));
		json_object_set_new(o, "entries", json_integer((json_int_t)entries));
		json_print(o);
	} else {
		printf("%llu\n", (unsigned long long)entries);
	}
	return EXIT_OK;
}

static int cache_get_or_compute(struct cli *cli, const struct cache_args *a)
{
	const char *key = a->args[0];
	const char *handler = a->args[1];
	const char *payload = a->arg_count > 2 ? a->args[2] : "";
	char err[ERR_BYTES] = "";
	void *value = NULL;
	size_t len = 0;
	int computed = 0;
	struct ch_cache_version version;
	int rv = ch_cache_get_or_compute(cli->c, &a->opts, key, strlen(key), handler, payload,
	                                 strlen(payload), &a->task, a->ttl_ms, &value, &len,
	                                 &computed, &version, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *o = cache_key_json(key);
		cache_bytes_json(o, "value", value, len);
		json_object_set_new(o, "computed", json_boolean(computed));
		json_object_set_new(o, "version", cache_version_json(&version));
		json_print(o);
	} else {
		value_print(value, len);
	}
	free(value);
	return EXIT_OK;
}

/* cache SUBCOMMAND: every one asks the cluster through the node given. */
static int cache_persist(struct cli *cli, const struct cache_args *a)
{
	const char *key = a->args[0];
	char err[ERR_BYTES] = "";
	int applied = 0;
	int rv = ch_cache_persist(cli->c, &a->opts, key, strlen(key), &applied, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *o = cache_key_json(key);
		json_object_set_new(o, "persisted", json_boolean(applied));
		json_print(o);
	} else if (applied) {
		printf("the key no longer expires\n");
	} else {
		fprintf(stderr, "clusterctl: nothing to do (no such key, or it had no ttl)\n");
	}
	return applied ? EXIT_OK : EXIT_TASK_FAILED;
}

static int cache_exists(struct cli *cli, const struct cache_args *a)
{
	uint64_t found = 0;
	for (int i = 0; i < a->arg_count; i++) {
		char err[ERR_BYTES] = "";
		int exists = 0;
		int rv = ch_cache_exists(cli->c, &a->opts, a->args[i], strlen(a->args[i]), &exists, err,
		                         sizeof err);
		if (rv != CH_OK)
			return report(cli, rv, err);
		found += exists ? 1u : 0u;
	}
	if (cli->json) {
		json_t *o = json_object();
		json_object_set_new(o, "exists", json_integer((json_int_t)found));
		json_print(o);
	} else {
		printf("%llu\n", (unsigned long long)found);
	}
	/* as test(1): 0 when every key exists */
	return found == (uint64_t)a->arg_count ? EXIT_OK : EXIT_NOT_FOUND;
}

static int cache_getdel(struct cli *cli, const struct cache_args *a)
{
	const char *key = a->args[0];
	char err[ERR_BYTES] = "";
	void *value = NULL;
	size_t len = 0;
	int rv = ch_cache_getdel(cli->c, &a->opts, key, strlen(key), &value, &len, err, sizeof err);
	if (rv == CH_ERR_NOT_FOUND && strcmp(err, "no such key") == 0)
		return cache_key_missing(cli, a, key);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *o = cache_key_json(key);
		cache_bytes_json(o, "value", value, len);
		json_print(o);
	} else {
		value_print(value, len);
	}
	free(value);
	return EXIT_OK;
}

/* cache update: the command runs under the key's lock, the value on its
 * standard input; what it prints becomes the value. */
#define UPDATE_OUTPUT_MAX ((size_t)64 << 20)

struct update_cmd {
	const struct cache_args *a;
	char **argv;           /* the command, NULL-terminated */
	int status;            /* its last exit status, -1 none */
	char why[ERR_BYTES];   /* why nothing was stored */
	size_t out_len;
};

static int update_run(void *ud, const void *value, size_t value_len, int found, void **new_value,
                      size_t *new_len, int64_t *ttl_ms)
{
	struct update_cmd *u = ud;
	u->why[0] = '\0';
	FILE *in = tmpfile();
	if (in == NULL || (value_len > 0 && fwrite(value, 1, value_len, in) != value_len) ||
	    fflush(in) != 0 || fseek(in, 0, SEEK_SET) != 0) {
		snprintf(u->why, sizeof u->why, "cannot hold the value for the command: %s",
		         strerror(errno));
		if (in != NULL)
			fclose(in);
		return CH_ERR_IO;
	}
	int pfd[2];
	if (pipe(pfd) != 0) {
		snprintf(u->why, sizeof u->why, "pipe: %s", strerror(errno));
		fclose(in);
		return CH_ERR_IO;
	}
	/* the child's environment is set here: between fork and exec only
	 * async-signal-safe calls (nng's threads may hold malloc's locks) */
	setenv("CHORUS_CACHE_FOUND", found ? "1" : "0", 1);
	setenv("CHORUS_CACHE_KEY", u->a->args[0], 1);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(u->why, sizeof u->why, "fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		fclose(in);
		return CH_ERR_IO;
	}
	if (pid == 0) {
		dup2(fileno(in), STDIN_FILENO);
		dup2(pfd[1], STDOUT_FILENO);
		close(pfd[0]);
		close(pfd[1]);
		execvp(u->argv[0], u->argv);
		static const char msg[] = "clusterctl: cannot run the command (not found, or not "
		                          "executable)\n";
		ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
		(void)w;
		_exit(127);
	}
	close(pfd[1]);
	fclose(in);
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	bool too_big = false;
	for (;;) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			uint8_t *nb = ncap <= UPDATE_OUTPUT_MAX + 1 ? realloc(buf, ncap) : NULL;
			if (nb == NULL) {
				too_big = true;
				break;
			}
			buf = nb;
			cap = ncap;
		}
		ssize_t n = read(pfd[0], buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(pfd[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	u->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	if (too_big) {
		free(buf);
		snprintf(u->why, sizeof u->why, "the command printed more than %zu bytes",
		         UPDATE_OUTPUT_MAX);
		return CH_ERR_TOO_LARGE;
	}
	if (u->status != 0) {
		free(buf);
		snprintf(u->why, sizeof u->why, "the command exited %d: nothing changed", u->status);
		return CH_ERR_INVALID;
	}
	u->out_len = len;
	if (len == 0 && u->a->delete_if_empty) {
		free(buf);
		return CH_CACHE_UPDATE_DELETE;
	}
	*new_value = buf;
	*new_len = len;
	*ttl_ms = u->a->ttl_ms;
	return CH_CACHE_UPDATE_SET;
}

static int cache_update(struct cli *cli, const struct cache_args *a, int argc, char **argv)
{
	const char *key = a->args[0];
	struct update_cmd u = { .a = a, .status = -1 };
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			u.argv = &argv[i + 1];
			break;
		}
	}
	if (u.argv == NULL || u.argv[0] == NULL)
		usage_fail("cache update needs a COMMAND after --");
	char err[ERR_BYTES] = "";
	int outcome = 0;
	int rv = ch_cache_update(cli->c, &a->opts, key, strlen(key), a->lease_ms, update_run, &u,
	                         &outcome, err, sizeof err);
	if (rv != CH_OK && u.why[0] != '\0') {
		fprintf(stderr, "clusterctl: %s\n", u.why);
		return u.status > 0 ? EXIT_TASK_FAILED : EXIT_OTHER;
	}
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (cli->json) {
		json_t *o = cache_key_json(key);
		json_object_set_new(o, "outcome", json_string(outcome == CH_CACHE_UPDATE_DELETE ? "deleted"
		                                              : outcome == CH_CACHE_UPDATE_SET ? "stored"
		                                                                               : "kept"));
		json_print(o);
	} else if (outcome == CH_CACHE_UPDATE_DELETE) {
		printf("deleted the key\n");
	} else {
		printf("stored %zu byte%s\n", u.out_len, u.out_len == 1 ? "" : "s");
	}
	return EXIT_OK;
}

static int cmd_cache(struct cli *cli, int argc, char **argv)
{
	if (argc < 2)
		usage_fail("cache needs a subcommand: get, put, get-or-compute, del, incr, ttl, expire, "
		           "persist, exists, getdel, update, scan, stats, flush or dbsize");
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
	}
	/* one allocation: the positional arguments, then argv and the
	 * required tags of get-or-compute, each NULL-terminated by calloc */
	const char **lists = calloc(3 * ((size_t)argc + 1), sizeof(const char *));
	struct cache_args a = { .args = lists };
	if (lists == NULL) {
		fprintf(stderr, "clusterctl: out of memory\n");
		return EXIT_OTHER;
	}
	a.argv_list = lists + argc + 1;
	a.require_list = lists + 2 * ((size_t)argc + 1);
	cache_parse(argc, argv, &a);
	int rc = connect_cli(cli);
	if (rc == EXIT_OK) {
		const char *sub = a.cmd->name;
		if (strcmp(sub, "get") == 0)
			rc = cache_get(cli, &a);
		else if (strcmp(sub, "put") == 0)
			rc = cache_put(cli, &a);
		else if (strcmp(sub, "get-or-compute") == 0)
			rc = cache_get_or_compute(cli, &a);
		else if (strcmp(sub, "del") == 0)
			rc = cache_del(cli, &a);
		else if (strcmp(sub, "incr") == 0)
			rc = cache_incr(cli, &a);
		else if (strcmp(sub, "ttl") == 0)
			rc = cache_ttl(cli, &a);
		else if (strcmp(sub, "expire") == 0)
			rc = cache_expire(cli, &a);
		else if (strcmp(sub, "persist") == 0)
			rc = cache_persist(cli, &a);
		else if (strcmp(sub, "exists") == 0)
			rc = cache_exists(cli, &a);
		else if (strcmp(sub, "getdel") == 0)
			rc = cache_getdel(cli, &a);
		else if (strcmp(sub, "update") == 0)
			rc = cache_update(cli, &a, argc, argv);
		else if (strcmp(sub, "scan") == 0)
			rc = cache_scan(cli, &a);
		else if (strcmp(sub, "stats") == 0)
			rc = cache_stats(cli, &a);
		else if (strcmp(sub, "partitions") == 0)
			rc = cache_partitions(cli);
		else if (strcmp(sub, "flush") == 0)
			rc = cache_flush(cli, &a);
		else
			rc = cache_dbsize(cli, &a);
	}
	free(a.args);
	return rc;
}

/* ------------------------------------------------------------------ */
/* voters                                                              */

#define VOTER_ID_PREFIX_CHARS 8

static void voters_print(const struct cli *cli, const struct ch_voters *v)
{
	if (cli->json) {
		json_t *o = json_object();
		json_object_set_new(o, "term", json_integer((json_int_t)v->term));
		json_object_set_new(o, "commit_index", json_integer((json_int_t)v->commit_index));
		json_t *a = json_array();
		for (uint32_t i = 0; i < v->count; i++) {
			const struct ch_voter *m = &v->voters[i];
			json_t *mo = json_object();
			json_object_set_new(mo, "name", json_string(m->name));
			json_object_set_new(mo, "id", json_string(m->id));
			json_object_set_new(mo, "addr", json_string(m->addr));
			json_object_set_new(mo, "alive", json_boolean(m->alive));
			json_object_set_new(mo, "leader", json_boolean(m->leader));
			json_array_append_new(a, mo);
		}
		json_object_set_new(o, "voters", a);
		json_print(o);
		return;
	}
	int name_w = (int)strlen("NAME"), addr_w = (int)strlen("ADDRESS");
	for (uint32_t i = 0; i < v->count; i++) {
		int w = (int)strlen(v->voters[i].name) + 1; /* room for the leader mark */
		if (w > name_w)
			name_w = w > MEMBER_NAME_COLS_MAX ? MEMBER_NAME_COLS_MAX : w;
		w = (int)strlen(v->voters[i].addr);
		if (w > addr_w)
			addr_w = w > MEMBER_ADDR_COLS_MAX ? MEMBER_ADDR_COLS_MAX : w;
	}
	printf("%-*s  %-8s  %-*s  %s\n", name_w, "NAME", "ID", addr_w, "ADDRESS", "ALIVE");
	bool leader = false;
	for (uint32_t i = 0; i < v->count; i++) {
		const struct ch_voter *m = &v->voters[i];
		char name[MEMBER_NAME_COLS_MAX + 8];
		snprintf(name, sizeof name, "%s%s", m->name, m->leader ? "*" : "");
		leader = leader || m->leader;
		printf("%-*s  %-8.*s  %-*s  %s\n", name_w, name, VOTER_ID_PREFIX_CHARS, m->id, addr_w,
		       m->addr[0] != '\0' ? m->addr : "-", m->alive ? "yes" : "no");
	}
	if (v->count == 0)
		printf("(no voters: the node has no election yet)\n");
	printf("term %llu, commit index %llu, %s\n", (unsigned long long)v->term,
	       (unsigned long long)v->commit_index, leader ? "* = leader" : "no leader known");
}

static int cmd_voters(struct cli *cli, int argc, char **argv)
{
	const char *sub = NULL, *member = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else if (argv[i][0] == '-')
			usage_fail("voters: unknown option '%s'", argv[i]);
		else if (sub == NULL)
			sub = argv[i];
		else if (member == NULL)
			member = argv[i];
		else
			usage_fail("voters: unexpected argument '%s'", argv[i]);
	}
	int op = CH_VOTERS_LIST;
	if (sub != NULL && strcmp(sub, "add") == 0)
		op = CH_VOTERS_ADD;
	else if (sub != NULL && strcmp(sub, "remove") == 0)
		op = CH_VOTERS_REMOVE;
	else if (sub != NULL && strcmp(sub, "list") != 0)
		usage_fail("voters: unknown subcommand '%s' (list, add, remove)", sub);
	if (op == CH_VOTERS_LIST && member != NULL)
		usage_fail("voters: unexpected argument '%s'", member);
	if (op != CH_VOTERS_LIST && member == NULL)
		usage_fail("voters %s needs a MEMBER (name or hex id)", sub);
	int rc = connect_cli(cli);
	if (rc != EXIT_OK)
		return rc;
	char err[ERR_BYTES] = "";
	struct ch_voters *v = NULL;
	int rv;
	if (op == CH_VOTERS_ADD)
		rv = ch_voters_add(cli->c, member, &v, err, sizeof err);
	else if (op == CH_VOTERS_REMOVE)
		rv = ch_voters_remove(cli->c, member, &v, err, sizeof err);
	else
		rv = ch_voters_list(cli->c, &v, err, sizeof err);
	if (rv != CH_OK)
		return report(cli, rv, err);
	if (op != CH_VOTERS_LIST && !cli->json)
		printf("%s %s\n", op == CH_VOTERS_ADD ? "added voter" : "removed voter", member);
	voters_print(cli, v);
	ch_voters_free(v);
	return EXIT_OK;
}

static int cmd_help(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage_text, stdout);
		return EXIT_OK;
	}
	const char *c = argv[1];
	const char *text = strcmp(c, "submit") == 0   ? help_submit
	                   : strcmp(c, "status") == 0 ? help_status
	                   : strcmp(c, "members") == 0 ? help_members
	                   : strcmp(c, "metrics") == 0 ? help_metrics
	                   : strcmp(c, "events") == 0 ? help_events
	                   : strcmp(c, "tasks") == 0  ? help_tasks
	                   : strcmp(c, "wait") == 0   ? help_wait
	                   : strcmp(c, "cancel") == 0 ? help_cancel
	                   : strcmp(c, "fanouts") == 0 ? help_fanouts
	                   : strcmp(c, "keygen") == 0 ? help_keygen
	                   : strcmp(c, "http-token") == 0 ? help_http_token
	                   : strcmp(c, "cron") == 0   ? help_cron
	                   : strcmp(c, "cache") == 0  ? help_cache
	                   : strcmp(c, "voters") == 0 ? help_voters
	                                              : NULL;
	if (text == NULL)
		usage_fail("no command '%s'", c);
	fputs(text, stdout);
	return EXIT_OK;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct cli cli = { .addr = getenv("CHORUS_ADDR"), .secret = getenv("CHORUS_SECRET") };
	if (cli.addr == NULL || cli.addr[0] == '\0')
		cli.addr = ADDR_DEFAULT;
	if (cli.secret == NULL || cli.secret[0] == '\0')
		cli.secret = SECRET_DEFAULT;

	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-a") == 0 || strcmp(a, "--addr") == 0) {
			cli.addr = opt_value(argc, argv, &i);
		} else if (strcmp(a, "-k") == 0 || strcmp(a, "--secret") == 0) {
			cli.secret = opt_value(argc, argv, &i);
		} else if (strcmp(a, "--json") == 0) {
			cli.json = true;
		} else if (strcmp(a, "--timeout") == 0) {
			cli.timeout_ms = parse_dur_or_die(a, opt_value(argc, argv, &i));
			if (cli.timeout_ms == 0)
				usage_fail("--timeout must be more than 0");
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(usage_text, stdout);
			return EXIT_OK;
		} else if (strcmp(a, "--version") == 0) {
			printf("clusterctl %s (protocol %d)\n", CH_VERSION_STRING, CH_PROTOCOL_VERSION);
			return EXIT_OK;
		} else if (a[0] == '-') {
			usage_fail("unknown option '%s'", a);
		} else {
			break;
		}
	}
	if (i >= argc)
		usage_fail("no command given");
	const char *cmd = argv[i];
	int sub_argc = argc - i;
	char **sub_argv = argv + i;
	for (int k = 1; k < sub_argc; k++) {
		if (strcmp(sub_argv[k], "--") == 0)
			break;
		if (strcmp(sub_argv[k], "-h") == 0 || strcmp(sub_argv[k], "--help") == 0) {
			char *help_argv[] = { "help", (char *)cmd, NULL };
			return cmd_help(2, help_argv);
		}
	}
	int rc;
	if (strcmp(cmd, "submit") == 0)
		rc = cmd_submit(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "members") == 0)
		rc = cmd_members(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "metrics") == 0)
		rc = cmd_metrics(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "events") == 0)
		rc = cmd_events(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "tasks") == 0)
		rc = cmd_tasks(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "wait") == 0)
		rc = cmd_wait(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "cancel") == 0)
		rc = cmd_cancel(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "fanouts") == 0)
		rc = cmd_fanouts(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "keygen") == 0)
		rc = cmd_keygen(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "http-token") == 0)
		rc = cmd_http_token(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "cron") == 0)
		rc = cmd_cron(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "voters") == 0)
		rc = cmd_voters(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "cache") == 0)
		rc = cmd_cache(&cli, sub_argc, sub_argv);
	else if (strcmp(cmd, "help") == 0)
		rc = cmd_help(sub_argc, sub_argv);
	else
		usage_fail("unknown command '%s'", cmd);
	ch_client_close(cli.c);
	nng_fini(); /* the program, not the library, may end nng's threads */
	return rc;
}
