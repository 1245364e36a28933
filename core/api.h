/* api.h — the HTTP/JSON API of api.md on libmicrohttpd (one thread per connection). */
#ifndef HODEI_CORE_API_H
#define HODEI_CORE_API_H

#include "bus.h"
#include "config.h"
#include "engine.h"

struct api;

struct api *api_start(const struct config *cfg, struct engine *engine, struct bus *bus,
                      const char *version);
/* Stops accepting, answers 503 to what still arrives, ends long-polls and event streams,
 * waits for the requests in flight and frees the server. */
void api_stop(struct api *api);

#endif
