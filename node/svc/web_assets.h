/*
 * web_assets.h - the dashboard's files, built into chorusd
 * (cmake/embed.cmake writes the table from the files in node/web at build
 * time).
 * svc/http_svc.c serves exactly these, from memory: no request path ever
 * reaches the file system.
 */
#ifndef CHORUS_SVC_WEB_ASSETS_H
#define CHORUS_SVC_WEB_ASSETS_H

#include <stddef.h>

struct web_asset {
	const char *path;         /* "/index.html", "/app.js" */
	const char *content_type; /* from the extension */
	const unsigned char *data;
	size_t len;
};

extern const struct web_asset web_assets[];
extern const unsigned web_asset_count;

#endif
