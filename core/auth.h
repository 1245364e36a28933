/*
 * auth.h — who a request comes from (DESIGN §9): the tokens file, read at start and again on
 * SIGHUP.
 *
 * The file's tokens live in one immutable table published with rcu_assign_pointer(); a reload
 * builds a new table off to the side, swaps it in and frees the old one after a grace period.
 * So auth_check() (any thread, takes rcu_read_lock itself) never waits for a reload, and a
 * token removed from the file stops working as soon as auth_reload() returns.  A file that
 * cannot be used (unreadable, malformed, readable by others) is refused: at start the daemon
 * does not start; on reload the previous table stays and the reason is logged.
 *
 * Worker session tokens are not in the file: they belong to a registration and live with the
 * worker in the scheduler (sched_session()).
 */
#ifndef HODEI_CORE_AUTH_H
#define HODEI_CORE_AUTH_H

#include <stddef.h>
#include "hodei_schema.h"
#include "token.h"

/* Who a request comes from, once its token was checked. */
enum principal_kind {
    PRINCIPAL_TENANT,      /* a tenant token: tenant says which */
    PRINCIPAL_WORKER,      /* a worker token: may register workers */
    PRINCIPAL_SESSION,     /* a worker's session token: worker says which */
    PRINCIPAL_ADMIN,       /* an admin token, or any request under --insecure-no-auth */
};

struct principal {
    enum principal_kind kind;
    char token_id[TOKEN_ID_LEN + 1];    /* "" under --insecure-no-auth */
    char tenant[HODEI_ID_MAX + 1];      /* PRINCIPAL_TENANT */
    char worker[HODEI_ID_MAX + 1];      /* PRINCIPAL_SESSION */
};

struct auth;

/* Reads the tokens file; NULL with the reason in err when it cannot be used. */
struct auth *auth_open(const char *path, char *err, size_t errlen);
/* Reads the file again and swaps the table in; -1 with err (the old table stays) otherwise.
 * One caller at a time (the main thread's signal loop). */
int  auth_reload(struct auth *a, char *err, size_t errlen);
/* After every reader is gone. */
void auth_free(struct auth *a);

/* Checks a file token (kind TOKEN_FILE): 0 and *p, or -1 with *why (unknown or bad_secret).
 * Any thread. */
int  auth_check(struct auth *a, const struct token *t, struct principal *p,
                enum hodei_auth_failure *why);

#endif
