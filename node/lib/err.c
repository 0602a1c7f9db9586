/*
 * err.c - names of the internal error codes (see err.h).
 */
#include "lib/err.h"

const char *err_name(int code)
{
	switch (code) {
	case ERR_OK: return "ok";
	case ERR_INVALID: return "invalid";
	case ERR_NOT_FOUND: return "not found";
	case ERR_FULL: return "full";
	case ERR_NOMEM: return "out of memory";
	case ERR_PROTOCOL: return "protocol error";
	case ERR_STORAGE: return "storage error";
	case ERR_SHUTTING_DOWN: return "shutting down";
	case ERR_TOO_LARGE: return "too large";
	case ERR_DENIED: return "denied";
	case ERR_UNKNOWN_HANDLER: return "unknown handler";
	case ERR_TIMEOUT: return "timeout";
	case ERR_AUTH: return "authentication failed";
	case ERR_CLOSED: return "closed";
	case ERR_BUSY: return "busy";
	default: return "unknown error";
	}
}
