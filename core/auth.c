/* auth.c — the tokens file and its RCU-published table (see auth.h). */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <urcu-bp.h>

#include "alloc.h"
#include "log.h"

struct auth_table {
    size_t n;
    struct token_line tokens[];   /* sorted by id */
};

struct auth {
    char *path;
    struct auth_table *table;     /* RCU-published */
};

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct token_line *) a)->id, ((const struct token_line *) b)->id);
}

/* Reads and checks the whole file; the new table, or NULL with err. */
static struct auth_table *load(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 0007)) {
        snprintf(err, errlen, "%s: %s (mode %04o); run: chmod o-rwx %s", path,
                 S_ISREG(st.st_mode) ? "others may read or write it" : "not a regular file",
                 (unsigned) (st.st_mode & 07777), path);
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        hodei_oom();
    }
    size_t cap = 16, lineno = 0;
    struct auth_table *t = xmalloc(sizeof *t + cap * sizeof t->tokens[0]);
    t->n = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t len;
    int bad = 0;
    while (!bad && (len = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        const char *why = NULL;
        struct token_line tl;
        int rc = token_line_parse(line, &tl, &why);
        if (rc < 0) {
            snprintf(err, errlen, "%s:%zu: %s", path, lineno, why);
            bad = 1;
        } else if (rc > 0) {
            if (t->n == cap) {
                cap *= 2;
                t = xrealloc(t, sizeof *t + cap * sizeof t->tokens[0]);
            }
            t->tokens[t->n++] = tl;
        }
    }
    free(line);
    fclose(f);
    if (!bad) {
        qsort(t->tokens, t->n, sizeof t->tokens[0], by_id);
        for (size_t i = 1; i < t->n; i++)
            if (strcmp(t->tokens[i].id, t->tokens[i - 1].id) == 0) {
                snprintf(err, errlen, "%s: token id %s appears twice", path, t->tokens[i].id);
                bad = 1;
                break;
            }
    }
    if (bad) {
        free(t);
        return NULL;
    }
    return t;
}

static void log_table(const char *path, const struct auth_table *t, const char *what)
{
    size_t roles[ROLE_COUNT] = { 0 };
    for (size_t i = 0; i < t->n; i++)
        roles[t->tokens[i].role]++;
    log_info("tokens file %s %s: %zu tokens (%zu tenant, %zu worker, %zu admin)", path, what,
             t->n, roles[ROLE_TENANT], roles[ROLE_WORKER], roles[ROLE_ADMIN]);
}

struct auth *auth_open(const char *path, char *err, size_t errlen)
{
    struct auth_table *t = load(path, err, errlen);
    if (!t)
        return NULL;
    struct auth *a = xcalloc(1, sizeof *a);
    a->path = xstrdup(path);
    rcu_assign_pointer(a->table, t);
    log_table(path, t, "read");
    return a;
}

int auth_reload(struct auth *a, char *err, size_t errlen)
{
    struct auth_table *t = load(a->path, err, errlen);
    if (!t)
        return -1;
    struct auth_table *old = rcu_xchg_pointer(&a->table, t);
    synchronize_rcu();
    free(old);
    log_table(a->path, t, "re-read");
    return 0;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    free(a->table);
    free(a->path);
    free(a);
}

int auth_check(struct auth *a, const struct token *tok, struct principal *p,
               enum hodei_auth_failure *why)
{
    struct token_line key;
    memcpy(key.id, tok->id, sizeof key.id);
    unsigned char hash[TOKEN_HASH_LEN];
    token_hash(tok->secret, tok->secret_len, hash);
    int rc = -1;
    rcu_read_lock();
    const struct auth_table *t = rcu_dereference(a->table);
    const struct token_line *tl = bsearch(&key, t->tokens, t->n, sizeof t->tokens[0], by_id);
    if (!tl) {
        *why = HODEI_AUTH_UNKNOWN;
    } else if (!token_hash_equal(hash, tl->hash)) {
        *why = HODEI_AUTH_BAD_SECRET;
    } else {
        memset(p, 0, sizeof *p);
        p->kind = tl->role == ROLE_TENANT ? PRINCIPAL_TENANT
                : tl->role == ROLE_WORKER ? PRINCIPAL_WORKER : PRINCIPAL_ADMIN;
        memcpy(p->token_id, tl->id, sizeof p->token_id);
        memcpy(p->tenant, tl->tenant, sizeof p->tenant);
        rc = 0;
    }
    rcu_read_unlock();
    return rc;
}
