/*
 * client.h — what hodei-worker and hodeictl share: a small client of the hodei-scheduler JSON
 * API (libcurl + jansson, contract in the daemon's API notes) and option-number parsing.
 *
 * One struct hodei_api per thread: a curl easy handle must not be used by two threads at once.
 */
#ifndef HODEI_CLI_CLIENT_H
#define HODEI_CLI_CLIENT_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>

#define HODEI_API_DEFAULT_URL "http://127.0.0.1:8080"
#define HODEI_API_PREFIX      "/api/v1"
/* Longest token text a client accepts (token.h: 7 + 12 + 1 + 128). */
#define HODEI_TOKEN_TEXT_MAX  160

struct hodei_api {
    void *curl;                             /* CURL *, kept opaque to the programs */
    char *base;                             /* server base URL + HODEI_API_PREFIX */
    const volatile sig_atomic_t *abort_on;  /* when set and non-zero, transfers stop early */
    char  token[HODEI_TOKEN_TEXT_MAX + 1];  /* sent as Authorization: Bearer; "" for none */
};

/* Outcome of one API call. */
struct hodei_reply {
    long    status;     /* HTTP status; 0 when no response arrived */
    json_t *body;       /* parsed JSON body (owned; hodei_reply_clear frees it), or NULL */
    char    error[512]; /* on failure: the server's "error: detail", or why no reply came */
};

/* Call once from main before any thread uses the API. */
int  hodei_api_global_init(void);

/*
 * The token a program uses: the first line of token_file when given, else $HODEI_TOKEN, else
 * none ("").  0, or -1 with the reason in err (an unreadable file, a file others may read, a
 * token longer than HODEI_TOKEN_TEXT_MAX).
 */
int  hodei_token_load(const char *token_file, char out[HODEI_TOKEN_TEXT_MAX + 1], char *err,
                      size_t errlen);

/* server_url is the base such as http://127.0.0.1:8080 (a trailing '/' is allowed). */
int  hodei_api_open(struct hodei_api *api, const char *server_url);
void hodei_api_close(struct hodei_api *api);

/*
 * method + path (relative to /api/v1, e.g. "/jobs/17") with an optional JSON body (not stolen).
 * Returns 0 on a 2xx reply carrying JSON; otherwise -1 with reply->status and reply->error set.
 * timeout_ms bounds the whole transfer.
 */
int  hodei_api_call(struct hodei_api *api, const char *method, const char *path, json_t *body,
                    long timeout_ms, struct hodei_reply *reply);
void hodei_reply_clear(struct hodei_reply *reply);

/* GET path for a body that is not JSON (a job's output): 0 with the bytes in *data (free())
 * and *len, and the value of the response header `header` (when not NULL) in header_value;
 * otherwise -1 with reply->status and reply->error set as hodei_api_call does. */
int  hodei_api_get_raw(struct hodei_api *api, const char *path, long timeout_ms,
                       const char *header, char *header_value, size_t header_len,
                       char **data, size_t *len, struct hodei_reply *reply);

/* path + "?" or "&" + key=escaped(value) appended into a fresh string (free()), NULL on ENOMEM. */
char *hodei_api_path_add_query(const char *path, const char *key, const char *value);
/* "/prefix/" + escaped(id) + suffix into a fresh string (free()), NULL on ENOMEM. */
char *hodei_api_path_id(const char *prefix, const char *id, const char *suffix);

/*
 * Follows GET /events (Server-Sent Events).  on_event is called once per event with its type and
 * parsed data (borrowed); it returns non-zero to stop.  Returns 0 when stopped by on_event, -1 with
 * reply->error set when the stream failed or ended.
 */
typedef int (*hodei_event_fn)(const char *type, json_t *data, void *arg);
int  hodei_api_follow_events(struct hodei_api *api, hodei_event_fn on_event, void *arg,
                             struct hodei_reply *reply);

/* Parses a whole decimal integer in [min, max]; 0 on success, -1 otherwise. */
int  hodei_parse_long(const char *s, long min, long max, long *out);

#endif
