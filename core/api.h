/*
 * api.h — the HTTP/JSON API (README "API") on libmicrohttpd: epoll, a small pool of threads,
 * and no thread ever parked on a client.
 *
 * Every request but GET /health carries a token (auth.h) and is answered within its
 * principal's scope (DESIGN §9; the matrix is in README "Who may do what").  Long polls and
 * event streams that have nothing to send are suspended (MHD_suspend_connection) and resumed
 * by what they wait for: an assignment, an event, their deadline, or the client hanging up.
 *
 * Threads: api_start/api_stop from the main thread; handlers on libmicrohttpd's pool threads;
 * the engine calls back (long polls) under its state lock; one watcher thread of our own
 * resumes parked connections at their deadlines and notices clients that hang up.
 */
#ifndef HODEI_CORE_API_H
#define HODEI_CORE_API_H

#include "auth.h"
#include "bus.h"
#include "config.h"
#include "engine.h"

struct api;

/* auth NULL: --insecure-no-auth (every request is an admin's). */
struct api *api_start(const struct config *cfg, struct engine *engine, struct bus *bus,
                      struct auth *auth);
/* Stops accepting, answers 503 to what still arrives, ends long-polls and event streams,
 * waits for the requests in flight and frees the server. */
void api_stop(struct api *api);

#endif
