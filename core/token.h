/*
 * token.h — bearer tokens and the tokens file (DESIGN §9), shared by the daemon (auth.c) and
 * hodeictl's `token` commands.  No state: parsing, hashing, generating and formatting.
 *
 *   token       := prefix <id> "_" <secret>
 *   prefix      := "hodei_"  (a token of the tokens file)  |  "hodeis_" (a worker session)
 *   <id>        := 12 lowercase hex digits: public, may appear in logs
 *   <secret>    := 43..128 characters of base64url ([A-Za-z0-9_-]): 32 random bytes or more
 *   file line   := <id> " " <role> " " (<tenant id> | "-") " " <sha256 hex of the secret text>
 *                  (blank lines and lines starting with '#' are ignored)
 *
 * Secrets are never stored: only their SHA-256.  Compare hashes with token_hash_equal(), which
 * takes the same time whatever the bytes.
 */
#ifndef HODEI_CORE_TOKEN_H
#define HODEI_CORE_TOKEN_H

#include <stddef.h>
#include "hodei_schema.h"

#define TOKEN_ID_LEN        12
#define TOKEN_SECRET_BYTES  32
#define TOKEN_SECRET_MIN    43
#define TOKEN_SECRET_MAX    128
#define TOKEN_HASH_LEN      32
/* The longest token text, without its NUL. */
#define TOKEN_MAX           (7 + TOKEN_ID_LEN + 1 + TOKEN_SECRET_MAX)

enum token_kind { TOKEN_FILE, TOKEN_SESSION };

struct token {
    enum token_kind kind;
    char        id[TOKEN_ID_LEN + 1];
    const char *secret;          /* points into the parsed text */
    size_t      secret_len;
};

/* Parses text[0..len); 0, or -1 when it is not a token. */
int  token_parse(const char *text, size_t len, struct token *out);
void token_hash(const char *secret, size_t len, unsigned char out[TOKEN_HASH_LEN]);
/* 1 when equal; constant time. */
int  token_hash_equal(const unsigned char a[TOKEN_HASH_LEN], const unsigned char b[TOKEN_HASH_LEN]);
/* A new token from the system's random source: its text into text (TOKEN_MAX + 1 bytes), its
 * id and the hash of its secret.  0, or -1 when the random source fails. */
int  token_generate(enum token_kind kind, char *text, char id[TOKEN_ID_LEN + 1],
                    unsigned char hash[TOKEN_HASH_LEN]);

enum token_role { ROLE_TENANT, ROLE_WORKER, ROLE_ADMIN, ROLE_COUNT };
extern const char *const token_role_names[ROLE_COUNT];

struct token_line {
    char            id[TOKEN_ID_LEN + 1];
    enum token_role role;
    char            tenant[HODEI_ID_MAX + 1];   /* ROLE_TENANT only, else "" */
    unsigned char   hash[TOKEN_HASH_LEN];
};

/* One line of a tokens file (without its newline): 1 and *out for a token, 0 for a blank or
 * comment line, -1 with *why for anything else. */
int  token_line_parse(const char *line, struct token_line *out, const char **why);
/* The line for t, newline included, into buf (at least 160 bytes). */
void token_line_format(const struct token_line *t, char *buf, size_t len);

#endif
