/*
 * err.h - the node's internal error codes.
 *
 * The pure cores (node/core/) return these, never the public CH_ERR_*
 * codes of client/chorus.h: the wire's codes are a contract with clients and
 * change on their own schedule. They are mapped to CH_ERR_* in one place,
 * err_to_public() in node/codec/codec.c, where a reply leaves the node.
 *
 * Convention (as libsodium and SQLite): 0 is success, errors are negative.
 */
#ifndef CHORUS_LIB_ERR_H
#define CHORUS_LIB_ERR_H

enum err {
	ERR_OK = 0,
	ERR_INVALID = -1,      /* bad argument or bad input from outside */
	ERR_NOT_FOUND = -2,    /* no such task, batch, member, ... */
	ERR_FULL = -3,         /* a bounded table or queue is at its limit */
	ERR_NOMEM = -4,        /* allocation failed */
	ERR_PROTOCOL = -5,     /* a malformed or unexpected message */
	ERR_STORAGE = -6,      /* the journal could not be read or written */
	ERR_SHUTTING_DOWN = -7,/* the node is draining */
	ERR_TOO_LARGE = -8,    /* over a size limit */
	ERR_DENIED = -9,       /* not allowed (allowlist, role) */
	ERR_UNKNOWN_HANDLER = -10,
	ERR_TIMEOUT = -11,
	ERR_AUTH = -12,        /* authentication failed */
	ERR_CLOSED = -13,      /* the peer or session is gone */
	ERR_BUSY = -14,        /* not now: something in progress must end first */
	ERR_COUNT_ = 15        /* number of codes, 0 included */
};

/* Short name of a code, for logs ("full", "not found"). Never NULL. */
const char *err_name(int code);

#endif
