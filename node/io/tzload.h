/*
 * tzload.h - the shell side of time zones: reads a zone's TZif file from the
 * system's tzdata once and keeps it.
 *
 * Owns a bounded cache of parsed zones (struct tz, core/tz.h) by IANA name.
 * "UTC" is built in and needs no file. Names are checked before any file is
 * opened: letters, digits, '_', '-', '+' and '/' only, no leading '/', no
 * empty or dot-led component (so no ".."), at most TZ_NAME_BYTES_MAX-1
 * bytes; files are regular files of at most TZLOAD_FILE_BYTES_MAX bytes.
 *
 * Threading: a cache is used by one thread (the loop, or clusterctl's
 * main); the zones it hands out are immutable and live until tzcache_free.
 */
#ifndef CHORUS_IO_TZLOAD_H
#define CHORUS_IO_TZLOAD_H

#include <stddef.h>

#include "core/tz.h"

#define TZLOAD_DIR_DEFAULT "/usr/share/zoneinfo"
#define TZLOAD_FILE_BYTES_MAX (256u * 1024u) /* the largest real zone is under 4 KiB */
#define TZCACHE_ZONES_MAX 512u               /* tzdata has about 600 names */

struct tzcache;

/* A new, empty cache reading from dir (NULL = TZLOAD_DIR_DEFAULT; copied).
 * NULL when out of memory. */
struct tzcache *tzcache_new(const char *dir);
/* Frees the cache and every zone it handed out. NULL is a no-op. */
void tzcache_free(struct tzcache *c);

/* The zone called name, read and parsed on first use. *out stays owned by
 * the cache. 0; or ERR_INVALID for a bad name or a malformed file,
 * ERR_NOT_FOUND for no such zone ("unknown time zone \"Mars/Olympus\""),
 * ERR_TOO_LARGE, ERR_FULL (the cache holds TZCACHE_ZONES_MAX zones),
 * ERR_NOMEM, with a message in err. */
int tzcache_get(struct tzcache *c, const char *name, const struct tz **out, char *err,
                size_t err_bytes);

/* Checks a zone name as tzcache_get does. 0 or ERR_INVALID with a message. */
int tzload_check_name(const char *name, char *err, size_t err_bytes);

#endif
