/*
 * example_upper.c - an example chorusd handler plugin.
 *
 * Registers two handlers:
 *   upper      output = the payload with ASCII a-z upper-cased (other bytes,
 *              UTF-8 included, pass through unchanged)
 *   wordcount  output = the number of whitespace-separated words in the
 *              payload, as decimal text ("0" for an empty payload)
 *
 * Build and use:
 *   gcc -shared -fPIC -I node -o example_upper.so node/plugins/example_upper.c
 *   chorusd --plugin ./example_upper.so ...
 *   clusterctl submit upper 'hello'          -> HELLO
 *
 * The plugin contract is in node/chorus_plugin.h: chorusd calls
 * chorus_plugin_init() once, before it forks its workers; the handlers then
 * run inside worker processes, one task at a time, so they need no locking.
 */
#include <stdio.h>
#include <string.h>

#include "chorus_plugin.h"

static int upper(const uint8_t *payload, size_t payload_len, struct chorus_handler_out *out)
{
	uint8_t chunk[4096];
	size_t done = 0;
	while (done < payload_len) {
		size_t n = payload_len - done < sizeof chunk ? payload_len - done : sizeof chunk;
		for (size_t i = 0; i < n; i++) {
			uint8_t c = payload[done + i];
			chunk[i] = (c >= 'a' && c <= 'z') ? (uint8_t)(c - 'a' + 'A') : c;
		}
		if (out->append(out, chunk, n) != 0) {
			snprintf(out->error, sizeof out->error, "upper: output cap reached");
			return 1;
		}
		done += n;
	}
	return 0;
}

static int is_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int wordcount(const uint8_t *payload, size_t payload_len, struct chorus_handler_out *out)
{
	unsigned long long words = 0;
	int in_word = 0;
	for (size_t i = 0; i < payload_len; i++) {
		if (is_space(payload[i])) {
			in_word = 0;
		} else if (!in_word) {
			in_word = 1;
			words++;
		}
	}
	char text[32];
	int n = snprintf(text, sizeof text, "%llu", words);
	return out->append(out, text, (size_t)n) == 0 ? 0 : 1;
}

int chorus_plugin_init(const struct chorus_plugin_api *api)
{
	if (api->api_version != CHORUS_PLUGIN_API_VERSION)
		return 2;
	if (api->register_handler(api, "upper", upper) != 0)
		return 1;
	if (api->register_handler(api, "wordcount", wordcount) != 0)
		return 1;
	return 0;
}
